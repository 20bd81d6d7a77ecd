"""`embedstore versions | verify`: the store's versions, and whether each is whole."""

from __future__ import annotations

from typing import Optional

import typer

from embedstore.cli import app
from embedstore.cli.options import FORMAT, STORE, VERSION, open_store
from embedstore.cli.output import Format, emit, emit_result

# What the terminal shows of `versions`: the lineage at a glance; json/csv get every column.
ON_SCREEN = ("version", "status", "parent", "kind", "model_name", "dim", "images", "expected", "texts", "errors", "index_kind",
             "created")


@app.command()
def versions(
    drop: Optional[str] = typer.Option(None, "--drop", help="Remove this version (e.g. one a killed run left being built)."),
    store: Optional[str] = STORE,
    fmt: Format = FORMAT,
) -> None:
    """Every version: status (building / complete), lineage (parent), model, dimension and counts."""
    df = open_store(store).versions(drop=drop)
    if not emit_result(df, fmt):
        emit(df.select([c for c in ON_SCREEN if c in df.columns]), fmt)


@app.command()
def verify(version: Optional[str] = VERSION, store: Optional[str] = STORE, fmt: Format = FORMAT) -> None:
    """Check every version: index ids and checksum against DuckDB, no NaN, norms near 1; exit 2 on a failure."""
    from embedstore.errors import StoreError

    report = open_store(store).verify(version)
    if not emit_result(report, fmt):
        emit(report, fmt)
    bad = report.filter(~report["ok"])
    if bad.height:
        row = bad.row(0, named=True)
        raise StoreError(f"verify failed: version {row['version']}: {row['check']}: {row['detail']}")
