"""`embedstore demo`: the whole study offline on phantom radiographs, one line per stage."""

from __future__ import annotations

import typer

from embedstore.cli import app
from embedstore.cli.options import FORMAT, open_store
from embedstore.cli.output import Format, emit_result


@app.command()
def demo(
    out: str = typer.Option("demo-out", "--out", help="Folder for the phantoms, the store and report.html."),
    studies: int = typer.Option(1000, "--studies", min=20, help="Phantom studies to synthesise (two images each)."),
    seed: int = typer.Option(0, "--seed"),
    epochs: int = typer.Option(3, "--epochs", min=1, help="Fine-tuning epochs."),
    model: str = typer.Option("phantom-clip", "--model", help="Model to encode with (the bundled one by default)."),
    shift: str = typer.Option("site-b", "--shift", help="site-b: phantoms out of phantom-clip's distribution (as IU-Xray is for BiomedCLIP) | none."),
    fmt: Format = FORMAT,
) -> None:
    """synth -> encode (phantom-clip) -> zero-shot -> probe -> separability -> fine-tune -> comparisons -> Grad-CAM agreement -> report."""
    echo = print if fmt is Format.table else (lambda *_: None)  # json / csv: only the stages' table
    result = open_store(None).demo(out=out, studies=studies, seed=seed, epochs=epochs, model=model, shift=shift,
                                   echo=echo)
    if emit_result(result, fmt):
        return
    total = sum(s for _, s, _ in result.stages)
    print(f"done in {total:.0f} s; open {result.report}")
