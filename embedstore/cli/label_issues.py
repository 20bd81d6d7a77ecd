"""`embedstore label-issues`: labels to check first, from the probe's out-of-sample probabilities and Cleanlab."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from embedstore.cli import app
from embedstore.cli.options import FOLD_SEED, FORCE, FORMAT, STORE, VERSION, WHERE, open_store
from embedstore.cli.output import Format, emit, emit_result


@app.command("label-issues")
def label_issues(
    version: Optional[str] = VERSION,
    folds: int = typer.Option(5, "--folds", help="Folds of patients (else studies) over train and val."),
    seed: int = FOLD_SEED,
    where: Optional[str] = WHERE,
    top: int = typer.Option(30, "--top", min=1, help="Candidates shown on screen (--format csv/json: all)."),
    force: bool = FORCE,
    store: Optional[str] = STORE,
    fmt: Format = FORMAT,
) -> None:
    """Suspect labels (Cleanlab on the probe's out-of-sample probabilities; test never used), most suspect first."""
    found = open_store(store).label_issues(version, folds=folds, seed=seed, where=where, force=force)
    if emit_result(found, fmt):
        return
    emit(found.summary, fmt, title="label issues")
    emit(found.candidates.head(top).drop("id"), fmt,
         title="suspect labels, most suspect first (quality: probability of the given label)")
    for row in found.skipped.iter_rows(named=True):
        print(f"skipped: {row['finding']}: {row['reason']}", file=sys.stderr)
