"""Reading DuckDB results into numpy (vector columns as matrices), and polars frames as DuckDB views."""

from __future__ import annotations

import contextlib
import datetime as _dt

import numpy as np

from embedstore.errors import StoreError


def now() -> _dt.datetime:
    return _dt.datetime.now()


def first(rel):
    """The first row of a DuckDB relation, or None (relations have no fetchone in DuckDB 2)."""
    rows = rel.limit(1).fetchall()
    return rows[0] if rows else None


@contextlib.contextmanager
def registered(con, **frames):
    """The polars `frames` as views of `con` (by keyword name) for the block, unregistered after."""
    for name, frame in frames.items():
        con.register(name, frame)
    try:
        yield con
    finally:
        for name in frames:
            con.unregister(name)


def matrix(column, dim: int | None) -> np.ndarray:
    """A polars list column of vectors -> float32 [n, d] without a Python loop.

    (polars rather than pyarrow's to_numpy, which imports pandas: 0.5 s of start-up.)
    """
    n = len(column)
    if n == 0:
        return np.zeros((0, dim or 0), dtype=np.float32)
    flat = column.list.explode().to_numpy().astype(np.float32, copy=False)
    if flat.size % n:
        raise StoreError("stored vectors have unequal lengths; run `embedstore verify`")
    return flat.reshape(n, flat.size // n)


def ids_and_matrix(frame, dim: int | None) -> tuple[np.ndarray, np.ndarray]:
    ids = frame["id"].to_numpy().astype(np.int64, copy=False)
    return ids, matrix(frame["vector"], dim)
