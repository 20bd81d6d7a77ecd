"""`embedstore query`: top-k images for a text, an image file or a stored image."""

from __future__ import annotations

from typing import List, Optional

import typer

from embedstore.cli import app
from embedstore.cli.options import FORMAT, STORE, VERSION, open_store
from embedstore.cli.output import Format, emit, emit_result


@app.command()
def query(
    text: Optional[str] = typer.Argument(None, help="Query text: a prompt, a finding name or free text."),
    image: Optional[str] = typer.Option(None, "--image", help="Query with an image file."),
    like: Optional[str] = typer.Option(None, "--like", help="Query with a stored image's id."),
    k: int = typer.Option(10, "-k", "--k", min=1),
    where: Optional[str] = typer.Option(None, "--where", help="Predicate on images / labels_wide columns."),
    split: Optional[str] = typer.Option(None, "--split", help="Only this split: train, val or test."),
    view: Optional[str] = typer.Option(None, "--view", help="Only this view, e.g. frontal or lateral."),
    present: Optional[List[str]] = typer.Option(None, "--present", help="Only images with this finding (label 1); repeatable."),
    absent: Optional[List[str]] = typer.Option(None, "--absent", help="Only images without this finding (label 0 or missing); repeatable."),
    version: Optional[str] = VERSION,
    store: Optional[str] = STORE,
    fmt: Format = FORMAT,
) -> None:
    """Top-k images for a text, an image file or a stored image; --split, --view, --present and
    --absent filter without SQL (as `serve`'s /query does), joined to --where by AND."""
    hits = open_store(store).query(text, image=image, like=like, k=k, where=where, version=version, split=split,
                                   view=view, present=present or None, absent=absent or None)
    if not emit_result(hits, fmt):
        emit(hits, fmt)
