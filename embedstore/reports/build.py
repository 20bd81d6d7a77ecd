"""`build_report`: read the store (SQL only, no model, no torch) and write one self-contained
HTML report. Sections whose analyses have not run yet show a one-line "not run yet" note.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from embedstore.errors import InputError, StoreError
from embedstore.reports import charts
from embedstore.reports.html import Chart, Gallery, Note, Report, Section, Table, chart_spec, render, thumbnail

# Metric names as analyses may write them -> the name the report shows.
METRIC_ALIASES = {
    "auroc": "auroc", "roc_auc": "auroc", "auc": "auroc",
    "average_precision": "average_precision", "ap": "average_precision", "auprc": "average_precision",
    "f1": "f1", "precision": "precision", "recall": "recall",
}
BAR_METRICS = ["auroc", "average_precision", "f1"]
# Config keys that tell two runs of one kind apart in a legend (e.g. the zero-shot rule).
SERIES_KEYS = ["rule", "templates", "calibrate_on", "classifier", "objective", "target", "method", "train"]
# Run kinds that are not per-image classifiers: they get their own sections.
OTHER_KINDS = {"separability", "agreement", "projection", "projections"}
MAX_OVERLAYS = 24
MAX_CURVE_POINTS = 200


@dataclass
class BuiltReport:
    """What `build_report` wrote: the file, how many charts it holds, its size, and the notes."""

    path: Path
    charts: int
    size_bytes: int
    notes: list[str] = field(default_factory=list)


def _q(values) -> str:
    """A SQL IN-list of string literals."""
    return ", ".join("'" + str(v).replace("'", "''") + "'" for v in values) or "NULL"


def _open(store):
    if isinstance(store, (str, os.PathLike)) or store is None:
        import embedstore

        return embedstore.open(store)
    return store


def _store_dir(store) -> Path | None:
    for attr in ("path", "root", "directory", "dir"):
        p = getattr(store, attr, None)
        if isinstance(p, (str, os.PathLike)):
            return Path(p)
    return None


class ReportData:
    """The store's tables as the report needs them; every read is one SQL query."""

    def __init__(self, store, version: str | None, compare: tuple[str, str] | None):
        self.store = store
        self.all_versions = store.sql(
            "SELECT version, parent, kind, model_name, count, dim, dtype, created, code_version, model_record "
            "FROM versions ORDER BY created"
        )
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
        resolve = getattr(self.store, "resolve_version", None)
        v = resolve(None) if resolve else self.all_versions["version"][-1]
        return self._lineage(v)

    def _lineage(self, v: str) -> list[str]:
        """The version, its ancestors and its descendants (the fine-tuned children)."""
        parent = dict(zip(self.all_versions["version"], self.all_versions["parent"]))
        family = {v}
        p = parent.get(v)
        while p and p not in family:
            family.add(p)
            p = parent.get(p)
        grew = True
        while grew:
            kids = {c for c, par in parent.items() if par in family and c not in family}
            family |= kids
            grew = bool(kids)
        return [x for x in self.all_versions["version"] if x in family]

    def _runs(self) -> pl.DataFrame:
        runs = self.store.sql(
            "SELECT run_id, kind, version, CAST(config AS VARCHAR) AS config, config_hash, code_version, "
            f"started, duration_s FROM runs WHERE version IN ({_q(self.versions)}) ORDER BY started"
        )
        # A config re-run with --force: keep the latest.
        runs = runs.unique(subset=["kind", "version", "config_hash"], keep="last", maintain_order=True)
        multi = len(self.versions) > 1
        return runs.with_row_index("rank").with_columns(
            pl.struct(["kind", "version", "config"])
            .map_elements(lambda r: _series_label(r["kind"], r["version"], r["config"], multi), return_dtype=pl.String)
            .alias("series")
        )

    def runs_of(self, kinds: set[str] | None = None, exclude: set[str] | None = None) -> pl.DataFrame:
        r = self.runs
        if kinds is not None:
            r = r.filter(pl.col("kind").is_in(list(kinds)))
        if exclude is not None:
            r = r.filter(~pl.col("kind").is_in(list(exclude)))
        return r

    # -- data set ----------------------------------------------------------------------
    def prevalence(self) -> pl.DataFrame:
        return self.store.sql(
            "SELECT l.finding, coalesce(i.split, 'none') AS split, "
            "count(*) FILTER (WHERE l.value = 1) AS positives, count(*) FILTER (WHERE l.value IN (0, 1)) AS labelled "
            "FROM labels l JOIN images i ON i.id = l.id GROUP BY ALL"
        ).with_columns((pl.col("positives") / pl.col("labelled")).fill_nan(None).alias("prevalence"))

    def finding_order(self, prevalence: pl.DataFrame) -> list[str]:
        totals = prevalence.group_by("finding").agg(pl.col("positives").sum()).sort(["positives", "finding"], descending=[True, False])
        return totals["finding"].to_list()

    def cooccurrence(self, findings: list[str]) -> pl.DataFrame:
        pairs = self.store.sql(
            "SELECT a.finding AS finding_a, b.finding AS finding_b, count(*) AS both FROM labels a "
            "JOIN labels b ON a.id = b.id AND a.finding <> b.finding WHERE a.value = 1 AND b.value = 1 GROUP BY ALL"
        )
        n = self.store.sql("SELECT finding AS finding_a, count(*) AS n_a FROM labels WHERE value = 1 GROUP BY ALL")
        grid = pl.DataFrame({"finding_a": findings}).join(pl.DataFrame({"finding_b": findings}), how="cross")
        grid = grid.filter(pl.col("finding_a") != pl.col("finding_b"))
        return (
            grid.join(pairs, on=["finding_a", "finding_b"], how="left")
            .join(n, on="finding_a", how="inner")
            .with_columns(pl.col("both").fill_null(0))
        )

    def views(self) -> pl.DataFrame:
        return self.store.sql(
            "SELECT coalesce(view, 'unknown') AS view, coalesce(split, 'none') AS split, count(*) AS images FROM images GROUP BY ALL"
        )

    # -- analyses ----------------------------------------------------------------------
    def metrics(self, runs: pl.DataFrame, per_finding: bool) -> pl.DataFrame:
        cond = "finding IS NOT NULL" if per_finding else "finding IS NULL"
        m = self.store.sql(
            f"SELECT run_id, finding, metric, value, lo, hi FROM metrics WHERE run_id IN ({_q(runs['run_id'])}) AND {cond}"
        )
        return m.join(runs.select("run_id", "series", "version", "kind", "rank"), on="run_id").sort("rank", maintain_order=True)

    def scored_labels(self, runs: pl.DataFrame) -> pl.DataFrame:
        """Per-image scores and predictions beside the 0/1 label (uncertain and missing left out)."""
        s = self.store.sql(
            "SELECT s.run_id, s.finding, s.id, s.score, CAST(s.pred AS DOUBLE) AS pred, l.value AS y_true "
            "FROM image_scores s JOIN labels l ON l.id = s.id AND l.finding = s.finding "
            f"WHERE s.run_id IN ({_q(runs['run_id'])}) AND l.value IN (0, 1)"
        )
        return s.join(runs.select("run_id", "series", "rank"), on="run_id").sort("rank", maintain_order=True)

    def projections(self, runs: pl.DataFrame) -> pl.DataFrame:
        return self.store.sql(
            "SELECT p.run_id, p.method, i.image_id, round(p.x, 4) AS x, round(p.y, 4) AS y, "
            "coalesce(lab.labels, 'none') AS labels, coalesce(i.split, 'none') AS split, coalesce(i.view, 'unknown') AS view "
            "FROM projections p JOIN images i ON i.id = p.id LEFT JOIN ("
            "  SELECT id, string_agg(finding, ', ' ORDER BY finding) AS labels FROM labels WHERE value = 1 GROUP BY id"
            f") lab ON lab.id = p.id WHERE p.run_id IN ({_q(runs['run_id'])})"
        )


