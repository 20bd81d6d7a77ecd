"""`embedstore preview`: the pixels the model sees, as a PNG."""

from __future__ import annotations

from typing import Optional

import typer

from embedstore.cli import app
from embedstore.cli.options import FORMAT, open_store
from embedstore.cli.output import Format, emit, emit_result


@app.command("preview")
def preview(
    path: str = typer.Argument(..., help="Image file: PNG, JPEG (8/16 bit) or DICOM."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="PNG to write (default: <name>-preview.png here)."),
    model: Optional[str] = typer.Option(None, "--model", help="Take the input size and resampling from this model's config "
                                                              "(no weights needed for local-dir, shipped and biomedclip)."),
    pretrained: Optional[str] = typer.Option(None, "--pretrained", help="Tag, with an open_clip architecture as --model."),
    size: Optional[int] = typer.Option(None, "--size", help="Model input side in pixels (default 224; not with --model)."),
    fmt: Format = FORMAT,
) -> None:
    """Write a PNG of what the model sees: shortest-side resize, then a centre crop."""
    result = open_store(None).preview(path, out=out, model=model, pretrained=pretrained, size=size)
    if not emit_result(result, fmt):
        emit(dict(result), fmt)
