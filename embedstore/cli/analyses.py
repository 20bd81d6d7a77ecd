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
PER_FINDING = ["support", "positive_groups", "prevalence", "bias", "precision", "recall", "f1", "auroc", "ap"]


def _store(path: Optional[str]):
    from embedstore.api import Store

    return Store(path)


def _clean(df):
    """NaN -> null so JSON output is valid JSON."""
    import polars as pl

    return df.with_columns(pl.col(pl.Float64).fill_nan(None))


# The summary table's columns: overall metric -> header. Macro metrics cover the evaluable findings only.
SUMMARY_COLUMNS = {"macro_auroc": "macro AUROC", "macro_f1": "macro F1", "macro_f1@default": "macro F1 (default cut)",
                   "exact_match": "exact match", "lrap": "LRAP", "coverage_error": "coverage error"}


def _summary(results, label_key: str | None = None):
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
                row[header] = _with_interval(get[key])
        row["median bias"] = _round(float(bias.median())) if bias.len() else None
        row["reused"] = r.reused
        row["seconds"] = round(r.duration_s, 2)
        rows.append(row)
    return pl.DataFrame(rows)


def _with_interval(row: dict) -> str:
    v, lo, hi = row["value"], row["lo"], row["hi"]
    if v is None or v != v:
        return ""
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else f"{v:.3f}"


def _round(v, nd=3):
    return None if v is None or v != v else round(float(v), nd)


PER_FINDING_HEADERS = {"support": "positives", "positive_groups": "positive groups", "prevalence": "prevalence",
                       "pred_rate": "predicted rate", "bias": "bias", "precision": "precision", "recall": "recall",
                       "f1": "F1", "auroc": "AUROC", "ap": "AP"}


def _per_finding(metrics, names=PER_FINDING, intervals=("auroc",), evaluable=None):
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


def _emit(results, fmt: Format, title: str, label_key: str | None = None, names=PER_FINDING, per_finding=True):
    from embedstore.api import _metrics_of
    from embedstore.cli.output import emit

    if fmt is not Format.table:
        emit(_clean(_metrics_of(results, label_key)), fmt)
        return
    emit(_summary(results, label_key), fmt, title=title)
    if per_finding and len(results) == 1:
        r = results[0]
        emit(_per_finding(r.metrics, names, evaluable=r.tables.get("run_findings")), fmt,
             title=f"{title}: {r.config.get('split', 'test')} split, per finding")
    print("runs: " + ", ".join(r.run_id for r in results) + "  (embedstore sql \"select * from metrics where run_id = '...'\")")


CALIBRATE_HELP = "Split on which to fit each finding's threshold (none: the default thresholds only)."
OPERATING_HELP = "max-f1 | youden: the rule every method's thresholds are fitted by."
MIN_POS_HELP = "Positive patients (else studies) a finding needs on the scored split to be evaluable."


def _split_or_none(value: Optional[str]) -> Optional[str]:
    return None if value is None or value.lower() == "none" else value


@app.command()
def zeroshot(
    version: Optional[str] = typer.Option(None, "--version", help="Version (default: the latest)."),
    rule: str = typer.Option("all", "--rule", help="raw-dot|cosine|softmax|pos-neg|all"),
    templates: Optional[str] = typer.Option(None, "--templates", help="single|ensemble (default: single for raw-dot, as the seed, else ensemble)."),
    calibrate_on: str = typer.Option("val", "--calibrate-on", help=CALIBRATE_HELP),
    operating_point: str = typer.Option("max-f1", "--operating-point", help=OPERATING_HELP),
    split: str = typer.Option("test", "--split", help="Split to score."),
    uncertain: str = typer.Option("mask", "--uncertain", help="mask|negative|positive: how uncertain labels count."),
    blank: str = typer.Option("mask", "--blank", help="mask|negative: how missing (blank) labels count."),
    where: Optional[str] = typer.Option(None, "--where", help="SQL predicate on images columns, e.g. \"view = 'frontal'\"."),
    n_boot: int = typer.Option(1000, "--n-boot", min=0, help="Bootstrap replicates (patients resampled) for the 95% intervals."),
    min_positives: int = typer.Option(10, "--min-positives", min=1, help=MIN_POS_HELP),
    force: bool = typer.Option(False, "--force", help="Recompute even if this run is stored."),
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
    fmt: Format = typer.Option(Format.table, "--format"),
) -> None:
    """Zero-shot classification from stored image and prompt vectors, one run per rule."""
    from embedstore.analyses.zeroshot import zeroshot as run

    results = run(_store(store), version, rule=rule, templates=templates, calibrate_on=_split_or_none(calibrate_on),
                  operating_point=operating_point, split=split, uncertain=uncertain, blank=blank, where=where,
                  n_boot=n_boot, min_positives=min_positives, force=force)
    _emit(results, fmt, "zeroshot", label_key="rule")


