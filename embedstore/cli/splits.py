"""`embedstore splits`: the store's frozen splits, and whether each finding can be evaluated on them."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from embedstore.cli import app
from embedstore.cli.options import FORMAT, STORE, open_store
from embedstore.cli.output import Format, emit, emit_result


@app.command()
def splits(
    min_positives: int = typer.Option(10, "--min-positives", min=0,
                                      help="Warn about findings with fewer positive groups in val or test."),
    store: Optional[str] = STORE,
    fmt: Format = FORMAT,
) -> None:
    """Positives per finding in train, val and test (as groups and as images), how the splits were
    assigned (method, seed, fractions, images each method placed) and the views known, given and
    inferred per split (on screen)."""
    report = open_store(store).splits(min_positives=min_positives)
    if not emit_result(report, fmt):
        emit(report.methods, fmt, title="how the splits were assigned")
        emit(report.findings, fmt, title="positives per split (groups = patients, else studies)")
        emit(report.views, fmt, title="views per split: known (the data set), given (--views file), inferred (infer-views)")
    if report.warning:
        print(f"warning: {report.warning}", file=sys.stderr)
