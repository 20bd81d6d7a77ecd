"""`embedstore finetune | compare`: fine-tune a version's model into a new version; compare two versions."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from embedstore.cli import app
from embedstore.cli.output import Format

STORE_HELP = "Store directory (else $EMBEDSTORE_STORE, else ./.embedstore)."
# The compact compare table: these overall metrics and per-finding AUROC.
COMPACT_OVERALL = ("macro_auroc", "macro_ap", "macro_f1", "micro_f1", "exact_match", "lrap", "coverage_error",
                   "silhouette", "inter_intra_ratio")


def _store(path: Optional[str]):
    from embedstore.api import Store

    return Store(path)


@app.command()
def finetune(
    from_version: Optional[str] = typer.Option(None, "--from-version", help="Parent version (default: the latest)."),
    objective: str = typer.Option("bce", "--objective", help="bce (image tower + linear head) | contrastive (CLIP loss)."),
    train: str = typer.Option("vision", "--train", help="vision | all | last-N-blocks (e.g. last-2-blocks)."),
    epochs: int = typer.Option(10, "--epochs", min=1),
    lr: float = typer.Option(1e-4, "--lr"),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    accumulate: int = typer.Option(1, "--accumulate", min=1, help="Micro-batches per optimizer step."),
    patience: int = typer.Option(3, "--patience", min=1, help="Epochs without a better val macro AUROC before stopping."),
    device: str = typer.Option("auto", "--device", help="auto|cpu|cuda"),
    precision: str = typer.Option("fp32", "--precision", help="fp32 | auto (mixed precision on GPU)."),
    seed: int = typer.Option(0, "--seed"),
    head_init: str = typer.Option("zeroshot", "--head-init",
                                  help="bce head start: zeroshot (the parent's pos-neg classifier) | random."),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help="Decoding processes for re-encoding."),
    force: bool = typer.Option(False, "--force", help="Train again even if this fine-tune was already done."),
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
    fmt: Format = typer.Option(Format.table, "--format"),
) -> None:
    """Fine-tune a version's model on the train split and write a new version beside it.

    Run again with the same arguments, a killed fine-tune resumes from its last saved epoch; a
    finished one is reused unless --force.
    """
    from embedstore.cli.output import emit
    from embedstore.finetune.commands import finetune as run

    def report(row: dict) -> None:
        print(f"epoch {row['epoch']}: loss {row['loss']:.4f}, val macro AUROC {row['val_auroc']:.4f}", file=sys.stderr)

    result = run(_store(store), from_version=from_version, objective=objective, train=train, epochs=epochs, lr=lr,
                 batch_size=batch_size, accumulate=accumulate, device=device, precision=precision, seed=seed,
                 patience=patience, head_init=head_init, workers=workers, force=force, progress=fmt is Format.table, on_epoch=report)
    emit(result.as_dict(), fmt)


@app.command()
def compare(
    v1: Optional[str] = typer.Argument(None, help="First version (e.g. the parent)."),
    v2: Optional[str] = typer.Argument(None, help="Second version (e.g. the fine-tuned one)."),
    methods: Optional[str] = typer.Option(None, "--methods",
                                          help="Compare methods on one version instead, e.g. zeroshot:pos-neg,probe,finetuned."),
    version: Optional[str] = typer.Option(None, "--version", help="The version for --methods (default: the latest)."),
    all_rows: bool = typer.Option(False, "--all", help="Every metric (default: summary metrics and per-finding AUROC)."),
    n_boot: int = typer.Option(1000, "--n-boot", min=0, help="Bootstrap replicates (patients resampled, paired)."),
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
    fmt: Format = typer.Option(Format.table, "--format"),
) -> None:
    """Paired comparison on the same test images: two versions' runs, or two methods on one version.

    Each difference (second minus first) gets a paired, patient-clustered bootstrap interval and
    p-value (Holm-corrected across findings); it is called better or worse only when its interval
    excludes 0.
    """
    import polars as pl

    from embedstore.cli.output import emit

    st = _store(store)
    df = st.compare(v1, v2, methods=methods.split(",") if methods else None, version=version, n_boot=n_boot)
    if df.is_empty():
        print(f"no analysis run with the same settings on both {v1} and {v2}; run e.g. "
              f"`embedstore zeroshot --version {v1}` and `--version {v2}` (and probe) first", file=sys.stderr)
        raise typer.Exit(1)
    if not all_rows:
        df = df.filter(((pl.col("finding").is_null() & pl.col("metric").is_in(COMPACT_OVERALL))
                        | (pl.col("finding").is_not_null() & (pl.col("metric") == "auroc")))
                       & (pl.col("value_1").is_not_null() | pl.col("value_2").is_not_null()))
    if fmt is not Format.table:
        emit(df.with_columns(pl.col(pl.Float64).fill_nan(None)), fmt)
        return
    if methods:
        what = [pl.format("{} → {}", "method_1", "method_2").alias("methods")]
        a, b, title = "first", "second", f"methods on {st.resolve_version(version)} (second minus first)"
        first, second = pl.col("value_1").round(3).alias(a), pl.col("value_2").round(3).alias(b)
    else:
        a, b = st.resolve_version(v1), st.resolve_version(v2)
        what, title = [pl.col("run")], f"{a} vs {b} ({b} minus {a})"
        first, second = _cell("value_1", "lo_1", "hi_1").alias(a), _cell("value_2", "lo_2", "hi_2").alias(b)
    table = df.select(*what, pl.col("finding").fill_null("(macro / all)"), "metric", first, second,
                      _cell("diff", "diff_lo", "diff_hi").alias("difference [95% CI]"),
                      pl.col("p_holm").fill_null(pl.col("p_value")).round(4).alias("p (Holm)"),
                      pl.col("verdict").fill_null(""))
    emit(table, fmt, title=title)


def _cell(value: str, lo: str, hi: str):
    """"0.812 [0.77, 0.85]" where there is an interval, else "0.812"."""
    import polars as pl

    v = pl.col(value).round(3).cast(pl.String)
    ci = pl.format("{} [{}, {}]", v, pl.col(lo).round(3).cast(pl.String), pl.col(hi).round(3).cast(pl.String))
    return pl.when(pl.col(lo).is_not_null() & pl.col(hi).is_not_null()).then(ci).otherwise(v)
