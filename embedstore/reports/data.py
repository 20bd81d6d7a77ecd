"""`ReportData`: the store's tables as the report needs them, read through the store's methods
(`Storage`); paired comparisons come from `analyses.compare`, the same code as `embedstore compare`.
No model, no torch.
"""

from __future__ import annotations

import polars as pl

from embedstore.analyses.compare import PAIRED_METRICS
from embedstore.analyses.runs import parse_config, run_label
from embedstore.errors import InputError

# Run kinds that are not per-image classifiers: they get their own sections.
OTHER_KINDS = {"separability", "agreement", "projection", "projections", "duplicates", "label-issues", "infer-views"}
SPLITS = ("train", "val", "test")
POOLED = "pooled (evaluable findings)"
MACRO = "macro (evaluable findings)"
# compare_methods' method specs -> how the report names them.
METHODS = {"zeroshot:pos-neg": "zero-shot pos-neg", "probe": "probe", "finetuned": "fine-tuned head"}


class ReportData:
    """The versions and runs a report covers, and every table it shows."""

    def __init__(self, store, version: str | None, compare: tuple[str, str] | None):
        self.store = store
        self.all_versions = store.version_rows()
        self.versions = self._select_versions(version, compare)
        self.compare = compare is not None
        self.runs = self._runs()

    # -- versions and runs -------------------------------------------------------------
    def _check(self, v: str) -> str:
        known = self.all_versions["version"].to_list()
        if v not in known:
            raise InputError(f"unknown version {v!r}; the store has: {', '.join(known) or 'none (run `embedstore encode` first)'}")
        return v

    def _select_versions(self, version, compare) -> list[str]:
        if compare:
            return [self._check(compare[0]), self._check(compare[1])]
        if version is not None:
            return [self._check(version)]
        if self.all_versions.is_empty():
            return []
        return self._lineage(self.store.resolve_version(None))

    def _lineage(self, v: str) -> list[str]:
        """The version, its ancestors and its descendants (the fine-tuned children)."""
        parent = dict(zip(self.all_versions["version"], self.all_versions["parent"]))
        family = {v}
        p = parent.get(v)
        while p and p not in family:
            family.add(p)
            p = parent.get(p)
        while kids := {c for c, par in parent.items() if par in family} - family:
            family |= kids
        return [x for x in self.all_versions["version"] if x in family]

    def _runs(self) -> pl.DataFrame:
        """The runs on the reported versions (a config re-run with --force: the latest), each with
        `run` (its name) and `series` (its name with the version when several are reported)."""
        runs = self.store.runs_on(self.versions)
        runs = runs.unique(subset=["kind", "version", "config_hash"], keep="last", maintain_order=True)
        names = [run_label(k, parse_config(c)) for k, c in zip(runs["kind"], runs["config"])]
        series = [f"{n} @ {v}" if len(self.versions) > 1 else n for n, v in zip(names, runs["version"])]
        return runs.with_row_index("rank").with_columns(pl.Series("run", names, dtype=pl.String),
                                                        pl.Series("series", series, dtype=pl.String))

    def runs_of(self, kinds: set[str] | None = None, exclude: set[str] | None = None) -> pl.DataFrame:
        r = self.runs
        if kinds is not None:
            r = r.filter(pl.col("kind").is_in(list(kinds)))
        if exclude is not None:
            r = r.filter(~pl.col("kind").is_in(list(exclude)))
        return r

    def classifier_runs(self) -> pl.DataFrame:
        """Runs that score images (zero-shot rules, probes, fine-tuned heads), with per-image scores."""
        runs = self.runs_of(exclude=OTHER_KINDS)
        scored = self.store.scored_run_ids(runs["run_id"].to_list())
        return runs.filter(pl.col("run_id").is_in(scored))

    # -- data set ----------------------------------------------------------------------
    def prevalence(self) -> pl.DataFrame:
        return self.store.label_prevalence().with_columns((pl.col("positives") / pl.col("labelled")).fill_nan(None).alias("prevalence"))

    def finding_order(self, prevalence: pl.DataFrame) -> list[str]:
        totals = prevalence.group_by("finding").agg(pl.col("positives").sum()).sort(["positives", "finding"], descending=[True, False])
        return totals["finding"].to_list()

    def split_positives(self, findings: list[str]) -> pl.DataFrame:
        """finding, split, images, groups: positive images and positive patient groups (patients,
        else studies; `Store.image_groups`) per finding and split; zero where there are none."""
        positives = self.store.positive_labels()
        groups = self.store.image_groups().select("id", pl.col("split").fill_null("none"), "group_id")
        counts = positives.join(groups, on="id").group_by("finding", "split").agg(
            pl.len().alias("images"), pl.col("group_id").n_unique().alias("groups"))
        splits = list(SPLITS) + sorted(set(groups["split"].to_list()) - set(SPLITS))
        grid = pl.DataFrame({"finding": findings}).join(pl.DataFrame({"split": splits}), how="cross")
        return grid.join(counts, on=["finding", "split"], how="left").with_columns(
            pl.col("images", "groups").fill_null(0).cast(pl.Int64))

    def cooccurrence(self, findings: list[str]) -> pl.DataFrame:
        pairs = self.store.label_pairs()
        n = self.store.positive_labels().group_by("finding").len("n_a").rename({"finding": "finding_a"})
        grid = pl.DataFrame({"finding_a": findings}).join(pl.DataFrame({"finding_b": findings}), how="cross")
        grid = grid.filter(pl.col("finding_a") != pl.col("finding_b"))
        return (
            grid.join(pairs, on=["finding_a", "finding_b"], how="left")
            .join(n, on="finding_a", how="inner")
            .with_columns(pl.col("both").fill_null(0))
        )

    # -- data-set quality ----------------------------------------------------------------
    def quality_run(self, kind: str) -> str | None:
        """The latest run of `kind` (duplicates, label-issues) on the reported versions, or None."""
        runs = self.runs_of({kind}).sort("started")
        return runs["run_id"][-1] if runs.height else None

    def duplicate_groups(self, run_id: str) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(groups, pairs) of a duplicates run (`analyses.duplicates.stored_groups`)."""
        from embedstore.analyses.duplicates import stored_groups

        return stored_groups(self.store, run_id)

    def view_coverage(self) -> pl.DataFrame:
        from embedstore.analyses.views import view_coverage

        return view_coverage(self.store)

    # -- analyses ----------------------------------------------------------------------
    def _of_runs(self, runs: pl.DataFrame, table: str, columns: list[str], per_finding: bool | None = None):
        """Rows of a result table for the given runs, with the runs' names, version and kind."""
        rows = self.store.result_rows(table, runs["run_id"].to_list(), per_finding).select("run_id", *columns)
        keep = runs.select("run_id", "run", "series", "version", "kind", "rank")
        return rows.join(keep, on="run_id").sort("rank", maintain_order=True)

    def metrics(self, runs: pl.DataFrame, per_finding: bool) -> pl.DataFrame:
        return self._of_runs(runs, "metrics", ["finding", "metric", "value", "lo", "hi"], per_finding).with_columns(
            pl.col("value", "lo", "hi").cast(pl.Float64).fill_nan(None))

    def run_findings(self, runs: pl.DataFrame) -> pl.DataFrame:
        """Which findings each run could evaluate, and why not (`run_findings`)."""
        return self._of_runs(runs, "run_findings", ["finding", "evaluable", "reason", "positives", "positive_groups", "n"])

    def calibration(self, runs: pl.DataFrame) -> pl.DataFrame:
        """Reliability bins per run; the pooled curve (finding NULL) is named `POOLED`."""
        return self._of_runs(runs, "calibration", ["finding", "bin", "mean_predicted", "observed", "n"]).with_columns(
            pl.col("finding").fill_null(POOLED))

    def scored_labels(self, runs: pl.DataFrame) -> pl.DataFrame:
        """Per-image scores and predictions beside the 0/1 label (uncertain and missing left out)."""
        s = self.store.scored_labels(runs["run_id"].to_list())
        return s.join(runs.select("run_id", "series", "rank"), on="run_id").sort("rank", maintain_order=True)

    # -- paired comparisons ------------------------------------------------------------
    def methods_on(self, version: str) -> list[str]:
        """The methods of `compare_methods` that have a scored test-split run on `version`."""
        runs = self.classifier_runs().filter(pl.col("version") == version)
        configs = [(k, parse_config(c)) for k, c in zip(runs["kind"], runs["config"])]
        on_test = [(k, c) for k, c in configs if c.get("split", "test") == "test"]
        made_by = {"zeroshot:pos-neg": lambda k, c: k == "zeroshot" and c.get("rule") == "pos-neg",
                   "probe": lambda k, c: k == "probe" and c.get("classifier", "logreg") == "logreg",
                   "finetuned": lambda k, c: k == "finetune"}
        return [method for method, made in made_by.items() if any(made(k, c) for k, c in on_test)]

    def paired_comparisons(self) -> tuple[pl.DataFrame, list[str]]:
        """Per-finding and macro paired differences (side 2 - side 1, same test images): the
        methods on each reported version, and the probe across each reported parent/child pair.
        Columns: comparison, finding (MACRO for the macro row), metric, value_1, value_2, diff,
        diff_lo, diff_hi, p_holm, verdict. Also the comparisons that could not be made, and why
        (e.g. two runs that scored different images)."""
        from embedstore.analyses.compare import compare, compare_methods

        frames, skipped = [], []
        parent_of = dict(zip(self.all_versions["version"], self.all_versions["parent"]))
        for version in self.versions:
            methods = self.methods_on(version)
            if len(methods) >= 2:
                label = pl.format(f"{version}: {{}} - {{}}", pl.col("method_2").replace(METHODS), pl.col("method_1").replace(METHODS))
                frames.append(_or_reason(lambda: compare_methods(self.store, version, methods).with_columns(
                    label.alias("comparison")), skipped))
            parent = parent_of.get(version)
            if parent in self.versions and "probe" in self.methods_on(parent) and "probe" in methods:
                frames.append(_or_reason(lambda: compare(self.store, parent, version).filter(pl.col("kind") == "probe").with_columns(
                    pl.lit(f"probe: {version} - {parent}").alias("comparison")), skipped))
        frames = [f for f in frames if f is not None]
        if not frames:
            return pl.DataFrame(), skipped
        cols = ["comparison", "finding", "metric", "value_1", "value_2", "diff", "diff_lo", "diff_hi", "p_holm", "verdict"]
        rows = pl.concat([f.select(cols) for f in frames], how="vertical_relaxed")
        macro = pl.col("metric").str.starts_with("macro_")
        return (rows.filter(pl.col("metric").str.strip_prefix("macro_").is_in(PAIRED_METRICS))
                .with_columns(pl.when(macro).then(pl.lit(MACRO)).otherwise(pl.col("finding")).alias("finding"),
                              pl.col("metric").str.strip_prefix("macro_"))), skipped


def _or_reason(make, reasons: list[str]):
    """`make()`, or None with the refusal's message added to `reasons` (a report shows what it can)."""
    try:
        return make()
    except InputError as err:
        reasons.append(str(err))
        return None
