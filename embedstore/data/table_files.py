"""Reading label tables as users keep them: CSV (plain, .gz, .zip) or Parquet, every cell a string.

Cells stay strings so each reader decides what a value means (and can name a bad one); blank
cells are null.
"""

from __future__ import annotations

import gzip
import io
import os
import zipfile

from embedstore.errors import InputError

CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.zip", ".tsv", ".txt", ".gz", ".zip")
PARQUET_SUFFIXES = (".parquet", ".pq")


def is_table(path: str) -> bool:
    name = path.lower()
    return name.endswith(CSV_SUFFIXES + PARQUET_SUFFIXES)


def table_name(path: str) -> str:
    """The file name without compression and table suffixes: `Data_Entry_2017_v2020`."""
    name = os.path.basename(path)
    for suffix in (".gz", ".zip", ".csv", ".tsv", ".txt", ".parquet", ".pq"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name


def read_table(path: str, header: bool = True):
    """A polars DataFrame of strings from a CSV (plain, gzip, zip with one CSV) or a Parquet file."""
    import polars as pl

    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file")
    lower = path.lower()
    try:
        if lower.endswith(PARQUET_SUFFIXES):
            df = pl.read_parquet(path)
            return df.with_columns(pl.all().cast(pl.String))
        data = _csv_bytes(path)
        if data.startswith(b"\xef\xbb\xbf"):  # a BOM from spreadsheet exports would stick to the first name
            data = data[3:]
        sep = "\t" if lower.endswith((".tsv", ".tsv.gz", ".tsv.zip")) else ","
        return pl.read_csv(io.BytesIO(data), infer_schema=False, has_header=header, separator=sep)
    except InputError:
        raise
    except Exception as err:  # polars/arrow raise many kinds; all mean "not a table we can read"
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"{path}: cannot read as a table ({msg}); give a CSV (plain, .gz or .zip) or Parquet file") from None


def _csv_bytes(path: str) -> bytes:
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic[:2] == b"\x1f\x8b":
        with gzip.open(path, "rb") as fh:
            return fh.read()
    if magic == b"PK\x03\x04":
        with zipfile.ZipFile(path) as zf:
            members = [m for m in zf.namelist() if not m.endswith("/") and not m.startswith("__MACOSX")]
            csvs = [m for m in members if m.lower().endswith((".csv", ".tsv", ".txt"))] or members
            if len(csvs) != 1:
                raise InputError(f"{path}: a zip must hold exactly one CSV, found {len(csvs)} ({', '.join(csvs[:5])})")
            return zf.read(csvs[0])
    with open(path, "rb") as fh:
        return fh.read()


def require_columns(df, path: str, columns: list[str], what: str) -> None:
    """One line naming the file, the missing columns and the ones it has."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        have = ", ".join(df.columns[:12]) + (" ..." if len(df.columns) > 12 else "")
        raise InputError(f"{path}: missing column(s) {', '.join(missing)} needed for {what} (columns found: {have})")
