"""`embedstore report`: one self-contained HTML report of the store (opens offline, anywhere)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from embedstore.cli import app
from embedstore.cli.options import FORMAT, STORE, open_store
from embedstore.cli.output import Format, emit_result


@app.command()
def report(
    out: Path = typer.Option(Path("report.html"), "--out", "-o", help="HTML file to write."),
    version: Optional[str] = typer.Option(None, "--version", "-v", help="Report only this version (default: the default version and its lineage)."),
    compare: Optional[tuple[str, str]] = typer.Option(None, "--compare", help="Two versions side by side: --compare V1 V2."),
    store: Optional[str] = STORE,
    fmt: Format = FORMAT,
) -> None:
    """Write an HTML report (data set, metrics, comparisons, calibration, curves, projections, separability,
    Grad-CAM, provenance)."""
    compare = compare if compare and all(compare) else None  # an absent tuple option may arrive as (None, None)
    built = open_store(store).report(out=out, version=version, compare=compare, progress=fmt is Format.table)
    if emit_result(built, fmt):
        return
    print(f"report: {built.path} ({built.charts} charts, {built.size_bytes / 1e6:.1f} MB)")
    for note in built.notes:
        print(f"  {note}")
