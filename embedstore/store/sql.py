"""`embedstore sql`: any SQL over the store, read-only unless asked to write; named queries."""

from __future__ import annotations

from pathlib import Path

from embedstore.errors import InputError


def named_queries() -> dict[str, str]:
    """Name -> SQL of every file shipped in embedstore/sql/."""
    folder = Path(__file__).resolve().parent.parent / "sql"
    return {p.stem: p.read_text() for p in sorted(folder.glob("*.sql"))}


def run_sql(st, statement: str | None = None, file: str | None = None, write: bool = False,
            external: bool = False):
    """Run `statement` (or the named query `file`) and return a polars DataFrame.

    Read-only unless `write`; a statement that writes without it raises InputError saying
    to add --write. Files, the network, extensions and settings are out of reach unless
    `external` (DuckDB's external access). DuckDB's own message is passed on for bad SQL.
    """
    import duckdb
    import polars as pl

    if (statement is None) == (file is None):
        raise InputError("give a SQL statement or --file NAME (not both)")
    if file is not None:
        queries = named_queries()
        if file not in queries:
            raise InputError(f"no named query {file!r}; known: {', '.join(sorted(queries))}")
        statement = queries[file]
    with st.connect(write=write, external=external) as con:
        try:
            rel = con.sql(statement)
            return rel.pl() if rel is not None else pl.DataFrame()
        except duckdb.Error as err:
            msg = str(err)
            if not write and ("read-only" in msg or "read only" in msg):
                raise InputError("this statement writes to the store; add --write to allow it") from None
            if not external and ("disabled by config" in msg or "configuration has been locked" in msg):
                raise InputError("this statement reaches files, the network, extensions or settings outside the "
                                 "store; add --external to allow it") from None
            raise InputError(msg.strip()) from None
