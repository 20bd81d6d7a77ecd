"""How the analyses commands draw their results on screen (json / csv give the full long table)."""

from __future__ import annotations

PER_FINDING = ["support", "positive_groups", "prevalence", "bias", "precision", "recall", "f1", "auroc", "ap"]

# The summary table's columns: overall metric -> header. Macro metrics cover the evaluable findings only.
SUMMARY_COLUMNS = {"macro_auroc": "macro AUROC", "macro_f1": "macro F1", "macro_f1@default": "macro F1 (default cut)",
                   "exact_match": "exact match", "lrap": "LRAP", "coverage_error": "coverage error"}


def run_summary(results, label_key: str | None = None):
    """One row per run: how many findings the macro metrics cover, the headline metrics with their
    intervals, the median over-prediction ratio, reused, seconds."""
    import polars as pl

    rows = []
    for r in results:
        m = r.metrics
        overall = m.filter(pl.col("finding").is_null())
        get = {row["metric"]: row for row in overall.iter_rows(named=True)}
        bias = m.filter((pl.col("metric") == "bias") & pl.col("value").is_not_nan())["value"]
        row = {label_key: str(r.config.get(label_key))} if label_key else {}
        if "n_macro_findings" in get:
            row["findings evaluable"] = f"{int(get['n_macro_findings']['value'])}/{int(get['n_findings']['value'])}"
        for key, header in SUMMARY_COLUMNS.items():
            if key in get:
                row[header] = with_interval(get[key])
        row["median bias"] = rounded(float(bias.median())) if bias.len() else None
        row["reused"] = r.reused
        row["seconds"] = round(r.duration_s, 2)
        rows.append(row)
    return pl.DataFrame(rows)


def with_interval(row: dict) -> str:
    v, lo, hi = row["value"], row["lo"], row["hi"]
    if v is None or v != v:
        return ""
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else f"{v:.3f}"


def rounded(v, nd=3):
    return None if v is None or v != v else round(float(v), nd)


PER_FINDING_HEADERS = {"support": "positives", "positive_groups": "positive groups", "prevalence": "prevalence",
                       "pred_rate": "predicted rate", "bias": "bias", "precision": "precision", "recall": "recall",
                       "f1": "F1", "auroc": "AUROC", "ap": "AP"}


def per_finding_table(metrics, names=PER_FINDING, intervals=("auroc",), evaluable=None):
    """finding x metric (3 decimals), "value [lo, hi]" for the metrics in `intervals`; findings
    that are not evaluable are marked so (they have no interval and are left out of macros)."""
    import polars as pl

    m = metrics.filter(pl.col("finding").is_not_null() & pl.col("metric").is_in(names))

    def cell(s):
        v, lo, hi = s["value"], s["lo"], s["hi"]
        if v is None or v != v:
            return ""
        if s["metric"] in ("support", "n", "positive_groups"):
            return str(int(v))
        if s["metric"] == "C":
            return f"{v:g}"
        if s["metric"] in intervals and lo is not None and hi is not None:
            return f"{v:.3f} [{lo:.2f}, {hi:.2f}]"
        return f"{v:.3f}"

    m = m.with_columns(pl.struct("metric", "value", "lo", "hi").map_elements(cell, return_dtype=pl.String).alias("cell"))
    wide = m.pivot(on="metric", index="finding", values="cell")
    wide = wide.select("finding", *[c for c in names if c in wide.columns])
    if evaluable is not None and evaluable.height:
        marks = evaluable.select("finding", pl.when(pl.col("evaluable")).then(pl.lit("yes"))
                                 .otherwise(pl.lit("not evaluable")).alias("evaluable"))
        wide = wide.join(marks, on="finding", how="left")
    return wide.rename(PER_FINDING_HEADERS, strict=False)


def show_runs(runs, title: str, names=PER_FINDING, per_finding: bool = True) -> None:
    """The runs' summary table, the per-finding table of a single run, and the run ids."""
    from embedstore.cli.output import Format, emit

    emit(run_summary(runs.results, runs.label), Format.table, title=title)
    if per_finding and len(runs) == 1:
        r = runs[0]
        emit(per_finding_table(r.metrics, names, evaluable=r.tables.get("run_findings")), Format.table,
             title=f"{title}: {r.config.get('split', 'test')} split, per finding")
    print("runs: " + ", ".join(r.run_id for r in runs) + "  (embedstore sql \"select * from metrics where run_id = '...'\")")
