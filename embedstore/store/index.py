"""FAISS index files: build, atomic write, checksum, load and (filtered) search.

The index is derived data: DuckDB's `image_embeddings` is the source of truth, and an index
whose recorded checksum or count disagrees with it is rebuilt. ids are `images.id`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from embedstore.files import atomic_path

# Exact inner product up to this many vectors; HNSW above (build time grows, search stays fast).
FLAT_MAX = 200_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 512


def build(ids: np.ndarray, X: np.ndarray, kind: str = "auto"):
    """An `IndexIDMap2` over flat inner product (or HNSW when `kind`='hnsw' or large)."""
    import faiss

    n, d = X.shape if X.ndim == 2 else (0, 0)
    if kind == "auto":
        kind = "hnsw" if n > FLAT_MAX else "flat"
    if kind == "hnsw":
        inner = faiss.IndexHNSWFlat(d, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        inner.hnsw.efSearch = HNSW_EF_SEARCH
    else:
        inner = faiss.IndexFlatIP(d)
    index = faiss.IndexIDMap2(inner)
    if n:
        index.add_with_ids(np.ascontiguousarray(X, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64))
    return index


def kind_of(index) -> str:
    import faiss

    inner = faiss.downcast_index(index.index)
    return "hnsw" if isinstance(inner, faiss.IndexHNSW) else "flat"


def write_atomic(index, path: Path) -> str:
    """Write to a temporary file in the same folder, fsync, rename; return the sha256."""
    import faiss

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.stem}.*.tmp{path.suffix}"):  # left by a killed writer
        stale.unlink(missing_ok=True)
    with atomic_path(path, fsync=True) as tmp:
        faiss.write_index(index, str(tmp))
        checksum = file_checksum(tmp)
    _fsync_dir(path.parent)
    return checksum


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_checksum(path: Path) -> str:
    with open(path, "rb") as fh:
        return "sha256:" + hashlib.file_digest(fh, "sha256").hexdigest()


def load(path: Path):
    import faiss

    return faiss.read_index(str(path))


def index_ids(index) -> np.ndarray:
    """The int64 ids an `IndexIDMap2` holds, in insertion order."""
    import faiss

    return faiss.vector_to_array(index.id_map).astype(np.int64)


def search(index, q: np.ndarray, k: int, subset: np.ndarray | None = None):
    """Top-k inner products for queries `q` [nq, d]; `subset`: only these ids are eligible.

    Returns (scores [nq, k'], ids [nq, k']) with k' = min(k, eligible); -1 ids are dropped
    by the caller. The filter is applied *inside* the search (an IDSelector), so a filter
    never silently returns fewer than k when k rows match on a flat index; for HNSW the
    caller checks and falls back to exact search (see `embedstore.query`).
    """
    import faiss

    q = np.ascontiguousarray(np.atleast_2d(q), dtype=np.float32)
    n = index.ntotal if subset is None else len(subset)
    k = min(k, n)
    if k <= 0:
        return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
    if subset is None:
        return index.search(q, k)
    sel = faiss.IDSelectorBatch(np.ascontiguousarray(subset, dtype=np.int64))
    if kind_of(index) == "hnsw":
        params = faiss.SearchParametersHNSW(sel=sel, efSearch=max(HNSW_EF_SEARCH, 4 * k))
    else:
        params = faiss.SearchParameters(sel=sel)
    return index.search(q, k, params=params)


class IndexFiles:
    """Each version's FAISS index file, derived from DuckDB (a part of `Storage`)."""

    # ---- FAISS index -------------------------------------------------------------------

    def index_path(self, version: str) -> Path:
        return self.index_dir / f"{version}.faiss"

    def index_state(self, version: str) -> dict:
        """Recorded index checksum/count against DuckDB's row count (no file hashing)."""
        [(checksum, index_count, rows)] = self._rows(
            """SELECT index_checksum, index_count,
                      (SELECT count(*) FROM image_embeddings WHERE version = ?) FROM versions WHERE version = ?""",
            [version, version])
        return {"checksum": checksum, "index_count": index_count, "rows": rows, "exists": self.index_path(version).exists()}

    def index_is_current(self, version: str, check_file: bool = True) -> bool:
        """True when the index file exists, its checksum is the recorded one and its
        recorded count equals DuckDB's rows."""
        st = self.index_state(version)
        if not st["exists"] or st["checksum"] is None or st["index_count"] != st["rows"]:
            return False
        return not check_file or file_checksum(self.index_path(version)) == st["checksum"]

    def rebuild_index(self, version: str, kind: str = "auto") -> dict:
        """Build the version's FAISS index from DuckDB, write it atomically, record checksum."""
        with self.writer():  # the file is held only to read the vectors and to record the index
            ids, X = self.image_vectors(version)
            index = build(ids, X, kind=kind)
            checksum = write_atomic(index, self.index_path(version))
            with self.transaction() as con:
                con.execute(
                    "UPDATE versions SET index_checksum = ?, index_count = ?, count = ?, index_file = ? WHERE version = ?",
                    [checksum, len(ids), len(ids), f"index/{version}.faiss", version],
                )
        return {"version": version, "count": len(ids), "kind": kind_of(index), "checksum": checksum}

    def load_index(self, version: str):
        """The version's FAISS index, or None when it is missing or stale (count differs)."""
        st = self.index_state(version)
        if not st["exists"] or st["index_count"] != st["rows"]:
            return None
        index = load(self.index_path(version))
        return index if index.ntotal == st["rows"] else None

    def refresh_index(self, version: str, before: dict, encoded: int) -> bool:
        """Bring the version's index in line with DuckDB after a run that encoded `encoded` images
        (`before`: `index_state` when it started); True if the index was written.

        When the index was current before the run and the run only appended, the new vectors are
        added to it (HNSW builds are slow); otherwise it is rebuilt from DuckDB.
        """
        if self.index_is_current(version):
            return False
        after = self.index_state(version)
        appended = after["rows"] - (before["rows"] or 0)
        if (before["exists"] and before["index_count"] == before["rows"] and appended > 0 and appended == encoded
                and before["checksum"] is not None and file_checksum(self.index_path(version)) == before["checksum"]):
            index = load(self.index_path(version))
            have = set(index_ids(index).tolist())
            all_ids, _ = self.image_vectors(version)
            new = np.array([i for i in all_ids.tolist() if i not in have], dtype=np.int64)
            if len(new) == appended and kind_of(index) == "hnsw":
                nid, X = self.image_vectors_for(version, new)
                index.add_with_ids(X, nid)
                checksum = write_atomic(index, self.index_path(version))
                with self.transaction() as con:
                    con.execute("UPDATE versions SET index_checksum = ?, index_count = ? WHERE version = ?",
                                [checksum, index.ntotal, version])
                return True
        self.rebuild_index(version)
        return True
