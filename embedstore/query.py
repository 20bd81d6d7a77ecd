"""`embedstore query`: top-k images for a text, an image file or a stored image.

A text equal to a stored prompt or an earlier query, or a finding name (its positive prompts
averaged), is served from `text_embeddings` without importing torch. Only a new text (or
`--image`) loads the model; a new text's embedding is cached for next time.

`--where` filters *before* the search: the matching ids are selected in DuckDB and only
those are searched (an IDSelector inside FAISS, or exact search streaming the subset's vectors
from DuckDB in chunks), so k
results come back whenever at least k rows match.
"""

from __future__ import annotations

import numpy as np

from embedstore.data.records import SPLITS
from embedstore.errors import InputError, StoreBusy


def query(
    st,
    text: str | None = None,
    image: str | None = None,
    like: str | None = None,
    k: int = 10,
    where: str | None = None,
    version: str | None = None,
    split: str | None = None,
    view: str | None = None,
    present: list[str] | None = None,
    absent: list[str] | None = None,
    loaded=None,
):
    """Top-k images of the store `st` (Storage) as a polars DataFrame: rank, score, image_id,
    path, view, labels, id. `split`, `view`, `present` and `absent` (finding names) are structured
    filters, joined to `where` by AND; `loaded` is the version's model already loaded (a warm
    server), used for a new text or an image instead of loading it."""
    given = [x is not None for x in (text, image, like)]
    if sum(given) != 1:
        raise InputError("give exactly one of TEXT, --image PATH or --like IMAGE_ID")
    if k < 1:
        raise InputError(f"-k must be at least 1, got {k}")
    if split is not None and split not in SPLITS:
        raise InputError(f"split={split!r}: give one of {', '.join(SPLITS)}")
    ver = st.resolve_version(version)
    filters = st.filter_predicate(split=split, view=view, present=present, absent=absent)
    if filters:
        where = filters if not where else f"({where}) AND {filters}"
    exclude: set[int] = set()
    if text is not None:
        q = text_vector(st, ver, text, loaded=loaded)
    elif like is not None:
        sid, q = _stored_image_vector(st, ver, like)
        exclude.add(sid)
    else:
        q = _image_file_vector(st, ver, image, loaded=loaded)
    ids, scores = search(st, ver, q, k, where=where, exclude=exclude)
    return st.describe_hits(ids, scores)


# ---- query vectors -----------------------------------------------------------------------
def text_vector(st, version: str, text: str, loaded=None) -> np.ndarray:
    """Stored text, else a finding name (mean of its positive prompts), else the model."""
    vec = st.stored_text_vector(version, text)
    if vec is not None:
        return vec
    vec = _finding_vector(st, version, text)
    if vec is not None:
        return vec
    import polars as pl

    loaded = loaded or load_version_model(st, version)
    vec = np.asarray(loaded.encode_texts([text]), dtype=np.float32)[0]
    if st.writable():  # cache it for next time; a read-only or busy store only costs the cache
        try:
            st.add_text_vectors(version, pl.DataFrame({"text": [text]}), vec[None, :])
        except StoreBusy:
            pass
    return vec


def _finding_vector(st, version: str, text: str) -> np.ndarray | None:
    """A finding's name: its positive prompts averaged as zero-shot scoring averages them."""
    from embedstore.analyses.zeroshot import prompt_vectors

    texts, M = st.finding_prompts(version, text)
    if not texts.height:
        return None
    return prompt_vectors(texts, M, [texts["finding"][0]], "ensemble").positive[0]


def _stored_image_vector(st, version: str, image_id: str) -> tuple[int, np.ndarray]:
    found = st.stored_image_vector(version, image_id)
    if found is None:
        raise InputError(f"--like: no image {image_id!r} in the store; see `embedstore sql \"SELECT image_id FROM images\"`")
    if found[1] is None:
        raise InputError(f"--like: image {image_id!r} has no embedding in version {version} (see the errors table)")
    return found


def _image_file_vector(st, version: str, path: str, loaded=None) -> np.ndarray:
    from pathlib import Path

    if not Path(path).is_file():
        raise InputError(f"--image: no file {path}")
    from embedstore.data.images import read_image

    loaded = loaded or load_version_model(st, version)
    import torch

    with torch.inference_mode():
        x = loaded.preprocess(read_image(path).convert("RGB")).unsqueeze(0)
        return np.asarray(loaded.encode_images(x), dtype=np.float32)[0]


def load_version_model(st, version: str):
    """The model that made `version`: a fine-tuned checkpoint in the store, else the registry.
    Loading takes seconds: the store's file is released first, so writers commit meanwhile."""
    from embedstore.models import load_model

    info = st.version(version)
    st.release_reads()
    return load_model(info)


# ---- search ------------------------------------------------------------------------------
def search(st, version: str, q: np.ndarray, k: int, where: str | None = None,
           exclude: set[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(ids, scores) of the top-k inner products, best first, over the filtered ids."""
    from embedstore.store import index as idx

    exclude = exclude or set()
    subset = None
    if where or exclude:
        subset = st.matching_ids(version, where)
        if exclude:
            subset = subset[~np.isin(subset, list(exclude))]
        if len(subset) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
    want = k if subset is None else min(k, len(subset))
    index = _index(st, version)
    if index is not None:
        rerank = st.reranker(version) if idx.needs_rerank(index) else None  # ivf-pq: from DuckDB's vectors
        scores, ids = idx.search(index, q, k, subset=subset, rerank=rerank)
        keep = ids[0] >= 0
        ids, scores = ids[0][keep], scores[0][keep]
        total = index.ntotal if subset is None else len(subset)
        if len(ids) >= min(want, total):  # HNSW and IVF may return fewer under a tight filter
            return ids, scores
    return exact_search(st, version, q, k, subset)


EXACT_CHUNK_ROWS = 65_536  # vectors read from DuckDB at a time by exact search (128 MiB at d=512)


def exact_search(st, version: str, q: np.ndarray, k: int, subset: np.ndarray | None,
                 chunk_rows: int = EXACT_CHUNK_ROWS):
    """Exact top-k over DuckDB's vectors (the subset only, when given), best first (ties by id).

    The vectors stream from DuckDB in chunks of `chunk_rows`; FAISS's `ResultHeap` keeps the
    running top-k, so memory holds one chunk and the result, never the whole (sub)set."""
    import faiss

    q = np.asarray(q, dtype=np.float32).ravel()
    heap = None
    for ids, X in st.image_vector_chunks(version, subset, rows=chunk_rows):
        if heap is None:
            heap = faiss.ResultHeap(1, k, keep_max=True)
        heap.add_result(np.ascontiguousarray((X @ q)[None, :], dtype=np.float32),
                        np.ascontiguousarray(ids[None, :], dtype=np.int64))
    if heap is None:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    heap.finalize()
    ids, s = heap.I[0], heap.D[0]
    keep = ids >= 0
    ids, s = ids[keep], s[keep]
    order = np.lexsort((ids, -s))
    return ids[order], s[order]


def _index(st, version: str):
    """The current index; rebuilt if stale and the store is writable and free, else None (exact
    search: a reader on a read-only store or beside a writer still answers)."""
    index = st.load_index(version)
    if index is not None or not st.writable():
        return index
    try:
        st.rebuild_index(version)
    except (StoreBusy, OSError):
        return None
    return st.load_index(version)
