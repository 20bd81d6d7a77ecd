"""`embedstore preview`: the pixels the model sees, as a PNG."""

from __future__ import annotations

import typer

from embedstore.cli import app
from embedstore.cli.output import Format, emit


@app.command("preview")
def preview(
    path: str = typer.Argument(..., help="Image file: PNG, JPEG (8/16 bit) or DICOM."),
    out: str = typer.Option(None, "--out", "-o", help="PNG to write (default: <name>-preview.png here)."),
    model: str = typer.Option(None, "--model", help="Take the input size and resampling from this model's config "
                                                    "(no weights needed for local-dir, shipped and biomedclip)."),
    pretrained: str = typer.Option(None, "--pretrained", help="Tag, with an open_clip architecture as --model."),
    size: int = typer.Option(None, "--size", help="Model input side in pixels (default 224; not with --model)."),
    fmt: Format = typer.Option(Format.table, "--format", help="How to print the summary."),
) -> None:
    """Write a PNG of what the model sees: shortest-side resize, then a centre crop."""
    from embedstore.data.images import preview as _preview
    from embedstore.errors import InputError

    interpolation = "bicubic"
    if model is not None:
        if size is not None:
            raise InputError("give --model or --size, not both (the model fixes the input size)")
        from embedstore.models.registry import image_size_of, model_config

        cfg = model_config(model, pretrained)
        size = image_size_of(cfg)
        interpolation = cfg.get("preprocess_cfg", {}).get("interpolation", interpolation)
    emit(_preview(path, image_size=224 if size is None else size, out=out, interpolation=interpolation), fmt)
