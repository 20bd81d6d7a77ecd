"""`export` / `import` (issue 16, item 4): a version's vectors as Parquet that polars and DuckDB read
directly, and those vectors taken back as a new version (index built, verify passes)."""

from __future__ import annotations

import json
import shutil

import duckdb
import numpy as np
import polars as pl
import pytest

from store_helpers import open_store


@pytest.fixture
def st(small_phantoms, tmp_path):
    shutil.copytree(small_phantoms / "store", tmp_path / "store")
    return open_store(tmp_path / "store")


def test_export_writes_parquet_that_polars_and_duckdb_read(st, tmp_path):
    got = st.export(tmp_path / "out", version="v1")
    ids, X = st.image_vectors("v1")
    assert got.rows == len(ids) > 0 and got.dim == X.shape[1]
    frame = pl.read_parquet(tmp_path / "out" / "vectors.parquet")
    assert frame.columns == ["id", "image_id", "split", "labels", "vector"]
    assert frame["id"].to_list() == ids.tolist()
    np.testing.assert_array_equal(np.asarray(frame["vector"].to_list(), dtype=np.float32), X)
    stored = st.sql("SELECT i.image_id, i.split FROM images i JOIN image_embeddings e ON e.id = i.id "
                    "WHERE e.version = 'v1' ORDER BY i.id")
    assert frame["image_id"].to_list() == stored["image_id"].to_list()
    assert frame["split"].to_list() == stored["split"].to_list()
    positives = st.sql("SELECT i.image_id, l.finding FROM labels l JOIN images i ON i.id = l.id "
                       "WHERE l.value = 1 ORDER BY ALL").rows()
    exported = sorted((r["image_id"], lab["finding"]) for r in frame.iter_rows(named=True)
                      for lab in r["labels"] if lab["value"] == 1)
    assert exported == positives and positives
    con = duckdb.connect()
    try:
        n, dim = con.sql(f"SELECT count(*), max(len(vector)) FROM '{tmp_path / 'out' / 'vectors.parquet'}'").fetchall()[0]
    finally:
        con.close()
    assert (n, dim) == (len(ids), X.shape[1])
    record = json.loads((tmp_path / "out" / "model.json").read_text())
    assert record == st.version("v1").model_record


def test_import_takes_an_export_back_as_a_new_version(st, tmp_path):
    st.export(tmp_path / "out", version="v1")
    frame = pl.read_parquet(tmp_path / "out" / "vectors.parquet").select("image_id", "vector")
    scaled = frame.with_columns(pl.col("vector").list.eval(pl.element() * 3.0))  # made elsewhere, not unit norm
    scaled.write_parquet(tmp_path / "mine.parquet")
    got = st.import_(tmp_path / "mine.parquet", model_record=tmp_path / "out" / "model.json")
    assert got.version == "v2" and got.imported == frame.height == got.index_count
    assert got.normalized == frame.height
    versions = st.versions()
    row = versions.filter(versions["version"] == "v2").row(0, named=True)
    assert (row["status"], row["kind"], row["images"]) == ("complete", "import", frame.height)
    ids1, X1 = st.image_vectors("v1")
    ids2, X2 = st.image_vectors("v2")
    assert ids2.tolist() == ids1.tolist()
    np.testing.assert_allclose(X2, X1, atol=1e-6)
    report = st.verify("v2")
    assert report["ok"].all(), report.filter(~report["ok"])
    like = st.sql("SELECT image_id FROM images ORDER BY id LIMIT 1")["image_id"][0]
    assert st.query(like=like, k=3, version="v2")["image_id"].to_list() == \
        st.query(like=like, k=3, version="v1")["image_id"].to_list()
    again = st.import_(tmp_path / "mine.parquet", model_record=tmp_path / "out" / "model.json")
    assert again.version == "v2"  # the same record finishes or refreshes the same version
    assert st.versions().height == 2
