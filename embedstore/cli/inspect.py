"""`embedstore inspect`: what a data-set reader found, before anything is encoded."""

from __future__ import annotations

from typing import Optional

import typer

from embedstore.cli import app
from embedstore.cli.options import BOX_FORMAT, FORMAT, VIEWS_FILE, open_store
from embedstore.cli.output import Format, emit, emit_result


@app.command("inspect")
def inspect_command(
    source: Optional[str] = typer.Argument(None, help="Data set: NLMCXR_reports.tgz, an Open-i folder, indiana_reports.csv, Data_Entry_2017*.csv, a CheXpert/MIMIC label CSV or a manifest (CSV may be .gz or .zip)."),
    dataset: str = typer.Option("auto", "--dataset", help="auto|openi|kaggle|nih|chexpert|manifest."),
    labels: Optional[str] = typer.Option(None, "--labels", help="Label scheme (Open-i: automatic (default) or mesh; Kaggle: mesh) or a labelled CSV file (e.g. CheXpert-14 columns keyed by image_id or study_id)."),
    images: Optional[str] = typer.Option(None, "--images", help="Folder of image files (default: SOURCE/images)."),
    uncertain: str = typer.Option("ignore", "--uncertain", help="Uncertain (-1) labels: ignore (keep -1), negative or positive."),
    top_k: int = typer.Option(14, "--top-k", help="MeSH scheme: the K most frequent terms, plus normal."),
    seed: int = typer.Option(0, "--seed", help="Seed of the patient/study splits."),
    boxes: Optional[str] = typer.Option(None, "--boxes", help="A box file to inspect instead of (or beside) a data set."),
    box_format: str = BOX_FORMAT,
    views: Optional[str] = VIEWS_FILE,
    fmt: Format = FORMAT,
) -> None:
    """Studies, images, reports without images, views, per-finding counts and splits; or a box file's counts."""
    found = open_store(None).inspect(source, dataset=dataset, labels=labels, images=images, uncertain=uncertain,
                                     top_k=top_k, seed=seed, boxes=boxes, box_format=box_format, views=views)
    if emit_result(found, fmt):
        return
    if found.dataset is not None:
        _table(found.dataset, "data set")
    if found.boxes is not None:
        _table(found.boxes, "boxes")


def _table(summary: dict, title: str) -> None:
    """A key/value table, then the per-finding table."""
    summary = dict(summary)
    per = summary.pop("per_finding")
    ids = summary.pop("reports_without_images_ids", None)
    notes = summary.pop("notes", [])
    flat = {k: (", ".join(f"{a}: {b}" for a, b in v.items()) if isinstance(v, dict) else v)
            for k, v in summary.items()}
    if ids:
        flat["reports_without_images"] = f"{len(ids)}: {', '.join(ids)}"
    for i, note in enumerate(notes):
        flat[f"note {i + 1}"] = note
    emit(flat, Format.table, title=title)
    if per:
        emit(per, Format.table, title="per finding")
