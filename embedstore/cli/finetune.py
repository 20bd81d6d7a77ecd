"""`embedstore finetune`: fine-tune a version's model into a new version beside it."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from embedstore.cli import app
from embedstore.cli.options import DEVICE, FORCE, FORMAT, STORE, open_store
from embedstore.cli.output import Format, emit, emit_result


@app.command()
def finetune(
    from_version: Optional[str] = typer.Option(None, "--from-version", help="Parent version (default: the latest complete one)."),
    objective: str = typer.Option("bce", "--objective", help="bce (image tower + linear head) | contrastive (CLIP loss)."),
    train: str = typer.Option("vision", "--train", help="vision | all | last-N-blocks (e.g. last-2-blocks)."),
    epochs: int = typer.Option(10, "--epochs", min=1),
    lr: float = typer.Option(1e-4, "--lr"),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    accumulate: int = typer.Option(1, "--accumulate", min=1, help="Micro-batches per optimizer step."),
    patience: int = typer.Option(3, "--patience", min=1, help="Epochs without a better val macro AUROC before stopping."),
    device: str = DEVICE,
    precision: str = typer.Option("fp32", "--precision", help="fp32 | auto (mixed precision on GPU)."),
    seed: int = typer.Option(0, "--seed"),
    head_init: str = typer.Option("zeroshot", "--head-init",
                                  help="bce head start: zeroshot (the parent's pos-neg classifier) | random."),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help="Decoding processes for re-encoding."),
    force: bool = FORCE,
    store: Optional[str] = STORE,
    fmt: Format = FORMAT,
) -> None:
    """Fine-tune a version's model on the train split and write a new version beside it.

    Run again with the same arguments, a killed fine-tune resumes from its last saved epoch; a
    finished one is reused unless --force.
    """
    def report(row: dict) -> None:
        print(f"epoch {row['epoch']}: loss {row['loss']:.4f}, val macro AUROC {row['val_auroc']:.4f}", file=sys.stderr)

    result = open_store(store).finetune(from_version, objective=objective, train=train, epochs=epochs, lr=lr,
                                        batch_size=batch_size, accumulate=accumulate, patience=patience, device=device,
                                        precision=precision, seed=seed, head_init=head_init, workers=workers,
                                        force=force, progress=fmt is Format.table, on_epoch=report)
    if not emit_result(result, fmt):
        emit(result.as_dict(), fmt)
