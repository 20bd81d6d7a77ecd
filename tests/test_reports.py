"""The HTML report of real stores built by the real pipeline (tests/report_store.py): what it says
(sources, run names, numbers, read from the specs and tables embedded in the page) agrees with
the store's tables; every chart's data is complete (no 5,000-row cut); the page is
self-contained and bounded at IU-Xray's size; missing analyses are notes."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import polars as pl
import pytest
from report_text import has_key, rows, specs, tables, titled

from embedstore.errors import InputError, StoreError
from embedstore.reports import charts
from embedstore.reports.build import agreement_source
from embedstore.reports.html import Chart, Report, Section, chart_spec, render

NOT_EVALUABLE = " (not evaluable)"
MACRO = "macro (evaluable findings)"
POOLED = "pooled (evaluable findings)"
SPLIT_TABLE = "Positives per finding and split: images and positive patient groups (patients, else studies)"
CLASSIFIER_RUNS = "SELECT run_id, kind, version, config FROM runs WHERE kind IN ('zeroshot', 'probe', 'finetune')"


def _one(found: list[dict]) -> dict:
    assert len(found) == 1, [json.dumps(s)[:80] for s in found]
    return found[0]


def _numbers(cell: str) -> list[float]:
    return [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", cell)]


def _bare(finding: str) -> str:
    """A finding's name without the report's "(not evaluable ...)" mark."""
    return re.sub(r" \(not evaluable[^)]*\)$", "", finding)


def _run_names(store) -> dict[str, str]:
    """run_id -> "<name> @ <version>" as `embedstore compare` names runs (the report's legend)."""
    from embedstore.analyses.compare import run_label

    runs = store.sql("SELECT run_id, kind, version, config FROM runs")
    return {r: f"{run_label(k, json.loads(c))} @ {v}" for r, k, v, c in runs.iter_rows()}


def _select_options(spec: dict) -> dict[str, list[str]]:
    """param name -> the options of its drop-down."""
    return {p["name"]: p["bind"]["options"] for p in _params(spec)
            if isinstance(p.get("bind"), dict) and p["bind"].get("input") == "select"}


def _params(node) -> list[dict]:
    if isinstance(node, dict):
        return list(node.get("params", [])) + [p for v in node.values() for p in _params(v)]
    if isinstance(node, list):
        return [p for v in node for p in _params(v)]
    return []


# ---- the agreement section on a real agreement run (issue 13) ------------------------------
BASELINES = {"": "model", "random": "random", "random_box": "random box (size-matched)", "centre": "centre prior"}


def test_agreement_baselines_are_told_apart_from_the_model(phantom_store, phantom_report):
    """`explain.commands.agreement` stores `pointing@random`, `iou@centre`, ...: each is shown
    as its baseline's value, never as the model's own."""
    _, text = phantom_report
    chart = _one(titled(specs(text), "Grad-CAM agreement"))
    shown = {(r["finding"], r["metric"], r["source"]): r["value"] for r in rows(chart) if "source" in r}
    stored = phantom_store.sql("SELECT m.finding, m.metric, m.value FROM metrics m JOIN runs r USING (run_id) "
                               "WHERE r.kind = 'agreement' AND m.finding IS NOT NULL AND m.metric NOT LIKE 'val_threshold%'")
    assert stored.height and len(shown) == stored.height
    for finding, metric, value in stored.iter_rows():
        assert shown[(finding, *_split_baseline(metric))] == pytest.approx(value)
    assert {s for _, _, s in shown} == {"model", "random", "random box (size-matched)", "centre prior"}


def _split_baseline(metric: str) -> tuple[str, str]:
    """("dice@val_threshold", "centre prior") from "dice@val_threshold@centre": the last suffix names the baseline."""
    name, _, suffix = metric.rpartition("@")
    return (name, BASELINES[suffix]) if suffix in BASELINES else (metric, "model")


def test_overall_agreement_has_metrics_as_rows_and_heatmaps_as_columns(phantom_store, phantom_report):
    _, text = phantom_report
    (caption,) = [c for c in tables(text) if c.startswith("Overall agreement")]
    table = {r["metric"]: r for r in tables(text)[caption]}
    overall = phantom_store.sql("SELECT m.metric, m.value FROM metrics m JOIN runs r USING (run_id) "
                                "WHERE r.kind = 'agreement' AND m.finding IS NULL AND m.metric NOT LIKE 'val_threshold%'")
    assert overall.height == 4 * len(table)  # the model and three baselines
    for metric, value in overall.iter_rows():
        name, source = _split_baseline(metric)
        assert _numbers(table[name][source])[0] == pytest.approx(value, rel=5e-3, abs=5e-4)


@pytest.mark.parametrize("metric, expected", [
    ("pointing", ("pointing", "model")),
    ("pointing@random", ("pointing", "random")),
    ("pointing@random_box", ("pointing", "random box (size-matched)")),
    ("iou@centre", ("iou", "centre prior")),
    ("pixel_auroc", ("pixel_auroc", "model")),
    ("dice@val_threshold", ("dice@val_threshold", "model")),  # a model metric at a threshold, not a baseline
])
def test_agreement_source_reads_metric_at_baseline(metric, expected):
    assert agreement_source(metric) == expected


# ---- per-finding results -----------------------------------------------------------------
def test_per_finding_dots_show_every_stored_metric_with_its_interval(phantom_store, phantom_report):
    _, text = phantom_report
    chart = _one(titled(specs(text), "Per-finding metrics"))
    metrics = ["auroc", "ap", "f1", "f1@default", "precision", "recall", "brier", "ece"]
    assert _select_options(chart) == {"metric": metrics}  # one metric at a time, picked in the page
    shown = {(r["series"], _bare(r["finding"]), r["metric"]): r for r in rows(chart)}
    names = _run_names(phantom_store)
    stored = phantom_store.sql(
        f"SELECT m.run_id, m.finding, m.metric, m.value, m.lo, m.hi, f.evaluable FROM metrics m "
        f"JOIN run_findings f USING (run_id, finding) WHERE m.run_id IN (SELECT run_id FROM ({CLASSIFIER_RUNS})) "
        f"AND m.metric IN ({', '.join(repr(m) for m in metrics)})")
    assert len(shown) == stored.height > 1000
    for run_id, finding, metric, value, lo, hi, evaluable in stored.iter_rows():
        row = shown[(names[run_id], finding, metric)]
        assert row["value"] == pytest.approx(value, nan_ok=True) if value == value else row["value"] is None
        assert (row["lo"], row["hi"]) == ((None, None) if lo is None else (pytest.approx(lo), pytest.approx(hi)))
        assert row["evaluable"] is evaluable
        if not evaluable:
            assert row["lo"] is None  # point estimate only


def test_not_evaluable_findings_are_marked_wherever_findings_appear(phantom_store, phantom_report):
    """Fine-tuned heads score with the default minimum of positive patients, zero-shot and probe
    with a lower one here: findings are evaluable in no run, in some runs, or in every run."""
    _, text = phantom_report
    status = phantom_store.sql("SELECT finding, bool_and(evaluable) AS always, bool_or(evaluable) AS ever "
                               "FROM run_findings GROUP BY finding")
    marks = {f: "" if always else " (not evaluable in some runs)" if ever else NOT_EVALUABLE
             for f, always, ever in status.iter_rows()}
    assert NOT_EVALUABLE in marks.values() and " (not evaluable in some runs)" in marks.values()
    marked = {f + mark for f, mark in marks.items()}
    all_specs = specs(text)
    for title in ("Per-finding metrics", "Paired differences", "Reliability", "Over-prediction"):
        shown = {r["finding"] for r in rows(_one(titled(all_specs, title))) if "finding" in r} - {MACRO, POOLED}
        assert shown == marked, title  # every finding, none dropped, each marked
    for title in ("ROC curves", "Precision-recall curves"):  # a curve needs positives and negatives
        shown = {r["finding"] for r in rows(_one(titled(all_specs, title)))}
        assert shown <= marked and {f for f in marked if f.endswith(NOT_EVALUABLE)} & shown, title
    split = {r["finding"]: r["evaluable (scored split)"] for r in tables(text)[SPLIT_TABLE]}
    for f, mark in marks.items():
        assert split[f] == "yes" if not mark else split[f].startswith("no: " if mark == NOT_EVALUABLE else "in "), split[f]


def test_overall_tables_have_metrics_as_rows_and_runs_as_columns(phantom_store, phantom_report):
    _, text = phantom_report
    names = _run_names(phantom_store)
    for version in ("v1", "v2"):
        table = tables(text)[f"Overall metrics of version {version} (95 % intervals)"]
        runs = phantom_store.sql(f"{CLASSIFIER_RUNS} AND version = '{version}'")
        columns = ["metric"] + sorted(names[r].removesuffix(f" @ {version}") for r in runs["run_id"])
        assert sorted(table[0]) == sorted(columns) and len(columns) <= 7  # a handful of columns, whatever the metrics
        assert table[0]["metric"] == "macro_auroc"
        by_metric = {r["metric"]: r for r in table}
        stored = phantom_store.sql(f"SELECT run_id, metric, value, lo, hi FROM metrics WHERE finding IS NULL AND "
                                   f"run_id IN ({', '.join(repr(r) for r in runs['run_id'])}) AND metric NOT LIKE '%@epoch%'")
        assert len(by_metric) == stored["metric"].n_unique()
        for run_id, metric, value, lo, hi in stored.iter_rows():
            cell = by_metric[metric][names[run_id].removesuffix(f" @ {version}")]
            if value != value:  # NaN: a macro metric with no evaluable finding is shown empty, not as a number
                assert cell == "", (metric, cell)
                continue
            expected = [value] if lo is None else [value, lo, hi]
            assert _numbers(cell) == pytest.approx(expected, rel=5e-3, abs=5e-4), (metric, cell)


def test_forest_plot_shows_the_paired_comparisons(phantom_store, phantom_report):
    _, text = phantom_report
    chart = _one(titled(specs(text), "Paired differences"))
    assert _select_options(chart) == {"metric": ["auroc", "ap", "f1"]}
    shown = {(r["comparison"], r["finding"], r["metric"]): r for r in rows(chart)}
    expected = {}
    for version, methods in (("v1", ["zeroshot:pos-neg", "probe"]), ("v2", ["zeroshot:pos-neg", "probe", "finetuned"])):
        df = phantom_store.compare(methods=methods, version=version)
        names = {"zeroshot:pos-neg": "zero-shot pos-neg", "probe": "probe", "finetuned": "fine-tuned head"}
        for r in df.iter_rows(named=True):
            expected[(f"{version}: {names[r['method_2']]} - {names[r['method_1']]}", r["finding"], r["metric"])] = r
    for r in phantom_store.compare("v1", "v2").filter(pl.col("kind") == "probe").iter_rows(named=True):
        if r["metric"].removeprefix("macro_") in ("auroc", "ap", "f1"):
            expected[("probe: v2 - v1", r["finding"], r["metric"])] = r
    assert {c for c, _, _ in shown} == {c for c, _, _ in expected} and len({c for c, _, _ in shown}) == 5
    assert len(shown) == len(expected)
    for (comparison, finding, metric), r in expected.items():
        row = shown[(comparison, MACRO, metric.removeprefix("macro_")) if finding is None else
                    (comparison, _marked(shown, comparison, finding, metric), metric)]
        assert row["verdict"] == r["verdict"]
        for key in ("diff", "diff_lo", "diff_hi", "value_1", "value_2"):
            undefined = r[key] is None or r[key] != r[key]  # NaN (e.g. AUROC without positives) is null in JSON
            assert row[key] == (None if undefined else pytest.approx(r[key])), (comparison, finding, key)
    verdicts = {r["verdict"] for r in shown.values()}
    assert "not evaluable" in verdicts and verdicts - {"not evaluable"}
    assert _sort_of(chart, "finding")[0] == MACRO  # the macro row on top
    assert has_key(chart, "datum")  # the zero line


def _marked(shown: dict, comparison: str, finding: str, metric: str) -> str:
    return next(f for c, f, m in shown if c == comparison and m == metric and _bare(f) == finding)


def _sort_of(spec: dict, field: str) -> list:
    stack = [spec]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("field") == field and isinstance(node.get("sort"), list):
                return node["sort"]
            stack += list(node.values())
        elif isinstance(node, list):
            stack += node
    return []


def test_calibration_curves_and_scores_come_from_the_calibration_table(phantom_store, phantom_report):
    _, text = phantom_report
    chart = _one(titled(specs(text), "Reliability"))
    names = _run_names(phantom_store)
    shown = {(r["series"], _bare(r["finding"]), round(r["mean_predicted"], 9)): r["observed"]
             for r in rows(chart) if "series" in r}
    stored = phantom_store.sql(f"SELECT run_id, coalesce(finding, '{POOLED}') AS finding, mean_predicted, observed "
                               f"FROM calibration WHERE run_id IN (SELECT run_id FROM ({CLASSIFIER_RUNS}))")
    assert len(shown) == stored.height > 0
    for run_id, finding, predicted, observed in stored.iter_rows():
        assert shown[(names[run_id], finding, round(predicted, 9))] == pytest.approx(observed)
    assert _select_options(chart)["finding"][0] == POOLED
    assert any(r.get("mean_predicted") == 0 and r.get("observed") == 0 for r in rows(chart))  # the diagonal
    table = {r["series"]: r for r in tables(text)["Brier score and ECE per run (95 % intervals where computed)"]}
    scores = phantom_store.sql(f"SELECT run_id, metric, value FROM metrics WHERE finding IS NULL AND metric IN "
                               f"('macro_brier', 'macro_ece') AND run_id IN (SELECT run_id FROM ({CLASSIFIER_RUNS}))")
    assert scores.height > 0
    for run_id, metric, value in scores.iter_rows():
        cell = table[names[run_id]][metric]
        assert cell == "" if value != value else _numbers(cell)[0] == pytest.approx(value, rel=5e-3, abs=5e-4)


def test_split_table_counts_positive_images_and_patients(phantom_store, phantom_report):
    _, text = phantom_report
    table = {r["finding"]: r for r in tables(text)[SPLIT_TABLE]}
    positives = phantom_store.sql("SELECT l.finding, i.split, coalesce('patient ' || i.patient_id, 'study ' || i.study_id) "
                                  "AS patient FROM labels l JOIN images i USING (id) WHERE l.value = 1")
    findings = phantom_store.findings()
    assert sorted(table) == findings
    for finding in findings:
        for split in ("train", "val", "test"):
            part = positives.filter((pl.col("finding") == finding) & (pl.col("split") == split))
            assert int(table[finding][f"{split} images"]) == part.height
            assert int(table[finding][f"{split} groups"]) == part["patient"].n_unique()


def test_overprediction_matches_the_stored_predictions(phantom_store, phantom_report):
    _, text = phantom_report
    over = _one(titled(specs(text), "Over-prediction"))
    got = {(r["series"], _bare(r["finding"])): (r["prevalence"], r["predicted_rate"]) for r in rows(over) if "series" in r}
    scores = phantom_store.sql("SELECT s.run_id, s.id, s.finding, s.pred FROM image_scores s")
    labels = phantom_store.sql("SELECT id, finding, value FROM labels WHERE value IN (0, 1)")
    joined = scores.join(labels, on=["id", "finding"])
    assert len(got) == joined.select("run_id", "finding").unique().height
    names = _run_names(phantom_store)
    for (run_id, finding), g in joined.group_by("run_id", "finding"):
        prevalence, rate = got[(names[run_id], finding)]
        assert prevalence == pytest.approx(np.mean(g["value"].to_numpy() == 1))
        assert rate == pytest.approx(np.mean(g["pred"].to_numpy()))


def test_gallery_images_are_inline_and_bounded(phantom_store, phantom_report):
    _, text = phantom_report
    imgs = re.findall(r'<img [^>]*src="([^"]+)"', text.split("<main>")[1])
    on_disk = list((phantom_store.path / "heatmaps").glob("agreement-*/*.png"))
    assert 0 < len(imgs) == min(len(on_disk), 24)
    assert all(src.startswith("data:image/") for src in imgs)


def test_version_selection(phantom_store, tmp_path):
    both = phantom_store.report(compare=("v1", "v2"), out=tmp_path / "c.html").path.read_text()
    assert "probe(classifier=logreg) @ v2" in both and "probe(classifier=logreg) @ v1" in both
    only = phantom_store.report(version="v1", out=tmp_path / "v.html").path.read_text()
    body = only.split("<main>")[1]
    assert "@ v2" not in body and "Overall metrics of version v2" not in body
    with pytest.raises(InputError, match="'v9'"):
        phantom_store.report(version="v9", out=tmp_path / "x.html")
    with pytest.raises(InputError, match="does not exist"):
        phantom_store.report(out=tmp_path / "no" / "x.html")
    assert not (tmp_path / "x.html").exists()


# ---- at IU-Xray's size ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def iu_report(tmp_path_factory):
    """A store of IU-Xray's size (7,470 images x 18 findings, synthetic vectors, real analyses) and its report."""
    from report_store import iu_sized

    tmp = tmp_path_factory.mktemp("iu")
    store = iu_sized(tmp)
    built = store.report(out=tmp / "report.html")
    return store, built, built.path.read_text(encoding="utf-8")


@pytest.mark.slow  # IU-Xray's size: ~8 s
def test_iu_sized_report_is_complete_and_bounded(iu_report):
    store, built, text = iu_report
    assert built.size_bytes < 20e6
    all_specs = specs(text)
    assert len(all_specs) == built.charts == int(re.search(r'name="embedstore-charts" content="(\d+)"', text).group(1))
    stored = store.sql("SELECT p.method, i.image_id FROM projections p JOIN images i ON i.id = p.id")
    assert stored.filter(pl.col("method") == "pca").height > 1000  # every test image
    for method, g in stored.group_by("method"):
        ids = [r["image_id"] for r in rows(_one(titled(all_specs, f"{method[0]} of version v1")))]
        assert sorted(ids) == sorted(g["image_id"])
    # Charts beyond Altair's 5,000 rows keep every row: the curves, one point list per run and finding.
    roc = _one(titled(all_specs, "ROC curves"))
    scored = store.sql("SELECT s.run_id, s.finding, s.score, l.value AS y_true FROM image_scores s JOIN labels l "
                       "USING (id, finding) WHERE l.value IN (0, 1)")
    points, _ = charts.curve_points(scored.rename({"run_id": "series"}), 200)
    assert len(rows(roc)) == points.height > 5000
    dots = _one(titled(all_specs, "Per-finding metrics"))
    stored = store.sql("SELECT count(*) AS n FROM metrics WHERE finding IS NOT NULL AND metric IN "
                       "('auroc', 'ap', 'f1', 'f1@default', 'precision', 'recall', 'brier', 'ece') "
                       "AND run_id IN (SELECT run_id FROM runs WHERE kind IN ('zeroshot', 'probe'))")["n"][0]
    assert len(rows(dots)) == stored


@pytest.mark.slow  # IU-Xray's size: ~8 s
def test_report_is_self_contained(iu_report):
    _, _, text = iu_report
    # The JS bundle is inlined exactly once, whatever the number of charts.
    assert text.count("window.vegaEmbed=") == 1
    assert not re.search(r"""<(script|link|img|iframe)[^>]*(src|href)\s*=\s*["']?(https?:)?//""", text, re.I)
    assert not re.search(r"url\(\s*[\"']?(https?:)?//", text, re.I)
    for spec in specs(text):
        assert not has_key(spec, "url"), "a chart loads data from a URL"
        assert "$schema" not in spec
        # vega-tooltip shows a field titled "image" as a picture, loading its value as a URL
        assert "image" not in _tooltip_titles(spec), "a tooltip field titled 'image' is fetched as a URL"


def _tooltip_titles(node) -> set[str]:
    if isinstance(node, dict):
        tips = node.get("tooltip", [])
        own = {t["title"] for t in (tips if isinstance(tips, list) else [tips]) if isinstance(t, dict) and "title" in t}
        return own.union(*(_tooltip_titles(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_tooltip_titles(v) for v in node))
    return set()


# ---- charts on hand-made frames, and the page itself -------------------------------------
def test_projection_keeps_every_row_beyond_altairs_limit():
    import altair as alt

    n = 7470
    rng = np.random.default_rng(0)
    frame = pl.DataFrame({"image_id": [f"img{i}" for i in range(n)], "x": rng.normal(size=n),
                          "y": rng.normal(size=n), "labels": "none", "split": "test", "view": "frontal"})
    chart = charts.projection_chart(frame, ["Opacity"], "pca")
    with pytest.raises(alt.MaxRowsError):  # the limit this code must lift
        chart.to_dict()
    spec = chart_spec(chart)
    ids = [r["image_id"] for r in rows(spec)]
    assert sorted(ids) == sorted(frame["image_id"].to_list())
    with pytest.raises(alt.MaxRowsError):  # and the caller's Altair settings are untouched
        chart.to_dict()


def test_curve_points_lie_on_sklearn_curves():
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    rng = np.random.default_rng(3)
    y = (rng.random(5000) < 0.1).astype(int)
    s = y * 1.0 + rng.normal(size=5000)
    frame = pl.DataFrame({"series": "a", "finding": "F", "y_true": y, "score": s})
    roc, pr = charts.curve_points(frame, max_points=150)
    assert roc.height <= 150 and pr.height <= 150
    fpr, tpr, _ = roc_curve(y, s)
    full = {(round(a, 4), round(b, 4)) for a, b in zip(fpr, tpr)}
    assert set(zip(roc["fpr"], roc["tpr"])) <= full
    assert (0.0, 0.0) in set(zip(roc["fpr"], roc["tpr"])) and (1.0, 1.0) in set(zip(roc["fpr"], roc["tpr"]))
    prec, rec, _ = precision_recall_curve(y, s)
    assert set(zip(pr["recall"], pr["precision"])) <= {(round(a, 4), round(b, 4)) for a, b in zip(rec, prec)}
    assert roc["auc"][0] == pytest.approx(roc_auc_score(y, s), abs=1e-4)
    assert pr["ap"][0] == pytest.approx(average_precision_score(y, s), abs=1e-4)
    # A finding with one class only has no curve.
    one = pl.DataFrame({"series": "a", "finding": "G", "y_true": [0, 0, 0], "score": [0.1, 0.2, 0.3]})
    assert charts.curve_points(one)[0].is_empty()


def test_script_breaking_text_is_escaped():
    import altair as alt

    frame = pl.DataFrame({"a": ["</script><script>alert(1)</script>"], "b": [1]})
    report = Report("t", sections=[Section("s", blocks=[Chart(chart_spec(alt.Chart(frame).mark_bar().encode(x="a:N", y="b:Q")))])])
    text = render(report)
    spec = specs(text)[0]
    assert spec["datasets"] and list(spec["datasets"].values())[0][0]["a"] == frame["a"][0]
    assert "alert(1)</script>" not in text


# ---- stores without analyses ---------------------------------------------------------------
@pytest.fixture(scope="module")
def bare_store(tmp_path_factory):
    from report_store import labels_only

    return labels_only(tmp_path_factory.mktemp("bare"))


def test_missing_analyses_are_notes_not_errors(bare_store, tmp_path):
    built = bare_store.report(out=tmp_path / "r.html")
    text = built.path.read_text()
    assert built.charts == 3  # the data-set charts only
    assert "not run yet: run <code>embedstore zeroshot</code>" in text
    assert "not run yet: run <code>embedstore separability</code>" in text
    assert "not run yet: run <code>embedstore agreement --boxes FILE</code>" in text
    assert "Positives per finding and split" in text


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_report_is_written_with_the_users_umask(bare_store, tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        built = bare_store.report(out=tmp_path / "r.html")
    finally:
        os.umask(old)
    assert built.path.stat().st_mode & 0o777 == mode
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]  # no temporary file left behind


def test_empty_store_is_a_clear_error(tmp_path):
    import embedstore

    with pytest.raises(StoreError, match="embedstore encode"):
        embedstore.open(tmp_path / "empty").report(out=tmp_path / "r.html")


def test_cli_writes_report_and_reports_bad_version(bare_store, tmp_path, capsys):
    from embedstore.cli import main

    out = tmp_path / "r.html"
    with pytest.raises(SystemExit) as ok:
        main(["report", "--out", str(out), "--store", str(bare_store.path)])
    assert ok.value.code in (0, None) and out.exists()
    assert f"report: {out}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as bad:
        main(["report", "--version", "nope", "--out", str(tmp_path / "n.html"), "--store", str(bare_store.path)])
    assert bad.value.code == 2
    assert "error: unknown version 'nope'" in capsys.readouterr().err


def test_cli_compare_puts_two_versions_side_by_side(small_two_versions, tmp_path, capsys):
    """`report --compare V1 V2` on a store whose latest version (v2, another model's) has no
    lineage: the default report holds v2 alone, the compared one both versions' runs."""
    from embedstore.cli import main

    store = ["--store", str(small_two_versions.path)]
    for name, args in (("default.html", []), ("compare.html", ["--compare", "v1", "v2"])):
        with pytest.raises(SystemExit) as ok:
            main(["report", "--out", str(tmp_path / name), *args, *store])
        assert ok.value.code in (0, None)
    capsys.readouterr()
    default, compared = ((tmp_path / name).read_text(encoding="utf-8") for name in ("default.html", "compare.html"))
    assert "version v2 ·" in default and "probe(classifier=logreg)" in default
    assert "@ v1" not in default.split("<main>")[1]  # one version: runs need no version suffix
    assert "versions v1 vs v2 ·" in compared
    assert "probe(classifier=logreg) @ v1" in compared and "probe(classifier=logreg) @ v2" in compared
    for bad, message in ((["--compare", "v1", "v9"], "'v9'"), (["--compare", "v1", "v2", "--version", "v1"], "either")):
        with pytest.raises(SystemExit) as exc:
            main(["report", "--out", str(tmp_path / "bad.html"), *bad, *store])
        assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "bad.html").exists()
