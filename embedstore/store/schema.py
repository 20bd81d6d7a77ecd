"""The store's DuckDB schema: every table in docs/architecture.md, defined once, and its migrations.

Vectors are `FLOAT[]` (a list) rather than `FLOAT[d]` because one table holds every
version and versions may differ in dimension; `versions.dim` records each one's width.

A store records its layout in `meta.schema_version`. A store written by an older embedstore is
migrated in place when it is opened (`migrate`); one written by a newer embedstore is refused.
Layout 1 (no `schema_version`) is the store before frozen splits and typed versions; layout 2
the store before data-set quality (views' sources and inferred views on `images`, duplicate
pairs and groups, label-issue candidates); layout 3 the store before index kinds were recorded.
"""

from __future__ import annotations

from embedstore.errors import StoreError

SCHEMA_VERSION = 4

TABLES = """
CREATE SEQUENCE IF NOT EXISTS images_id_seq START 1;
CREATE TABLE IF NOT EXISTS images (
    id BIGINT PRIMARY KEY,
    image_id TEXT UNIQUE NOT NULL,
    path TEXT, content_hash TEXT, study_id TEXT, patient_id TEXT, view TEXT, projection TEXT,
    split TEXT, source TEXT, findings TEXT, impression TEXT, width INTEGER, height INTEGER,
    view_source TEXT, inferred_view TEXT, inferred_view_confidence DOUBLE
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
    code_version TEXT, created TIMESTAMP, kind TEXT, checkpoint TEXT, finetune_key TEXT,
    status TEXT DEFAULT 'building', index_kind TEXT, index_params JSON
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
CREATE TABLE IF NOT EXISTS splits (
    id BIGINT PRIMARY KEY, group_id TEXT NOT NULL, split TEXT NOT NULL, method TEXT NOT NULL,
    seed INTEGER, fractions TEXT, assigned TIMESTAMP
);
CREATE TABLE IF NOT EXISTS fit_images (version TEXT NOT NULL, id BIGINT NOT NULL, role TEXT NOT NULL,
    PRIMARY KEY (version, id));
CREATE TABLE IF NOT EXISTS run_findings (
    run_id TEXT, finding TEXT, evaluable BOOLEAN, reason TEXT, positives BIGINT, positive_groups BIGINT, n BIGINT
);
CREATE TABLE IF NOT EXISTS calibration (
    run_id TEXT, finding TEXT, bin INTEGER, lower DOUBLE, upper DOUBLE, mean_predicted DOUBLE, observed DOUBLE, n BIGINT
);
CREATE TABLE IF NOT EXISTS duplicate_pairs (run_id TEXT, id_a BIGINT, id_b BIGINT, similarity DOUBLE);
CREATE TABLE IF NOT EXISTS duplicate_groups (run_id TEXT, group_no INTEGER, id BIGINT);
CREATE TABLE IF NOT EXISTS label_issues (
    run_id TEXT, id BIGINT, finding TEXT, given TINYINT, probability DOUBLE, quality DOUBLE, flagged BOOLEAN,
    image_rank INTEGER, image_quality DOUBLE, fold INTEGER
);
"""

# Friendly views for SQL. `labels_wide` is rebuilt by `labels_wide_sql` whenever labels change,
# because DuckDB views cannot PIVOT on values discovered at query time.
VIEWS = """
CREATE OR REPLACE VIEW embeddings AS
    SELECT e.version, i.*, e.vector FROM image_embeddings e JOIN images i USING (id);
CREATE OR REPLACE VIEW positives AS
    SELECT i.image_id, l.* FROM labels l JOIN images i USING (id) WHERE l.value = 1;
CREATE OR REPLACE VIEW version_counts AS
    SELECT v.version, v.parent, v.kind, v.model_name, v.dim,
           (SELECT count(*) FROM image_embeddings e WHERE e.version = v.version) AS images,
           (SELECT count(*) FROM text_embeddings t WHERE t.version = v.version) AS texts,
           (SELECT count(*) FROM errors r WHERE r.version = v.version) AS errors,
           v.created
    FROM versions v;
"""


# An index on image_embeddings.id alone (the primary key's (version, id) cannot serve an `id IN
# (...)` lookup): an ivf-pq index's re-rank reads its candidates' vectors through it instead of
# scanning every vector. Created when an ivf-pq index is built; not part of the layout (a store
# without it gives the same answers, by a scan), so no layout version is needed for it.
ID_INDEX = "CREATE INDEX IF NOT EXISTS image_embeddings_id ON image_embeddings (id)"