def _series_label(kind: str, version: str, config: str | None, with_version: bool) -> str:
    try:
        cfg = json.loads(config) if config else {}
    except json.JSONDecodeError:
        cfg = {}
    parts = [kind]
    for k in SERIES_KEYS:
        v = cfg.get(k) if isinstance(cfg, dict) else None
        if v not in (None, "", False):
            parts.append(f"{k}={v}" if k in ("calibrate_on", "train") else str(v))
    label = " ".join(parts)
    return f"{label} @ {version}" if with_version else label


def _not_run(command: str, what: str) -> Note:
    return Note(f"{what}: not run yet: run `{command}`")


# -- sections --------------------------------------------------------------------------
def _dataset_section(data: ReportData) -> tuple[Section, list[str]]:
    s = Section("Data set", intro="Share of labelled images (uncertain and missing labels left out) per split.")
    prev = data.prevalence()
    if prev.is_empty():
        s.blocks.append(Note("no labelled images in the store: run `embedstore encode SOURCE`"))
        return s, []
    order = data.finding_order(prev)
    s.blocks.append(Chart(chart_spec(charts.prevalence_chart(prev, order))))
    s.blocks.append(Chart(chart_spec(charts.cooccurrence_chart(data.cooccurrence(order), order))))
    s.blocks.append(Chart(chart_spec(charts.views_chart(data.views()))))
    return s, order


