"""`embedstore demo` end to end at a small size: every stage runs, the report renders, and a
second run reuses what the first stored."""

import shutil

import pytest
from skip_policy import CHROMIUM_MISSING

from embedstore.demo import demo

CHROMIUM_SKIP = f"{CHROMIUM_MISSING}: the report was not opened in a browser"
STAGES = ["synth", "encode", "zeroshot", "probe", "separability", "finetune", "analyses v2", "compare", "seed table",
          "agreement", "report"]


@pytest.mark.slow  # the whole study twice: ~20 s
def test_demo_runs_every_stage_and_writes_a_rendering_report(tmp_path):
    lines: list[str] = []
    first = demo(out=tmp_path / "d", studies=40, epochs=1, echo=lines.append)
    assert [name for name, _, _ in first.stages] == STAGES
    stage_lines = [line for line in lines if not line.startswith(" ")]  # tables follow a stage, indented
    assert [line[:14].strip() for line in stage_lines] == STAGES and first.report.is_file()
    assert "v1 -> v2" in dict((n, note) for n, _, note in first.stages)["finetune"]

    again = demo(out=tmp_path / "d", studies=40, epochs=1, echo=lines.append)
    notes = dict((n, note) for n, _, note in again.stages)
    assert "reusing" in notes["synth"] and "0 encoded" in notes["encode"]
    from embedstore.errors import InputError

    with pytest.raises(InputError, match="made with other settings"):  # not silently the other domain
        demo(out=tmp_path / "d", studies=40, epochs=1, shift="none", echo=lines.append)

    if shutil.which("chromium") is None:
        pytest.skip(CHROMIUM_SKIP)
    from embedstore.reports.browser import check_report

    check = check_report(first.report)
    assert check.rendered == check.charts > 0 and not check.errors and not check.console_errors
