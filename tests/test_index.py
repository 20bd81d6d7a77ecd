"""The index for millions (issue 16, item 3): the kind chosen by size, `embedstore index` by hand,
compressed kinds re-ranked exactly (ivf-pq from DuckDB's vectors, its file a tenth of exact's),
filtered exact search streamed in chunks, verify on each kind, an older ivf-pq file still served."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from store_helpers import open_store  # noqa: E402

N, D, CLUSTERS = 3000, 32, 20


def _clustered(n: int, d: int, seed: int, centers: np.ndarray | None = None):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((CLUSTERS, d)) if centers is None else centers
    X = (centers[rng.integers(0, CLUSTERS, n)] + 0.35 * rng.standard_normal((n, d))).astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True), centers


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A store of N clustered unit vectors (one version, v1), every 7th image frontal."""
    from embedstore.data.records import ImageRecord

    path = tmp_path_factory.mktemp("index") / "store"
    st = open_store(path)
    recs = [ImageRecord(f"x{i}", None, "s", None, "frontal" if i % 7 == 0 else "lateral", None, None, {})
            for i in range(N)]
    ids = st.upsert_images(recs)
    v = st.create_version(None, {"name": "m", "embed_dim": D}, None, "fp32", "encode")
    X, centers = _clustered(N, D, 0)
    sid = np.array([ids[f"x{i}"] for i in range(N)], dtype=np.int64)
    st.add_image_vectors(v, sid, ["h"] * N, X)
    st.complete_version(v)
    return {"st": st, "path": path, "v": v, "ids": sid, "X": X, "centers": centers}


def _recorded(st, v):
    row = st.versions().filter(version=v).row(0, named=True)
    return row["index_kind"], json.loads(row["index_params"])


def test_the_kind_is_chosen_by_size_and_stated_in_versions(world):
    st, v = world["st"], world["v"]
    assert st.index(v, exact_max=N).kind == "exact"
    assert _recorded(st, v)[0] == "exact" and _recorded(st, v)[1]["chosen"] == "by size"
    built = st.index(v, exact_max=N - 1)  # one vector over the threshold
    assert built.kind == "hnsw" and built.chosen == "by size"
    kind, params = _recorded(st, v)
    assert kind == "hnsw" and params["M"] == 32 and params["efSearch"] >= 16 and params["bytes_per_vector"] > 4 * D
    assert st.index(v).kind == "exact"  # the default threshold (200,000) is far above N


def test_index_command_rebuilds_by_hand_and_later_rebuilds_keep_the_kind(world, capsys):
    from embedstore.cli import main

    st, v = world["st"], world["v"]
    with pytest.raises(SystemExit) as exc:
        main(["index", "--version", v, "--kind", "ivf-pq", "--params", "m=8,k_factor=8",
              "--store", str(world["path"]), "--format", "json"])
    out = json.loads(capsys.readouterr().out)
    assert exc.value.code == 0
    assert out["kind"] == "ivf-pq" and out["chosen"] == "by hand"
    assert out["params"]["m"] == 8 and out["params"]["k_factor"] == 8 and out["params"]["nprobe"] >= 1
    assert _recorded(st, v)[0] == "ivf-pq"
    assert st.rebuild_index(v)["kind"] == "ivf-pq"  # as after an encode that appended: the hand's choice stays
    st.index(v, kind="auto")
    assert _recorded(st, v)[0] == "exact"


@pytest.mark.parametrize("kind", ["hnsw-sq8", "ivf-pq"])
def test_a_compressed_index_re_ranked_exactly_reaches_the_recall_bar(world, kind):
    from embedstore.store import index as idx

    ids, X = world["ids"], world["X"]
    Q, _ = _clustered(200, D, 1, world["centers"])  # new queries from the same clusters
    refined = idx.build(ids, X, kind=kind)
    assert idx.recall_at(refined, ids, X, Q) >= 0.95
    D_, I = idx.search(refined, Q[:5], 10, rerank=idx.Rerank(16, idx.in_memory(ids, X)))  # hnsw-sq8: unused
    exact = X[np.searchsorted(ids, I)] @ Q[:5].T  # re-ranked scores are the exact inner products
    assert np.allclose(D_, np.stack([exact[r, :, r] for r in range(5)]), atol=1e-5)


