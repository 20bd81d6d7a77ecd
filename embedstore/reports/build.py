"""`build_report`: read the store (SQL only, no model, no torch) and write one self-contained
HTML report. Sections whose analyses have not run yet show a one-line "not run yet" note.

Findings a run could not evaluate (`run_findings`: too few positive patients on the scored
split) are marked wherever per-finding results appear: "(not evaluable)" after the finding's
name, hollow points in the per-finding chart and a grey "not evaluable" verdict in the forest
plot. They are never dropped.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from embedstore.errors import InputError, StoreError
from embedstore.files import atomic_path
from embedstore.progress import Progress
from embedstore.reports import charts
from embedstore.analyses.runs import parse_config
from embedstore.reports.data import MACRO, OTHER_KINDS, PAIRED_METRICS, POOLED, ReportData
from embedstore.reports.html import Chart, Gallery, Note, Report, Section, Table, chart_spec, render, thumbnail

# Per-finding metrics the dot plot offers, in the drop-down's order (each lies in [0, 1]).
FINDING_METRICS = ["auroc", "ap", "f1", "f1@default", "precision", "recall", "brier", "ece"]
# Overall metrics in the order the tables list them; any other overall metric follows, except the
# fine-tune's per-epoch training history.
OVERALL_METRICS = ["macro_auroc", "macro_ap", "macro_f1", "macro_f1@default", "macro_brier", "macro_ece",
                   "micro_f1", "micro_f1@default", "exact_match", "exact_match@default", "hamming_loss",
                   "hamming_loss@default", "lrap", "lrap_positive_rows", "coverage_error",
                   "coverage_error_positive_rows", "ranking_loss", "n_findings", "n_macro_findings", "n_complete",
                   "n_ranked", "best_epoch", "best_val_macro_auroc"]
TRAINING_HISTORY = "@epoch"
# Agreement baselines as `explain.commands.agreement` names them (`pointing@random`) -> shown as.
BASELINES = {"random": "random", "random_box": "random box (size-matched)", "centre": "centre prior",
             "center": "centre prior"}
MODEL = "model"
MAX_OVERLAYS = 24
MAX_CURVE_POINTS = 200
MAX_LISTED = 20  # config lists longer than this show as their length
NOT_EVALUABLE = " (not evaluable)"


@dataclass
class BuiltReport:
    """What `build_report` wrote: the file, how many charts it holds, its size, and the notes."""

    path: Path
    charts: int
    size_bytes: int
    notes: list[str] = field(default_factory=list)

    def to_polars(self):
        """One row: path, charts, size_bytes, notes."""
        return pl.DataFrame([{"path": str(self.path), "charts": self.charts, "size_bytes": self.size_bytes,
                              "notes": self.notes}], schema={"path": pl.String, "charts": pl.Int64,
                                                             "size_bytes": pl.Int64, "notes": pl.List(pl.String)})


def _not_run(command: str, what: str) -> Note:
    return Note(f"{what}: not run yet: run `{command}`")


def _fmt_ci(value, lo, hi) -> str | None:
    if value is None or value != value:
        return None
    if lo is None or hi is None:
        return f"{value:.3g}"
    return f"{value:.3g} [{lo:.3g}, {hi:.3g}]"


def _with_cells(frame: pl.DataFrame, value: str = "value", lo: str = "lo", hi: str = "hi") -> pl.DataFrame:
    """Adds `cell`: "value [lo, hi]" (the value alone where there is no interval)."""
    return frame.with_columns(pl.struct([value, lo, hi]).map_elements(
        lambda r: _fmt_ci(r[value], r[lo], r[hi]), return_dtype=pl.String).alias("cell"))


def _metrics_as_rows(frame: pl.DataFrame, columns: str, order: list[str]) -> pl.DataFrame:
    """metric | one column per value of `columns`: a table whose width grows with the runs (a
    handful), not with the metrics (two dozen), so it stays within the page."""
    wide = _with_cells(frame).pivot(on=columns, index="metric", values="cell", aggregate_function="first")
    return wide.sort(_rank("metric", order), "metric")


def _rank(column: str, values: list[str]) -> pl.Expr:
    """Sort key: a value's place in `values` (those not listed after them)."""
    return pl.col(column).replace_strict({v: i for i, v in enumerate(values)}, default=len(values), return_dtype=pl.Int64)


