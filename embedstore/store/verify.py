"""`embedstore verify`: every version's FAISS index agrees with DuckDB, vectors are sane."""

from __future__ import annotations

import numpy as np

NORM_TOL = 1e-3


def verify(st, version: str | None = None):
    """One row per (version, check): ok and a detail. Checks, in order: the version is complete
    (and a fine-tune holds all its parent's images and texts), no embedding shard of an
    `encode --engine ray` run waits to be stored, row count as recorded,
    index file present, checksum as recorded, index count as recorded, index ids == DuckDB ids,
    index vectors == DuckDB vectors, every embedded id is an image; then for the image vectors
    and for every text vector (prompts and cached queries): each has the recorded dimension, no
    NaN/inf, norms ~ 1. Vectors of the wrong length are reported, never read into a matrix (they
    would be misread), so the checks that need the matrix are left out for them."""
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
    image_lengths = _lengths(st, "image_embeddings", version)
    text_lengths = _lengths(st, "text_embeddings", version)
    images_readable = _lengths_ok(image_lengths, info["dim"])
    ids, X = st.image_vectors(version) if images_readable else (st.matching_ids(version, None), None)
    path = st.index_path(version)
    yield from _completeness(st, version, info, len(ids))
    pending = st.pending_shards(version)
    yield ("shards", not pending, f"{len(pending)} shard file(s) of an interrupted `encode --engine ray` not stored yet "
           f"({st.shard_dir(version)}); run the same encode command again" if pending else "none pending")
    yield "rows", info["count"] == len(ids), f"versions.count={info['count']}, image_embeddings rows={len(ids)}"
    if not path.exists():
        yield "index file", False, f"missing {path}"
    else:
        yield "index file", True, str(path)
        actual = idx.file_checksum(path)
        yield "index checksum", actual == info["index_checksum"], f"recorded {info['index_checksum']}, file {actual}"
        try:
            index = idx.load(path)
        except Exception as err:  # noqa: BLE001 - a corrupt file is a finding, not a crash
            yield "index readable", False, f"{path}: {err}"
        else:
            yield ("index count", info["index_count"] == index.ntotal,
                   f"versions.index_count={info['index_count']}, index file {index.ntotal}")
            yield from _index_checks(index, ids, X)
    orphans = st._scalar("SELECT count(*) FROM image_embeddings e ANTI JOIN images i ON i.id = e.id "
                         "WHERE e.version = ?", [version])
    yield "ids are images", orphans == 0, f"{orphans} embedded ids without an images row"
    yield from _vector_checks("image", X, info["dim"], image_lengths)
    M = _text_matrix(st, version) if _lengths_ok(text_lengths, info["dim"]) else None
    yield from _vector_checks("text", M, info["dim"], text_lengths)


def _completeness(st, version: str, info: dict, images: int):
    """Is the version whole? Finished (`complete`, not `building`: a run that was killed or failed
    leaves it building); a fine-tune holds every image and text of its parent."""
    fix = f"run the same command again to finish it, or `embedstore versions --drop {version}`"
    yield ("complete", info["status"] == "complete",
           "complete" if info["status"] == "complete" else f"{info['status']}: {images} images so far; {fix}")
    if info["kind"] != "finetune" or not info["parent"]:
        return
    parent = st.version_row(info["parent"])["count"]
    yield "images as parent", images == parent, f"{images} of the parent {info['parent']}'s {parent} images"
    missing = st.texts_missing(info["parent"], version).height
    yield "texts as parent", missing == 0, f"{missing} of {info['parent']}'s texts not embedded"


def _lengths(st, table: str, version: str) -> dict[int, int]:
    """{vector length: rows} of `version` in `table` (image_embeddings or text_embeddings)."""
    rows = st._rows(f"SELECT len(vector), count(*) FROM {table} WHERE version = ? GROUP BY ALL", [version])
    return {int(n): int(c) for n, c in rows}


def _lengths_ok(lengths: dict[int, int], dim: int | None) -> bool:
    return set(lengths) <= {dim} if dim is not None else len(lengths) <= 1


def _text_matrix(st, version: str) -> np.ndarray:
    """Every text vector of `version`: the prompts' and the cached queries' (which `query` reuses)."""
    from embedstore.store.rows import matrix

    table = st._df("SELECT vector FROM text_embeddings WHERE version = ? ORDER BY text_hash", [version])
    return matrix(table["vector"], None)


def _index_checks(index, ids: np.ndarray, X: np.ndarray | None):
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
    if len(ids) and X is not None and idx.needs_rerank(index):  # ivf-pq: the file holds codes, not vectors
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        wrong = idx.mismatched_codes(index, X[rank])
        yield ("index vectors", len(wrong) == 0, f"{len(wrong)} of {len(ids)} PQ codes differ from DuckDB's vectors "
               f"encoded again (ids {index_ids[wrong[:5]].tolist()})" if len(wrong)
               else f"{len(ids)} PQ codes and lists = DuckDB's vectors encoded again")
    elif len(ids) and X is not None:
        V = index.index.reconstruct_n(0, index.ntotal)[order]
        diff = float(np.abs(V - X).max()) if V.shape == X.shape else float("inf")
        yield "index vectors", diff < 1e-5, f"max |index - DuckDB| = {diff:.2e}"


def _vector_checks(what: str, X: np.ndarray | None, dim: int | None, lengths: dict[int, int]):
    if not lengths:
        return
    n = sum(lengths.values())
    wrong = sum(c for length, c in lengths.items() if dim is not None and length != dim)
    if dim is None and len(lengths) > 1:
        wrong = n - max(lengths.values())
    yield (f"{what} dim", wrong == 0,
           f"{wrong} of {n} vectors are not {dim} long (lengths {', '.join(map(str, sorted(lengths)))})" if wrong
           else f"{next(iter(lengths))} (recorded {dim})")
    if X is None:
        return
    finite = np.isfinite(X).all(axis=1)
    yield f"{what} finite", bool(finite.all()), f"{int((~finite).sum())} vectors with NaN/inf"
    norms = np.linalg.norm(X, axis=1)
    worst = float(np.abs(norms - 1).max()) if finite.all() else float("nan")
    yield f"{what} norms", bool(finite.all() and worst < NORM_TOL), f"max |norm - 1| = {worst:.2e}"
