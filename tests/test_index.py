"""The index for millions (issue 16, item 3): the kind chosen by size, `embedstore index` by hand,
compressed kinds re-ranked exactly, filtered exact search streamed in chunks, verify on each kind."""

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
    D_, I = refined.search(Q[:5], 10)
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