# -- not evaluable findings ----------------------------------------------------------------
def finding_labels(run_findings: pl.DataFrame) -> dict[str, str]:
    """finding -> its name as shown: "(not evaluable)" appended where no run could evaluate it,
    "(not evaluable in some runs)" where only some could."""
    labels = {}
    for finding, g in run_findings.group_by("finding", maintain_order=True):
        flags = set(g["evaluable"].to_list())
        name = finding[0]
        labels[name] = name if flags == {True} else name + (NOT_EVALUABLE if flags == {False} else " (not evaluable in some runs)")
    return labels


def _relabel(frame: pl.DataFrame, labels: dict[str, str], column: str = "finding") -> pl.DataFrame:
    return frame.with_columns(pl.col(column).replace(labels))


def _label_order(order: list[str], labels: dict[str, str]) -> list[str]:
    return [labels.get(f, f) for f in order]


# -- sections --------------------------------------------------------------------------------
def _dataset_section(data: ReportData, evaluability: pl.DataFrame) -> tuple[Section, list[str]]:
    s = Section("Data set", intro="Share of labelled images (uncertain and missing labels left out) per split.")
    prev = data.prevalence()
    if prev.is_empty():
        s.blocks.append(Note("no labelled images in the store: run `embedstore encode SOURCE`"))
        return s, []
    order = data.finding_order(prev)
    s.blocks.append(Chart(chart_spec(charts.prevalence_chart(prev, order))))
    s.blocks.append(_split_table(data, order, evaluability))
    s.blocks.append(Chart(chart_spec(charts.cooccurrence_chart(data.cooccurrence(order), order))))
    s.blocks.append(Chart(chart_spec(charts.views_chart(data.store.view_counts()))))
    return s, order


def _split_table(data: ReportData, order: list[str], evaluability: pl.DataFrame) -> Table:
    """Positive images and positive patient groups per finding and split, and whether the
    classifier runs could evaluate the finding on the split they scored."""
    counts = data.split_positives(order)
    wide = pl.DataFrame({"finding": order})
    for split in dict.fromkeys(counts["split"].to_list()):
        part = counts.filter(pl.col("split") == split).select(
            "finding", pl.col("images").alias(f"{split} images"), pl.col("groups").alias(f"{split} groups"))
        wide = wide.join(part, on="finding", how="left")
    if not evaluability.is_empty():
        wide = wide.join(_evaluable_column(evaluability), on="finding", how="left")
    return Table(wide, caption="Positives per finding and split: images and positive patient groups (patients, else studies)")


def _evaluable_column(run_findings: pl.DataFrame) -> pl.DataFrame:
    """finding, evaluable: "yes", "no: <reason>", or in how many of the runs."""
    rows = []
    for finding, g in run_findings.group_by("finding", maintain_order=True):
        n, ok = g.height, int(g["evaluable"].sum())
        text = "yes" if ok == n else f"no: {g['reason'].drop_nulls()[0]}" if ok == 0 else f"in {ok} of {n} runs"
        rows.append({"finding": finding[0], "evaluable (scored split)": text})
    return pl.DataFrame(rows)


