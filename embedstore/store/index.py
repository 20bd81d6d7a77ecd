"""FAISS index files: choose, build, tune, atomic write, checksum, load and (filtered) search.

The index is derived data: DuckDB's `image_embeddings` is the source of truth, and an index
whose recorded checksum or count disagrees with it is rebuilt. ids are `images.id`.

Kinds (all inner product, all wrapped in an `IndexIDMap2` so ids are `images.id`):
- `exact`: `IndexFlatIP`; chosen up to `EXACT_MAX` vectors.
- `hnsw`: `HNSW{M},Flat` (index_factory); chosen above. Its distances are exact, so re-ranking
  adds nothing: recall comes from M, efConstruction and efSearch (efSearch tuned at build).
- `hnsw-sq8`: `HNSW{M},SQ8` whose top `k_factor * k` candidates `IndexRefineFlat` re-ranks
  exactly against the float vectors it keeps.
- `ivf-pq`: `IVF{nlist},PQ{m}` alone: its file holds the lists (m + 8 bytes a vector: the PQ code
  and the id) and the coarse and PQ codebooks, so a version larger than memory can be served. Its
  top `k_factor * k` candidates are re-ranked exactly against the float vectors read from DuckDB
  for just those ids (`Rerank`, given by `IndexFiles.reranker`); at build time, X in memory.
  An ivf-pq file of an older embedstore (IVF-PQ under `IndexRefineFlat`, the float copy in the
  file) is still searched as before until it is rebuilt.
Tuned parameters (efSearch, nprobe, hnsw-sq8's k_factor) are saved inside the FAISS file itself;
ivf-pq's k_factor, which the file has no place for, is recorded in `versions.index_params`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embedstore.errors import InputError, StoreError
from embedstore.files import atomic_path
from embedstore.results import Row
from embedstore.store import schema

# Exact inner product up to this many vectors; HNSW above (build time grows, search stays fast).
EXACT_MAX = 200_000
KINDS = ("exact", "hnsw", "hnsw-sq8", "ivf-pq")
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 512  # the ceiling of the efSearch tuning ladder, and a filter's minimum
EF_LADDER = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
NPROBE_LADDER = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
TUNE_RECALL = 0.97  # recall@10 the tuning aims at on the store's own vectors (margin over 0.95)
TUNE_QUERIES = 200
IVF_TRAIN_MAX = 65_536  # ivf-pq's coarse and PQ codebooks are trained on at most this many vectors (seeded sample)
DEFAULTS = {
    "exact": {},
    "hnsw": {"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION},
    "hnsw-sq8": {"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION, "k_factor": 4},
    "ivf-pq": {"k_factor": 16},  # nlist ~ 4 sqrt(n), m = d / 8 unless given
}


@dataclass
class Rerank:
    """How an ivf-pq index's candidates are re-ranked exactly: `ceil(k_factor * k)` candidates are
    taken from the PQ lists, `vectors(ids) -> (ids, X)` reads their float vectors (ids ordered, the
    ids it has; DuckDB's through `Storage.image_vectors_for`, or X in memory at build time)."""

    k_factor: float
    vectors: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def in_memory(ids: np.ndarray, X: np.ndarray) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """`Rerank.vectors` over vectors in memory (`ids` [n] with rows `X` [n, d])."""
    ids = np.asarray(ids, dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]

    def vectors(want: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        want = np.unique(np.asarray(want, dtype=np.int64))
        pos = np.clip(np.searchsorted(sorted_ids, want), 0, max(len(sorted_ids) - 1, 0))
        have = sorted_ids[pos] == want if len(sorted_ids) else np.zeros(len(want), bool)
        return want[have], X[order[pos[have]]]

    return vectors


@dataclass
class IndexResult(Row):
    """What `embedstore index` built: the version, its vector count, the kind, how it was chosen
    (`by size` or `by hand`) and its parameters (efSearch / nprobe as tuned, bytes a vector)."""

    version: str
    count: int
    kind: str
    chosen: str
    checksum: str
    params: dict = field(default_factory=dict)

    def to_polars(self):
        """One row: version, count, kind, chosen, checksum, params (JSON text)."""
        import json

        import polars as pl

        return pl.DataFrame([self.as_dict() | {"params": json.dumps(self.params)}])


def choose_kind(n: int, exact_max: int = EXACT_MAX) -> str:
    """`exact` up to `exact_max` vectors, `hnsw` above."""
    return "exact" if n <= exact_max else "hnsw"


def parse_params(text: str | None) -> dict:
    """`M=48,efConstruction=200,efSearch=128,nlist=1024,m=64,nprobe=16,k_factor=8` -> dict of ints."""
    if not text:
        return {}
    known = {"M", "efConstruction", "efSearch", "nlist", "m", "nprobe", "k_factor"}
    out: dict = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        key = key.strip()
        if key not in known or not value.strip().isdigit() or int(value) < 1:
            raise InputError(f"--params {text!r}: {part.strip()!r} is not NAME=POSITIVE_INT with NAME one of "
                             f"{', '.join(sorted(known))}")
        out[key] = int(value)
    return out


def _ivf_shape(n: int, d: int, params: dict) -> tuple[int, int]:
    nlist = params.get("nlist") or int(max(1, min(4 * np.sqrt(max(n, 1)), max(1, n // 39))))
    m = params.get("m") or max(1, d // 8)
    if d % m:
        raise InputError(f"--params m={m}: the dimension {d} is not a multiple of it; give m dividing {d}")
    return nlist, m


def build(ids: np.ndarray, X: np.ndarray, kind: str = "auto", params: dict | None = None,
          exact_max: int = EXACT_MAX, tune: bool = True):
    """An `IndexIDMap2` of the given kind (`auto`: by size), its search parameters tuned on `X`."""
    import faiss

    params = dict(params or {})
    n, d = X.shape if X.ndim == 2 else (0, 0)
    if kind == "auto":
        kind = choose_kind(n, exact_max)
    if kind not in KINDS:
        raise InputError(f"--kind {kind!r}: give one of auto, {', '.join(KINDS)}")
    p = {**DEFAULTS[kind], **params}
    X = np.ascontiguousarray(X, dtype=np.float32)
    if kind == "exact":
        inner = faiss.IndexFlatIP(d)
    elif kind in ("hnsw", "hnsw-sq8"):
        inner = faiss.index_factory(d, f"HNSW{p['M']},{'Flat' if kind == 'hnsw' else 'SQ8'}",
                                    faiss.METRIC_INNER_PRODUCT)
        faiss.downcast_index(inner).hnsw.efConstruction = p["efConstruction"]
    else:
        nlist, m = _ivf_shape(n, d, p)
        inner = faiss.index_factory(d, f"IVF{nlist},PQ{m}", faiss.METRIC_INNER_PRODUCT)
        # the factory turns on polysemous training (reordering the codes for Hamming filtering, which
        # search never uses): 20 s of annealing even for m=4 on 3,000 vectors; plain k-means is enough
        faiss.downcast_index(inner).do_polysemous_training = False
    if kind == "hnsw-sq8":  # for speed: the float copy in the file re-ranks (ivf-pq re-ranks from DuckDB)
        inner = faiss.IndexRefineFlat(inner)
        inner.k_factor = float(p["k_factor"])
    index = faiss.IndexIDMap2(inner)
    if n:
        if not index.is_trained:
            sample = (np.sort(np.random.default_rng(0).choice(n, IVF_TRAIN_MAX, replace=False))
                      if kind == "ivf-pq" and n > IVF_TRAIN_MAX else slice(None))
            index.train(X[sample])
        index.add_with_ids(X, np.ascontiguousarray(ids, dtype=np.int64))
    if kind != "exact":
        base = _base(index)
        if "efSearch" in p:
            base.hnsw.efSearch = p["efSearch"]
        elif "nprobe" in p:
            base.nprobe = p["nprobe"]
        elif tune and n:
            tune_search(index, ids, X, rerank=Rerank(float(p["k_factor"]), in_memory(ids, X)) if kind == "ivf-pq" else None)
        elif kind != "ivf-pq":
            base.hnsw.efSearch = HNSW_EF_SEARCH
    return index


def _base(index):
    """The graph or inverted-file index under the id map (and under the re-ranking, if any)."""
    import faiss

    inner = faiss.downcast_index(index.index)
    if isinstance(inner, faiss.IndexRefine):
        inner = faiss.downcast_index(inner.base_index)
    return inner


def recall_at(index, ids: np.ndarray, X: np.ndarray, Q: np.ndarray, k: int = 10,
              own: np.ndarray | None = None, rerank: Rerank | None = None) -> float:
    """Mean recall@k of `index` for queries `Q` against exact inner product over `X`. `own`: the
    id each query was taken from (a stored vector), left out of both lists as `--like` leaves it.
    `rerank`: an ivf-pq index's re-ranking (default: against `X`), so recall is after it."""
    import faiss

    flat = faiss.IndexFlatIP(X.shape[1])
    flat.add(X)
    k = min(k, len(X) - (own is not None))
    extra = int(own is not None)
    _, truth = flat.search(Q, k + extra)
    if rerank is None and needs_rerank(index):
        rerank = Rerank(DEFAULTS["ivf-pq"]["k_factor"], in_memory(ids, X))
    _, got = search(index, Q, k + extra, rerank=rerank)
    truth = np.asarray(ids)[truth]
    hits = []
    for i, (t, g) in enumerate(zip(truth, got)):
        if own is not None:
            t, g = t[t != own[i]][:k], g[g != own[i]][:k]
        hits.append(len(np.intersect1d(t, g)) / k)
    return float(np.mean(hits))


def tune_search(index, ids: np.ndarray, X: np.ndarray, target: float = TUNE_RECALL, nq: int = TUNE_QUERIES,
                seed: int = 0, rerank: Rerank | None = None) -> dict:
    """Set the smallest efSearch (HNSW) or nprobe (IVF) whose recall@10, measured with a sample of
    the store's own vectors as queries (each leaving itself out, as `query --like` does) against
    exact search, reaches `target` (else the largest on the ladder). ivf-pq's recall is measured
    after its re-rank (`rerank`; X in memory stands in for DuckDB's vectors)."""
    base = _base(index)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(X), size=min(nq, len(X)), replace=False)
    Q, own = X[pick], np.asarray(ids)[pick]
    hnsw = hasattr(base, "hnsw")
    ladder = EF_LADDER if hnsw else [p for p in NPROBE_LADDER if p <= base.nlist] or [base.nlist]
    for value in ladder:
        if hnsw:
            base.hnsw.efSearch = value
        else:
            base.nprobe = value
        r = recall_at(index, ids, X, Q, own=own, rerank=rerank)
        if r >= target:
            break
    return {"efSearch" if hnsw else "nprobe": value, "tuned_recall@10": round(r, 4)}


def kind_of(index) -> str:
    import faiss

    base = _base(index)
    if isinstance(base, faiss.IndexIVF):
        return "ivf-pq"
    if isinstance(faiss.downcast_index(index.index), faiss.IndexRefine):
        return "hnsw-sq8"
    return "hnsw" if isinstance(base, faiss.IndexHNSW) else "exact"


def needs_rerank(index) -> bool:
    """True for an ivf-pq index holding only the PQ lists (re-ranked from the store's vectors);
    False for every other kind, and for an older ivf-pq file whose `IndexRefineFlat` re-ranks itself."""
    import faiss

    return kind_of(index) == "ivf-pq" and not isinstance(faiss.downcast_index(index.index), faiss.IndexRefine)


def describe(index, given: dict | None = None) -> dict:
    """kind, the parameters search uses, and bytes a vector (index file size / vectors, measured by
    serializing) with what the compressed part alone takes. `given`: the parameters given to
    `build`, for what the file cannot hold (ivf-pq's k_factor, where its re-rank vectors live)."""
    import faiss

    kind = kind_of(index)
    base = _base(index)
    out: dict = {"kind": kind}
    if hasattr(base, "hnsw"):
        out |= {"M": int(base.hnsw.nb_neighbors(1)), "efConstruction": int(base.hnsw.efConstruction),
                "efSearch": int(base.hnsw.efSearch)}
    if isinstance(base, faiss.IndexIVF):
        out |= {"nlist": int(base.nlist), "nprobe": int(base.nprobe), "m": int(faiss.downcast_index(base).pq.M)}
    inner = faiss.downcast_index(index.index)
    if isinstance(inner, faiss.IndexRefine):
        out["k_factor"] = float(inner.k_factor)
        out["rerank"] = "index file"  # IndexRefineFlat's float copy (hnsw-sq8; an older ivf-pq file)
    elif kind == "ivf-pq":
        out["k_factor"] = float({**DEFAULTS["ivf-pq"], **(given or {})}["k_factor"])
        out["rerank"] = "duckdb"
    if "k_factor" in out:
        # what the compressed index alone holds a vector (IVF: PQ code + the id in its list)
        out["code_bytes_per_vector"] = (int(base.code_size) + 8 if kind == "ivf-pq"
                                        else int(base.storage.sa_code_size()) + 4 * int(base.hnsw.nb_neighbors(0)))
    n = max(index.ntotal, 1)
    out["bytes_per_vector"] = round(len(faiss.serialize_index(index)) / n, 1) if index.ntotal else None
    return out


def mismatched_codes(index, X: np.ndarray) -> np.ndarray:
    """ivf-pq: the positions (insertion order; `X` [ntotal, d] in that order) whose stored list
    number or PQ code differs from `X` encoded again by the same quantizers (`sa_encode`): a
    vector changed in DuckDB or in the file since the index was built."""
    import faiss
    from faiss.contrib.inspect_tools import get_invlist

    base = faiss.downcast_index(_base(index))
    stored = np.zeros((base.ntotal, base.code_size), np.uint8)
    lists = np.full(base.ntotal, -1, np.int64)
    for no in range(base.nlist):
        pos, codes = get_invlist(base.invlists, no)
        stored[pos], lists[pos] = codes.reshape(len(pos), base.code_size), no
    wrong = np.zeros(base.ntotal, bool)
    coarse = base.coarse_code_size()
    for s in range(0, base.ntotal, 65_536):
        fresh = base.sa_encode(np.ascontiguousarray(X[s:s + 65_536], dtype=np.float32))
        listno = (fresh[:, :coarse].astype(np.int64) << (8 * np.arange(coarse))).sum(axis=1)
        wrong[s:s + len(fresh)] = (listno != lists[s:s + 65_536]) | (fresh[:, coarse:] != stored[s:s + 65_536]).any(axis=1)
    return np.flatnonzero(wrong)


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


def search(index, q: np.ndarray, k: int, subset: np.ndarray | None = None, rerank: Rerank | None = None):
    """`_search` (below); one query searches on this thread alone: FAISS spreads a search over its
    queries, so a second OpenMP thread only waits (5 ms against 0.9 ms a query for HNSW at 20,000
    vectors on 2 busy cores), and a server's concurrent requests would each start a team."""
    import faiss

    if np.atleast_2d(q).shape[0] != 1:
        return _search(index, q, k, subset, rerank)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # this thread's setting only; restored after
    try:
        return _search(index, q, k, subset, rerank)
    finally:
        faiss.omp_set_num_threads(threads)


def _search(index, q: np.ndarray, k: int, subset: np.ndarray | None = None, rerank: Rerank | None = None):
    """Top-k inner products for queries `q` [nq, d]; `subset`: only these ids are eligible;
    `rerank`: how an ivf-pq index's candidates are re-ranked (required where `needs_rerank`).

    Returns (scores [nq, k'], ids [nq, k']) with k' = min(k, eligible); -1 ids are dropped
    by the caller. The filter is applied *inside* the search (an IDSelector), so a filter
    never silently returns fewer than k when k rows match on a flat index; for HNSW and IVF
    the caller checks and falls back to exact search (see `embedstore.query`).
    """
    import faiss

    q = np.ascontiguousarray(np.atleast_2d(q), dtype=np.float32)
    n = index.ntotal if subset is None else len(subset)
    k = min(k, n)
    if k <= 0:
        return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
    if needs_rerank(index):
        if rerank is None:
            raise StoreError("an ivf-pq index re-ranks its candidates against the store's vectors; "
                             "search it with rerank=Storage.reranker(version)")
        return _reranked_search(index, q, k, subset, rerank)
    if subset is None:
        return index.search(q, k)
    kind = kind_of(index)
    if kind in ("hnsw-sq8", "ivf-pq"):
        return _refined_subset_search(index, q, k, subset)
    sel = faiss.IDSelectorBatch(np.ascontiguousarray(subset, dtype=np.int64))
    if kind == "hnsw":
        params = faiss.SearchParametersHNSW(sel=sel, efSearch=max(HNSW_EF_SEARCH, 4 * k))
    else:
        params = faiss.SearchParameters(sel=sel)
    return index.search(q, k, params=params)


def _reranked_search(index, q: np.ndarray, k: int, subset: np.ndarray | None, rerank: Rerank):
    """ivf-pq: the top `ceil(k_factor * k)` candidates by PQ distance (a `subset` filters inside
    the IVF search: `IndexIDMap2` translates the selector to its positions), then their float
    vectors, read once for the union of every query's candidates, scored exactly; best first,
    ties by id, padded with -1 where fewer than k candidates came back."""
    import faiss

    base = _base(index)
    eligible = index.ntotal if subset is None else len(subset)
    want = min(int(np.ceil(k * rerank.k_factor)), eligible)
    params = faiss.SearchParametersIVF(nprobe=int(base.nprobe))
    if subset is not None:
        sel = faiss.IDSelectorBatch(np.ascontiguousarray(subset, dtype=np.int64))
        params.sel = sel
    _, cand = index.search(q, want, params=params)
    have, V = rerank.vectors(np.unique(cand[cand >= 0]))
    S = V @ q.T  # [candidates read, nq]
    D = np.full((len(q), k), -np.inf, dtype=np.float32)
    labels = np.full((len(q), k), -1, dtype=np.int64)
    for i, row in enumerate(cand):
        row = row[row >= 0]
        pos = np.clip(np.searchsorted(have, row), 0, max(len(have) - 1, 0))
        row, pos = (row[have[pos] == row], pos[have[pos] == row]) if len(have) else (row[:0], pos[:0])
        scores = S[pos, i]
        top = np.lexsort((row, -scores))[:k]
        D[i, :len(top)], labels[i, :len(top)] = scores[top], row[top]
    return D, labels


def _refined_subset_search(index, q: np.ndarray, k: int, subset: np.ndarray):
    """A filtered search of a re-ranked index. `IndexIDMap2` does not pass its selector down to
    the base index under `IndexRefine`, so the ids are turned into the index's own positions and
    the selector is given to the base index's search parameters; labels are mapped back."""
    import faiss

    id_map = index_ids(index)
    order = np.argsort(id_map, kind="stable")
    pos = np.searchsorted(id_map[order], subset)
    pos = np.clip(pos, 0, len(order) - 1)
    pos = order[pos][id_map[order][pos] == subset]
    sel = faiss.IDSelectorBatch(np.ascontiguousarray(pos, dtype=np.int64))
    refine = faiss.downcast_index(index.index)
    base = _base(index)
    want = int(k * refine.k_factor)
    if kind_of(index) == "hnsw-sq8":
        base_params = faiss.SearchParametersHNSW(sel=sel, efSearch=max(HNSW_EF_SEARCH, base.hnsw.efSearch, want))
    else:
        base_params = faiss.SearchParametersIVF(sel=sel, nprobe=base.nprobe)
    params = faiss.IndexRefineSearchParameters(k_factor=refine.k_factor, base_index_params=base_params)
    D, internal = refine.search(q, k, params=params)
    labels = np.where(internal >= 0, id_map[np.maximum(internal, 0)], -1)
    return D, labels


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

    def index_is_current(self, version: str, check_file: bool = True, state: dict | None = None) -> bool:
        """True when the index file exists, its checksum is the recorded one and its
        recorded count equals DuckDB's rows (`state`: an `index_state` just read, else read here)."""
        st = self.index_state(version) if state is None else state
        if not st["exists"] or st["checksum"] is None or st["index_count"] != st["rows"]:
            return False
        return not check_file or file_checksum(self.index_path(version)) == st["checksum"]

    def rebuild_index(self, version: str, kind: str | None = None, params: dict | None = None,
                      exact_max: int | None = None) -> dict:
        """Build the version's FAISS index from DuckDB, write it atomically, record checksum, kind
        and parameters. `kind` None: the kind given by hand last time (`embedstore index`), else
        `auto` (by size: `exact` up to `exact_max` vectors, `hnsw` above)."""
        import json

        with self.writer():  # the file is held only to read the vectors and to record the index
            with self.session():  # its reads on one connection
                if kind is None:
                    kind, params = self._recorded_choice(version)
                ids, X = self.image_vectors(version)
            index = build(ids, X, kind=kind, params=params, exact_max=EXACT_MAX if exact_max is None else exact_max)
            del X
            checksum = write_atomic(index, self.index_path(version))
            info = describe(index, params) | {"chosen": "by size" if kind == "auto" else "by hand", "given": params or {}}
            with self.transaction() as con:
                if needs_rerank(index):  # its re-rank reads candidates by id: an index lookup, not a scan
                    con.execute(schema.ID_INDEX)
                con.execute(
                    "UPDATE versions SET index_checksum = ?, index_count = ?, count = ?, index_file = ?, "
                    "index_kind = ?, index_params = ? WHERE version = ?",
                    [checksum, len(ids), len(ids), f"index/{version}.faiss", info["kind"], json.dumps(info), version],
                )
        return {"version": version, "count": len(ids), "kind": info["kind"], "checksum": checksum, "params": info}

    def _recorded_choice(self, version: str) -> tuple[str, dict | None]:
        import json

        raw = self._scalar("SELECT index_params FROM versions WHERE version = ?", [version])
        info = json.loads(raw) if raw else {}
        if info.get("chosen") == "by hand":
            return info["kind"], info.get("given") or None
        return "auto", None

    def reranker(self, version: str) -> Rerank:
        """The re-ranking of the version's ivf-pq index: its recorded k_factor, and the candidates'
        float vectors read from DuckDB (`image_vectors_for`, only those ids)."""
        import json

        raw = self._scalar("SELECT index_params FROM versions WHERE version = ?", [version])
        k_factor = (json.loads(raw) if raw else {}).get("k_factor") or DEFAULTS["ivf-pq"]["k_factor"]
        return Rerank(float(k_factor), lambda ids: self.image_vectors_for(version, ids))

    def load_index(self, version: str):
        """The version's FAISS index, or None when it is missing or stale (count differs).

        The loaded index is kept on this object and reused while the recorded checksum and count
        and the file (inode, size, mtime) stay the same: a server reads a 200 MB file once, not
        per query. Callers only search it."""
        st = self.index_state(version)
        if not st["exists"] or st["index_count"] != st["rows"]:
            return None
        path = self.index_path(version)
        try:
            stat = path.stat()
        except OSError:
            return None
        key = (st["checksum"], st["rows"], stat.st_ino, stat.st_size, stat.st_mtime_ns)
        kept = self._loaded_indexes.get(version)
        if kept is not None and kept[0] == key:
            return kept[1]
        index = load(path)
        if index.ntotal != st["rows"]:
            return None
        self._loaded_indexes[version] = (key, index)
        return index

    def refresh_index(self, version: str, before: dict, encoded: int) -> bool:
        """Bring the version's index in line with DuckDB after a run that encoded `encoded` images
        (`before`: `index_state` when it started); True if the index was written.

        When the index was current before the run and the run only appended, the new vectors are
        added to it (HNSW builds are slow); otherwise it is rebuilt from DuckDB (a run that
        replaced vectors left the index marked stale: `add_image_vectors`).
        """
        after = self.index_state(version)
        if self.index_is_current(version, state=after):
            return False
        appended = after["rows"] - (before["rows"] or 0)
        if (before["exists"] and before["index_count"] == before["rows"] and appended > 0 and appended == encoded
                and before["checksum"] is not None and file_checksum(self.index_path(version)) == before["checksum"]):
            index = load(self.index_path(version))
            have = set(index_ids(index).tolist())
            all_ids, _ = self.image_vectors(version)
            new = np.array([i for i in all_ids.tolist() if i not in have], dtype=np.int64)
            if len(new) == appended and kind_of(index) in ("hnsw", "hnsw-sq8"):
                nid, X = self.image_vectors_for(version, new)
                index.add_with_ids(X, nid)
                checksum = write_atomic(index, self.index_path(version))
                with self.transaction() as con:
                    con.execute("UPDATE versions SET index_checksum = ?, index_count = ? WHERE version = ?",
                                [checksum, index.ntotal, version])
                return True
        self.rebuild_index(version)
        return True
