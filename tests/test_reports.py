"""The HTML report: every chart's data complete (no 5,000-row cut), self-contained, small enough,
numbers consistent with scikit-learn and with the store, and missing analyses shown as notes."""

from __future__ import annotations

import json
import re

import numpy as np
import polars as pl
import pytest

from embedstore.errors import InputError, StoreError
from embedstore.reports import charts
from embedstore.reports.build import build_report
from embedstore.reports.html import Chart, Report, Section, chart_spec, render
from embedstore.reports.sample import FINDINGS, SampleStore

N_IU = 7470


def _specs(text: str) -> list[dict]:
    blobs = re.findall(r'<script type="application/json" id="spec-\d+">(.*?)</script>', text, re.S)
    return [json.loads(b) for b in blobs]


def _rows(spec: dict) -> list[dict]:
    """Every inline data row of a spec (datasets and inline values)."""
    rows = [r for rows in spec.get("datasets", {}).values() for r in rows]
    stack = [spec]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            data = node.get("data")
            if isinstance(data, dict) and "values" in data:
                rows += data["values"]
            stack += list(node.values())
        elif isinstance(node, list):
            stack += node
    return rows


def _has_key(node, key: str) -> bool:
    if isinstance(node, dict):
        return key in node or any(_has_key(v, key) for v in node.values())
    if isinstance(node, list):
        return any(_has_key(v, key) for v in node)
    return False


@pytest.fixture(scope="module")
def iu_sized(tmp_path_factory):
    """A sample store at IU-Xray's size (7,470 images x 18 findings) and its report."""
    tmp = tmp_path_factory.mktemp("iu")
    findings = FINDINGS + [f"Finding {i}" for i in range(18 - len(FINDINGS))]
    store = SampleStore(n_images=N_IU, findings=findings, path=tmp / "store", seed=1)
    built = build_report(store, out=tmp / "report.html")
    return store, built, built.path.read_text(encoding="utf-8")


def test_projection_keeps_every_row_beyond_altairs_limit():
    import altair as alt

    rng = np.random.default_rng(0)
    frame = pl.DataFrame({"image_id": [f"img{i}" for i in range(N_IU)], "x": rng.normal(size=N_IU),
                          "y": rng.normal(size=N_IU), "labels": "none", "split": "test", "view": "frontal"})
    chart = charts.projection_chart(frame, ["Opacity"], "pca")
    with pytest.raises(alt.MaxRowsError):  # the limit this code must lift
        chart.to_dict()
    spec = chart_spec(chart)
    ids = [r["image_id"] for r in _rows(spec)]
    assert sorted(ids) == sorted(frame["image_id"].to_list())
    with pytest.raises(alt.MaxRowsError):  # and the caller's Altair settings are untouched
        chart.to_dict()


def test_iu_sized_report_is_complete_and_bounded(iu_sized):
    store, built, text = iu_sized
    assert built.size_bytes < 20e6
    specs = _specs(text)
    assert len(specs) == built.charts == int(re.search(r'name="embedstore-charts" content="(\d+)"', text).group(1))
    expected = set(store.sql("SELECT i.image_id FROM projections p JOIN images i ON i.id = p.id")["image_id"])
    methods = store.sql("SELECT DISTINCT method FROM projections")["method"].to_list()
    proj = [s for s in specs if _has_key(s, "binding_select") or "finding" in json.dumps(s.get("params", ""))]
    assert len(proj) == len(methods)
    for spec in proj:
        ids = [r["image_id"] for r in _rows(spec)]
        assert len(ids) == N_IU and set(ids) == expected


def test_report_is_self_contained(iu_sized):
    _, _, text = iu_sized
    # The JS bundle is inlined exactly once, whatever the number of charts.
    assert text.count("window.vegaEmbed=") == 1
    assert not re.search(r"""<(script|link|img|iframe)[^>]*(src|href)\s*=\s*["']?(https?:)?//""", text, re.I)
    assert not re.search(r"url\(\s*[\"']?(https?:)?//", text, re.I)
    for spec in _specs(text):
        assert not _has_key(spec, "url"), "a chart loads data from a URL"
        assert "$schema" not in spec


def test_gallery_images_are_inline_and_bounded(iu_sized):
    store, _, text = iu_sized
    imgs = re.findall(r'<img [^>]*src="([^"]+)"', text.split("<main>")[1])
    on_disk = list((store.path / "heatmaps").rglob("*.png"))
    assert 0 < len(imgs) == min(len(on_disk), 24)
    assert all(src.startswith("data:image/") for src in imgs)


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