def _classifier_sections(data: ReportData, order: list[str]) -> list[Section]:
    runs = data.runs_of(exclude=OTHER_KINDS)
    metrics_s = Section("Per-finding metrics",
                        intro="Each zero-shot rule, the linear probe and each fine-tuned version; bars show the point estimate, lines the 95 % interval.")
    over_s = Section("Over-prediction",
                     intro="Points above the dashed line predict a finding more often than it occurs (computed from the stored predictions over images with a 0/1 label).")
    curve_s = Section("ROC and precision-recall curves", intro="From the stored per-image scores, with scikit-learn; at most "
                      f"{MAX_CURVE_POINTS} points per curve.")
    if runs.is_empty():
        for sec in (metrics_s, over_s, curve_s):
            sec.blocks.append(_not_run("embedstore zeroshot", "zero-shot, probe and fine-tune analyses"))
        return [metrics_s, over_s, curve_s]

    per = data.metrics(runs, per_finding=True).with_columns(pl.col("metric").str.to_lowercase().replace(METRIC_ALIASES))
    bars = per.filter(pl.col("metric").is_in(BAR_METRICS))
    if bars.is_empty():
        metrics_s.blocks.append(Note("the runs stored no per-finding AUROC, average precision or F1 metrics"))
    else:
        bars = bars.with_columns(pl.col("metric").cast(pl.Enum(BAR_METRICS))).sort("metric").with_columns(pl.col("metric").cast(pl.String))
        metrics_s.blocks.append(Chart(chart_spec(charts.metric_bars_chart(bars.select("finding", "series", "metric", "value", "lo", "hi"), order))))
    overall = data.metrics(runs, per_finding=False)
    if not overall.is_empty():
        wide = overall.pivot(on="metric", index="series", values="value", aggregate_function="first")
        metrics_s.blocks.append(Table(wide, caption="Overall metrics per run"))

    scored = data.scored_labels(runs)
    if scored.is_empty():
        over_s.blocks.append(Note("the runs stored no per-image predictions"))
        curve_s.blocks.append(Note("the runs stored no per-image scores"))
        return [metrics_s, over_s, curve_s]
    rates = (
        scored.filter(pl.col("pred").is_not_null())
        .group_by(["series", "finding"], maintain_order=True)
        .agg(pl.col("y_true").mean().alias("prevalence"), pl.col("pred").mean().alias("predicted_rate"))
    )
    if rates.is_empty():
        over_s.blocks.append(Note("the runs stored scores but no 0/1 predictions"))
    else:
        over_s.blocks.append(Chart(chart_spec(charts.overprediction_chart(rates))))
    roc, pr = charts.curve_points(scored.filter(pl.col("score").is_not_null()), MAX_CURVE_POINTS)
    if roc.is_empty():
        curve_s.blocks.append(Note("no finding has both positive and negative labelled images among the scored ones"))
    else:
        curve_s.blocks.append(Chart(chart_spec(charts.curves_chart(roc, "roc", order))))
        curve_s.blocks.append(Chart(chart_spec(charts.curves_chart(pr, "pr", order))))
    return [metrics_s, over_s, curve_s]


