"""The seed study's results table, rebuilt from stored runs: one row per method (zero-shot, linear
probe, fine-tuned) with macro-F1, exact match, LRAP, coverage error and the inter/intra
centroid-distance ratio, as the seed's README laid it out.

"As the seed ran it": zero-shot is the `raw-dot` rule with one prompt per finding cut at 0, the
probe and the fine-tuned head are cut at probability 0.5 (the `@default` metrics of each run),
LRAP and coverage error are scikit-learn's over all rows. The inter/intra ratio comes from the
separability run of the version each method's vectors live in (zero-shot and probe: the base
version; fine-tuned: the fine-tuned one). A last column gives the like-for-like macro-F1 with
every method's threshold fitted on val. A cell whose run is missing is empty and `missing` says
which command makes it.

One label policy and image filter for every row (`uncertain`, `blank`, `where`; the seed's
setting is uncertain and blank both negative): only runs made with them are read, and the
fine-tuned head, whose `finetune` run was scored under the default policy, is scored again here
from the logits that run stored for every image. The separability ratio follows `uncertain` and
`where` (separability has no blank policy).

What each column averages: macro-F1 is the mean over the *evaluable* findings of the run (enough
positive patients on test; `run_findings`), while exact match, LRAP and coverage error are
overall metrics over *all* findings, on the test images with no masked label.
"""

from __future__ import annotations

import polars as pl

from embedstore.analyses.runs import parse_config
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


# What a stored run's config holds when it predates a key (and every run's value where not given).
CONFIG_DEFAULTS = {"split": "test", "uncertain": "mask", "blank": "mask", "where": None}


def _latest(store, version: str | None, kind: str, **want) -> str | None:
    """The newest run of `kind` on `version` whose config has every `want` value."""
    if version is None:
        return None
    runs = store.runs().filter((pl.col("version") == version) & (pl.col("kind") == kind)).sort("started", descending=True)
    for run_id, config in runs.select("run_id", "config").iter_rows():
        cfg = parse_config(config)
        if all(cfg.get(k, CONFIG_DEFAULTS.get(k)) == v for k, v in want.items()):
            return run_id
    return None


def _overall(store, run_id: str | None) -> dict[str, float]:
    if run_id is None:
        return {}
    m = store.metrics_of([run_id]).filter(pl.col("finding").is_null())
    return dict(zip(m["metric"].to_list(), m["value"].to_list()))


def _head_overall(store, version: str | None, uncertain: str, blank: str, where: str | None) -> tuple[str | None, dict]:
    """(run id, overall metrics) of a fine-tuned head, scored here under the table's label policy
    and image filter from the logits its `finetune` run stored for every image (the run itself
    was scored under the default policy, on every image)."""
    import numpy as np

    from embedstore.analyses.scoring import Scoring, score_method

    run_id = _latest(store, version, "finetune")
    scores = store.image_scores(run_id) if run_id else None
    if scores is None or scores.is_empty():  # no run, or a head-less (contrastive) fine-tune
        return run_id, {}
    if where:
        scores = scores.filter(pl.col("id").is_in(store.images(where)["id"].to_list()))
    findings = sorted(set(scores["finding"].to_list()))
    L = scores.pivot(on="finding", index="id", values="score").sort("id")
    ids = L["id"].to_numpy()
    L = L.select(findings).to_numpy().astype(np.float64)
    meta = store.image_groups().filter(pl.col("id").is_in(ids.tolist())).sort("id")
    split, groups = (np.array(meta[c].to_list(), dtype=object) for c in ("split", "group_id"))
    tables, _ = score_method(ids, store.label_matrix(ids, findings), split, groups, findings, L, (L > 0).astype(np.int8),
                             0.5 * (1.0 + np.tanh(0.5 * L)), version, Scoring(uncertain=uncertain, blank=blank, n_boot=0))
    m = tables["metrics"].filter(pl.col("finding").is_null())
    return run_id, dict(zip(m["metric"].to_list(), m["value"].to_list()))


def seed_table(store, version: str | None = None, uncertain: str = "mask", blank: str = "mask",
               where: str | None = None) -> pl.DataFrame:
    """The seed's table layout from stored runs (see the module docstring), every row under one
    label policy and image filter: runs made with another are not used."""
    base, tuned = _versions(store, version)
    policy = {"uncertain": uncertain, "blank": blank, "where": where}
    flags = "".join(f" --{k} {v}" for k, v in (("uncertain", uncertain), ("blank", blank)) if v != "mask")
    flags += f' --where "{where}"' if where else ""
    head_run, head = _head_overall(store, tuned, uncertain, blank, where)
    methods = [
        ("zero-shot (raw-dot)", base, _overall(store, _latest(store, base, "zeroshot", rule="raw-dot",
                                                              templates="single", split="test", **policy)),
         f"embedstore zeroshot --rule raw-dot --version {base}{flags}"),
        ("linear probe", base, _overall(store, _latest(store, base, "probe", classifier="logreg", **policy)),
         f"embedstore probe --version {base}{flags}"),
        ("fine-tuned", tuned, head if head_run else {}, f"embedstore finetune --objective bce --from-version {base}"),
    ]
    sep_flags = "".join(f" --uncertain {uncertain}" if uncertain != "mask" else "") + (f' --where "{where}"' if where else "")
    return pl.DataFrame([_row(store, name, version_of, metrics, command, uncertain, where, sep_flags)
                         for name, version_of, metrics, command in methods], schema=COLUMNS)


def _row(store, name: str, version_of: str | None, metrics: dict, command: str, uncertain: str, where: str | None,
         sep_flags: str) -> dict:
    # separability has no blank policy: its ratio counts blanks as masked whatever `blank` says
    ratio = _overall(store, _latest(store, version_of, "separability", uncertain=uncertain, where=where)).get(
        "inter_intra_ratio")
    row = {"method": name, "version": version_of, "missing": None}
    for header, key in SEED_METRICS.items():  # the seed's default cut; uncalibrated runs store it plainly
        row[header] = metrics.get(key + DEFAULT_SUFFIX, metrics.get(key))
    row["inter/intra ratio"] = ratio
    calibrated = "macro_f1" + DEFAULT_SUFFIX in metrics
    row["macro F1 (val threshold)"] = metrics.get("macro_f1") if calibrated else None
    missing = [command] if not metrics else []
    if ratio is None and version_of is not None:
        missing.append(f"embedstore separability --version {version_of}{sep_flags}")
    row["missing"] = "; ".join(missing) or None
    return row