@app.command()
def probe(
    version: Optional[str] = typer.Option(None, "--version", help="Version (default: the latest)."),
    classifier: str = typer.Option("logreg", "--classifier", help="logreg|knn"),
    calibrate_on: str = typer.Option("val", "--calibrate-on", help=CALIBRATE_HELP),
    operating_point: str = typer.Option("max-f1", "--operating-point", help=OPERATING_HELP),
    uncertain: str = typer.Option("mask", "--uncertain", help="mask|negative|positive"),
    blank: str = typer.Option("mask", "--blank", help="mask|negative"),
    where: Optional[str] = typer.Option(None, "--where", help="SQL predicate on images columns."),
    n_boot: int = typer.Option(1000, "--n-boot", min=0),
    min_positives: int = typer.Option(10, "--min-positives", min=1, help=MIN_POS_HELP),
    cooccurrence: bool = typer.Option(False, "--cooccurrence", help="Also print the co-occurrence table."),
    force: bool = typer.Option(False, "--force", help="Recompute even if this run is stored."),
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
    fmt: Format = typer.Option(Format.table, "--format"),
) -> None:
    """Linear (or kNN) probe: fit on train, choose C per finding and the threshold on val, score test."""
    from embedstore.analyses.probe import probe as run
    from embedstore.cli.output import emit

    result = run(_store(store), version, classifier=classifier, calibrate_on=_split_or_none(calibrate_on),
                 operating_point=operating_point, uncertain=uncertain, blank=blank, where=where, n_boot=n_boot,
                 min_positives=min_positives, force=force)
    _emit([result], fmt, "probe", label_key="classifier", names=PER_FINDING + ["C"])
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
def stability(
    version: Optional[str] = typer.Option(None, "--version", help="Version (default: the latest)."),
    repeats: int = typer.Option(5, "--repeats", min=2, help="How many fresh stratified splits to draw."),
    seed: int = typer.Option(0, "--seed", help="Seed of the first split (then seed + 1, ...)."),
    uncertain: str = typer.Option("mask", "--uncertain", help="mask|negative|positive"),
    blank: str = typer.Option("mask", "--blank", help="mask|negative"),
    where: Optional[str] = typer.Option(None, "--where", help="SQL predicate on images columns."),
    min_positives: int = typer.Option(10, "--min-positives", min=1, help=MIN_POS_HELP),
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
    fmt: Format = typer.Option(Format.table, "--format"),
) -> None:
    """How the headline metrics move with the split: zero-shot, probe and separability on N fresh
    stratified splits (in memory; stored runs keep the frozen split)."""
    import polars as pl

    from embedstore.cli.output import emit

    result = _store(store).stability(version, repeats=repeats, seed=seed, where=where, uncertain=uncertain,
                                     blank=blank, min_positives=min_positives)
    if fmt is not Format.table:
        emit(result.per_split, fmt)
        return
    emit(result.summary.with_columns(pl.col(pl.Float64).round(4)), fmt, title=f"over {repeats} splits")
    verdict = "holds on every split" if result.ranking_holds else "changes between splits"
    print(f"ranking by macro AUROC {verdict}: " + " | ".join(" > ".join(r) for r in result.rankings))


@app.command("seed-table")
def seed_table(
    version: Optional[str] = typer.Option(None, "--version", help="Base version (or a fine-tuned one: then its parent is the base)."),
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
    fmt: Format = typer.Option(Format.table, "--format"),
) -> None:
    """The seed study's table from stored runs: zero-shot (raw-dot), linear probe and fine-tuned, each
    cut at its default threshold as the seed did, plus the like-for-like macro F1 (thresholds on val)."""
    import sys

    import polars as pl

    from embedstore.cli.output import emit

    table = _store(store).seed_table(version)
    emit(table.drop("missing") if fmt is Format.table else table, fmt, title="the seed's table (test split)")
    for row in table.filter(pl.col("missing").is_not_null()).iter_rows(named=True):
        print(f"{row['method']}: not run yet: run `{row['missing']}`", file=sys.stderr)


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