def _projection_section(data: ReportData, order: list[str]) -> Section:
    s = Section("Embedding projections", intro="Every image, 2-D; pick a finding to colour its positives. Hover a point for its image id and labels.")
    proj = data.projections(data.runs) if not data.runs.is_empty() else pl.DataFrame()
    if proj.is_empty():
        s.blocks.append(_not_run("embedstore separability", "2-D projections"))
        return s
    runs = data.runs.select("run_id", "version")
    proj = proj.join(runs, on="run_id")
    for (version, method), g in proj.group_by(["version", "method"], maintain_order=True):
        title = f"{method} of version {version}"
        frame = g.select("image_id", "x", "y", "labels", "split", "view")
        s.blocks.append(Chart(chart_spec(charts.projection_chart(frame, order, title)), caption=f"{frame.height:,} images", inline=True))
    return s


def _fmt_ci(value, lo, hi) -> str | None:
    if value is None:
        return None
    if lo is None or hi is None:
        return f"{value:.3g}"
    return f"{value:.3g} [{lo:.3g}, {hi:.3g}]"


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
        m = m.with_columns(
            pl.struct(["value", "lo", "hi"]).map_elements(lambda r: _fmt_ci(r["value"], r["lo"], r["hi"]), return_dtype=pl.String).alias("cell"),
            pl.col("finding").fill_null("(all)"),
        )
        wide = m.pivot(on="metric", index=["series", "finding"], values="cell", aggregate_function="first")
        s.blocks.append(Table(wide, caption=f"Separability, {caption}"))
    if not s.blocks:
        s.blocks.append(Note("the separability runs stored no metrics"))
    return s


def _agreement_source(metric: str) -> tuple[str, str]:
    """Split e.g. "pointing_game_random" into ("pointing_game", "random baseline")."""
    tokens = metric.lower().replace("-", "_").split("_")
    source = "model"
    if {"random", "uniform"} & set(tokens):
        source = "random baseline"
    elif {"centre", "center"} & set(tokens):
        source = "centre-prior baseline"
    keep = [t for t in tokens if t not in {"random", "uniform", "centre", "center", "prior", "baseline"}]
    return "_".join(keep) or metric, source


def _overlay_files(store_dir: Path | None, run_id: str, config: str | None) -> list[Path]:
    cfg = {}
    try:
        cfg = json.loads(config) if config else {}
    except json.JSONDecodeError:
        pass
    dirs = [Path(cfg[k]) for k in ("overlay_dir", "overlays_dir", "overlays") if isinstance(cfg, dict) and isinstance(cfg.get(k), str)]
    if store_dir is not None:
        dirs += [store_dir / "heatmaps" / run_id, store_dir / "heatmaps" / "overlays" / run_id, store_dir / "overlays" / run_id]
    for d in dirs:
        if d.is_dir():
            files = sorted(list(d.rglob("*.png")) + list(d.rglob("*.jpg")))
            if files:
                return files[:MAX_OVERLAYS]
    return []


def _agreement_section(data: ReportData, order: list[str]) -> Section:
    s = Section("Where the model looks: Grad-CAM", intro="Agreement of heatmaps with annotated boxes, beside a uniform-random and a centre-prior heatmap on the same boxes.")
    runs = data.runs_of({"agreement"})
    if runs.is_empty():
        s.blocks.append(_not_run("embedstore agreement --boxes FILE", "Grad-CAM agreement"))
        return s
    m = data.metrics(runs, per_finding=True)
    if not m.is_empty():
        split = [_agreement_source(x) for x in m["metric"]]
        m = m.with_columns(pl.Series("metric", [a for a, _ in split]), pl.Series("source", [b for _, b in split]))
        if len(runs) > 1:
            m = m.with_columns((pl.col("source") + " · " + pl.col("series")).alias("source"))
        s.blocks.append(Chart(chart_spec(charts.agreement_chart(m.select("finding", "metric", "source", "value", "lo", "hi"), order))))
    overall = data.metrics(runs, per_finding=False)
    if not overall.is_empty():
        overall = overall.with_columns(
            pl.struct(["value", "lo", "hi"]).map_elements(lambda r: _fmt_ci(r["value"], r["lo"], r["hi"]), return_dtype=pl.String).alias("cell")
        )
        s.blocks.append(Table(overall.pivot(on="metric", index="series", values="cell", aggregate_function="first"), caption="Overall agreement"))
    store_dir = _store_dir(data.store)
    for row in runs.iter_rows(named=True):
        files = _overlay_files(store_dir, row["run_id"], row["config"])
        if files:
            images = [(*thumbnail(f), f.stem.replace("_", " ")) for f in files]
            s.blocks.append(Gallery(images, caption=f"Overlays of {row['series']} (first {len(files)})"))
    if not s.blocks:
        s.blocks.append(Note("the agreement runs stored no metrics"))
    return s


