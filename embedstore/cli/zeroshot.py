"""`embedstore zeroshot`: zero-shot classification from stored image and prompt vectors."""

from __future__ import annotations

from typing import Optional

import typer

from embedstore.cli import app
from embedstore.cli.options import (BLANK, CALIBRATE_ON, FORCE, FORMAT, MIN_POSITIVES, N_BOOT, OPERATING_POINT, STORE,
                                    UNCERTAIN, VERSION, WHERE, open_store, split_or_none)
from embedstore.cli.output import Format, emit_result
from embedstore.cli.tables import show_runs


@app.command()
def zeroshot(
    version: Optional[str] = VERSION,
    rule: str = typer.Option("all", "--rule", help="raw-dot|cosine|softmax|pos-neg|all"),
    templates: Optional[str] = typer.Option(None, "--templates",
                                            help="single|ensemble (default: single for raw-dot, as the seed, else ensemble)."),
    calibrate_on: str = CALIBRATE_ON,
    operating_point: str = OPERATING_POINT,
    split: str = typer.Option("test", "--split", help="Split to score."),
    uncertain: str = UNCERTAIN,
    blank: str = BLANK,
    where: Optional[str] = WHERE,
    n_boot: int = N_BOOT,
    min_positives: int = MIN_POSITIVES,
    force: bool = FORCE,
    store: Optional[str] = STORE,
    fmt: Format = FORMAT,
) -> None:
    """Zero-shot classification from stored image and prompt vectors, one run per rule."""
    runs = open_store(store).zeroshot(version, rule=rule, templates=templates, calibrate_on=split_or_none(calibrate_on),
                                      operating_point=operating_point, split=split, uncertain=uncertain, blank=blank,
                                      where=where, n_boot=n_boot, min_positives=min_positives, force=force)
    if not emit_result(runs, fmt):
        show_runs(runs, "zeroshot")
