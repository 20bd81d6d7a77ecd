"""The report in a real browser: headless Chromium, networking off, every chart rendered, no errors,
and the statistics charts drew one mark per row of their data at the drop-downs' first choice.

Chromium comes from Debian's `chromium` package (scripts/install-chromium.sh, run by `make test`).
The report is the session's phantom study (tests/report_store.py, `phantom_report` in conftest.py).
"""

from __future__ import annotations

import re

import pytest
from report_text import rows, specs, titled
from skip_policy import CHROMIUM_MISSING

from embedstore.reports.browser import check_report, find_chromium, screenshot
from embedstore.reports.html import Chart, Report, Section, render

pytestmark = pytest.mark.skipif(find_chromium() is None, reason=CHROMIUM_MISSING)


@pytest.fixture(scope="module")
def checked(phantom_report):
    built, text = phantom_report
    return built, text, check_report(built.path)


def _drawn(dom: str, spec_index: int, mark: str) -> int:
    """How many items of one mark type (symbol, rule, ...) chart `spec_index` drew in the page."""
    body = re.split(r'<div class="chart[^"]*" id="chart-\d+">', dom)[spec_index + 1]
    groups = re.findall(rf'<g class="mark-{mark} role-mark[^"]*"[^>]*>(.*?)</g>', body, re.S)
    return sum(len(re.findall(r"<(path|line)\b", g)) for g in groups)


def _options(dom: str, spec_index: int) -> dict[str, list[str]]:
    body = re.split(r'<div class="chart[^"]*" id="chart-\d+">', dom)[spec_index + 1]
    body = re.split(r'<div class="chart[^"]*" id="chart-\d+">', body)[0]
    return {name: re.findall(r'<option value="([^"]*)"', opts) for name, opts in
            re.findall(r'<select name="(\w+)">(.*?)</select>', body, re.S)}


def test_every_chart_renders_offline_without_errors(checked):
    built, text, check = checked
    expected = len(re.findall(r'<div class="chart" id="chart-\d+">', text))
    assert expected == built.charts >= 14  # every section of the phantom study has its charts
    assert check.charts == expected
    assert check.rendered == expected, check
    assert check.errors == [] and check.console_errors == [], check
    assert check.warnings == [], check


def _spec_index(text: str, title: str) -> tuple[int, dict]:
    all_specs = specs(text)
    (spec,) = titled(all_specs, title)
    return all_specs.index(spec), spec


def test_per_finding_dots_draw_a_dot_per_run_and_finding(checked):
    _, text, check = checked
    i, spec = _spec_index(text, "Per-finding metrics")
    auroc = [r for r in rows(spec) if r["metric"] == "auroc"]
    assert _options(check.dom, i)["metric"][:3] == ["auroc", "ap", "f1"]
    assert _drawn(check.dom, i, "symbol") == sum(r["value"] is not None for r in auroc) > 100
    assert _drawn(check.dom, i, "rule") == sum(r["lo"] is not None for r in auroc) > 10  # intervals: evaluable only


def test_forest_plot_draws_every_comparison(checked):
    _, text, check = checked
    i, spec = _spec_index(text, "Paired differences")
    auroc = [r for r in rows(spec) if r["metric"] == "auroc"]
    panels = len({r["comparison"] for r in auroc})
    assert panels == 5 and _options(check.dom, i)["metric"] == ["auroc", "ap", "f1"]
    assert _drawn(check.dom, i, "symbol") == sum(r["diff"] is not None for r in auroc)
    # one interval per row that has one, and the zero line in every panel
    assert _drawn(check.dom, i, "rule") == sum(r["diff_lo"] is not None for r in auroc) + panels
    for comparison in {r["comparison"] for r in auroc}:
        assert f">{comparison}<" in check.dom


def test_reliability_curves_start_pooled_with_a_finding_selector(checked):
    _, text, check = checked
    i, spec = _spec_index(text, "Reliability")
    pooled = [r for r in rows(spec) if r.get("finding") == "pooled (evaluable findings)"]
    options = _options(check.dom, i)["finding"]
    assert options[0] == "pooled (evaluable findings)" and len(options) > 10
    assert _drawn(check.dom, i, "symbol") == len(pooled) > 20  # one point per bin and run


def test_a_broken_chart_is_caught(tmp_path):
    # Negative control: one good chart and one that Vega cannot render.
    good = {"data": {"values": [{"a": 1}]}, "mark": "point", "encoding": {"x": {"field": "a", "type": "quantitative"}}}
    bad = {"data": {"values": [{"a": 1}]}, "mark": "no-such-mark"}
    out = tmp_path / "broken.html"
    out.write_text(render(Report("t", sections=[Section("s", blocks=[Chart(good), Chart(bad)])])))
    check = check_report(out)
    assert check.charts == 2 and check.rendered == 1
    assert check.errors and not check.ok


def test_screenshot(checked, tmp_path):
    from PIL import Image

    built, _, _ = checked
    png = screenshot(built.path, tmp_path / "shot.png", width=1400, height=1200, scale_to=700)
    with Image.open(png) as img:
        assert img.size == (700, 600)
        # Not a blank page: the header and charts give many distinct colours.
        assert len(img.convert("RGB").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 20
