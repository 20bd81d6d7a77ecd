"""Summaries the report (and anyone else) reads: label counts, views, and run result rows by run."""

from __future__ import annotations

from embedstore.errors import StoreError

# Result tables keyed by run_id that `result_rows` may read.
RESULT_TABLES = ("metrics", "run_findings", "calibration", "image_scores", "projections", "cooccurrence",
                 "probe_weights")


class SummaryReads:
    """Read-only summaries over the tables (a part of `Storage`)."""

    def image_count(self) -> int:
        return int(self._scalar("SELECT count(*) FROM images"))

    def version_rows(self):
        """Every version with its model record (JSON text), oldest first."""
        return self._df("SELECT version, parent, kind, model_name, count, dim, dtype, created, code_version, "
                        "model_record FROM versions ORDER BY created")

    def runs_on(self, versions: list[str]):
        """run_id, kind, version, config (text), config_hash, code_version, started, duration_s of the
        runs on these versions, oldest first."""
        return self._df("SELECT run_id, kind, version, CAST(config AS VARCHAR) AS config, config_hash, code_version, "
                        "started, duration_s FROM runs WHERE list_contains(?, version) ORDER BY started",
                        [list(versions)])

    def scored_run_ids(self, run_ids: list[str]) -> list[str]:
        """The runs among these that stored per-image scores."""
        return self._column("SELECT DISTINCT run_id FROM image_scores WHERE list_contains(?, run_id)", [list(run_ids)])

    def label_prevalence(self):
        """finding, split ('none' when unsplit), positives, labelled (0/1) images."""
        return self._df(
            "SELECT l.finding, coalesce(i.split, 'none') AS split, count(*) FILTER (WHERE l.value = 1) AS positives, "
            "count(*) FILTER (WHERE l.value IN (0, 1)) AS labelled FROM labels l JOIN images i ON i.id = l.id GROUP BY ALL")

    def positive_labels(self):
        """id, finding of every positive label."""
        return self._df("SELECT id, finding FROM labels WHERE value = 1")

    def label_pairs(self):
        """finding_a, finding_b, both: images positive for both of two different findings."""
        return self._df("SELECT a.finding AS finding_a, b.finding AS finding_b, count(*) AS both FROM labels a "
                        "JOIN labels b ON a.id = b.id AND a.finding <> b.finding WHERE a.value = 1 AND b.value = 1 "
                        "GROUP BY ALL")

    def view_counts(self):
        """view ('unknown' when none), split ('none'), images."""
        return self._df("SELECT coalesce(view, 'unknown') AS view, coalesce(split, 'none') AS split, count(*) AS images "
                        "FROM images GROUP BY ALL")

    def result_rows(self, table: str, run_ids: list[str], per_finding: bool | None = None):
        """Every row of a result table for these runs (with run_id); `per_finding` True / False keeps
        only the per-finding / overall (finding NULL) rows."""
        if table not in RESULT_TABLES:
            raise StoreError(f"result_rows: {table!r} is not a result table ({', '.join(RESULT_TABLES)})")
        where = "" if per_finding is None else " AND finding IS NOT NULL" if per_finding else " AND finding IS NULL"
        return self._df(f"SELECT * FROM {table} WHERE list_contains(?, run_id){where}", [list(run_ids)])

    def scored_labels(self, run_ids: list[str]):
        """run_id, finding, id, score, pred, y_true: stored per-image scores beside 0/1 labels."""
        return self._df("SELECT s.run_id, s.finding, s.id, s.score, CAST(s.pred AS DOUBLE) AS pred, l.value AS y_true "
                        "FROM image_scores s JOIN labels l ON l.id = s.id AND l.finding = s.finding "
                        "WHERE list_contains(?, s.run_id) AND l.value IN (0, 1)", [list(run_ids)])

    def projection_points(self, run_ids: list[str]):
        """run_id, method, image_id, x, y, labels, split, view of the runs' 2-D projections."""
        return self._df(
            "SELECT p.run_id, p.method, i.image_id, round(p.x, 4) AS x, round(p.y, 4) AS y, "
            "coalesce(lab.labels, 'none') AS labels, coalesce(i.split, 'none') AS split, "
            "coalesce(i.view, 'unknown') AS view FROM projections p JOIN images i ON i.id = p.id LEFT JOIN ("
            "  SELECT id, string_agg(finding, ', ' ORDER BY finding) AS labels FROM labels WHERE value = 1 GROUP BY id"
            ") lab ON lab.id = p.id WHERE list_contains(?, p.run_id)", [list(run_ids)])
