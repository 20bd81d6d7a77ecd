"""`embedstore encode`: every image and label prompt of a data set, once, into the store."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from embedstore.cli import app
from embedstore.cli.options import BOX_FORMAT, DEVICE, FORMAT, STORE, VIEWS_FILE, open_store
from embedstore.cli.output import Format, emit, emit_result


@app.command()
def encode(
    source: str = typer.Argument(..., help="Data set folder or file (Open-i, Kaggle, NIH, CheXpert, manifest CSV)."),
    dataset: str = typer.Option("auto", "--dataset", help="auto|openi|kaggle|nih|chexpert|manifest"),
    model: str = typer.Option("biomedclip", "--model", help="Model name from the registry (or local-dir:PATH)."),
    pretrained: Optional[str] = typer.Option(None, "--pretrained", help="Weights file or tag for the model."),
    labels: Optional[str] = typer.Option(None, "--labels", help="Label scheme (reader-specific)."),
    images: Optional[str] = typer.Option(None, "--images", help="Folder with the image files."),
    boxes: Optional[str] = typer.Option(None, "--boxes", help="Annotated boxes to store (default: boxes.csv beside SOURCE)."),
    box_format: str = BOX_FORMAT,
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help="Decoding processes (default: cores - 1)."),
    device: str = DEVICE,
    precision: str = typer.Option("fp32", "--precision", help="fp32|fp16|bf16"),
    version: Optional[str] = typer.Option(None, "--version", help="Append to this version (must be the same model)."),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first report that cannot be read (default: record it in errors, go on)."),
    views: Optional[str] = VIEWS_FILE,
    engine: str = typer.Option("local", "--engine", help="local (decoding processes on this machine) | ray (Ray Data, one machine or a cluster)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="--engine ray: auto | HOST:PORT of a running cluster (default: a local one for the run)."),
    ray_gpus_per_worker: float = typer.Option(0.0, "--ray-gpus-per-worker", help="--engine ray: GPUs per model actor (0: CPU)."),
    ray_actors: int = typer.Option(1, "--ray-actors", help="--engine ray: model actors (each loads the model once)."),
    store: Optional[str] = STORE,
    fmt: Format = FORMAT,
) -> None:
    """Encode every image and label prompt once into the store (resumable, exactly once).

    Exit codes: 0 every image encoded or already stored; 3 partial success (failed images are
    in the errors table: `embedstore sql --file errors`); 2 bad input; 75 store busy.
    """
    result = open_store(store).encode(source, dataset=dataset, model=model, pretrained=pretrained, labels=labels,
                                      images=images, boxes=boxes, box_format=box_format, batch_size=batch_size,
                                      workers=workers, device=device, precision=precision, version=version,
                                      strict=strict, views=views, progress=fmt is Format.table, engine=engine,
                                      ray_address=ray_address, ray_gpus_per_worker=ray_gpus_per_worker,
                                      ray_actors=ray_actors)
    if not emit_result(result, fmt):
        emit(result.as_dict(), fmt, title="encode")
    if result.nodes:  # every format: where the job ran (stderr)
        print(f"ray: {len(result.nodes)} node(s): {', '.join(result.nodes)}", file=sys.stderr)
    if result.recovered and fmt is Format.table:
        print(f"ray: {result.recovered} image(s) stored from the shards of an interrupted run", file=sys.stderr)
    if result.split_by_hash and fmt is Format.table:
        print(f"splits: {result.split_by_hash} new image(s) of groups new to the store were placed by a hash of "
              "their group (the store already had splits; no stored split moved)", file=sys.stderr)
    if result.split_given_overridden:  # a warning in every format: the data set's split was not honoured
        print(f"warning: {result.split_given_overridden} new image(s) were given a split other than the one their "
              "patient (group) already has in the store; they joined the group's split so no patient spans two "
              "splits (see `embedstore splits`, method group-over-given)", file=sys.stderr)
    if result.errors and fmt is Format.table:
        for err in result.errors[:10]:
            what = err["image_id"] or "report"  # an unreadable report has no image id
            print(f"failed: {what} ({err['path']}): {err['reason']}", file=sys.stderr)
        if len(result.errors) > 10:
            print(f"... {len(result.errors) - 10} more: embedstore sql --file errors", file=sys.stderr)
    raise typer.Exit(result.exit_code)
