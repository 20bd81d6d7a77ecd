"""`embedstore infer-views`: the view of every image whose view is unknown, from a probe on the known ones."""

from __future__ import annotations

from typing import Optional

import typer

from embedstore.cli import app
from embedstore.cli.options import FOLD_SEED, FORCE, FORMAT, STORE, VERSION, open_store
from embedstore.cli.output import Format, emit, emit_result


@app.command("infer-views")
def infer_views(
    version: Optional[str] = VERSION,
    folds: int = typer.Option(5, "--folds", help="Folds of patients (else studies) for the cross-validated accuracy."),
    seed: int = FOLD_SEED,
    force: bool = FORCE,
    store: Optional[str] = STORE,
    fmt: Format = FORMAT,
) -> None:
    """Fit a view probe on known views (train and val), state its held-out accuracy, infer the unknown views."""
    found = open_store(store).infer_views(version, folds=folds, seed=seed, force=force)
    if emit_result(found, fmt):
        return
    emit({k: v for k, v in found.summary.items() if v is not None}, fmt, title="infer-views")
    if found.inferred.height:
        emit(found.inferred.drop("id"), fmt, title="inferred views (images.inferred_view; usable in --where)")