def _per_finding_section(data: ReportData, runs: pl.DataFrame, order: list[str], labels: dict[str, str]) -> Section:
    s = Section("Per-finding metrics", intro=(
        "Each zero-shot rule, the linear probe and each fine-tuned head: one dot per run with its 95 % interval "
        "(patients resampled); pick the metric in the drop-down, click a run in the legend to pick it out. "
        "Hollow dots: the finding is not evaluable in that run (too few positive patients on the scored split): "
        "point estimate only, left out of the macro metrics. Overall metrics follow, metrics as rows and runs as "
        "columns, one table per version, so the tables stay within the page however many metrics there are."))
    if runs.is_empty():
        s.blocks.append(_not_run("embedstore zeroshot", "zero-shot, probe and fine-tune analyses"))
        return s
    per = data.metrics(runs, per_finding=True).filter(pl.col("metric").is_in(FINDING_METRICS))
    if per.is_empty():
        s.blocks.append(Note("the runs stored no per-finding AUROC, average precision or F1"))
    else:
        evaluable = data.run_findings(runs).select("run_id", "finding", "evaluable")
        dots = per.join(evaluable, on=["run_id", "finding"], how="left").with_columns(pl.col("evaluable").fill_null(True))
        metrics = [m for m in FINDING_METRICS if m in set(dots["metric"])]
        frame = _relabel(dots.select("finding", "series", "metric", "value", "lo", "hi", "evaluable"), labels)
        s.blocks.append(Chart(chart_spec(charts.finding_dots_chart(frame, _label_order(order, labels), metrics))))
    everything = data.runs_of(exclude=OTHER_KINDS)  # with fine-tunes that scored nothing (contrastive)
    overall = data.metrics(everything, per_finding=False).filter(~pl.col("metric").str.contains(TRAINING_HISTORY))
    for version, g in overall.group_by("version", maintain_order=True):
        s.blocks.append(Table(_metrics_as_rows(g, "run", OVERALL_METRICS),
                              caption=f"Overall metrics of version {version[0]} (95 % intervals)"))
    return s


def _paired_section(data: ReportData, order: list[str], labels: dict[str, str]) -> Section:
    s = Section("Paired comparisons", intro=(
        "Differences between methods on the same test images (side 2 minus side 1): on each version zero-shot "
        "pos-neg, the probe and the fine-tuned head where there is one; across a fine-tune, the probe on the child "
        "minus the probe on its parent. One bootstrap over patients for both sides gives the 95 % interval; "
        "\"better\" / \"worse\" when it excludes 0 and the Holm-corrected p is below 0.05 (`embedstore compare`)."))
    pairs, skipped = data.paired_comparisons()
    s.blocks += [Note(f"a paired comparison was left out: {reason}") for reason in skipped]
    if pairs.is_empty():
        s.blocks.append(_not_run("embedstore zeroshot --rule pos-neg; embedstore probe", "paired comparisons"))
        return s
    pairs = _relabel(pairs, labels)
    metrics = [m for m in PAIRED_METRICS if m in set(pairs["metric"])]
    s.blocks.append(Chart(chart_spec(charts.forest_chart(pairs, [MACRO] + _label_order(order, labels), metrics))))
    macro = _with_cells(pairs.filter(pl.col("finding") == MACRO), "diff", "diff_lo", "diff_hi").sort(
        _rank("comparison", list(dict.fromkeys(pairs["comparison"]))), _rank("metric", list(PAIRED_METRICS)))
    s.blocks.append(Table(macro.select("comparison", "metric", pl.col("value_1").alias("side 1"),
                                       pl.col("value_2").alias("side 2"), pl.col("cell").alias("difference [95 % CI]"),
                                       "verdict"),
                          caption="Macro differences (over the evaluable findings)"))
    return s


