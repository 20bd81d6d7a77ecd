"""`embedstore compare V1 V2`: the metrics of every analysis run on both versions, side by side.

Runs are paired by kind and config. A config holds a fingerprint of the data it read (`data`)
and the prompt texts used (`prompts`); two versions encoded from the same images and prompts
share them, and they are left out of the pairing (`same_data` says whether the fingerprints
agreed). Two versions whose test sets differ (an image with a vector in one only) are refused. When several runs of one
kind and config exist on a version, the latest is used. Reads the store only; no torch.
"""

from __future__ import annotations

import json

import polars as pl

from embedstore.errors import InputError

# Config keys that describe the data read rather than the analysis asked for.
DATA_KEYS = ("data", "prompts")
# Run kinds that describe how a version was made, not an analysis of it.
NOT_ANALYSES = ("finetune",)


def _label(kind: str, config: dict) -> str:
    """A short name for a run: kind plus the config values that tell same-kind runs apart."""
    keys = {"zeroshot": ("rule", "templates", "calibrate_on", "split"), "probe": ("classifier",),
            "separability": ("k",), "agreement": ("target", "method")}.get(kind, ())
    defaults = {"templates": "ensemble", "split": "test"}  # left out of the name when they hold
    parts = [f"{k}={config[k]}" for k in keys if config.get(k) is not None and defaults.get(k) != config[k]]
    if config.get("where"):
        parts.append(f"where={config['where']}")
    return f"{kind}({','.join(parts)})" if parts else kind  # no [ ]: rich would read them as markup


def _pairing_key(kind: str, config: dict) -> str:
    from embedstore.store import stable_hash

    return stable_hash({"kind": kind, "config": {k: v for k, v in config.items() if k not in DATA_KEYS}})


def _latest_runs(store, version: str) -> dict[str, dict]:
    """pairing key -> {run_id, kind, config} of the latest run of each kind + config on `version`."""
    with store.connect() as con:
        rows = con.sql("SELECT run_id, kind, config FROM runs WHERE version = ? ORDER BY started DESC, run_id DESC",
                       params=[version]).fetchall()
    out: dict[str, dict] = {}
    for run_id, kind, config in rows:
        if kind in NOT_ANALYSES:
            continue
        cfg = json.loads(config) if isinstance(config, str) else dict(config or {})
        out.setdefault(_pairing_key(kind, cfg), {"run_id": run_id, "kind": kind, "config": cfg})
    return out


def _metrics(store, run_ids: list[str]) -> pl.DataFrame:
    frame = pl.DataFrame({"run_id": run_ids}, schema={"run_id": pl.String})
    with store.connect() as con:
        con.register("cmp_runs", frame)
        try:
            return con.sql("""SELECT m.run_id, m.finding, m.metric, m.value, m.lo, m.hi FROM metrics m
                              JOIN cmp_runs USING (run_id)""").pl()
        finally:
            con.unregister("cmp_runs")


def require_same_test_set(store, v1: str, v2: str) -> None:
    """InputError unless both versions have vectors for exactly the same test images: metrics on
    different test sets differ by the images as well as by the model."""
    import numpy as np

    a, b = store.split_ids(v1, "test"), store.split_ids(v2, "test")
    differ = np.setxor1d(a, b)
    if len(differ):
        raise InputError(f"versions {v1} and {v2} have different test sets: {len(differ)} of {len(np.union1d(a, b))} "
                         f"test images have a vector in only one; encode the same images into both before comparing")


def compare(store, v1: str, v2: str) -> pl.DataFrame:
    """One row per (run, finding, metric) present on both versions.

    Columns: run (kind(config)), kind, finding (null = overall), metric, value_1, lo_1, hi_1,
    value_2, lo_2, hi_2, diff (value_2 - value_1), overlap (whether the bootstrap intervals
    overlap; null where either has none), same_data, run_1, run_2. `value_1` is `v1`'s.
    """
    v1, v2 = store.resolve_version(v1), store.resolve_version(v2)
    if v1 == v2:
        raise InputError(f"compare needs two different versions, got {v1} twice")
    require_same_test_set(store, v1, v2)
    a, b = _latest_runs(store, v1), _latest_runs(store, v2)
    shared = [k for k in a if k in b]
    schema = {"run": pl.String, "kind": pl.String, "finding": pl.String, "metric": pl.String,
              "value_1": pl.Float64, "lo_1": pl.Float64, "hi_1": pl.Float64, "value_2": pl.Float64,
              "lo_2": pl.Float64, "hi_2": pl.Float64, "diff": pl.Float64, "overlap": pl.Boolean,
              "same_data": pl.Boolean, "run_1": pl.String, "run_2": pl.String}
    if not shared:
        return pl.DataFrame(schema=schema)
    pairs = pl.DataFrame({
        "run": [_label(a[k]["kind"], a[k]["config"]) for k in shared],
        "kind": [a[k]["kind"] for k in shared],
        "same_data": [all(a[k]["config"].get(d) == b[k]["config"].get(d) for d in DATA_KEYS) for k in shared],
        "run_1": [a[k]["run_id"] for k in shared],
        "run_2": [b[k]["run_id"] for k in shared],
    })
    m = _metrics(store, pairs["run_1"].to_list() + pairs["run_2"].to_list())
    m = m.with_columns(pl.col("value", "lo", "hi").cast(pl.Float64).fill_nan(None))
    left = m.rename({"run_id": "run_1", "value": "value_1", "lo": "lo_1", "hi": "hi_1"})
    right = m.rename({"run_id": "run_2", "value": "value_2", "lo": "lo_2", "hi": "hi_2"})
    out = (pairs.join(left, on="run_1")
           .join(right, on=["run_2", "finding", "metric"], how="inner", nulls_equal=True))
    has_ci = pl.all_horizontal(pl.col("lo_1", "hi_1", "lo_2", "hi_2").is_not_null())
    out = out.with_columns(
        (pl.col("value_2") - pl.col("value_1")).alias("diff"),
        pl.when(has_ci).then((pl.col("lo_1") <= pl.col("hi_2")) & (pl.col("lo_2") <= pl.col("hi_1")))
        .otherwise(None).alias("overlap"),
    )
    return (out.select(list(schema))
            .sort(["kind", "run", pl.col("finding").is_not_null(), "finding", "metric"], nulls_last=False))