def stored_version(con) -> int:
    """The layout a store's file holds: 0 for an empty file, 1 before versions were recorded."""
    tables = {r[0] for r in con.sql("SELECT table_name FROM information_schema.tables").fetchall()}
    if "images" not in tables:
        return 0
    if "meta" not in tables:
        return 1
    row = con.sql("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
    return int(row[0][0]) if row else 1


def check_readable(version: int, path) -> None:
    if version > SCHEMA_VERSION:
        raise StoreError(f"{path} was written by a newer embedstore (store layout {version}, this one reads up to "
                         f"{SCHEMA_VERSION}); upgrade embedstore to open it")


def migrate(con, path) -> None:
    """Bring a store to the current layout, in one transaction (a write connection)."""
    version = stored_version(con)
    check_readable(version, path)
    con.execute("BEGIN TRANSACTION")
    con.execute(TABLES)  # every table of the current layout that is missing
    if version == 1:
        _from_layout_1(con)
    if 1 <= version <= 2:
        _from_layout_2(con)
    if 1 <= version <= 3:
        _from_layout_3(con)
    con.execute("INSERT INTO meta VALUES ('schema_version', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [str(SCHEMA_VERSION)])
    con.execute("COMMIT")
    con.execute(VIEWS)


def _from_layout_1(con) -> None:
    """Layout 1 -> 2: lineage columns on `versions`, read from the model record they were buried in,
    and each version's status (layout 1 had none: a fine-tune was finished once its `finetune` run
    was written, so one without it stays `building`; every other version counts as complete)."""
    con.execute("ALTER TABLE versions ADD COLUMN IF NOT EXISTS checkpoint TEXT")
    con.execute("ALTER TABLE versions ADD COLUMN IF NOT EXISTS finetune_key TEXT")
    con.execute("ALTER TABLE versions ADD COLUMN IF NOT EXISTS status TEXT DEFAULT 'building'")
    con.execute("""UPDATE versions SET status = CASE WHEN kind = 'finetune' AND NOT EXISTS (
                       SELECT 1 FROM runs r WHERE r.version = versions.version AND r.kind = 'finetune')
                   THEN 'building' ELSE 'complete' END
                   WHERE status IS NULL OR status = 'building'""")
    con.execute("""UPDATE versions SET checkpoint = json_extract_string(model_record, '$.finetune.checkpoint'),
                       finetune_key = json_extract_string(model_record, '$.finetune.key')
                   WHERE kind = 'finetune' AND checkpoint IS NULL""")


def _from_layout_2(con) -> None:
    """Layout 2 -> 3: where each image's view came from (`view_source`: dataset / file) and the
    view `infer-views` predicts, in its own columns (never over a given view)."""
    for column, kind in (("view_source", "TEXT"), ("inferred_view", "TEXT"), ("inferred_view_confidence", "DOUBLE")):
        con.execute(f"ALTER TABLE images ADD COLUMN IF NOT EXISTS {column} {kind}")
    con.execute("UPDATE images SET view_source = 'dataset' WHERE view IS NOT NULL AND view_source IS NULL")


def _from_layout_3(con) -> None:
    """Layout 3 -> 4: each version's index kind (exact / hnsw / hnsw-sq8 / ivf-pq) and its parameters
    (NULL until the index is next built; `embedstore index` rebuilds it by hand)."""
    con.execute("ALTER TABLE versions ADD COLUMN IF NOT EXISTS index_kind TEXT")
    con.execute("ALTER TABLE versions ADD COLUMN IF NOT EXISTS index_params JSON")


def quote_ident(name: str) -> str:
    """A SQL identifier for any finding name (quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def labels_wide_sql(findings: list[str]) -> str:
    """`labels_wide`: one row per image (image_id, id, then one column per finding)."""
    if not findings:
        return "CREATE OR REPLACE VIEW labels_wide AS SELECT id, image_id FROM images"
    cols = ", ".join(
        f"max(l.value) FILTER (WHERE l.finding = {quote_literal(f)}) AS {quote_ident(f)}" for f in findings
    )
    return (
        "CREATE OR REPLACE VIEW labels_wide AS SELECT i.id, i.image_id, "
        f"{cols} FROM images i LEFT JOIN labels l USING (id) GROUP BY i.id, i.image_id"
    )
