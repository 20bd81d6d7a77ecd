"""One-row results: a command's summary dict (preview, synth) and the dataclass results of one call."""

from __future__ import annotations

import json
from dataclasses import asdict


class Summary(dict):
    """A command's summary: a dict whose `.to_polars()` is the one row `--format json` prints
    (nested dicts as JSON text)."""

    def to_polars(self):
        import polars as pl

        return pl.DataFrame([{k: json.dumps(v) if isinstance(v, dict) else v for k, v in self.items()}])


class Row:
    """A dataclass result of one call: `.as_dict()` its fields, `.to_polars()` them as one row."""

    def as_dict(self) -> dict:
        return asdict(self)

    def to_polars(self):
        import polars as pl

        return pl.DataFrame([self.as_dict()])
