"""The store layer: ids, labels, vectors, runs, versions, locking, plain-DuckDB access."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import polars as pl
import pytest

from embedstore.data.records import ImageRecord
from embedstore.errors import StoreBusy, StoreError
from embedstore.store import Storage


def _records(n=6):
    return [ImageRecord(f"im{i}", f"/x/{i}.png", f"s{i}", f"p{i}", "frontal" if i % 2 else "lateral", "PA",
                        "train", {"A": 1, "B": 0} if i % 2 else {"A": -1}) for i in range(n)]


def _unit(n, d, seed=0):
    X = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


@pytest.fixture
def st(tmp_path):
    return Storage(tmp_path / "s")


def test_store_path_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDSTORE_STORE", str(tmp_path / "env"))
    assert Storage().path == (tmp_path / "env").resolve()
    assert Storage(tmp_path / "given").path == (tmp_path / "given").resolve()
    monkeypatch.delenv("EMBEDSTORE_STORE")
    monkeypatch.chdir(tmp_path)
    assert Storage().path == (tmp_path / ".embedstore").resolve()


def test_ids_are_stable_and_labels_replaced(st):
    ids = st.upsert_images(_records())
    again = st.upsert_images(_records()[2:] + [ImageRecord("new", None, "s", None, None, None, None, {"C": 1})])
    assert {k: again[k] for k in ids} == ids and again["new"] not in ids.values()
    order = np.array([ids["im0"], ids["im1"], ids["im2"]])
    L = st.label_matrix(order, ["A", "B", "C"])
    expected = np.array([[-1, np.nan, np.nan], [1, 0, np.nan], [-1, np.nan, np.nan]], dtype=np.float32)
    np.testing.assert_array_equal(L, expected)
    assert st.findings() == ["A", "B", "C"]
    assert st.images("view = 'frontal'")["image_id"].to_list() == ["im1", "im3", "im5"]
    with st.connect() as con:
        wide = con.sql("SELECT image_id, A FROM labels_wide WHERE image_id = 'im1'").fetchall()
    assert wide == [("im1", 1)]


def test_vectors_round_trip_and_versions(st):
    ids = st.upsert_images(_records())
    v1 = st.create_version(None, {"name": "m", "embed_dim": 8, "logit_scale": 50.0}, {"size": 8}, "fp32", "encode")
    v2 = st.create_version(v1, {"name": "m-ft", "embed_dim": 8}, None, "fp32", "finetune")
    assert (v1, v2) == ("v1", "v2")
    st.complete_version(v1)
    st.complete_version(v2)
    X = _unit(6, 8)
    sid = np.array([ids[f"im{i}"] for i in range(6)])[::-1]
    st.add_image_vectors(v1, sid, [f"h{i}" for i in range(6)], X)
    got_ids, got = st.image_vectors(v1)
    order = np.argsort(sid)
    np.testing.assert_array_equal(got_ids, sid[order])
    np.testing.assert_array_equal(got, X[order])
    # re-adding an id replaces its vector, never duplicates it
    st.add_image_vectors(v1, sid[:1], ["h-new"], X[1:2])
    got_ids2, got2 = st.image_vectors(v1)
    assert len(got_ids2) == 6 and np.array_equal(got2[got_ids2 == sid[0]][0], X[1])
    info = st.version(v2)
    assert info.parent == v1 and info.kind == "finetune" and info.model_record["name"] == "m-ft"
    assert st.version(None).id == v2
    assert st.version(v1).logit_scale == 50.0
    with pytest.raises(StoreError, match="known: v1, v2"):
        st.resolve_version("v9")
    vs = st.versions()
    assert vs["version"].to_list() == ["v1", "v2"] and vs["images"].to_list() == [6, 0]


def test_runs_are_written_in_one_transaction(st):
    st.upsert_images(_records())
    assert st.create_version(None, {"name": "m", "embed_dim": 8}, None, "fp32", "encode") == "v1"
    metrics = pl.DataFrame({"finding": ["A", None], "metric": ["auc", "macro_f1"], "value": [0.7, 0.4]})
    scores = pl.DataFrame({"id": [1, 2], "finding": ["A", "A"], "score": [0.1, 0.9], "pred": [0.0, 1.0]})
    rid = st.write_run("probe", "v1", {"C": 1.0, "seed": 0}, 0.0, 2.5, {"metrics": metrics, "image_scores": scores})
    assert st.find_run("probe", "v1", {"seed": 0, "C": 1.0}) == rid  # key order does not matter
    assert st.find_run("probe", "v1", {"seed": 1, "C": 1.0}) is None
    with st.connect() as con:
        assert con.sql("SELECT count(*) FROM metrics WHERE run_id = ?", params=[rid]).fetchall() == [(2,)]
    # a bad table in the same call leaves nothing behind
    with pytest.raises(StoreError):
        st.write_run("probe", "v1", {"x": 1}, 0.0, 1.0, {"metrics": metrics, "nope": metrics})
    assert st.runs().height == 1
    st.delete_run(rid)
    with st.connect() as con:
        assert con.sql("SELECT count(*) FROM metrics").fetchall() == [(0,)]
        assert con.sql("SELECT count(*) FROM image_scores").fetchall() == [(0,)]
    assert st.runs().height == 0


def test_text_vectors_and_boxes(st):
    st.upsert_images(_records())
    v = st.create_version(None, {"name": "m", "embed_dim": 4}, None, "fp32", "encode")
    prompts = pl.DataFrame({"finding": ["A", "A"], "polarity": ["positive", "negative"], "template": ["", ""],
                            "text": ["a is present", "no a"]})
    st.upsert_prompts(prompts)
    M = _unit(2, 4)
    st.add_text_vectors(v, prompts, M)
    df, got = st.text_vectors(v)
    assert df["polarity"].to_list() == ["positive", "negative"]
    np.testing.assert_array_equal(got, M)
    np.testing.assert_array_equal(st.stored_text_vector(v, "  A is   PRESENT "), M[0])
    boxes = pl.DataFrame({"image_id": ["im1", "im1"], "finding": ["A", "A"], "x_min": [1.0, 2.0], "y_min": [1.0, 2.0],
                          "x_max": [5.0, 6.0], "y_max": [5.0, 6.0], "reader": ["r1", "r2"], "width": [10, 10],
                          "height": [10, 10]})
    st.write_boxes(boxes)
    st.write_boxes(boxes.head(1))  # replaces the image's boxes
    assert st.boxes().height == 1


def test_second_writer_and_reader_get_store_busy(st, tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDSTORE_BUSY_TIMEOUT", "0.5")  # a reader retries this long before "store busy"
    st.upsert_images(_records())
    holder = textwrap.dedent(f"""
        import sys, time
        from embedstore.store import Storage
        st = Storage({str(st.path)!r})
        with st.connect(write=True):
            print("held", flush=True)
            time.sleep(30)
    """)
    proc = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(StoreBusy, match=f"store busy, held by PID {proc.pid}"):
            with st.connect(write=True):
                pass
        with pytest.raises(StoreBusy, match=f"held by PID {proc.pid}"):
            st.versions()
    finally:
        proc.kill()
        proc.wait()
    assert st.versions().height == 0  # the lock died with its holder


def test_plain_duckdb_reads_the_file(st):
    import duckdb

    st.upsert_images(_records())
    con = duckdb.connect(str(st.db_path), read_only=True)
    try:
        assert con.sql("SELECT count(*) FROM images WHERE view = 'frontal'").fetchall() == [(3,)]
        tables = {r[0] for r in con.sql("SELECT table_name FROM information_schema.tables").fetchall()}
    finally:
        con.close()
    for t in ["images", "labels", "boxes", "models", "versions", "image_embeddings", "prompts", "text_embeddings",
              "runs", "metrics", "image_scores", "projections", "errors", "labels_wide"]:
        assert t in tables