def test_filtered_exact_search_equals_brute_force_and_reads_in_chunks(world, monkeypatch):
    from embedstore import query as q_mod
    from embedstore.store.storage import Storage

    st, v, ids, X = world["st"]._storage, world["v"], world["ids"], world["X"]
    chunks: list[int] = []
    real = Storage.image_vector_chunks

    def spy(self, version, wanted=None, rows=65_536):
        for cid, CX in real(self, version, wanted, rows=rows):
            chunks.append(len(cid))
            yield cid, CX

    monkeypatch.setattr(Storage, "image_vector_chunks", spy)
    subset = st.matching_ids(v, "view = 'frontal'")
    assert len(subset) == len(range(0, N, 7))
    q = X[11]
    got_ids, got_scores = q_mod.exact_search(st, v, q, 10, subset, chunk_rows=100)
    mask = np.isin(ids, subset)
    s = X[mask] @ q
    order = np.lexsort((ids[mask], -s))[:10]
    assert got_ids.tolist() == ids[mask][order].tolist()
    assert np.allclose(got_scores, s[order], atol=1e-6)
    assert max(chunks) <= 100 and sum(chunks) == len(subset) and len(chunks) == -(-len(subset) // 100)
    chunks.clear()
    all_ids, _ = q_mod.exact_search(st, v, q, 5, None, chunk_rows=1000)
    assert all_ids.tolist() == ids[np.lexsort((ids, -(X @ q)))[:5]].tolist()
    assert chunks == [1000, 1000, 1000]


@pytest.mark.parametrize("kind", ["exact", "hnsw", "hnsw-sq8", "ivf-pq"])
def test_verify_passes_on_each_kind_and_filtered_query_is_right(world, kind):
    st, v, ids, X = world["st"], world["v"], world["ids"], world["X"]
    assert st.index(v, kind=kind).kind == kind
    report = st.verify(v)
    assert report["ok"].all(), report.filter(~report["ok"]).to_dicts()
    hits = st.query(like="x14", k=5, where="view = 'frontal'", version=v)
    assert hits.height == 5 and set(hits["view"].to_list()) == {"frontal"}
    frontal = np.arange(N) % 7 == 0
    frontal[14] = False
    s = X[frontal] @ X[14]
    assert len(set(hits["id"].to_list()) & set(ids[frontal][np.argsort(-s)[:5]].tolist())) >= 4


def _latent(n: int, seed: int, d: int = 512, latent: int = 16, clusters: int = 50):
    """Clustered unit vectors of low intrinsic dimension, as image embeddings are: a mixture of
    `clusters` Gaussians in `latent` dimensions projected to `d`, plus a little noise."""
    fixed = np.random.default_rng(123)
    P, C = fixed.standard_normal((latent, d)) / np.sqrt(latent), 2 * fixed.standard_normal((clusters, latent))
    rng = np.random.default_rng(seed)
    X = (C[rng.integers(0, clusters, n)] + rng.standard_normal((n, latent))) @ P + 0.02 * rng.standard_normal((n, d))
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.slow  # 20,000 x 512: the codebooks' training
def test_ivf_pq_file_is_a_tenth_of_exact_and_its_re_rank_reaches_the_recall_bar(monkeypatch):
    """n = 20,000, d = 512: the file holds the PQ lists and codebooks only (< 10 % of exact's bytes
    a vector); nprobe is tuned on recall after the re-rank, which new queries also reach."""
    from embedstore.store import index as idx

    monkeypatch.setattr(idx, "IVF_TRAIN_MAX", 10_000)  # the codebooks from a sample, as at scale (and faster)
    n = 20_000
    ids, X, Q = np.arange(1, n + 1, dtype=np.int64), _latent(n, 0), _latent(200, 1)
    exact = idx.describe(idx.build(ids, X, kind="exact"))["bytes_per_vector"]
    index = idx.build(ids, X, kind="ivf-pq", params={"nlist": 64})
    info = idx.describe(index, {"nlist": 64})
    assert info["rerank"] == "duckdb" and info["k_factor"] == 16 and info["code_bytes_per_vector"] == 512 // 8 + 8
    assert info["bytes_per_vector"] < 0.10 * exact, (info, exact)
    rerank = idx.Rerank(16, idx.in_memory(ids, X))
    assert idx.recall_at(index, ids, X, Q, rerank=rerank) >= 0.95
    assert idx.recall_at(index, ids, X, Q, rerank=idx.Rerank(1, rerank.vectors)) < 0.9  # the PQ order alone is not


def _spy_fetches(monkeypatch) -> list[np.ndarray]:
    from embedstore.store.storage import Storage

    fetched: list[np.ndarray] = []
    real = Storage.image_vectors_for

    def spy(self, version, ids):
        fetched.append(np.asarray(ids).copy())
        return real(self, version, ids)

    monkeypatch.setattr(Storage, "image_vectors_for", spy)
    return fetched


def test_ivf_pq_query_re_ranks_only_its_candidates_from_duckdb(world, monkeypatch):
    """Through the store: `--like` leaves the image out and the hits are exact's (exact scores),
    one DuckDB read of at most k_factor * k candidate ids (never the version's vectors); a filter
    searches inside the IVF lists, and its candidates are the filter's ids only."""
    st, v, ids, X = world["st"], world["v"], world["ids"], world["X"]
    built = st.index(v, kind="ivf-pq")
    assert built.params["k_factor"] == 16 and built.params["rerank"] == "duckdb"
    assert st.sql("SELECT count(*) AS n FROM duckdb_indexes() WHERE index_name = 'image_embeddings_id'")["n"][0] == 1
    fetched = _spy_fetches(monkeypatch)
    hits = st.query(like="x14", k=10, version=v)
    assert len(fetched) == 1 and 10 < len(fetched[0]) <= 16 * 10 and ids[14] not in fetched[0]
    s = X @ X[14]
    s[14] = -np.inf
    truth = ids[np.lexsort((ids, -s))[:10]]
    assert "x14" not in hits["image_id"].to_list()
    assert len(set(hits["id"].to_list()) & set(truth.tolist())) >= 8
    assert np.allclose(hits["score"].to_numpy(), s[np.searchsorted(ids, hits["id"].to_numpy())], atol=1e-5)
    fetched.clear()
    frontal = ids[np.arange(N) % 7 == 0]
    hits = st.query(like="x14", k=5, where="view = 'frontal'", version=v)
    assert hits.height == 5 and set(hits["view"].to_list()) == {"frontal"} and ids[14] not in hits["id"].to_list()
    assert len(fetched) == 1 and len(fetched[0]) <= 16 * 5 and np.isin(fetched[0], frontal).all()
    st.sql("DROP INDEX image_embeddings_id", write=True)  # a store without the id index: the same hits, by a scan
    assert st.query(like="x14", k=5, where="view = 'frontal'", version=v)["id"].to_list() == hits["id"].to_list()


def test_verify_catches_a_vector_edited_in_duckdb_under_ivf_pq(world):
    st, v = world["st"], world["v"]
    st.index(v, kind="ivf-pq")
    assert st.verify(v)["ok"].all()
    edit = "UPDATE image_embeddings SET vector = list_reverse(vector) WHERE version = 'v1' AND id = {}"
    st.sql(edit.format(int(world["ids"][3])), write=True)
    try:
        report = st.verify(v)
        bad = report.filter(~report["ok"])
        assert bad["check"].to_list() == ["index vectors"] and str(world["ids"][3]) in bad["detail"][0], bad.to_dicts()
    finally:
        st.sql(edit.format(int(world["ids"][3])), write=True)  # reversed twice: as it was


def test_an_older_ivf_pq_file_with_its_float_copy_is_still_searched(world):
    """A store whose ivf-pq index was written before (IndexRefineFlat over IVF-PQ, the re-rank
    vectors in the file) keeps answering and verifying; no DuckDB re-rank is asked of it."""
    import faiss

    from embedstore.store import index as idx

    st, v, ids, X = world["st"], world["v"], world["ids"], world["X"]
    st.index(v, kind="exact")
    inner = faiss.index_factory(D, "IVF76,PQ4", faiss.METRIC_INNER_PRODUCT)
    faiss.downcast_index(inner).do_polysemous_training = False
    refine = faiss.IndexRefineFlat(inner)
    refine.k_factor = 16.0
    old = faiss.IndexIDMap2(refine)
    old.train(X)
    old.add_with_ids(X, ids)
    faiss.downcast_index(inner).nprobe = 16
    assert idx.kind_of(old) == "ivf-pq" and not idx.needs_rerank(old)
    checksum = idx.write_atomic(old, st.index_path(v))
    st.sql(f"UPDATE versions SET index_checksum = '{checksum}', index_kind = 'ivf-pq' WHERE version = '{v}'", write=True)
    assert st.verify(v)["ok"].all()
    hits = st.query(like="x14", k=5, where="view = 'frontal'", version=v)
    assert hits.height == 5 and set(hits["view"].to_list()) == {"frontal"} and "x14" not in hits["image_id"].to_list()
    assert idx.describe(st._storage.load_index(v))["rerank"] == "index file"
    st.index(v, kind="ivf-pq")  # rebuilt: the new layout
    assert not isinstance(faiss.downcast_index(st._storage.load_index(v).index), faiss.IndexRefine)


def test_one_query_searches_on_its_own_thread_and_leaves_the_setting_as_it_was(world, monkeypatch):
    """FAISS spreads a search over its queries: one query runs on one OpenMP thread (a second
    only waits), and the thread's own setting comes back after, for the next build or batch."""
    import faiss

    from embedstore.store import index as idx

    st, v = world["st"], world["v"]
    index = st.load_index(v) or (st.rebuild_index(v) and st.load_index(v))
    rerank = st.reranker(v) if idx.needs_rerank(index) else None  # the kind earlier tests left
    during = []
    real = idx._search
    monkeypatch.setattr(idx, "_search", lambda *a: during.append(faiss.omp_get_max_threads()) or real(*a))
    before = faiss.omp_get_max_threads()
    _, ids = idx.search(index, world["X"][0], 5, rerank=rerank)
    assert ids[0][0] == world["ids"][0] and faiss.omp_get_max_threads() == before
    _, ids = idx.search(index, world["X"][:3], 5, rerank=rerank)  # a batch keeps the threads it had
    assert ids.shape == (3, 5) and during == [1, before]
