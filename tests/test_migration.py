"""Stores written by an older embedstore are migrated in place when opened; newer ones are refused.

Layout 1 is the store as embedstore wrote it before frozen splits, evaluable findings and typed
versions (its DDL is kept here, as that version of embedstore wrote it, to build such a store).
"""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pytest

LAYOUT_1 = """
CREATE SEQUENCE IF NOT EXISTS images_id_seq START 1;
CREATE TABLE IF NOT EXISTS images (
    id BIGINT PRIMARY KEY,
    image_id TEXT UNIQUE NOT NULL,
    path TEXT, content_hash TEXT, study_id TEXT, patient_id TEXT, view TEXT, projection TEXT,
    split TEXT, source TEXT, findings TEXT, impression TEXT, width INTEGER, height INTEGER
);
CREATE TABLE IF NOT EXISTS labels (id BIGINT NOT NULL, finding TEXT NOT NULL, value TINYINT,
    PRIMARY KEY (id, finding));
CREATE TABLE IF NOT EXISTS boxes (
    image_id TEXT, finding TEXT, x_min DOUBLE, y_min DOUBLE, x_max DOUBLE, y_max DOUBLE,
    reader TEXT, width INTEGER, height INTEGER
);
CREATE TABLE IF NOT EXISTS models (name TEXT PRIMARY KEY, record JSON);
CREATE TABLE IF NOT EXISTS versions (
    version TEXT PRIMARY KEY, parent TEXT, model_name TEXT, model_record JSON, record_hash TEXT,
    preprocess JSON, dtype TEXT, normalized BOOLEAN, dim INTEGER, logit_scale DOUBLE,
    count BIGINT DEFAULT 0, index_file TEXT, index_checksum TEXT, index_count BIGINT,
    code_version TEXT, created TIMESTAMP, kind TEXT
);
CREATE TABLE IF NOT EXISTS image_embeddings (
    version TEXT NOT NULL, id BIGINT NOT NULL, content_hash TEXT, vector FLOAT[] NOT NULL,
    PRIMARY KEY (version, id)
);
CREATE TABLE IF NOT EXISTS prompts (
    finding TEXT NOT NULL, polarity TEXT NOT NULL, template TEXT, text TEXT NOT NULL,
    text_hash TEXT NOT NULL, PRIMARY KEY (finding, polarity, text)
);
CREATE TABLE IF NOT EXISTS text_embeddings (
    version TEXT NOT NULL, text_hash TEXT NOT NULL, text TEXT, vector FLOAT[] NOT NULL,
    PRIMARY KEY (version, text_hash)
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, kind TEXT, version TEXT, config JSON, config_hash TEXT,
    code_version TEXT, started TIMESTAMP, duration_s DOUBLE
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT, finding TEXT, metric TEXT, value DOUBLE, lo DOUBLE, hi DOUBLE
);
CREATE TABLE IF NOT EXISTS image_scores (run_id TEXT, id BIGINT, finding TEXT, score DOUBLE, pred DOUBLE);
CREATE TABLE IF NOT EXISTS projections (run_id TEXT, method TEXT, id BIGINT, x DOUBLE, y DOUBLE);
CREATE TABLE IF NOT EXISTS probe_weights (run_id TEXT, finding TEXT, intercept DOUBLE, coef FLOAT[]);
CREATE TABLE IF NOT EXISTS cooccurrence (run_id TEXT, predicted TEXT, present TEXT, rate DOUBLE, n BIGINT);
CREATE TABLE IF NOT EXISTS errors (
    version TEXT, image_id TEXT, path TEXT, stage TEXT, reason TEXT, time TIMESTAMP
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""


def _old_store(path):
    """A layout-1 store: one encoded version and a fine-tuned child whose lineage sits in its model record."""
    path.mkdir(parents=True)
    con = duckdb.connect(str(path / "embedstore.duckdb"))
    con.execute(LAYOUT_1)
    con.execute("INSERT INTO images (id, image_id, path, study_id, patient_id, split) VALUES "
                "(1, 'a', NULL, 's1', 'p1', 'train'), (2, 'b', NULL, 's2', 'p2', 'test')")
    con.execute("INSERT INTO labels VALUES (1, 'Cardiomegaly', 1), (2, 'Cardiomegaly', 0)")
    base = {"name": "phantom-clip", "embed_dim": 2, "logit_scale": 100.0}
    tuned = {**base, "finetune": {"parent": "v1", "key": "k123", "checkpoint": "checkpoints/v2", "head": None}}
    for version, parent, kind, record in (("v1", None, "encode", base), ("v2", "v1", "finetune", tuned)):
        con.execute("INSERT INTO versions (version, parent, model_name, model_record, dtype, dim, kind, created, "
                    "index_file) VALUES (?, ?, 'phantom-clip', ?, 'fp32', 2, ?, now(), ?)",
                    [version, parent, json.dumps(record), kind, f"index/{version}.faiss"])
        con.execute("INSERT INTO image_embeddings VALUES (?, 1, 'h1', [1.0, 0.0]), (?, 2, 'h2', [0.0, 1.0])",
                    [version, version])
    con.close()
    return path


def test_a_layout_1_store_is_migrated_in_place_when_opened(tmp_path):
    from embedstore.store import Storage
    from embedstore.store.schema import SCHEMA_VERSION

    path = _old_store(tmp_path / "old")
    st = Storage(path)
    tuned = st.version("v2")  # a read: the store is migrated first, under the writer lock
    assert tuned.parent == "v1" and tuned.checkpoint == path / "checkpoints" / "v2"  # lineage now a column
    assert st.finetuned_with_key("k123", "finetune") == [("v2", False)]
    # layout 1's "finished" was a written finetune run: v2 has none, so it is not complete
    assert st.versions()["status"].to_list() == ["complete", "building"] and st.resolve_version(None) == "v1"
    with duckdb.connect(str(path / "embedstore.duckdb"), read_only=True) as con:
        assert con.sql("SELECT value FROM meta WHERE key = 'schema_version'").fetchall() == [(str(SCHEMA_VERSION),)]
        tables = {r[0] for r in con.sql("SELECT table_name FROM information_schema.tables").fetchall()}
    assert {"splits", "fit_images", "run_findings", "calibration"} <= tables
    ids, X = st.image_vectors("v1")  # the old rows are all there
    np.testing.assert_array_equal(ids, [1, 2])
    np.testing.assert_allclose(X, [[1, 0], [0, 1]])
    assert st.image_groups()["split"].to_list() == ["train", "test"]


def test_a_migrated_store_is_usable_through_the_api(tmp_path):
    import embedstore

    st = embedstore.open(_old_store(tmp_path / "old"))
    assert st.versions()["version"].to_list() == ["v1", "v2"]
    assert st.sql("SELECT count(*) AS n FROM labels")["n"][0] == 2


def test_a_store_from_a_newer_embedstore_is_refused(tmp_path):
    from embedstore.errors import StoreError
    from embedstore.store import Storage

    path = _old_store(tmp_path / "new")
    with duckdb.connect(str(path / "embedstore.duckdb")) as con:
        con.execute("INSERT INTO meta VALUES ('schema_version', '99')")
    with pytest.raises(StoreError, match=r"newer embedstore \(store layout 99.*upgrade embedstore"):
        Storage(path).versions()


def test_layout_3_gives_old_views_their_source_and_adds_the_quality_tables(tmp_path):
    from embedstore.store import Storage

    path = _old_store(tmp_path / "old")
    with duckdb.connect(str(path / "embedstore.duckdb")) as con:
        con.execute("UPDATE images SET view = 'frontal' WHERE id = 1")  # a view the reader found; b has none
    meta = Storage(path).image_meta()
    assert meta.select("image_id", "view_source", "inferred_view").rows() == [("a", "dataset", None), ("b", None, None)]
    with duckdb.connect(str(path / "embedstore.duckdb"), read_only=True) as con:
        tables = {r[0] for r in con.sql("SELECT table_name FROM information_schema.tables").fetchall()}
    assert {"duplicate_pairs", "duplicate_groups", "label_issues"} <= tables
