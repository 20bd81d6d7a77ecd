"""`embedstore compare`: paired comparisons of two versions, or of methods on one version."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from embedstore.cli import app
from embedstore.cli.options import FORMAT, N_BOOT, STORE, open_store
from embedstore.cli.output import Format, emit, emit_result

# The compact table: these overall metrics and per-finding AUROC.
COMPACT_OVERALL = ("macro_auroc", "macro_ap", "macro_f1", "micro_f1", "exact_match", "lrap", "coverage_error",
                   "silhouette", "inter_intra_ratio")


@app.command()
def compare(
    v1: Optional[str] = typer.Argument(None, help="First version (e.g. the parent)."),
    v2: Optional[str] = typer.Argument(None, help="Second version (e.g. the fine-tuned one)."),
    methods: Optional[str] = typer.Option(None, "--methods",
                                          help="Compare methods on one version instead, e.g. zeroshot:pos-neg,probe,finetuned."),
    version: Optional[str] = typer.Option(None, "--version", "-v", help="The version for --methods (default: the latest)."),
    all_rows: bool = typer.Option(False, "--all", help="Every metric on screen (default: summary metrics and per-finding AUROC)."),
    n_boot: int = N_BOOT,
    no_run: bool = typer.Option(False, "--no-run", help="Do not run the analyses a version lacks; name the commands instead."),
    store: Optional[str] = STORE,
    fmt: Format = FORMAT,
) -> None:
    """Paired comparison on the same test images: two versions' runs, or two methods on one version.

    Each difference (second minus first) gets a paired, patient-clustered bootstrap interval and
    p-value (Holm-corrected across findings); it is called better or worse only when its interval
    excludes 0.
    """
    import polars as pl

    st = open_store(store)
    df = st.compare(v1, v2, methods=methods.split(",") if methods else None, version=version, n_boot=n_boot,
                    no_run=no_run)
    if df.is_empty():
        print(f"no analysis run with the same settings on both {v1} and {v2}; run e.g. "
              f"`embedstore zeroshot --version {v1}` and `--version {v2}` (and probe) first", file=sys.stderr)
        raise typer.Exit(1)
    if emit_result(df, fmt):
        return
    if not all_rows:
        df = df.filter(((pl.col("finding").is_null() & pl.col("metric").is_in(COMPACT_OVERALL))
                        | (pl.col("finding").is_not_null() & (pl.col("metric") == "auroc")))
                       & (pl.col("value_1").is_not_null() | pl.col("value_2").is_not_null()))
    if methods:
        what = [pl.format("{} → {}", "method_1", "method_2").alias("methods")]
        title = f"methods on {version or 'the latest version'} (second minus first)"
        first, second = pl.col("value_1").round(3).alias("first"), pl.col("value_2").round(3).alias("second")
    else:
        a, b = v1, v2
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
