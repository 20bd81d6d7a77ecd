"""`embedstore agreement`: heatmaps against annotated boxes of held-out images, beside baselines."""

from __future__ import annotations

from typing import Optional

import typer

from embedstore.cli import app
from embedstore.cli.options import BOX_FORMAT, FORCE, FORMAT, LAYER, METHOD, N_BOOT, STORE, TARGET, VERSION, open_store
from embedstore.cli.output import Format, emit, emit_result


@app.command()
def agreement(
    boxes: Optional[str] = typer.Option(None, "--boxes", help="Box file (default: the store's boxes table)."),
    box_format: str = BOX_FORMAT,
    target: str = TARGET,
    version: Optional[str] = VERSION,
    method: str = METHOD,
    layer: Optional[str] = LAYER,
    threshold: str = typer.Option("top:0.15", "--threshold",
                                  help="Heatmap -> mask for IoU/Dice/P/R/F1: top:Q (highest Q share of pixels), value:V, otsu."),
    split: str = typer.Option("test", "--split",
                              help="train|val|test|all: the boxed images scored (val boxes always fit the value cut)."),
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    n_boot: int = N_BOOT,
    seed: int = typer.Option(0, "--seed"),
    items_out: Optional[str] = typer.Option(None, "--items-out", help="Also write the per-(image, finding) metrics as CSV."),
    force: bool = FORCE,
    store: Optional[str] = STORE,
    fmt: Format = FORMAT,
) -> None:
    """Pointing game, energy, IoU, Dice, pixel P/R/F1, pixel AUROC/AUPRC and Dice at a val-fitted
    cut of heatmaps against the boxes of the test split, beside random, size-matched random box and
    centre-prior baselines (metric@random, metric@random_box, metric@centre); stored as an
    `agreement` run, with overlay PNGs for the report. Prints (to stderr) how many boxed items it
    scored and left out."""
    result = open_store(store).agreement(boxes, box_format=box_format, target=target, version=version, method=method,
                                         layer=layer, threshold=threshold, split=split, batch_size=batch_size,
                                         n_boot=n_boot, seed=seed, force=force, progress=fmt is Format.table)
    if items_out and result.per_item is not None:
        result.per_item.write_csv(items_out)
    left = result.left_out_text()  # e.g. "test split: 109 boxed items scored; left out: 274 train, 40 val"
    typer.echo(f"{result.split} split: {result.scored} boxed items scored" + (f"; left out: {left}" if left else ""), err=True)
    if not emit_result(result, fmt):
        title = f"agreement run {result.run.run_id}" + (" (reused)" if result.run.reused else "")
        emit(result.to_polars(), fmt, title=title)
