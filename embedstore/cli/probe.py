"""`embedstore probe`: a linear (or kNN) probe on stored vectors."""

from __future__ import annotations

from typing import Optional

import typer

from embedstore.cli import app
from embedstore.cli.options import (BLANK, CALIBRATE_ON, FORCE, FORMAT, MIN_POSITIVES, N_BOOT, OPERATING_POINT, STORE,
                                    UNCERTAIN, VERSION, WHERE, open_store, split_or_none)
from embedstore.cli.output import Format, emit, emit_result
from embedstore.cli.tables import PER_FINDING, show_runs


@app.command()
def probe(
    version: Optional[str] = VERSION,
    classifier: str = typer.Option("logreg", "--classifier", help="logreg|knn"),
    calibrate_on: str = CALIBRATE_ON,
    operating_point: str = OPERATING_POINT,
    uncertain: str = UNCERTAIN,
    blank: str = BLANK,
    where: Optional[str] = WHERE,
    n_boot: int = N_BOOT,
    min_positives: int = MIN_POSITIVES,
    cooccurrence: bool = typer.Option(False, "--cooccurrence", help="Also print the co-occurrence table."),
    force: bool = FORCE,
    store: Optional[str] = STORE,
    fmt: Format = FORMAT,
) -> None:
    """Linear (or kNN) probe: fit on train, choose C per finding and the threshold on val, score test."""
    runs = open_store(store).probe(version, classifier=classifier, calibrate_on=split_or_none(calibrate_on),
                                   operating_point=operating_point, uncertain=uncertain, blank=blank, where=where,
                                   n_boot=n_boot, min_positives=min_positives, force=force)
    if emit_result(runs, fmt):
        return
    show_runs(runs, "probe", names=PER_FINDING + ["C"])
    if cooccurrence and "cooccurrence" in runs[0].tables:
        co = runs[0].tables["cooccurrence"]
        emit(co.pivot(on="predicted", index="present", values="rate"), fmt,
             title="rate of predicting <column> when only <present> is positive")