def _calibration_section(data: ReportData, runs: pl.DataFrame, order: list[str], labels: dict[str, str]) -> Section:
    s = Section("Calibration", intro=(
        "Reliability of each run's probabilities on the scored split: mean predicted probability per bin against "
        "the observed rate, pooled over the evaluable findings (pick one finding in the drop-down). Brier score "
        "and expected calibration error (ECE) are averaged over the evaluable findings."))
    bins = data.calibration(runs) if not runs.is_empty() else pl.DataFrame()
    if bins.is_empty():
        s.blocks.append(_not_run("embedstore zeroshot", "calibration"))
        return s
    bins = _relabel(bins, labels)
    present = set(bins["finding"])
    choices = [POOLED] + [f for f in _label_order(order, labels) if f in present]
    s.blocks.append(Chart(chart_spec(charts.reliability_chart(
        bins.select("series", "finding", "mean_predicted", "observed", "n"), choices))))
    scores = data.metrics(runs, per_finding=False).filter(pl.col("metric").is_in(["macro_brier", "macro_ece", "n_macro_findings"]))
    if not scores.is_empty():
        table = _with_cells(scores).pivot(on="metric", index="series", values="cell", aggregate_function="first")
        s.blocks.append(Table(table, caption="Brier score and ECE per run (95 % intervals where computed)"))
    return s


def _overprediction_section(data: ReportData, runs: pl.DataFrame, scored: pl.DataFrame, labels: dict[str, str]) -> Section:
    s = Section("Over-prediction", intro=(
        "Points above the dashed line predict a finding more often than it occurs (computed from the stored "
        "predictions over images with a 0/1 label)."))
    if runs.is_empty():
        s.blocks.append(_not_run("embedstore zeroshot", "zero-shot, probe and fine-tune analyses"))
        return s
    rates = (
        scored.filter(pl.col("pred").is_not_null())
        .group_by(["series", "finding"], maintain_order=True)
        .agg(pl.col("y_true").mean().alias("prevalence"), pl.col("pred").mean().alias("predicted_rate"))
    )
    if rates.is_empty():
        s.blocks.append(Note("the runs stored no 0/1 predictions"))
    else:
        s.blocks.append(Chart(chart_spec(charts.overprediction_chart(_relabel(rates, labels)))))
    return s


def _curves_section(scored: pl.DataFrame, runs: pl.DataFrame, order: list[str], labels: dict[str, str]) -> Section:
    s = Section("ROC and precision-recall curves", intro=(
        f"From the stored per-image scores, with scikit-learn; at most {MAX_CURVE_POINTS} points per curve."))
    if runs.is_empty():
        s.blocks.append(_not_run("embedstore zeroshot", "zero-shot, probe and fine-tune analyses"))
        return s
    roc, pr = charts.curve_points(scored.filter(pl.col("score").is_not_null()), MAX_CURVE_POINTS)
    if roc.is_empty():
        s.blocks.append(Note("no finding has both positive and negative labelled images among the scored ones"))
        return s
    shown = _label_order(order, labels)
    s.blocks.append(Chart(chart_spec(charts.curves_chart(_relabel(roc, labels), "roc", shown))))
    s.blocks.append(Chart(chart_spec(charts.curves_chart(_relabel(pr, labels), "pr", shown))))
    return s


def _projection_section(data: ReportData, order: list[str]) -> Section:
    s = Section("Embedding projections", intro="Test images, 2-D; pick a finding to colour its positives. Hover a point for its image id and labels.")
    ids = data.runs["run_id"].to_list() if not data.runs.is_empty() else []
    proj = data.store.projection_points(ids) if ids else pl.DataFrame()
    if proj.is_empty():
        s.blocks.append(_not_run("embedstore separability", "2-D projections"))
        return s
    proj = proj.join(data.runs.select("run_id", "version"), on="run_id").sort(_rank("version", data.versions), "method",
                                                                              maintain_order=True)
    for (version, method), g in proj.group_by(["version", "method"], maintain_order=True):
        frame = g.select("image_id", "x", "y", "labels", "split", "view")
        s.blocks.append(Chart(chart_spec(charts.projection_chart(frame, order, f"{method} of version {version}")),
                              caption=f"{frame.height:,} images", inline=True))
    return s


