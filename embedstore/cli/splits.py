"""`embedstore splits`: the store's frozen splits, and whether each finding can be evaluated on them."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from embedstore.cli import app
from embedstore.cli.output import Format

STORE_HELP = "Store directory (else $EMBEDSTORE_STORE, else ./.embedstore)."


@app.command()
def splits(
    min_positives: int = typer.Option(10, "--min-positives", min=0,
                                      help="Warn about findings with fewer positive groups in val or test."),
    store: Optional[str] = typer.Option(None, "--store", help=STORE_HELP),
    fmt: Format = typer.Option(Format.table, "--format", help="table|json|csv"),
) -> None:
    """Positives per finding in train, val and test (as groups and as images), and how the splits
    were assigned (method, seed, fractions, images each method placed).

    `--format csv` writes the per-finding table only; json writes {"methods": [...], "findings": [...]}.
    """
    from embedstore.api import Store
    from embedstore.cli.output import emit
    from embedstore.data.splits import below_min_warning

    st = Store(store)
    findings = st.splits(min_positives=min_positives)
    methods = st.split_methods()
    if fmt is Format.json:
        emit({"methods": methods.to_dicts(), "findings": findings.to_dicts()}, fmt)
    elif fmt is Format.table:
        emit(methods, fmt, title="how the splits were assigned")
        emit(findings, fmt, title="positives per split (groups = patients, else studies)")
    else:
        emit(findings, fmt)
    warning = below_min_warning(findings, min_positives)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
