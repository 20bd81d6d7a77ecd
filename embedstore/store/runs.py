"""Analysis runs: each with its config and result tables, written in one transaction."""

from __future__ import annotations

import datetime as _dt
import json
import uuid
from typing import Any

from embedstore.errors import StoreError
from embedstore.store import schema
from embedstore.store.keys import stable_hash
from embedstore.store.rows import registered


class RunTables:
    """The `runs` table and every result table keyed by run_id (a part of `Storage`)."""

    # ---- runs --------------------------------------------------------------------------

    def find_run(self, kind: str, version: str, config: dict) -> str | None:
        """The latest run of `kind` on `version` with exactly this config, if any."""
        return self._scalar(
            "SELECT run_id FROM runs WHERE kind = ? AND version = ? AND config_hash = ? ORDER BY started DESC LIMIT 1",
            [kind, version, stable_hash(config)])

    def write_run(self, kind: str, version: str, config: dict, started, duration_s: float,
                  tables: dict[str, Any]) -> str:
        """Write the `runs` row and every result frame (each gets `run_id`) in ONE transaction.

        `tables` maps a table name of the schema (metrics, image_scores, projections, ...) to a
        polars DataFrame whose columns are a subset of that table's columns.

        A run is an append that needs the DuckDB file only, not the writer lock: an analysis
        stores it between the commits of an `encode` or `finetune` that is running. A version
        dropped meanwhile is refused here, so no run outlives its version.
        """
        import polars as pl

        from embedstore.provenance import code_version

        run_id = f"{kind}-{_dt.datetime.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
        if isinstance(started, (int, float)):
            started = _dt.datetime.fromtimestamp(started)
        with self.transaction(lock=False) as con:
            if not con.execute("SELECT count(*) FROM versions WHERE version = ?", [version]).fetchall()[0][0]:
                raise StoreError(f"version {version!r} was dropped while the {kind} run was computed; "
                                 "nothing was stored")
            known = {r[0] for r in con.sql("SELECT table_name FROM information_schema.tables").fetchall()}
            con.execute(
                "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [run_id, kind, version, json.dumps(config, sort_keys=True, default=str), stable_hash(config),
                 code_version(), started, float(duration_s)],
            )
            for name, frame in tables.items():
                if name not in known or name in ("runs", "images", "versions"):
                    raise StoreError(f"write_run: {name!r} is not a result table of the store")
                cols = [r[0] for r in con.sql(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position",
                    params=[name]).fetchall()]
                frame = frame.with_columns(pl.lit(run_id).alias("run_id"))
                extra = [c for c in frame.columns if c not in cols]
                if extra:
                    raise StoreError(f"write_run: table {name} has no columns {extra}; it has {cols}")
                sel = ", ".join(schema.quote_ident(c) for c in frame.columns)
                with registered(con, run_rows=frame):
                    con.execute(f"INSERT INTO {name} ({sel}) SELECT {sel} FROM run_rows")
        return run_id

    def delete_run(self, run_id: str) -> None:
        """Delete a run and its rows in every run table (an append's undo: no writer lock needed)."""
        with self.transaction(lock=False) as con:
            self._delete_run(con, run_id)

    def _delete_run(self, con, run_id: str) -> None:
        """`delete_run` inside a transaction the caller holds (e.g. dropping a whole version)."""
        for name in self._run_tables(con):
            con.execute(f"DELETE FROM {name} WHERE run_id = ?", [run_id])
        con.execute("DELETE FROM runs WHERE run_id = ?", [run_id])

    def _run_tables(self, con) -> list[str]:
        rows = con.sql(
            """SELECT DISTINCT c.table_name FROM information_schema.columns c
               JOIN information_schema.tables t USING (table_name)
               WHERE c.column_name = 'run_id' AND c.table_name <> 'runs' AND t.table_type = 'BASE TABLE'"""
        ).fetchall()
        return [r[0] for r in rows]

    def metrics_of(self, run_ids: list[str]):
        """run_id, finding, metric, value, lo, hi of the given runs."""
        return self.result_rows("metrics", run_ids)

    def run_tables(self, run_id: str, names) -> dict:
        """The named result tables of one run (those the store has), without run_id."""
        out = {}
        with self.connect() as con:
            have = {r[0] for r in con.sql("SELECT table_name FROM information_schema.tables").fetchall()}
            for name in names:
                if name in have:
                    out[name] = con.sql(f"SELECT * EXCLUDE (run_id) FROM {schema.quote_ident(name)} WHERE run_id = ?",
                                        params=[run_id]).pl()
        return out

    def probe_weights(self, run_id: str | None = None, version: str | None = None):
        """finding, intercept, coef of one probe run's logistic regressions, or of every probe run on
        `version` (oldest first, so the latest is last per finding)."""
        if run_id is not None:
            return self._df("SELECT finding, intercept, coef FROM probe_weights WHERE run_id = ? ORDER BY finding",
                            [run_id])
        return self._df("""SELECT w.finding, w.intercept, w.coef FROM probe_weights w JOIN runs r USING (run_id)
                           WHERE r.version = ? AND r.kind = 'probe' ORDER BY r.started, w.finding""", [version])

    def image_scores(self, run_id: str):
        """id, finding, score, pred of one run's scored images."""
        return self._df("SELECT id, finding, score, pred FROM image_scores WHERE run_id = ? ORDER BY id, finding",
                        [run_id])

    def runs(self):
        """Every analysis run, newest first."""
        return self._df("SELECT * FROM runs ORDER BY started DESC")
