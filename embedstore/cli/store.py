"""`embedstore encode | query | sql | versions | verify`: the store's commands."""

from __future__ import annotations

from typing import Optional

import typer

from embedstore.cli import app
from embedstore.cli.output import Format

STORE_HELP = "Store directory (else $EMBEDSTORE_STORE, else ./.embedstore)."


def _store(path: Optional[str]):
    from embedstore.api import Store

    return Store(path)


@app.command()
def encode(
    source: str = typer.Argument(..., help="Data set folder or file (Open-i, Kaggle, NIH, CheXpert, manifest CSV)."),
    dataset: str = typer.Option("auto", "--dataset", help="auto|openi|kaggle|nih|chexpert|manifest"),
    model: str = typer.Option("biomedclip", "--model", help="Model name from the registry (or local-dir:PATH)."),
    pretrained: Optional[str] = typer.Option(None, "--pretrained", help="Weights file or tag for the model."),
    labels: Optional[str] = typer.Option(None, "--labels", help="Label scheme (reader-specific)."),
    images: Optional[str] = typer.Option(None, "--images", help="Folder with the image files."),
    boxes: Optional[str] = typer.Option(None, "--boxes", help="Annotated boxes to store (default: boxes.csv beside SOURCE)."),
    box_format: str = typer.Option("auto", "--box-format", help="auto|canonical|nih|vindr|rsna"),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help="Decoding processes (default: cores - 1)."),
    device: str = typer.Option("auto", "--device", help="auto|cpu|cuda"),
    precision: str = typer.Option("fp32", "--precision", help="fp32|fp16|bf16"),
    version: Optional[str] = typer.Option(None, "--version", help="Append to this version (must be the same model)."),
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
    fmt: Format = typer.Option(Format.table, "--format"),
) -> None:
    """Encode every image and label prompt once into the store (resumable, exactly once).

    Exit codes: 0 every image encoded or already stored; 3 partial success (failed images are
    in the errors table: `embedstore sql --file errors`); 2 bad input; 75 store busy.
    """
    from embedstore.cli.output import emit
    from embedstore.encode import encode as run

    summary = run(source, dataset=dataset, model=model, labels=labels, images=images, batch_size=batch_size,
                  workers=workers, device=device, precision=precision, version=version, store=store,
                  pretrained=pretrained, progress=True, boxes=boxes, box_format=box_format)
    emit(summary.as_dict(), fmt, title="encode")
    if summary.split_by_hash and fmt is Format.table:
        import sys

        print(f"splits: {summary.split_by_hash} new image(s) of groups new to the store were placed by a hash of "
              "their group (the store already had splits; no stored split moved)", file=sys.stderr)
    if summary.errors and fmt is Format.table:
        import sys

        for err in summary.errors[:10]:
            print(f"failed: {err['image_id']} ({err['path']}): {err['reason']}", file=sys.stderr)
        if len(summary.errors) > 10:
            print(f"... {len(summary.errors) - 10} more: embedstore sql --file errors", file=sys.stderr)
    raise typer.Exit(summary.exit_code)


@app.command()
def query(
    text: Optional[str] = typer.Argument(None, help="Query text: a prompt, a finding name or free text."),
    image: Optional[str] = typer.Option(None, "--image", help="Query with an image file."),
    like: Optional[str] = typer.Option(None, "--like", help="Query with a stored image's id."),
    k: int = typer.Option(10, "-k", "--k", min=1),
    where: Optional[str] = typer.Option(None, "--where", help="SQL predicate on images / labels_wide columns."),
    version: Optional[str] = typer.Option(None, "--version"),
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
    fmt: Format = typer.Option(Format.table, "--format"),
) -> None:
    """Top-k images for a text, an image file or a stored image."""
    from embedstore.cli.output import emit
    from embedstore.query import query as run

    emit(run(text=text, image=image, like=like, k=k, where=where, version=version, store=_store(store)), fmt)


@app.command()
def sql(
    statement: Optional[str] = typer.Argument(None, help="SQL to run over the store."),
    file: Optional[str] = typer.Option(None, "--file", help="A named query from embedstore/sql/ (e.g. label-prevalence)."),
    write: bool = typer.Option(False, "--write", help="Allow statements that change the store."),
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
    fmt: Format = typer.Option(Format.table, "--format"),
) -> None:
    """Run SQL over the store (read-only unless --write)."""
    from embedstore.cli.output import emit
    from embedstore.store.sql import run_sql

    emit(run_sql(_store(store), statement, file=file, write=write), fmt)


@app.command()
def versions(
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
    fmt: Format = typer.Option(Format.table, "--format"),
) -> None:
    """Every version: lineage (parent), model, dimension and counts."""
    from embedstore.cli.output import emit

    df = _store(store).versions()
    if fmt is Format.table:  # the terminal gets the lineage at a glance; json/csv get every column
        df = df.select([c for c in ("version", "parent", "kind", "model_name", "dim", "images", "texts", "errors",
                                    "created") if c in df.columns])
    emit(df, fmt)


@app.command()
def verify(
    version: Optional[str] = typer.Option(None, "--version"),
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
    fmt: Format = typer.Option(Format.table, "--format"),
) -> None:
    """Check every version: index ids and checksum against DuckDB, no NaN, norms near 1."""
    from embedstore.cli.output import emit

    from embedstore.errors import StoreError
    from embedstore.store.verify import first_failure

    report = _store(store).verify(version)
    emit(report, fmt)
    bad = first_failure(report)
    if bad:
        raise StoreError(f"verify failed: version {bad['version']}: {bad['check']}: {bad['detail']}")
