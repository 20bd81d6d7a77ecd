"""The report in a real browser: headless Chromium, networking off, every chart rendered, no errors.

Chromium comes from Debian's `chromium` package (scripts/install-chromium.sh, run by `make test`).
"""

from __future__ import annotations

import re

import pytest

from embedstore.reports.browser import check_report, find_chromium, screenshot
from embedstore.reports.build import build_report
from embedstore.reports.html import Chart, Report, Section, render
from embedstore.reports.sample import SampleStore

pytestmark = pytest.mark.skipif(
    find_chromium() is None,
    reason="chromium is not installed and could not be (needs root and apt-get: scripts/install-chromium.sh)",
)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    built = build_report(SampleStore(n_images=1500, path=tmp / "store"), out=tmp / "report.html")
    return built


def test_every_chart_renders_offline_without_errors(report):
    text = report.path.read_text(encoding="utf-8")
    expected = len(re.findall(r'<div class="chart" id="chart-\d+">', text))
    assert expected == report.charts >= 10  # every section of the sample store has its charts
    check = check_report(report.path)
    assert check.charts == expected
    assert check.rendered == expected, check
    assert check.errors == [] and check.console_errors == [], check
    assert check.warnings == [], check


def test_a_broken_chart_is_caught(tmp_path):
    # Negative control: one good chart and one that Vega cannot render.
    good = {"data": {"values": [{"a": 1}]}, "mark": "point", "encoding": {"x": {"field": "a", "type": "quantitative"}}}
    bad = {"data": {"values": [{"a": 1}]}, "mark": "no-such-mark"}
    out = tmp_path / "broken.html"
    out.write_text(render(Report("t", sections=[Section("s", blocks=[Chart(good), Chart(bad)])])))
    check = check_report(out)
    assert check.charts == 2 and check.rendered == 1
    assert check.errors and not check.ok


def test_screenshot(report, tmp_path):
    from PIL import Image

    png = screenshot(report.path, tmp_path / "shot.png", width=1400, height=1200, scale_to=700)
    with Image.open(png) as img:
        assert img.size == (700, 600)
        # Not a blank page: the header and charts give many distinct colours.
        assert len(img.convert("RGB").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 20
