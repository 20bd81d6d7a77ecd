"""`embedstore report`: one self-contained HTML report of the store (opens offline, anywhere)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from embedstore.cli import app


@app.command()
def report(
    out: Path = typer.Option(Path("report.html"), "--out", "-o", help="HTML file to write."),
    version: Optional[str] = typer.Option(None, "--version", "-v", help="Report only this version (default: the default version and its lineage)."),
    compare: Optional[tuple[str, str]] = typer.Option(None, "--compare", help="Two versions side by side: --compare V1 V2."),
    store: Optional[Path] = typer.Option(None, "--store", envvar="EMBEDSTORE_STORE", help="Store directory (default ./.embedstore)."),
) -> None:
    """Write an HTML report (data set, metrics, curves, projections, separability, Grad-CAM, provenance)."""
    from embedstore.reports.build import build_report

    compare = compare if compare and all(compare) else None  # an absent tuple option may arrive as (None, None)
    built = build_report(store, version=version, compare=compare, out=out)
    print(f"report: {built.path} ({built.charts} charts, {built.size_bytes / 1e6:.1f} MB)")
    for note in built.notes:
        print(f"  {note}")
