"""Shared CLI output: a polars DataFrame (or dict) printed as a table, JSON, CSV or Parquet."""

from __future__ import annotations

import json
import sys
from enum import Enum
from typing import Any


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"
    parquet = "parquet"


def emit_result(result: Any, fmt: Format | str) -> bool:
    """Write an API result as --format json / csv / parquet does: its `.to_polars()` (what the
    Python API gives), NaN as null. False for the table format: the command draws its own tables."""
    import polars as pl

    fmt = Format(fmt)
    if fmt is Format.table:
        return False
    if isinstance(result, pl.DataFrame):
        pass
    elif hasattr(result, "as_dict"):  # one run's summary (encode, finetune): one JSON object or row
        emit(result.as_dict(), fmt)
        return True
    elif hasattr(result, "to_dict") and fmt is Format.json:  # results with nested parts (inspect)
        emit(result.to_dict(), fmt)
        return True
    frame = result if isinstance(result, pl.DataFrame) else result.to_polars()
    emit(frame.with_columns(pl.col(pl.Float64).fill_nan(None)), fmt)
    return True


def emit(data: Any, fmt: Format | str = Format.table, title: str | None = None, out: str | None = None) -> None:
    """Print `data` (a polars DataFrame, a dict or a list of dicts) in the chosen format.

    A flat dict (a command's summary) is one JSON object, or one CSV / Parquet row; a nested one
    (lists or dicts inside) has no row form and is printed as JSON whatever the format."""
    import polars as pl

    fmt = Format(fmt)
    nested = isinstance(data, dict) and any(isinstance(v, (dict, list, tuple)) for v in data.values())
    if isinstance(data, dict) and (fmt is Format.json or (nested and fmt is not Format.table)):
        _write(json.dumps(data, indent=2, default=str), out)
        return
    if isinstance(data, dict) and fmt is not Format.table:
        data = pl.DataFrame([data])
    if isinstance(data, dict):
        data = pl.DataFrame({"key": list(data), "value": [_cell(v) for v in data.values()]})
    if isinstance(data, list):
        data = pl.DataFrame(data)
    if fmt is Format.json:
        _write(json.dumps(data.to_dicts(), indent=2, default=str), out)
    elif fmt is Format.csv:
        _write(data.write_csv(), out)
    elif fmt is Format.parquet:
        if out is None:
            data.write_parquet(sys.stdout.buffer)
        else:
            data.write_parquet(out)
    else:
        print_table(data, title)


def make_console():
    """A rich console on stdout. Off a terminal (a pipe, a file) tables get the width they need
    instead of rich's 80 columns, so ids and paths do not wrap; $COLUMNS still wins."""
    import os

    from rich.console import Console

    wide = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(width=4000 if wide else None, emoji=False)


def print_table(df, title: str | None = None, max_rows: int = 200) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for name in df.columns:
        table.add_column(escape(name), overflow="fold")
    for row in df.head(max_rows).iter_rows():
        table.add_row(*[escape(_cell(v)) for v in row])  # a label like "Opacity [/RUL]" is text, not markup
    console = make_console()
    console.print(table)
    if df.height > max_rows:
        console.print(f"... {df.height - max_rows} more rows (use --format csv for all)")


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    if hasattr(v, "isoformat") and hasattr(v, "hour"):  # datetimes: to the second is enough on screen
        return v.isoformat(sep=" ", timespec="seconds")
    return str(v)


def _write(text: str, out: str | None) -> None:
    if out is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    else:
        with open(out, "w") as fh:
            fh.write(text)
