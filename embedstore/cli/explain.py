"""`embedstore explain`: a Grad-CAM heatmap of one image for one finding, on the original image."""

from __future__ import annotations

from typing import Optional

import typer

from embedstore.cli import app
from embedstore.cli.options import FORMAT, LAYER, METHOD, STORE, TARGET, VERSION, open_store
from embedstore.cli.output import Format, emit, emit_result


@app.command()
def explain(
    image_id: str = typer.Argument(..., help="The image's id in the store."),
    finding: str = typer.Option(..., "--finding", "-f", help="Finding to explain."),
    target: str = TARGET,
    version: Optional[str] = VERSION,
    method: str = METHOD,
    layer: Optional[str] = LAYER,
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Overlay PNG (default explain-ID-FINDING-METHOD.png)."),
    colormap: str = typer.Option("jet", "--colormap", help="Matplotlib colormap name."),
    store: Optional[str] = STORE,
    fmt: Format = FORMAT,
) -> None:
    """Grad-CAM heatmap of one image for one finding, drawn on the ORIGINAL image with its boxes."""
    result = open_store(store).explain(image_id, finding, target=target, version=version, method=method, layer=layer,
                                       out=out, colormap=colormap)
    if not emit_result(result, fmt):
        emit(result.to_polars().row(0, named=True), fmt)
