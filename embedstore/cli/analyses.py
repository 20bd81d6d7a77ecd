"""`embedstore zeroshot | probe | separability | runs`: analyses over stored embeddings.

Tables print compactly; `--format json|csv|parquet` writes the full long metrics table
(run_id, [rule,] finding, metric, value, lo, hi). Every number is also in the store's
`metrics` table under its run_id.
"""

from __future__ import annotations

from typing import Optional

import typer

from embedstore.cli import app
from embedstore.cli.output import Format

STORE_HELP = "Store directory (else $EMBEDSTORE_STORE, else ./.embedstore)."
SUMMARY = ["macro_f1", "micro_f1", "macro_auroc", "macro_ap", "exact_match", "lrap", "coverage_error",
           "ranking_loss", "hamming_loss"]
PER_FINDING = ["support", "prevalence", "bias", "precision", "recall", "f1", "auroc", "ap"]


def _store(path: Optional[str]):
    from embedstore.api import Store

    return Store(path)


def _clean(df):
    """NaN -> null so JSON output is valid JSON."""
    import polars as pl

    return df.with_columns(pl.col(pl.Float64).fill_nan(None))


# Short column names keep the tables within 80 columns.
SHORT = {"macro_f1": "macroF1", "macro_auroc": "AUROC", "exact_match": "exact", "lrap": "LRAP",
         "coverage_error": "cover"}


def _summary(results, label_key: str | None = None):
    """One row per run: overall metrics, median over-prediction ratio, reused, seconds."""
    import polars as pl

    rows = []
    for r in results:
        overall = r.overall()
        m = r.metrics
        bias = m.filter((pl.col("metric") == "bias") & pl.col("value").is_not_nan())["value"]
        row = {label_key: str(r.config.get(label_key))} if label_key else {}
        row.update({SHORT[k]: _round(overall.get(k)) for k in SHORT})
        row["bias"] = _round(float(bias.median())) if bias.len() else None
        row["reused"] = r.reused
        row["s"] = round(r.duration_s, 2)
        rows.append(row)
    return pl.DataFrame(rows)


def _round(v, nd=3):
    return None if v is None or v != v else round(float(v), nd)


def _per_finding(metrics, names=PER_FINDING, intervals=("auroc",)):
    """finding x metric (3 decimals), "value [lo-hi]" for the metrics in `intervals`."""
    import polars as pl

    m = metrics.filter(pl.col("finding").is_not_null() & pl.col("metric").is_in(names))

    def cell(s):
        v, lo, hi = s["value"], s["lo"], s["hi"]
        if v is None or v != v:
            return ""
        if s["metric"] in ("support", "n"):
            return str(int(v))
        if s["metric"] in intervals and lo is not None and hi is not None:
            return f"{v:.3f} [{lo:.2f}-{hi:.2f}]"
        return f"{v:.3f}"

    m = m.with_columns(pl.struct("metric", "value", "lo", "hi").map_elements(cell, return_dtype=pl.String).alias("cell"))
    wide = m.pivot(on="metric", index="finding", values="cell")
    return wide.select("finding", *[c for c in names if c in wide.columns]).rename(
        {"support": "n+", "prevalence": "prev", "pred_rate": "pred", "precision": "prec", "recall": "rec"}, strict=False)


def _emit(results, fmt: Format, title: str, label_key: str | None = None, names=PER_FINDING, per_finding=True):
    from embedstore.api import _metrics_of
    from embedstore.cli.output import emit

    if fmt is not Format.table:
        emit(_clean(_metrics_of(results, label_key)), fmt)
        return
    emit(_summary(results, label_key), fmt, title=title)
    if per_finding and len(results) == 1:
        emit(_per_finding(results[0].metrics, names), fmt, title=f"{title}: test split, per finding")
    print("runs: " + ", ".join(r.run_id for r in results) + "  (embedstore sql \"select * from metrics where run_id = '...'\")")


