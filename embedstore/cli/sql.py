"""`embedstore sql`: SQL over the store, read-only unless --write; named queries."""

from __future__ import annotations

from typing import Optional

import typer

from embedstore.cli import app
from embedstore.cli.options import FORMAT, STORE, open_store
from embedstore.cli.output import Format, emit, emit_result


@app.command()
def sql(
    statement: Optional[str] = typer.Argument(None, help="SQL to run over the store."),
    file: Optional[str] = typer.Option(None, "--file", help="A named query from embedstore/sql/ (e.g. label-prevalence)."),
    write: bool = typer.Option(False, "--write", help="Allow statements that change the store."),
    external: bool = typer.Option(False, "--external", help="Allow reading and writing files outside the store (e.g. to join your own CSV)."),
    store: Optional[str] = STORE,
    fmt: Format = FORMAT,
) -> None:
    """Run SQL over the store (read-only unless --write; no file outside the store unless --external)."""
    rows = open_store(store).sql(statement, file=file, write=write, external=external)
    if not emit_result(rows, fmt):
        emit(rows, fmt)
