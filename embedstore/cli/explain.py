"""`embedstore explain | agreement`: Grad-CAM heatmaps and their agreement with annotated boxes."""

from __future__ import annotations

from typing import Optional

import typer

from embedstore.cli import app
from embedstore.cli.output import Format

STORE_HELP = "Store directory (else $EMBEDSTORE_STORE, else ./.embedstore)."
TARGET_HELP = "zeroshot (pos-neg logit of the finding's prompts) | probe (stored probe logit) | finetuned (head logit)."
METHOD_HELP = "gradcam | gradcam++ | hirescam | xgradcam | layercam | eigencam | eigengradcam | gradcam-elementwise."
LAYER_HELP = "Target layer, dotted (negative indices allowed), e.g. visual.transformer.resblocks.-1.ln_1; default per architecture."


@app.command()
def explain(
    image_id: str = typer.Argument(..., help="The image's id in the store."),
    finding: str = typer.Option(..., "--finding", "-f", help="Finding to explain."),
    target: str = typer.Option("zeroshot", "--target", help=TARGET_HELP),
    version: Optional[str] = typer.Option(None, "--version", "-v", help="Version (default: the latest)."),
    method: str = typer.Option("gradcam", "--method", help=METHOD_HELP),
    layer: Optional[str] = typer.Option(None, "--layer", help=LAYER_HELP),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Overlay PNG (default explain-ID-FINDING-METHOD.png)."),
    colormap: str = typer.Option("jet", "--colormap", help="Matplotlib colormap name."),
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
    fmt: Format = typer.Option(Format.table, "--format"),
) -> None:
    """Grad-CAM heatmap of one image for one finding, drawn on the ORIGINAL image with its boxes."""
    from embedstore.cli.output import emit
    from embedstore.explain.commands import explain as run

    emit(run(image_id, finding, target=target, version=version, method=method, layer=layer, out=out,
             store=store, colormap=colormap), fmt)


@app.command()
def agreement(
    boxes: Optional[str] = typer.Option(None, "--boxes", help="Box file (default: the store's boxes table)."),
    box_format: str = typer.Option("auto", "--box-format", help="auto|canonical|nih|vindr|rsna"),
    target: str = typer.Option("zeroshot", "--target", help=TARGET_HELP),
    version: Optional[str] = typer.Option(None, "--version", "-v", help="Version (default: the latest)."),
    method: str = typer.Option("gradcam", "--method", help=METHOD_HELP),
    layer: Optional[str] = typer.Option(None, "--layer", help=LAYER_HELP),
    threshold: str = typer.Option("top:0.15", "--threshold",
                                  help="Heatmap -> mask for IoU/Dice/P/R/F1: top:Q (highest Q share of pixels), value:V, otsu."),
    split: str = typer.Option("test", "--split",
                              help="train|val|test|all: the boxed images scored (val boxes always fit the value cut)."),
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    n_boot: int = typer.Option(1000, "--n-boot", min=1, help="Bootstrap resamples of patients for the 95% intervals."),
    seed: int = typer.Option(0, "--seed"),
    items_out: Optional[str] = typer.Option(None, "--items-out", help="Also write the per-(image, finding) metrics as CSV."),
    force: bool = typer.Option(False, "--force", help="Recompute even if a run with this config is stored."),
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
    fmt: Format = typer.Option(Format.table, "--format"),
) -> None:
    """Pointing game, energy, IoU, Dice, pixel P/R/F1, pixel AUROC/AUPRC and Dice at a val-fitted
    cut of heatmaps against the boxes of the test split, beside random, size-matched random box and
    centre-prior baselines (metric@random, metric@random_box, metric@centre); stored as an
    `agreement` run. Prints (to stderr) how many boxed items it scored and left out."""
    from embedstore.cli.output import emit
    from embedstore.explain.commands import agreement as run

    result = run(boxes, box_format=box_format, target=target, version=version, method=method, layer=layer,
                 threshold=threshold, store=store, batch_size=batch_size, n_boot=n_boot, seed=seed, force=force,
                 split=split)
    if items_out and result.per_item is not None:
        result.per_item.write_csv(items_out)
    typer.echo(scored_line(result), err=True)
    title = f"agreement run {result.run.run_id}" + (" (reused)" if result.run.reused else "")
    emit(result.run.metrics, fmt, title=title)


def scored_line(result) -> str:
    """e.g. "test split: 109 boxed items scored; left out: 274 train, 40 val"."""
    left = result.left_out_text()
    return f"{result.split} split: {result.scored} boxed items scored" + (f"; left out: {left}" if left else "")