@app.command()
def zeroshot(
    version: Optional[str] = typer.Option(None, "--version", help="Version (default: the latest)."),
    rule: str = typer.Option("all", "--rule", help="raw-dot|cosine|softmax|pos-neg|all"),
    templates: str = typer.Option("ensemble", "--templates", help="single|ensemble"),
    calibrate_on: Optional[str] = typer.Option(None, "--calibrate-on", help="Split on which to pick per-finding thresholds by max F1 (e.g. val)."),
    split: str = typer.Option("test", "--split", help="Split to score."),
    uncertain: str = typer.Option("mask", "--uncertain", help="mask|negative|positive: how uncertain labels count."),
    where: Optional[str] = typer.Option(None, "--where", help="SQL predicate on images columns, e.g. \"view = 'frontal'\"."),
    n_boot: int = typer.Option(1000, "--n-boot", min=0, help="Bootstrap replicates for the 95% intervals."),
    force: bool = typer.Option(False, "--force", help="Recompute even if this run is stored."),
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
    fmt: Format = typer.Option(Format.table, "--format"),
) -> None:
    """Zero-shot classification from stored image and prompt vectors, one run per rule."""
    from embedstore.analyses.zeroshot import zeroshot as run

    results = run(_store(store), version, rule=rule, templates=templates, calibrate_on=calibrate_on, split=split,
                  uncertain=uncertain, where=where, n_boot=n_boot, force=force)
    _emit(results, fmt, "zeroshot", label_key="rule")


@app.command()
def probe(
    version: Optional[str] = typer.Option(None, "--version", help="Version (default: the latest)."),
    classifier: str = typer.Option("logreg", "--classifier", help="logreg|knn"),
    uncertain: str = typer.Option("mask", "--uncertain", help="mask|negative|positive"),
    where: Optional[str] = typer.Option(None, "--where", help="SQL predicate on images columns."),
    n_boot: int = typer.Option(1000, "--n-boot", min=0),
    cooccurrence: bool = typer.Option(False, "--cooccurrence", help="Also print the co-occurrence table."),
    force: bool = typer.Option(False, "--force", help="Recompute even if this run is stored."),
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
    fmt: Format = typer.Option(Format.table, "--format"),
) -> None:
    """Linear (or kNN) probe: fit on train, choose C on val by macro AP, score test."""
    from embedstore.analyses.probe import probe as run
    from embedstore.cli.output import emit

    result = run(_store(store), version, classifier=classifier, uncertain=uncertain, where=where, n_boot=n_boot,
                 force=force)
    _emit([result], fmt, "probe", label_key="classifier")
    if cooccurrence and fmt is Format.table and "cooccurrence" in result.tables:
        co = result.tables["cooccurrence"]
        emit(co.pivot(on="predicted", index="present", values="rate"), fmt,
             title="rate of predicting <column> when only <present> is positive")


@app.command()
def separability(
    version: Optional[str] = typer.Option(None, "--version", help="Version (default: the latest)."),
    k: int = typer.Option(15, "--k", min=1, help="Neighbours for kNN label agreement."),
    uncertain: str = typer.Option("mask", "--uncertain", help="mask|negative|positive"),
    where: Optional[str] = typer.Option(None, "--where", help="SQL predicate on images columns."),
    force: bool = typer.Option(False, "--force", help="Recompute even if this run is stored."),
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
    fmt: Format = typer.Option(Format.table, "--format"),
) -> None:
    """Class separation: per-finding silhouette, Fisher ratio, kNN agreement; single-finding cluster indices."""
    from embedstore.analyses.separability import separability as run
    from embedstore.cli.output import emit

    result = run(_store(store), version, k=k, uncertain=uncertain, where=where, force=force)
    if fmt is not Format.table:
        _emit([result], fmt, "separability")
        return
    import polars as pl

    overall = result.metrics.filter(pl.col("finding").is_null()).select("metric", "value")
    emit(overall, fmt, title="test images with exactly one finding")
    names = ["support", "silhouette", "fisher_ratio", "knn_agreement", "knn_agreement_pos", "centroid_distance"]
    table = _per_finding(result.metrics, names).rename(
        {"silhouette": "silh", "fisher_ratio": "fisher", "knn_agreement": "knn", "knn_agreement_pos": "knn+",
         "centroid_distance": "centroid"}, strict=False)
    emit(table, fmt, title="separability per finding (test; LDA, kNN fitted on train)")
    print(f"run: {result.run_id} (reused={result.reused}, {result.duration_s:.2f} s)")


@app.command()
def runs(
    kind: Optional[str] = typer.Option(None, "--kind", help="Only runs of this kind (zeroshot, probe, separability, ...)."),
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
    fmt: Format = typer.Option(Format.table, "--format"),
) -> None:
    """Every stored analysis run, newest first."""
    from embedstore.analyses.runs import runs as run
    from embedstore.cli.output import emit

    df = run(_store(store), kind)
    if fmt is Format.table:
        df = df.select("run_id", "kind", "version", "started", "duration_s", "config_hash")
    emit(df, fmt, title="runs")
