"""One function per chart. Each takes small polars DataFrames (already aggregated where it can
be) and returns an Altair chart, so every chart can be tested with hand-made frames.

Altair and scikit-learn load inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import numpy as np
import polars as pl

WIDTH = 900
SPLITS = ["train", "val", "test", "none"]
FINDING_AXIS = {"labelAngle": -40, "labelLimit": 160}


def _alt():
    import altair as alt

    return alt


def prevalence_chart(frame: pl.DataFrame, order: list[str] | None = None):
    """Finding prevalence per split. Columns: finding, split, positives, labelled, prevalence."""
    alt = _alt()
    x = alt.X("finding:N", sort=order, title=None, axis=alt.Axis(**FINDING_AXIS))
    return (
        alt.Chart(frame, title="Finding prevalence per split (share of labelled images)")
        .mark_bar()
        .encode(
            x=x,
            xOffset=alt.XOffset("split:N", sort=SPLITS),
            y=alt.Y("prevalence:Q", title="prevalence", axis=alt.Axis(format="%")),
            color=alt.Color("split:N", title="split", sort=SPLITS),
            tooltip=["finding", "split", "positives", "labelled", alt.Tooltip("prevalence:Q", format=".1%")],
        )
        .properties(width=WIDTH, height=260)
    )


def cooccurrence_chart(frame: pl.DataFrame, order: list[str] | None = None):
    """Heatmap of P(column finding | row finding). Columns: finding_a, finding_b, both, n_a."""
    alt = _alt()
    frame = frame.with_columns((pl.col("both") / pl.col("n_a")).alias("p_b_given_a"))
    base = alt.Chart(frame, title="Co-occurrence: share of images with the row finding that also have the column finding")
    heat = base.mark_rect().encode(
        x=alt.X("finding_b:N", sort=order, title="also has", axis=alt.Axis(**FINDING_AXIS)),
        y=alt.Y("finding_a:N", sort=order, title="images with"),
        color=alt.Color("p_b_given_a:Q", title="P(col | row)", scale=alt.Scale(scheme="blues", domain=[0, 1])),
        tooltip=["finding_a", "finding_b", "both", "n_a", alt.Tooltip("p_b_given_a:Q", format=".1%")],
    )
    size = max(240, min(560, 26 * frame["finding_a"].n_unique()))
    return heat.properties(width=size, height=size)


def views_chart(frame: pl.DataFrame):
    """Image counts per view and split. Columns: view, split, images."""
    alt = _alt()
    frame = frame.with_columns(pl.col("split").replace_strict(
        {s: i for i, s in enumerate(SPLITS)}, default=len(SPLITS), return_dtype=pl.Int32).alias("split_rank"))
    return (
        alt.Chart(frame, title="Images per view")
        .mark_bar()
        .encode(
            y=alt.Y("view:N", title=None, sort="-x"),
            x=alt.X("sum(images):Q", title="images"),
            color=alt.Color("split:N", sort=SPLITS),
            order=alt.Order("split_rank:Q"),
            tooltip=["view", "split", "images"],
        )
        .properties(width=500, height=alt.Step(22))
    )


def _series_order(frame: pl.DataFrame) -> list[str]:
    """Legend order = first appearance (the builder passes runs in the order they ran)."""
    return list(dict.fromkeys(frame["series"].to_list()))


def _run_colour(series: list[str], title: str = "run", show_legend: bool = True, **legend):
    """Colour by run, from 20 colours: a report often has 11 runs (four zero-shot rules and a probe
    on two versions, and a fine-tuned head), one more than the default scheme tells apart."""
    alt = _alt()
    return alt.Color("series:N", title=title, sort=series, scale=alt.Scale(scheme="tableau20"),
                     legend=alt.Legend(labelLimit=320, **legend) if show_legend else None)


def _select_param(name: str, options: list[str], label: str):
    """A drop-down bound to a variable param, starting at the first option: the page filters rows
    client-side, so every row stays in the spec and the choice costs no JavaScript of ours."""
    alt = _alt()
    return alt.param(name=name, value=options[0], bind=alt.binding_select(options=options, name=label))


def finding_dots_chart(frame: pl.DataFrame, order: list[str] | None = None, metrics: list[str] | None = None):
    """Per-finding point estimates with 95 % intervals, findings down, one dot per run, one metric
    at a time (a drop-down picks it). Clicking a run in the legend fades the others.

    Hollow points mark findings not evaluable in that run (too few positive patients on the
    scored split: point estimate only, no interval, left out of macro metrics).
    Columns: finding, series, metric, value, lo, hi, evaluable (bool).
    """
    alt = _alt()
    metrics = metrics or list(dict.fromkeys(frame["metric"].to_list()))
    series = _series_order(frame)
    pick = _select_param("metric", metrics, "metric: ")
    runs = alt.selection_point(fields=["series"], bind="legend")
    base = alt.Chart(frame).encode(
        y=alt.Y("finding:N", sort=order, title=None, axis=alt.Axis(labelLimit=260)),
        yOffset=alt.YOffset("series:N", sort=series),
        color=_run_colour(series, "run (click to pick)"),
        opacity=alt.condition(runs, alt.value(1.0), alt.value(0.12)),
    )
    unit = alt.Scale(domain=[0, 1])  # on both layers: no data extent is taken of intervals a metric may lack
    interval = base.mark_rule(strokeWidth=1.5).encode(x=alt.X("lo:Q", scale=unit), x2="hi:Q")
    dots = base.mark_point(size=36, strokeWidth=1.5).encode(
        x=alt.X("value:Q", title="value of the chosen metric (95 % interval)", scale=unit),
        fill=alt.condition("datum.evaluable", _run_colour(series, show_legend=False), alt.value("white")),
        tooltip=["finding", "series", "metric", alt.Tooltip("value:Q", format=".3f"), alt.Tooltip("lo:Q", format=".3f"),
                 alt.Tooltip("hi:Q", format=".3f"), alt.Tooltip("evaluable:N", title="evaluable")],
    )
    n_findings = max(frame["finding"].n_unique(), 1)
    step = max(4, min(9, 60 // max(len(series), 1)))  # pixels per run within a finding
    return (
        alt.layer(interval, dots, title="Per-finding metrics: pick a metric; hollow = not evaluable (no interval)")
        .transform_filter(alt.datum.metric == pick)
        .add_params(pick, runs)
        .properties(width=560, height=n_findings * (step * len(series) + 6))
    )


VERDICT_COLOURS = {"better": "#2ca02c", "worse": "#d62728", "no difference": "#7f7f7f", "not evaluable": "#c7c7c7"}


def forest_chart(frame: pl.DataFrame, order: list[str] | None = None, metrics: list[str] | None = None,
                 columns: int = 3):
    """Forest plot of paired differences (side 2 minus side 1 on the same test images): per
    finding and macro (on top), a point and its 95 % interval, a zero line, colour by verdict;
    one panel per comparison, one metric at a time (drop-down).

    Columns: comparison, finding, metric, diff, diff_lo, diff_hi, verdict, p_holm, value_1, value_2.
    """
    alt = _alt()
    metrics = metrics or list(dict.fromkeys(frame["metric"].to_list()))
    pick = _select_param("metric", metrics, "paired metric: ")
    colour = alt.Color("verdict:N", title="verdict", scale=alt.Scale(domain=list(VERDICT_COLOURS),
                                                                       range=list(VERDICT_COLOURS.values())))
    y = alt.Y("finding:N", sort=order, title=None, axis=alt.Axis(labelLimit=220))
    # One zero line per panel (aggregated to one row), not one per finding drawn on top of each other.
    zero = alt.Chart().transform_aggregate(n="count()").mark_rule(color="#333", strokeDash=[3, 3]).encode(x=alt.datum(0))
    interval = alt.Chart().mark_rule(strokeWidth=1.5).encode(y=y, x=alt.X("diff_lo:Q"), x2="diff_hi:Q", color=colour)
    points = alt.Chart().mark_point(filled=True, size=40).encode(
        y=y, x=alt.X("diff:Q", title="side 2 - side 1 (95 % interval)"), color=colour,
        tooltip=["comparison", "finding", "metric", "verdict", alt.Tooltip("value_1:Q", format=".3f"),
                 alt.Tooltip("value_2:Q", format=".3f"), alt.Tooltip("diff:Q", format="+.3f"),
                 alt.Tooltip("diff_lo:Q", format="+.3f"), alt.Tooltip("diff_hi:Q", format="+.3f"),
                 alt.Tooltip("p_holm:Q", title="p (Holm)", format=".3g")],
    )
    comparisons = list(dict.fromkeys(frame["comparison"].to_list()))
    n_rows = max(frame["finding"].n_unique(), 1)
    return (
        alt.layer(zero, interval, points, data=frame)
        .properties(width=230, height=14 * n_rows)
        .facet(facet=alt.Facet("comparison:N", sort=comparisons, title=None,
                               header=alt.Header(labelLimit=320, labelFontWeight="bold")),
               columns=columns, title="Paired differences on the same test images (macro over evaluable findings on top)")
        .resolve_axis(x="independent")  # an axis under every panel, not only under the last row's
        .transform_filter(alt.datum.metric == pick)
        .add_params(pick)
    )


def reliability_chart(frame: pl.DataFrame, findings: list[str]):
    """Reliability curves per run against the diagonal: mean predicted probability per bin against
    the observed positive rate; a drop-down picks the pooled curve or one finding.

    Columns: series, finding (the pooled curve's name is `findings[0]`), mean_predicted, observed, n.
    """
    alt = _alt()
    pick = _select_param("finding", findings, "calibration of: ")
    series = _series_order(frame)
    diagonal = alt.Chart(pl.DataFrame({"mean_predicted": [0.0, 1.0], "observed": [0.0, 1.0]})).mark_line(
        color="#888", strokeDash=[4, 4]).encode(x="mean_predicted:Q", y="observed:Q")
    curves = (
        alt.Chart(frame)
        .mark_line(point=True)
        .encode(
            x=alt.X("mean_predicted:Q", title="mean predicted probability", scale=alt.Scale(domain=[0, 1])),
            y=alt.Y("observed:Q", title="observed positive rate", scale=alt.Scale(domain=[0, 1])),
            color=_run_colour(series),
            order="mean_predicted:Q",
            tooltip=["series", "finding", alt.Tooltip("mean_predicted:Q", format=".3f"),
                     alt.Tooltip("observed:Q", format=".3f"), "n:Q"],
        )
        .transform_filter(alt.datum.finding == pick)
    )
    return (alt.layer(diagonal, curves, title="Reliability: observed rate against predicted probability (dashed: perfect)")
            .add_params(pick).properties(width=440, height=440))


def overprediction_chart(frame: pl.DataFrame):
    """Prevalence against predicted-positive rate, with the y = x line.

    Points above the line are findings the rule predicts more often than they occur.
    Columns: series, finding, prevalence, predicted_rate.
    """
    alt = _alt()
    top = float(max(frame["prevalence"].max() or 0, frame["predicted_rate"].max() or 0, 0.05))
    series = _series_order(frame)
    # Square-root axes: most findings are rare, and both axes share the scale so y = x stays the diagonal.
    scale = alt.Scale(type="sqrt", domain=[0, top])
    line = pl.DataFrame({"prevalence": [0.0, top], "predicted_rate": [0.0, top]})
    ident = alt.Chart(line).mark_line(color="#888", strokeDash=[4, 4]).encode(
        x=alt.X("prevalence:Q", scale=scale), y=alt.Y("predicted_rate:Q", scale=scale))
    pts = (
        alt.Chart(frame)
        .mark_point(filled=True, size=60, opacity=0.8)
        .encode(
            x=alt.X("prevalence:Q", title="prevalence (square-root axis)", axis=alt.Axis(format="%"), scale=scale),
            y=alt.Y("predicted_rate:Q", title="predicted-positive rate (square-root axis)", axis=alt.Axis(format="%"),
                    scale=scale),
            color=_run_colour(series),
            tooltip=["series", "finding", alt.Tooltip("prevalence:Q", format=".1%"),
                     alt.Tooltip("predicted_rate:Q", format=".1%")],
        )
    )
    return alt.layer(ident, pts, title="Over-prediction: predicted-positive rate against prevalence (dashed: y = x)").properties(
        width=520, height=520
    )


def thin(x: np.ndarray, y: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep at most `max_points` points of a curve, evenly spaced, always keeping both ends."""
    if len(x) <= max_points:
        return x, y
    keep = np.unique(np.linspace(0, len(x) - 1, max_points).round().astype(int))
    return x[keep], y[keep]


def curve_points(frame: pl.DataFrame, max_points: int = 200) -> tuple[pl.DataFrame, pl.DataFrame]:
    """ROC and precision-recall points per (series, finding), computed with scikit-learn.

    `frame`: series, finding, y_true (0/1), score. Findings with only one class are skipped.
    Returns (roc: series, finding, fpr, tpr, auc; pr: series, finding, recall, precision, ap).
    """
    from sklearn.metrics import precision_recall_curve, roc_curve

    from embedstore.analyses.metrics import auroc_ap

    roc_rows, pr_rows = [], []
    for (series, finding), g in frame.group_by(["series", "finding"], maintain_order=True):
        y, s = g["y_true"].to_numpy(), g["score"].to_numpy()
        if len(np.unique(y)) < 2:
            continue
        fpr, tpr, _ = roc_curve(y, s, drop_intermediate=True)
        prec, rec, _ = precision_recall_curve(y, s, drop_intermediate=True)
        auc, ap = auroc_ap(y, s)
        fpr, tpr = thin(fpr, tpr, max_points)
        rec, prec = thin(rec, prec, max_points)
        roc_rows.append(pl.DataFrame({"series": series, "finding": finding, "fpr": fpr.round(4),
                                      "tpr": tpr.round(4), "auc": round(auc, 4)}))
        pr_rows.append(pl.DataFrame({"series": series, "finding": finding, "recall": rec.round(4),
                                     "precision": prec.round(4), "ap": round(ap, 4)}))
    empty_roc = pl.DataFrame(schema={"series": pl.String, "finding": pl.String, "fpr": pl.Float64, "tpr": pl.Float64, "auc": pl.Float64})
    empty_pr = pl.DataFrame(schema={"series": pl.String, "finding": pl.String, "recall": pl.Float64, "precision": pl.Float64, "ap": pl.Float64})
    return (pl.concat(roc_rows) if roc_rows else empty_roc, pl.concat(pr_rows) if pr_rows else empty_pr)


# A facet header "Finding (not evaluable ...)" on two lines, so the mark does not widen the column.
TWO_LINE_MARK = "split(replace(datum.label, ' (not evaluable', '|(not evaluable'), '|')"


def curves_chart(frame: pl.DataFrame, kind: str, order: list[str] | None = None, columns: int = 6):
    """Small multiples of ROC (`kind="roc"`) or precision-recall (`kind="pr"`) curves per finding."""
    alt = _alt()
    if kind == "roc":
        x, y, score, title = "fpr", "tpr", "auc", "ROC curves per finding"
        xt, yt = "false-positive rate", "true-positive rate"
    else:
        x, y, score, title = "recall", "precision", "ap", "Precision-recall curves per finding"
        xt, yt = "recall", "precision"
    line = (
        alt.Chart(frame)
        .mark_line(interpolate="step-after" if kind == "pr" else "linear", strokeWidth=1.5)
        .encode(
            x=alt.X(f"{x}:Q", title=xt, scale=alt.Scale(domain=[0, 1])),
            y=alt.Y(f"{y}:Q", title=yt, scale=alt.Scale(domain=[0, 1])),
            color=_run_colour(_series_order(frame), orient="top", columns=3),
            order=alt.Order(f"{x}:Q") if kind == "roc" else alt.Order(f"{x}:Q", sort="descending"),
            tooltip=["series", "finding", alt.Tooltip(f"{score}:Q", title=score.upper(), format=".3f")],
        )
        .properties(width=150, height=150)
    )
    header = alt.Header(labelExpr=TWO_LINE_MARK)
    return line.facet(facet=alt.Facet("finding:N", sort=order, title=None, header=header), columns=columns, title=title)


def projection_chart(frame: pl.DataFrame, findings: list[str], title: str):
    """2-D projection scatter; a drop-down picks the finding whose positives are coloured.

    Columns: image_id, x, y, labels (positive findings joined by ", "; "none" for none), split, view.
    Every row is kept (no sampling); a point's tooltip names the image and its labels.
    """
    alt = _alt()
    pick = _select_param("finding", findings or ["(none)"], "colour by finding: ")
    # Whole-item match on the ", "-joined list, so "Granuloma" does not match "Calcified Granuloma".
    has = "indexof(', ' + datum.labels + ', ', ', ' + finding + ', ') >= 0"
    return (
        alt.Chart(frame, title=title)
        .mark_circle(size=14)
        .encode(
            x=alt.X("x:Q", title=None, axis=alt.Axis(labels=False, ticks=False)),
            y=alt.Y("y:Q", title=None, axis=alt.Axis(labels=False, ticks=False)),
            color=alt.Color("status:N", title="selected finding",
                            scale=alt.Scale(domain=["positive", "other"], range=["#d62728", "#b7c4d1"])),
            opacity=alt.condition("datum.status == 'positive'", alt.value(0.9), alt.value(0.35)),
            order=alt.Order("is_pos:Q"),
            tooltip=[alt.Tooltip("image_id:N", title="image id"), alt.Tooltip("labels:N", title="labels"),
                     "split:N", "view:N"],
        )
        .transform_calculate(is_pos=has)
        .transform_calculate(status="datum.is_pos ? 'positive' : 'other'")
        .add_params(pick)
        .properties(width=560, height=480)
    )


def agreement_chart(frame: pl.DataFrame, order: list[str] | None = None):
    """Grad-CAM agreement per finding beside the baselines, with intervals.

    Columns: finding, metric, source ("model", or a baseline: "random", "centre prior", ...), value, lo, hi.
    """
    alt = _alt()
    # The model's own heatmap first, then the baselines.
    sources = sorted(dict.fromkeys(frame["source"].to_list()), key=lambda s: (not s.startswith("model"), s))
    base = alt.Chart(frame).encode(
        x=alt.X("finding:N", sort=order, title=None, axis=alt.Axis(**FINDING_AXIS)),
        xOffset=alt.XOffset("source:N", sort=sources),
    )
    bars = base.mark_bar().encode(
        y=alt.Y("value:Q", title=None),
        color=alt.Color("source:N", title="heatmap", sort=sources, scale=alt.Scale(scheme="set2")),
        tooltip=["finding", "metric", "source", alt.Tooltip("value:Q", format=".3f"),
                 alt.Tooltip("lo:Q", format=".3f"), alt.Tooltip("hi:Q", format=".3f")],
    )
    # rows without an interval draw a zero-length rule at their value, so no facet takes the extent of nulls
    err = base.mark_rule(color="#333").transform_calculate(
        lo_drawn="isValid(datum.lo) ? datum.lo : datum.value", hi_drawn="isValid(datum.hi) ? datum.hi : datum.value",
    ).encode(y="lo_drawn:Q", y2="hi_drawn:Q")
    return (
        alt.layer(bars, err)
        .properties(width=260, height=180)
        .facet(facet=alt.Facet("metric:N", title=None), columns=3,
               title="Grad-CAM agreement with annotated boxes, against baseline heatmaps")
        .resolve_scale(y="independent")
    )
