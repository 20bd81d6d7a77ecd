"""The seed study's results table, rebuilt from stored runs: one row per method (zero-shot, linear
probe, fine-tuned) with macro-F1, exact match, LRAP, coverage error and the inter/intra
centroid-distance ratio, as the seed's README laid it out.

"As the seed ran it": zero-shot is the `raw-dot` rule with one prompt per finding cut at 0, the
probe and the fine-tuned head are cut at probability 0.5 (the `@default` metrics of each run),
LRAP and coverage error are scikit-learn's over all rows. The inter/intra ratio comes from the
separability run of the version each method's vectors live in (zero-shot and probe: the base
version; fine-tuned: the fine-tuned one). A last column gives the like-for-like macro-F1 with
every method's threshold fitted on val. Reads stored runs only; a cell whose run is missing is
empty and `missing` says which command makes it.
"""

from __future__ import annotations

import json

import polars as pl

from embedstore.analyses.scoring import DEFAULT_SUFFIX

COLUMNS = {"method": pl.String, "version": pl.String, "macro F1": pl.Float64, "exact match": pl.Float64,
           "LRAP": pl.Float64, "coverage error": pl.Float64, "inter/intra ratio": pl.Float64,
           "macro F1 (val threshold)": pl.Float64, "missing": pl.String}
SEED_METRICS = {"macro F1": "macro_f1", "exact match": "exact_match", "LRAP": "lrap", "coverage error": "coverage_error"}


def _versions(store, version: str | None) -> tuple[str, str | None]:
    """(base, fine-tuned): the given version and its latest fine-tuned child, or its parent and it."""
    info = store.versions()
    version = store.resolve_version(version)
    parent = dict(zip(info["version"].to_list(), info["parent"].to_list()))
    if parent.get(version):
        return parent[version], version
    children = [v for v in info["version"].to_list() if parent.get(v) == version]
    return version, (children[-1] if children else None)


def _latest(store, version: str | None, kind: str, **want) -> str | None:
    if version is None:
        return None
    runs = store.runs().filter((pl.col("version") == version) & (pl.col("kind") == kind)).sort("started", descending=True)
    for run_id, config in runs.select("run_id", "config").iter_rows():
        cfg = json.loads(config) if isinstance(config, str) else dict(config or {})
        if all(cfg.get(k, v if k == "split" else None) == v for k, v in want.items()):
            return run_id
    return None


def _overall(store, run_id: str | None) -> dict[str, float]:
    if run_id is None:
        return {}
    m = store.metrics_of([run_id]).filter(pl.col("finding").is_null())
    return dict(zip(m["metric"].to_list(), m["value"].to_list()))


def seed_table(store, version: str | None = None) -> pl.DataFrame:
    """The seed's table layout from stored runs (see the module docstring)."""
    base, tuned = _versions(store, version)
    methods = [
        ("zero-shot (raw-dot)", base, _latest(store, base, "zeroshot", rule="raw-dot", templates="single", split="test"),
         f"embedstore zeroshot --rule raw-dot --version {base}"),
        ("linear probe", base, _latest(store, base, "probe", classifier="logreg"), f"embedstore probe --version {base}"),
        ("fine-tuned", tuned, _latest(store, tuned, "finetune"),
         f"embedstore finetune --objective bce --from-version {base}"),
    ]
    rows = []
    for name, version_of, run_id, command in methods:
        metrics = _overall(store, run_id)
        ratio = _overall(store, _latest(store, version_of, "separability")).get("inter_intra_ratio")
        row = {"method": name, "version": version_of, "missing": None}
        for header, key in SEED_METRICS.items():  # the seed's default cut; uncalibrated runs store it plainly
            row[header] = metrics.get(key + DEFAULT_SUFFIX, metrics.get(key))
        row["inter/intra ratio"] = ratio
        calibrated = "macro_f1" + DEFAULT_SUFFIX in metrics
        row["macro F1 (val threshold)"] = metrics.get("macro_f1") if calibrated else None
        missing = [command] if run_id is None else []
        if ratio is None and version_of is not None:
            missing.append(f"embedstore separability --version {version_of}")
        row["missing"] = "; ".join(missing) or None
        rows.append(row)
    return pl.DataFrame(rows, schema=COLUMNS)
