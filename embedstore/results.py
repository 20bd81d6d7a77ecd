"""The one-row summary a command returns when it has no richer result type (preview, synth)."""

from __future__ import annotations

import json


class Summary(dict):
    """A command's summary: a dict whose `.to_polars()` is the one row `--format json` prints
    (nested dicts as JSON text)."""

    def to_polars(self):
        import polars as pl

        return pl.DataFrame([{k: json.dumps(v) if isinstance(v, dict) else v for k, v in self.items()}])