def _separability_section(data: ReportData) -> Section:
    s = Section("Separability", intro="Fitted on train and scored on test; intervals in brackets where the analysis computed them.")
    runs = data.runs_of({"separability"})
    if runs.is_empty():
        s.blocks.append(_not_run("embedstore separability", "separability"))
        return s
    for per_finding, caption in ((True, "per finding (positive against negative)"), (False, "images with exactly one finding")):
        m = data.metrics(runs, per_finding=per_finding)
        if m.is_empty():
            continue
        m = _with_cells(m).with_columns(pl.col("finding").fill_null("(all)"))
        wide = m.pivot(on="metric", index=["series", "finding"], values="cell", aggregate_function="first")
        s.blocks.append(Table(wide, caption=f"Separability, {caption}"))
    if not s.blocks:
        s.blocks.append(Note("the separability runs stored no metrics"))
    return s


MAX_LEAK_GROUPS = 8  # cross-split duplicate groups shown side by side
MAX_ISSUE_THUMBNAILS = 12


def _thumbs(rows, caption) -> list[tuple[bytes, str, str]]:
    """Thumbnails of the rows' image files that exist, each with `caption(row)`."""
    out = []
    for row in rows:
        path = row.get("path")
        if path and Path(path).is_file():
            out.append((*thumbnail(path), caption(row)))
    return out


def _quality_section(data: ReportData) -> Section:
    s = Section("Data-set quality", intro=(
        "Near-duplicate images across splits (probable leaks of one patient into train and test, where the data set "
        "has no patient ids), labels to check first, and where each image's view comes from. Near-duplicates: FAISS "
        "search over the stored vectors (`embedstore duplicates`); label issues: Cleanlab on the probe's "
        "out-of-sample probabilities over train and val (`embedstore label-issues`); views: known from the data "
        "set, given by a `--views` file, inferred by a probe on the known ones (`embedstore infer-views`)."))
    run = data.quality_run("duplicates")
    if run is None:
        s.blocks.append(_not_run("embedstore duplicates", "near-duplicates"))
    else:
        groups, pairs = data.duplicate_groups(run)
        crossing = groups.filter(pl.col("crosses_splits"))
        s.blocks.append(Note(f"{groups.height} near-duplicate group(s), {crossing.height} across splits; "
                             f"{int(crossing['would_move'].sum()) if crossing.height else 0} image(s) would move if "
                             "the splits were drawn again with each group whole"))
        if crossing.height:
            s.blocks.append(Table(crossing.select("group_no", "splits", "studies", "images", "max_similarity",
                                                  "would_move", "study_ids", "labels").head(MAX_LISTED),
                                  caption="Groups across splits (probable leaks)"))
            best = (pairs.filter(pl.col("group_no").is_in(crossing["group_no"].to_list()))
                    .sort("similarity", descending=True).unique("group_no", keep="first", maintain_order=True)
                    .head(MAX_LEAK_GROUPS))
            for row in best.iter_rows(named=True):
                images = _thumbs([{"path": row["path_a"], "side": "a"}, {"path": row["path_b"], "side": "b"}],
                                 lambda r, row=row: f"{row['image_id_' + r['side']]} ({row['split_' + r['side']]})")
                if images:
                    s.blocks.append(Gallery(images, caption=f"group {row['group_no']}: cosine {row['similarity']:.3f}"))
    run = data.quality_run("label-issues")
    if run is None:
        s.blocks.append(_not_run("embedstore label-issues", "label-issue candidates"))
    else:
        top = data.store.label_issue_rows(run).head(MAX_LISTED)  # flagged, most suspect first
        s.blocks.append(Table(top.select("image_id", "finding", "given", "probability", "quality", "split"),
                              caption="Labels to check first (quality: the out-of-sample probability of the label as given)"))
        images = _thumbs(top.head(MAX_ISSUE_THUMBNAILS).iter_rows(named=True),
                         lambda r: f"{r['image_id']}: {r['finding']} given {r['given']}, p {r['probability']:.2f}")
        if images:
            s.blocks.append(Gallery(images, caption="The most suspect labels"))
    coverage = data.view_coverage()
    if coverage.height:
        s.blocks.append(Table(coverage, caption="Views per split: known (the data set), given (a --views file), "
                                                "inferred (infer-views), unknown"))
    return s


