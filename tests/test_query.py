"""query: filtered search equals brute force, stored texts need no torch, new texts are cached."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from store_helpers import build_store  # noqa: E402


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_store(tmp_path_factory.mktemp("q"), n=40)


def _brute(st, q, k, keep):
    """Exact top-k by numpy over the rows selected by a polars mask: independent of query.py."""
    ids, X = st.image_vectors("v1")
    meta = st.images().join(pl.DataFrame({"id": ids}), on="id", how="inner").sort("id")
    mask = keep(meta).to_numpy()
    s = X[mask] @ q
    sel_ids = ids[mask]
    order = np.lexsort((sel_ids, -s))[:k]
    return sel_ids[order].tolist(), s[order]


@pytest.mark.parametrize("where,keep", [
    (None, lambda m: pl.Series([True] * m.height)),
    ("view = 'frontal'", lambda m: m["view"] == "frontal"),
    ("view = 'lateral' AND split = 'test'", lambda m: (m["view"] == "lateral") & (m["split"] == "test")),
    ("Cardiomegaly = 1", lambda m: pl.Series([int(i[2:]) % 3 == 0 for i in m["image_id"]])),
])
@pytest.mark.parametrize("k", [3, 10, 100])
def test_where_equals_brute_force(built, where, keep, k):
    st, _ = built
    q = st.text_vectors("v1")[1][0]  # a stored prompt's vector
    from embedstore.query import search

    ids, scores = search(st, "v1", q, k, where=where)
    want_ids, want_scores = _brute(st, q, k, keep)
    assert len(ids) == len(want_ids) == min(k, int(keep(st.images()).sum()))
    assert ids.tolist() == want_ids
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)


def test_like_excludes_itself_and_describes_hits(built):
    st, _ = built
    out = st.query(like="IM000", k=5, where="view = 'frontal'")
    assert out.height == 5 and "IM000" not in out["image_id"].to_list()
    assert set(out["view"]) == {"frontal"}
    assert out["score"].to_list() == sorted(out["score"].to_list(), reverse=True)
    cardio = out.filter(pl.col("image_id").str.slice(2).cast(pl.Int64) % 3 == 0)
    assert all("Cardiomegaly" in s for s in cardio["labels"])


def test_finding_name_is_the_mean_of_its_positive_prompts(built):
    st, _ = built
    df, M = st.text_vectors("v1")
    pos = M[(df["finding"] == "Cardiomegaly").to_numpy() & (df["polarity"] == "positive").to_numpy()]
    v = pos.mean(axis=0)
    v /= np.linalg.norm(v)
    from embedstore.query import text_vector

    np.testing.assert_allclose(text_vector(st, "v1", "cardiomegaly"), v, atol=1e-6)
    stored = df.filter(pl.col("polarity") == "negative").row(0, named=True)
    np.testing.assert_array_equal(text_vector(st, "v1", stored["text"]), M[df["text"].to_list().index(stored["text"])])


def test_new_text_loads_the_model_once_then_is_cached(built, monkeypatch):
    st, _ = built
    import embedstore.query as Q

    calls, load = [], Q.load_version_model  # the registry's loader, counted
    monkeypatch.setattr(Q, "load_version_model", lambda s, v: calls.append(v) or load(s, v))
    first = st.query("a brand new sentence about hearts", k=4)
    monkeypatch.setattr(Q, "load_version_model", lambda s, v: pytest.fail("model loaded for a cached text"))
    again = st.query("A brand new   sentence about hearts", k=4)
    assert calls == ["v1"] and first.equals(again)


def test_stored_text_query_imports_no_torch(built):
    from cli_process import run_in_fresh_process

    st, _ = built
    (result,) = run_in_fresh_process([["query", "Cardiomegaly", "-k", "3", "--format", "json", "--store", str(st.path)]],
                                     heavy=("torch", "open_clip", "transformers", "sklearn", "pandas"))
    assert result["code"] == 0 and result["loaded"] == [], result["err"]
    hits = json.loads(result["out"])
    assert len(hits) == 3 and {"score", "image_id", "path", "view", "labels"} <= set(hits[0])


def test_hnsw_filtered_search_returns_k(tmp_path):
    from embedstore.query import search
    from embedstore.store import Storage

    from embedstore.data.records import ImageRecord

    st = Storage(tmp_path / "s")
    n, d = 3000, 16
    recs = [ImageRecord(f"x{i}", None, "s", None, "frontal" if i % 100 == 0 else "lateral", None, None, {}) for i in range(n)]
    ids = st.upsert_images(recs)
    v = st.create_version(None, {"name": "m", "embed_dim": d}, None, "fp32", "encode")
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((20, d))
    X = (centers[rng.integers(0, 20, n)] + 0.3 * rng.standard_normal((n, d))).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    sid = np.array([ids[f"x{i}"] for i in range(n)])
    st.add_image_vectors(v, sid, ["h"] * n, X)
    assert st.rebuild_index(v, kind="hnsw")["kind"] == "hnsw"
    q = X[7]
    for where, mask in [("view = 'frontal'", np.arange(n) % 100 == 0), (None, np.ones(n, bool))]:
        got, _ = search(st, v, q, 10, where=where)
        s = X[mask] @ q
        want = sid[mask][np.argsort(-s)[:10]]
        assert len(got) == 10
        assert len(set(got.tolist()) & set(want.tolist())) >= 9


def test_stale_index_is_rebuilt_before_search(tmp_path):
    st, _ = build_store(tmp_path, n=8)
    from embedstore.data.records import ImageRecord

    new = st.upsert_images([ImageRecord("late", None, "s", None, "frontal", None, None, {})])["late"]
    q = st.text_vectors("v1")[1][0]
    st.add_image_vectors("v1", np.array([new]), ["h"], q[None, :])  # DuckDB ahead of the index
    out = st.query(like="IM000", k=20)
    assert "late" in out["image_id"].to_list() and out.height == 8
    assert st.verify()["ok"].all()


def test_verify_catches_tampered_index_and_deleted_row(tmp_path, capsys):
    st, _ = build_store(tmp_path, n=8)
    assert st.verify()["ok"].all()
    path = st.index_path("v1")
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    bad = st.verify().filter(~pl.col("ok"))
    assert bad["check"][0] == "index checksum"
    st.rebuild_index("v1")
    st.sql("DELETE FROM image_embeddings WHERE id = (SELECT min(id) FROM image_embeddings)", write=True)
    bad = st.verify().filter(~pl.col("ok"))
    assert bad["check"].to_list()[:2] == ["rows", "index ids"]
    from embedstore.errors import StoreError

    with pytest.raises(StoreError, match="verify failed: version v1: rows"):
        st.verify(strict=True)
    from embedstore.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:  # the CLI's own error boundary, in this process
        main(["verify", "--store", str(st.path)])
    err = capsys.readouterr().err
    assert exc.value.code != 0 and "error: verify failed: version v1: rows" in err
    assert "Traceback" not in err


def test_cli_image_file_query_ranks_by_the_files_vector(built, tmp_path, capsys):
    """`query --image PATH`: a stored image's own file comes first, at cosine 1, followed by what
    `--like` finds for it; a file the store has never seen is encoded by the version's model."""
    from PIL import Image

    from embedstore.cli import main
    from embedstore.data.images import model_input
    from embedstore.models import load_model

    st, ds = built

    def image_query(path) -> list[dict]:
        with pytest.raises(SystemExit) as exc:
            main(["query", "--image", str(path), "-k", "5", "--format", "json", "--store", str(st.path)])
        assert exc.value.code == 0
        return json.loads(capsys.readouterr().out)

    hits = image_query(ds.records[5].path)
    assert hits[0]["image_id"] == "IM005" and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert [h["image_id"] for h in hits[1:]] == st.query(like="IM005", k=4)["image_id"].to_list()
    outside = tmp_path / "outside.png"
    Image.fromarray(np.random.default_rng(9).integers(0, 256, (30, 26), dtype=np.uint8), "L").save(outside)
    loaded = load_model(st.version_row("v1")["model_name"])
    v = loaded.encode_images(model_input(outside, loaded.preprocess)[None])[0]
    ids, X = st.image_vectors("v1")
    by_id = dict(zip(st.images()["id"].to_list(), st.images()["image_id"].to_list()))
    want = np.argsort(-(X @ v))[:5]
    hits = image_query(outside)
    assert [h["image_id"] for h in hits] == [by_id[int(i)] for i in ids[want]]
    np.testing.assert_allclose([h["score"] for h in hits], (X @ v)[want], atol=1e-4)
