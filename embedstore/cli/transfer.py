"""`embedstore export | import`: a version's vectors as Parquet, and vectors made elsewhere as a version."""

from __future__ import annotations

from typing import Optional

import typer

from embedstore.cli import app
from embedstore.cli.options import FORMAT, STORE, VERSION, open_store
from embedstore.cli.output import Format, emit, emit_result


@app.command()
def export(
    out: str = typer.Option(..., "--out", help="Folder to write vectors.parquet and model.json into."),
    version: Optional[str] = VERSION,
    store: Optional[str] = STORE,
    fmt: Format = FORMAT,
) -> None:
    """A version's vectors as Parquet (id, image_id, split, labels, vector) plus its model record."""
    result = open_store(store).export(out, version=version)
    if not emit_result(result, fmt):
        emit(result.as_dict(), fmt, title="export")


@app.command("import")
def import_(
    source: str = typer.Argument(..., help="Parquet file with image_id and vector (or a folder `export` wrote)."),
    model_record: Optional[str] = typer.Option(None, "--model-record",
                                               help="JSON model record (name, embed_dim, ...); default model.json beside SOURCE."),
    store: Optional[str] = STORE,
    fmt: Format = FORMAT,
) -> None:
    """Vectors made elsewhere, for images already in the store, as a new version (index built, verify passes)."""
    result = open_store(store).import_(source, model_record=model_record)
    if not emit_result(result, fmt):
        emit(result.as_dict(), fmt, title="import")
