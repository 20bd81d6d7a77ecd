"""`embedstore runs | stability | seed-table`: stored runs, their spread over splits, the seed's table."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from embedstore.cli import app
from embedstore.cli.options import BLANK, FORMAT, MIN_POSITIVES, STORE, UNCERTAIN, VERSION, WHERE, open_store
from embedstore.cli.output import Format, emit, emit_result


@app.command()
def runs(
    kind: Optional[str] = typer.Option(None, "--kind", help="Only runs of this kind (zeroshot, probe, separability, ...)."),
    store: Optional[str] = STORE,
    fmt: Format = FORMAT,
) -> None:
    """Every stored analysis run, newest first."""
    df = open_store(store).runs(kind)
    if not emit_result(df, fmt):
        emit(df.select("run_id", "kind", "version", "started", "duration_s", "config_hash"), fmt, title="runs")


@app.command()
def stability(
    version: Optional[str] = VERSION,
    repeats: int = typer.Option(5, "--repeats", min=2, help="How many fresh stratified splits to draw."),
    seed: int = typer.Option(0, "--seed", help="Seed of the first split (then seed + 1, ...)."),
    uncertain: str = UNCERTAIN,
    blank: str = BLANK,
    where: Optional[str] = WHERE,
    min_positives: int = MIN_POSITIVES,
    store: Optional[str] = STORE,
    fmt: Format = FORMAT,
) -> None:
    """How the headline metrics move with the split: zero-shot, probe and separability on N fresh
    stratified splits (in memory; stored runs keep the frozen split)."""
    import polars as pl

    result = open_store(store).stability(version, repeats=repeats, seed=seed, uncertain=uncertain, blank=blank,
                                         where=where, min_positives=min_positives)
    if emit_result(result, fmt):
        return
    emit(result.summary.with_columns(pl.col(pl.Float64).round(4)), fmt, title=f"over {repeats} splits")
    verdict = "holds on every split" if result.ranking_holds else "changes between splits"
    print(f"ranking by macro AUROC {verdict}: " + " | ".join(" > ".join(r) for r in result.rankings))
    print(f"macro metrics average the {len(result.findings)} finding(s) evaluable on every split: "
          + (", ".join(result.findings) or "none"))


@app.command("seed-table")
def seed_table(
    version: Optional[str] = typer.Option(None, "--version", "-v",
                                          help="Base version (or a fine-tuned one: then its parent is the base)."),
    uncertain: str = UNCERTAIN,
    blank: str = BLANK,
    where: Optional[str] = WHERE,
    store: Optional[str] = STORE,
    fmt: Format = FORMAT,
) -> None:
    """The seed study's table from stored runs: zero-shot (raw-dot), linear probe and fine-tuned, each
    cut at its default threshold as the seed did, plus the like-for-like macro F1 (thresholds on val).
    Only runs made with the given label policy and --where are used (the seed's: --uncertain negative
    --blank negative)."""
    import polars as pl

    table = open_store(store).seed_table(version, uncertain=uncertain, blank=blank, where=where)
    if not emit_result(table, fmt):
        emit(table.drop("missing"), fmt, title="the seed's table (test split)")
        print("macro F1 averages each run's evaluable findings; exact match, LRAP and coverage error span all "
              "findings (test images with no masked label)")
    for row in table.filter(pl.col("missing").is_not_null()).iter_rows(named=True):
        print(f"{row['method']}: not run yet: run `{row['missing']}`", file=sys.stderr)
