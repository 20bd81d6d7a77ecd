"""`embedstore index`: rebuild a version's FAISS index by hand (kind and parameters)."""

from __future__ import annotations

from typing import Optional

import typer

from embedstore.cli import app
from embedstore.cli.options import FORMAT, STORE, VERSION, open_store
from embedstore.cli.output import Format, emit, emit_result


@app.command()
def index(
    version: Optional[str] = VERSION,
    kind: str = typer.Option("auto", "--kind",
                             help="auto (exact up to --exact-max vectors, HNSW above), exact, hnsw, hnsw-sq8 or ivf-pq "
                                  "(compressed; hnsw-sq8 re-ranked against a float copy in its file, ivf-pq against its candidates' "
                                  "vectors read from DuckDB, its file m + 8 bytes a vector plus codebooks)."),
    params: Optional[str] = typer.Option(None, "--params",
                                         help="e.g. M=48,efConstruction=200,efSearch=128 or nlist=1024,m=64,nprobe=16,"
                                              "k_factor=16; efSearch / nprobe are tuned on the version's vectors unless given."),
    exact_max: Optional[int] = typer.Option(None, "--exact-max", help="auto: exact search up to this many vectors (200,000)."),
    store: Optional[str] = STORE,
    fmt: Format = FORMAT,
) -> None:
    """Rebuild a version's index: its kind, parameters and bytes a vector are recorded and shown by `versions`."""
    result = open_store(store).index(version=version, kind=kind, params=params, exact_max=exact_max)
    if not emit_result(result, fmt):
        emit(result.as_dict(), fmt, title="index")
