"""Analysis runs: reuse a stored run with the same config unless forced; time and store new ones.

A run's config holds every parameter plus a fingerprint of the data it read (image ids, their
labels and splits, and the prompt texts where used), so a changed label or split never reuses
a stale result. `--force` recomputes and *replaces* the stored run of that config (its rows are
deleted after the new run is written, so nothing is ever half-written).
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from embedstore.errors import InputError

@dataclass
class VersionData:
    """Everything an analysis reads from the store for one version."""

    version: str
    findings: list[str]
    ids: np.ndarray  # int64 [n]
    X: np.ndarray  # float32 [n, d], unit rows
    Y: np.ndarray  # float32 [n, F]: 1 / 0 / -1 / NaN
    split: np.ndarray  # object [n]: "train" / "val" / "test" / None
    logit_scale: float
    groups: np.ndarray  # object [n]: the patient (else study) group each image is resampled with

    def fingerprint(self) -> str:
        """Hash of what the results depend on besides the vectors (fixed by the version)."""
        from embedstore.store import fingerprint

        return fingerprint(self.ids, self.Y, self.split, self.findings, self.groups)


def load_data(store, version: str | None = None, where: str | None = None, findings: list[str] | None = None) -> VersionData:
    """Vectors, labels and splits of `version` (latest when None), optionally only the images
    matching the SQL predicate `where` over `images` columns (e.g. "view = 'frontal'")."""
    info = store.version(version)
    version = info.id
    ids, X = store.image_vectors(version)
    if where:
        keep = np.isin(ids, store.images(where)["id"].to_numpy())
        ids, X = ids[keep], X[keep]
    meta = store.image_groups()
    row_of = dict(zip(meta["id"].to_list(), range(meta.height)))
    rows = np.array([row_of[int(i)] for i in ids], dtype=np.int64)
    split = np.array(meta["split"].to_list(), dtype=object)[rows] if len(rows) else np.empty(0, dtype=object)
    groups = np.array(meta["group_id"].to_list(), dtype=object)[rows] if len(rows) else np.empty(0, dtype=object)
    findings = store.findings() if findings is None else list(findings)
    if not findings:
        raise InputError(f"store {store.path} has no labels; encode a data set with labels first")
    if not len(ids):
        raise InputError(f"version {version} has no image vectors{' matching ' + repr(where) if where else ''}")
    Y = store.label_matrix(ids, findings)
    scale = info.logit_scale
    return VersionData(version, findings, ids, X, Y, split, float(scale) if scale is not None else 100.0, groups)


def require_split(data: VersionData, name: str, purpose: str) -> np.ndarray:
    from embedstore.analyses.scoring import split_mask

    return split_mask(data.split, name, data.version, purpose)


def refuse_fitted(store, version: str, scored: np.ndarray, what: str) -> None:
    """InputError when any scored image (store ids) is one the version's model (or an ancestor's) was
    trained or early-stopped on: its scores there measure memory, not generalisation."""
    fitted = store.fitted_ids(version)
    seen = {role: int(np.isin(scored, ids).sum()) for role, ids in fitted.items()}
    if any(seen.values()):
        raise InputError(f"{what} would score version {version} on {seen['train']} image(s) it (or a version it was "
                         f"fine-tuned from) was trained on and {seen['val']} it was early-stopped on, of "
                         f"{len(scored)} scored; score the test split instead")


@dataclass
class RunResult:
    """One stored analysis run and its result tables (as stored, without run_id)."""

    run_id: str
    kind: str
    version: str
    config: dict
    reused: bool
    duration_s: float
    tables: dict[str, pl.DataFrame] = field(default_factory=dict)

    @property
    def metrics(self) -> pl.DataFrame:
        return self.tables.get("metrics", pl.DataFrame())

    def overall(self) -> dict[str, float]:
        """Overall metrics (finding NULL) as a dict."""
        m = self.metrics.filter(pl.col("finding").is_null())
        return dict(zip(m["metric"].to_list(), m["value"].to_list()))


@dataclass
class Runs:
    """The stored runs one command made or reused (e.g. one zero-shot run per rule).

    `.to_polars()` is their metrics stacked: run_id, the config value that tells them apart
    (`label`, e.g. rule), finding (None = overall), metric, value, lo, hi."""

    results: list[RunResult]
    label: str | None = None

    def __iter__(self):
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, i: int) -> RunResult:
        return self.results[i]

    def to_polars(self) -> pl.DataFrame:
        frames = []
        for r in self.results:
            cols = [pl.lit(r.run_id).alias("run_id")]
            if self.label:
                cols.append(pl.lit(str(r.config.get(self.label))).alias(self.label))
            frames.append(r.metrics.select(*cols, pl.all()))
        return pl.concat(frames) if frames else pl.DataFrame()


def cached_run(store, kind: str, version: str, config: dict, compute: Callable[[], dict[str, pl.DataFrame]],
               force: bool = False, tables: tuple[str, ...] = ("metrics",)) -> RunResult:
    """Reuse the stored run of (kind, version, config) unless `force`; else compute, time and store it.

    `tables` names the result tables to read back when a run is reused.
    """
    old = store.find_run(kind, version, config)
    if old is not None and not force:
        row = store.runs().filter(pl.col("run_id") == old)
        duration = float(row["duration_s"][0]) if row.height else float("nan")
        return RunResult(old, kind, version, config, True, duration, store.run_tables(old, tables))
    started = _dt.datetime.now()
    t0 = time.perf_counter()
    result = compute()
    duration = time.perf_counter() - t0
    run_id = store.write_run(kind, version, config, started, duration, result)
    if old is not None:
        store.delete_run(old)  # replaced by the forced recomputation
    return RunResult(run_id, kind, version, config, False, duration, result)


def run_label(kind: str, config: dict) -> str:
    """A short name for a run: kind plus the config values that tell same-kind runs apart."""
    keys = {"zeroshot": ("rule", "templates", "calibrate_on", "split"), "probe": ("classifier",),
            "separability": ("k",), "agreement": ("target", "method")}.get(kind, ())
    from embedstore.analyses.zeroshot import default_templates

    defaults = {"split": "test", "calibrate_on": "val"}  # left out of the name when they hold
    if kind == "zeroshot":
        defaults["templates"] = default_templates(config.get("rule", ""))
    parts = [f"{k}={config[k]}" for k in keys if config.get(k) is not None and defaults.get(k) != config[k]]
    if config.get("where"):
        parts.append(f"where={config['where']}")
    return f"{kind}({','.join(parts)})" if parts else kind  # no [ ]: rich would read them as markup


def parse_config(config) -> dict:
    """A stored run's config (JSON text, a dict or None) as a dict; {} where it is not a JSON object."""
    if isinstance(config, dict):
        return config
    try:
        cfg = json.loads(config) if config else {}
    except json.JSONDecodeError:
        return {}
    return cfg if isinstance(cfg, dict) else {}


def runs(store, kind: str | None = None) -> pl.DataFrame:
    """Every stored run (newest first), optionally of one kind."""
    df = store.runs()
    return df.filter(pl.col("kind") == kind) if kind else df