VAL_THRESHOLD = "val_threshold"


def agreement_source(metric: str) -> tuple[str, str]:
    """Split an agreement metric into (metric, heatmap): "pointing@random" -> ("pointing",
    "random"), "iou@centre" -> ("iou", "centre prior"), "pointing" -> ("pointing", "model").
    A suffix that names no baseline belongs to the model's own metric ("dice@val_threshold"), and
    only the last suffix can name one ("dice@val_threshold@centre")."""
    name, _, suffix = metric.rpartition("@")
    if name and suffix in BASELINES:
        return name, BASELINES[suffix]
    return metric, MODEL


def _with_sources(frame: pl.DataFrame) -> pl.DataFrame:
    split = [agreement_source(m) for m in frame["metric"]]
    return frame.with_columns(pl.Series("metric", [a for a, _ in split], dtype=pl.String),
                              pl.Series("source", [b for _, b in split], dtype=pl.String))


def _agreement_section(data: ReportData, order: list[str]) -> Section:
    s = Section("Where the model looks: Grad-CAM", intro=(
        "Agreement of heatmaps with annotated boxes, beside baseline heatmaps on the same boxes: uniform random "
        "noise, a random box of the annotation's size where computed, and a centre prior."))
    runs = data.runs_of({"agreement"})
    if runs.is_empty():
        s.blocks.append(_not_run("embedstore agreement --boxes FILE", "Grad-CAM agreement"))
        return s
    # `val_threshold` rows are the cuts `dice@val_threshold` used (fitted on val boxes), not agreement
    m = data.metrics(runs, per_finding=True).filter(~pl.col("metric").str.starts_with(VAL_THRESHOLD))
    if not m.is_empty():
        m = _with_sources(m)
        if len(runs) > 1:
            m = m.with_columns((pl.col("source") + " · " + pl.col("series")).alias("source"))
        s.blocks.append(Chart(chart_spec(charts.agreement_chart(m.select("finding", "metric", "source", "value", "lo", "hi"), order))))
    overall = data.metrics(runs, per_finding=False).filter(~pl.col("metric").str.starts_with(VAL_THRESHOLD))
    for series, g in _with_sources(overall).group_by("series", maintain_order=True):
        sources = [MODEL] + [b for b in dict.fromkeys(BASELINES.values()) if b in set(g["source"])]
        wide = _metrics_as_rows(g, "source", [])
        s.blocks.append(Table(wide.select("metric", *sources), caption=f"Overall agreement of {series[0]} (95 % intervals)"))
    for row in runs.iter_rows(named=True):
        # the overlay PNGs `agreement` wrote for the run (`explain.service.write_gallery`)
        files = sorted((data.store.path / "heatmaps" / row["run_id"]).glob("*.png"))[:MAX_OVERLAYS]
        if files:
            images = [(*thumbnail(f), f.stem.replace("_", " ")) for f in files]
            s.blocks.append(Gallery(images, caption=f"Overlays of {row['series']} (first {len(files)})"))
    if not s.blocks:
        s.blocks.append(Note("the agreement runs stored no metrics"))
    return s


