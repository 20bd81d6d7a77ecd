"""`embedstore separability`: how well stored vectors separate findings (fitted on train, scored on test)."""

from __future__ import annotations

from typing import Optional

import typer

from embedstore.cli import app
from embedstore.cli.options import FORCE, FORMAT, STORE, UNCERTAIN, VERSION, WHERE, open_store
from embedstore.cli.output import Format, emit, emit_result
from embedstore.cli.tables import per_finding_table

NAMES = {"support": "positives", "silhouette": "silhouette", "fisher_ratio": "Fisher ratio",
         "knn_agreement": "kNN agreement", "knn_agreement_pos": "kNN agreement (positives)",
         "centroid_distance": "centroid distance"}


@app.command()
def separability(
    version: Optional[str] = VERSION,
    k: int = typer.Option(15, "--k", min=1, help="Neighbours for kNN label agreement."),
    uncertain: str = UNCERTAIN,
    where: Optional[str] = WHERE,
    tsne_max: int = typer.Option(300, "--tsne-max", min=2, help="t-SNE of at most this many test images (a seeded sample)."),
    force: bool = FORCE,
    store: Optional[str] = STORE,
    fmt: Format = FORMAT,
) -> None:
    """Class separation: per-finding silhouette, Fisher ratio, kNN agreement; single-finding cluster indices."""
    import polars as pl

    runs = open_store(store).separability(version, k=k, uncertain=uncertain, where=where, tsne_max=tsne_max,
                                            force=force)
    if emit_result(runs, fmt):
        return
    result = runs[0]
    overall = result.metrics.filter(pl.col("finding").is_null()).select("metric", "value")
    emit(overall, fmt, title="test images with exactly one finding")
    table = per_finding_table(result.metrics, list(NAMES)).rename(NAMES, strict=False)
    emit(table, fmt, title="separability per finding (test; LDA, kNN fitted on train)")
    print(f"run: {result.run_id} (reused={result.reused}, {result.duration_s:.2f} s)")