def test_overprediction_and_metric_bars_match_the_store(iu_sized):
    store, _, text = iu_sized
    specs = _specs(text)
    over = next(s for s in specs if "Over-prediction" in json.dumps(s.get("title", "")))
    got = {(r["series"], r["finding"]): (r["prevalence"], r["predicted_rate"]) for r in _rows(over) if "series" in r}
    # Independently: numpy over the raw tables, labels 1/0 only.
    scores = store.sql("SELECT s.run_id, s.id, s.finding, s.pred, r.kind FROM image_scores s JOIN runs r USING (run_id)")
    labels = store.sql("SELECT id, finding, value FROM labels WHERE value IN (0, 1)")
    joined = scores.join(labels, on=["id", "finding"])
    assert len(got) == joined.select("run_id", "finding").unique().height  # one point per run and finding
    raw = joined.filter(pl.col("run_id") == "zeroshot-001")
    for finding, g in raw.group_by("finding"):
        prev, rate = got[("zeroshot raw-dot single @ v1", finding[0])]
        assert prev == pytest.approx(np.mean(g["value"].to_numpy() == 1))
        assert rate == pytest.approx(np.mean(g["pred"].to_numpy()))
    bars = next(s for s in specs if "vconcat" in s)
    shown = {(r["series"], r["finding"], r["metric"]) for r in _rows(bars) if "metric" in r}
    stored = store.sql("SELECT run_id, finding, metric FROM metrics WHERE finding IS NOT NULL "
                       "AND metric IN ('auroc', 'average_precision', 'f1') AND run_id NOT LIKE 'separability%' "
                       "AND run_id NOT LIKE 'agreement%'")
    assert len(shown) == stored.height


def test_missing_analyses_are_notes_not_errors(tmp_path):
    store = SampleStore(n_images=300, sections=())
    built = build_report(store, out=tmp_path / "r.html")
    text = built.path.read_text()
    assert built.charts == 3  # the data-set charts only
    assert "not run yet: run <code>embedstore zeroshot</code>" in text
    assert "not run yet: run <code>embedstore separability</code>" in text
    assert "not run yet: run <code>embedstore agreement --boxes FILE</code>" in text


def test_version_selection(tmp_path):
    store = SampleStore(n_images=300)
    both = build_report(store, compare=("v1", "v1-ft"), out=tmp_path / "c.html").path.read_text()
    assert "probe logreg @ v1-ft" in both and "probe logreg @ v1" in both
    only = build_report(store, version="v1", out=tmp_path / "v.html").path.read_text()
    assert "v1-ft" not in only.split("<main>")[1]
    with pytest.raises(InputError, match="'v9'"):
        build_report(store, version="v9", out=tmp_path / "x.html")
    with pytest.raises(InputError, match="does not exist"):
        build_report(store, out=tmp_path / "no" / "x.html")
    assert not (tmp_path / "x.html").exists()


def test_empty_store_is_a_clear_error(tmp_path):
    store = SampleStore(n_images=0, sections=())
    store.con.execute("DELETE FROM versions")
    with pytest.raises(StoreError, match="embedstore encode"):
        build_report(store, out=tmp_path / "r.html")


def test_script_breaking_text_is_escaped():
    import altair as alt

    frame = pl.DataFrame({"a": ["</script><script>alert(1)</script>"], "b": [1]})
    report = Report("t", sections=[Section("s", blocks=[Chart(chart_spec(alt.Chart(frame).mark_bar().encode(x="a:N", y="b:Q")))])])
    text = render(report)
    spec = _specs(text)[0]
    assert spec["datasets"] and list(spec["datasets"].values())[0][0]["a"] == frame["a"][0]
    assert "alert(1)</script>" not in text


def test_cli_writes_report_and_reports_bad_version(tmp_path, monkeypatch, capsys):
    import embedstore.reports.build as build
    from embedstore.cli import main

    monkeypatch.setattr(build, "_open", lambda store: SampleStore(n_images=200))
    out = tmp_path / "r.html"
    with pytest.raises(SystemExit) as ok:
        main(["report", "--out", str(out)])
    assert ok.value.code in (0, None) and out.exists()
    assert f"report: {out}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as bad:
        main(["report", "--version", "nope", "--out", str(tmp_path / "n.html")])
    assert bad.value.code == 2
    assert "error: unknown version 'nope'" in capsys.readouterr().err


def test_report_reads_a_real_store(tmp_path):
    """The same rows written into a real store (its own schema) give the same report charts."""
    api = pytest.importorskip("embedstore.api")
    sample = SampleStore(n_images=400, path=tmp_path / "sample", seed=4)
    real = api.Store(tmp_path / "store")
    with real.connect(write=True) as con:
        for table in ("images", "labels", "versions", "runs", "metrics", "image_scores", "projections"):
            frame = sample.sql(f"SELECT * FROM {table}")
            con.register("rows", frame.to_arrow())
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM rows")
            con.unregister("rows")
    mine = build_report(sample, out=tmp_path / "a.html")
    theirs = build_report(tmp_path / "store", out=tmp_path / "b.html")
    assert theirs.charts == mine.charts and not theirs.notes
    a, b = _specs(mine.path.read_text()), _specs(theirs.path.read_text())
    assert [sorted(map(json.dumps, _rows(x))) for x in a] == [sorted(map(json.dumps, _rows(x))) for x in b]