def _provenance_section(data: ReportData) -> Section:
    import json

    s = Section("Provenance", intro="The model behind each version, the version lineage, and every run in this report with its config and time.")
    v = data.all_versions.filter(pl.col("version").is_in(data.versions))
    if v.is_empty():
        s.blocks.append(Note("no embedding versions: run `embedstore encode SOURCE`"))
        return s
    s.blocks.append(Table(v.drop("model_record"), caption="Versions (lineage: parent)"))
    models = []
    for row in v.unique(subset=["model_name"], keep="first", maintain_order=True).iter_rows(named=True):
        rec = parse_config(row["model_record"])
        keep = {k: rec.get(k) for k in ("name", "source", "revision", "weights_sha256", "embed_dim", "image_size", "logit_scale", "context_length")}
        models.append({"model": row["model_name"], **{k: ("" if x is None else json.dumps(x) if isinstance(x, (dict, list)) else str(x))
                                                     for k, x in keep.items()}})
    s.blocks.append(Table(pl.DataFrame(models), caption="Models"))
    if data.runs.is_empty():
        s.blocks.append(Note("no analysis runs yet: run `embedstore zeroshot`"))
    else:
        runs = data.runs.with_columns(pl.col("config").map_elements(_short_config, return_dtype=pl.String))
        s.blocks.append(Table(runs.select("run_id", "kind", "version", "run", "config", "started", "duration_s", "code_version"),
                              caption="Runs"))
    return s


def _short_config(config) -> str:
    """A run's config as JSON, long lists (e.g. the hashes of the prompts read) as their length."""
    import json

    cfg = parse_config(config)
    return json.dumps({k: f"<{len(v)} items>" if isinstance(v, list) and len(v) > MAX_LISTED else v for k, v in cfg.items()},
                      default=str)


def _sections(data: ReportData, progress: bool = False) -> list[Section]:
    runs = data.classifier_runs()
    evaluability = data.run_findings(runs) if not runs.is_empty() else pl.DataFrame()
    labels = finding_labels(evaluability) if not evaluability.is_empty() else {}
    dataset, order = _dataset_section(data, evaluability)
    scored = data.scored_labels(runs) if not runs.is_empty() else pl.DataFrame()
    builders = [
        lambda: _per_finding_section(data, runs, order, labels),
        lambda: _paired_section(data, order, labels),
        lambda: _calibration_section(data, runs, order, labels),
        lambda: _overprediction_section(data, runs, scored, labels),
        lambda: _curves_section(scored, runs, order, labels),
        lambda: _projection_section(data, order),
        lambda: _separability_section(data),
        lambda: _agreement_section(data, order),
        lambda: _quality_section(data),
        lambda: _provenance_section(data),
    ]
    sections = [dataset]
    with Progress("report", len(builders), unit="sections", enabled=progress) as bar:
        for build in builders:
            sections.append(build())
            bar.advance()
    return sections


def build_report(store, version: str | None = None, compare: tuple[str, str] | list[str] | None = None,
                 out: str | os.PathLike = "report.html", title: str = "embedstore report",
                 progress: bool = False) -> BuiltReport:
    """Write one self-contained HTML report of the store (`Storage`) to `out`.

    `version`: report only that version; `compare`: two versions side by side; neither: the
    default version with its whole lineage (parents and fine-tuned children).
    """
    if version is not None and compare is not None:
        raise InputError("give either --version or --compare, not both")
    if compare is not None and len(compare) != 2:
        raise InputError(f"--compare takes two versions, got {len(compare)}")
    out = Path(out)
    if not out.parent.exists():
        raise InputError(f"cannot write the report to {out}: folder {out.parent} does not exist")
    data = ReportData(store, version, tuple(compare) if compare else None)
    if data.all_versions.is_empty() and store.image_count() == 0:
        raise StoreError("the store is empty: run `embedstore encode SOURCE` first")

    sections = _sections(data, progress)
    what = f"versions {' vs '.join(data.versions)}" if data.compare else f"version {', '.join(data.versions) or '(none)'}"
    report = Report(title, subtitle=f"{what} · generated {time.strftime('%Y-%m-%d %H:%M')}", sections=sections)
    with atomic_path(out) as tmp:  # a failed build leaves no half-written report; the user's umask applies
        tmp.write_text(render(report), encoding="utf-8")
    notes = [b.text for sec in sections for b in sec.blocks if isinstance(b, Note)]
    return BuiltReport(out, len(report.charts), out.stat().st_size, notes)
