"""`embedstore duplicates`: near-duplicate images from stored vectors, and the split leaks they reveal."""

from __future__ import annotations

from typing import Optional

import typer

from embedstore.cli import app
from embedstore.cli.options import FORCE, FORMAT, STORE, VERSION, open_store
from embedstore.cli.output import Format, emit, emit_result


@app.command()
def duplicates(
    version: Optional[str] = VERSION,
    threshold: str = typer.Option("auto", "--threshold", help="auto (from the second-nearest-neighbour scores) or a score: with --scaling local a cosine less the pair's mean local level, e.g. 0.3; with --scaling none a cosine, e.g. 0.95."),
    across_splits: bool = typer.Option(False, "--across-splits", help="Show only groups whose images lie in different splits (probable leaks)."),
    regroup: bool = typer.Option(False, "--regroup", help="Write each group as one split group (splits stay frozen); says how many images would move."),
    space: str = typer.Option("whitened", "--space", help="whitened (PCA-whitened vectors) | cosine (the stored vectors as they are)."),
    scaling: str = typer.Option("local", "--scaling", help="local (a pair's cosine less the mean of the two images' neighbourhood levels; corrects for hubs) | none (the cosine)."),
    force: bool = FORCE,
    store: Optional[str] = STORE,
    fmt: Format = FORMAT,
) -> None:
    """Near-duplicate pairs and their groups (FAISS k-NN and range search), with splits, studies and labels."""
    found = open_store(store).duplicates(version, threshold=threshold, across_splits=across_splits, regroup=regroup,
                                         space=space, force=force, scaling=scaling)
    if emit_result(found, fmt):
        return
    summary = found.summary
    emit({k: v for k, v in summary.items() if v is not None}, fmt, title="duplicates")
    shown = found.groups.drop("group_ids")
    emit(shown, fmt, title="groups that cross splits" if across_splits else "groups (crosses_splits: a probable leak)")
    print(f"threshold: {found.rule}")
    if found.regrouped is not None:
        print(f"regroup: {found.regrouped} image(s) now share their group's split group; {found.images_to_move} image(s) "
              "would move if the splits were drawn again with each group whole (stored splits never move)")
