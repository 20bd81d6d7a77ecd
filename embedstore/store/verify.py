"""`embedstore verify`: every version's FAISS index agrees with DuckDB, vectors are sane."""

from __future__ import annotations

import numpy as np

NORM_TOL = 1e-3


def verify(st, version: str | None = None):
    """One row per (version, check): ok and a detail. Checks, in order: index file present,
    checksum as recorded, index ids == DuckDB ids, index vectors == DuckDB vectors, every
    embedded id is an image, dimension, no NaN/inf, norms ~ 1 (images and texts)."""
    import polars as pl

    versions = [st.resolve_version(version)] if version else st.versions()["version"].to_list()
    rows: list[dict] = []
    for v in versions:
        rows += [{"version": v, "check": c, "ok": ok, "detail": d} for c, ok, d in _checks(st, v)]
    return pl.DataFrame(rows, schema={"version": pl.String, "check": pl.String, "ok": pl.Boolean, "detail": pl.String})


def first_failure(report) -> dict | None:
    bad = report.filter(~report["ok"])
    return bad.row(0, named=True) if bad.height else None


def _checks(st, version: str):
    from embedstore.store import index as idx

    info = st.version_row(version)
    ids, X = st.image_vectors(version)
    path = st.index_path(version)
    yield "rows", info["count"] == len(ids), f"versions.count={info['count']}, image_embeddings rows={len(ids)}"
    if not path.exists():
        yield "index file", False, f"missing {path}"
    else:
        actual = idx.file_checksum(path)
        yield "index checksum", actual == info["index_checksum"], f"recorded {info['index_checksum']}, file {actual}"
        try:
            index = idx.load(path)
        except Exception as err:  # noqa: BLE001 - a corrupt file is a finding, not a crash
            yield "index readable", False, f"{path}: {err}"
        else:
            yield from _index_checks(index, ids, X)
    with st.connect() as con:
        orphans = con.sql(
            "SELECT count(*) FROM image_embeddings e ANTI JOIN images i ON i.id = e.id WHERE e.version = ?",
            params=[version]).fetchall()[0][0]
    yield "ids are images", orphans == 0, f"{orphans} embedded ids without an images row"
    yield from _vector_checks("image", X, info["dim"])
    _, M = st.text_vectors(version)
    yield from _vector_checks("text", M, info["dim"])


def _index_checks(index, ids: np.ndarray, X: np.ndarray):
    from embedstore.store import index as idx

    index_ids = idx.index_ids(index)
    order = np.argsort(index_ids, kind="stable")
    same_ids = len(index_ids) == len(ids) and np.array_equal(index_ids[order], ids)
    if not same_ids:
        extra = np.setdiff1d(index_ids, ids)[:5].tolist()
        lost = np.setdiff1d(ids, index_ids)[:5].tolist()
        yield "index ids", False, f"index {len(index_ids)} ids, DuckDB {len(ids)}; only in index {extra}, only in DuckDB {lost}"
        return
    yield "index ids", True, f"{len(ids)} ids"
    if len(ids):
        V = index.index.reconstruct_n(0, index.ntotal)[order]
        diff = float(np.abs(V - X).max())
        yield "index vectors", diff < 1e-5, f"max |index - DuckDB| = {diff:.2e}"


def _vector_checks(what: str, X: np.ndarray, dim: int | None):
    if not len(X):
        return
    yield f"{what} dim", dim is None or X.shape[1] == dim, f"{X.shape[1]} (recorded {dim})"
    finite = np.isfinite(X).all(axis=1)
    yield f"{what} finite", bool(finite.all()), f"{int((~finite).sum())} vectors with NaN/inf"
    norms = np.linalg.norm(X, axis=1)
    worst = float(np.abs(norms - 1).max()) if finite.all() else float("nan")
    yield f"{what} norms", bool(finite.all() and worst < NORM_TOL), f"max |norm - 1| = {worst:.2e}"