def _provenance_section(data: ReportData) -> Section:
    s = Section("Provenance", intro="The model behind each version, the version lineage, and every run in this report with its config and time.")
    v = data.all_versions.filter(pl.col("version").is_in(data.versions))
    if v.is_empty():
        s.blocks.append(Note("no embedding versions: run `embedstore encode SOURCE`"))
        return s
    s.blocks.append(Table(v.drop("model_record"), caption="Versions (lineage: parent)"))
    models = []
    for row in v.unique(subset=["model_name"], keep="first", maintain_order=True).iter_rows(named=True):
        rec = row["model_record"]
        rec = json.loads(rec) if isinstance(rec, str) else (rec or {})
        keep = {k: rec.get(k) for k in ("name", "source", "revision", "weights_sha256", "embed_dim", "image_size", "logit_scale", "context_length")}
        models.append({"model": row["model_name"], **{k: ("" if x is None else str(x)) for k, x in keep.items()}})
    s.blocks.append(Table(pl.DataFrame(models), caption="Models"))
    if data.runs.is_empty():
        s.blocks.append(Note("no analysis runs yet: run `embedstore zeroshot`"))
    else:
        s.blocks.append(Table(data.runs.select("run_id", "kind", "version", "config", "started", "duration_s", "code_version"), caption="Runs"))
    return s


def build_report(store=None, version: str | None = None, compare: tuple[str, str] | list[str] | None = None,
                 out: str | os.PathLike = "report.html", title: str = "embedstore report") -> BuiltReport:
    """Write one self-contained HTML report of the store to `out`.

    `version`: report only that version; `compare`: two versions side by side; neither: the
    default version with its whole lineage (parents and fine-tuned children). `store` is a
    `Store` (anything with `.sql(query) -> polars.DataFrame`) or a store path.
    """
    if version is not None and compare is not None:
        raise InputError("give either --version or --compare, not both")
    if compare is not None and len(compare) != 2:
        raise InputError(f"--compare takes two versions, got {len(compare)}")
    out = Path(out)
    if not out.parent.exists():
        raise InputError(f"cannot write the report to {out}: folder {out.parent} does not exist")
    store = _open(store)
    data = ReportData(store, version, tuple(compare) if compare else None)
    if data.all_versions.is_empty() and store.sql("SELECT count(*) AS n FROM images")["n"][0] == 0:
        raise StoreError("the store is empty: run `embedstore encode SOURCE` first")

    sections = []
    dataset, order = _dataset_section(data)
    sections.append(dataset)
    sections += _classifier_sections(data, order)
    sections.append(_projection_section(data, order))
    sections.append(_separability_section(data))
    sections.append(_agreement_section(data, order))
    sections.append(_provenance_section(data))

    what = f"versions {' vs '.join(data.versions)}" if data.compare else f"version {', '.join(data.versions) or '(none)'}"
    report = Report(title, subtitle=f"{what} · generated {time.strftime('%Y-%m-%d %H:%M')}", sections=sections)
    text = render(report)
    # Written beside the target then renamed: a failed build leaves no half-written report.
    fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".html", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    notes = [b.text for sec in sections for b in sec.blocks if isinstance(b, Note)]
    return BuiltReport(out, len(report.charts), out.stat().st_size, notes)
