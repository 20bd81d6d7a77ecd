"""Paired comparisons on the same test images: two versions (`compare V1 V2`), or two methods on
one version (`compare --methods zeroshot:pos-neg,probe,finetuned`).

Both sides are scored on exactly the same images (refused otherwise), so the comparison is
paired: one group bootstrap (patients, else studies; `metrics.bootstrap_weights`) draws the
same replicates for both sides, and each replicate's difference (side 2 minus side 1) gives the
interval. Per finding and macro (over the evaluable findings, the same set for both sides, since
it depends on the labels only), for AUROC and AP (from the stored scores) and F1 (from each
side's stored decisions at its own operating point):

- `diff`, `diff_lo`, `diff_hi`: the difference and its 95 % percentile interval;
- `p_value`: two-sided bootstrap p-value, 2 x the smaller share of replicates on either side of
  0 (with +1 smoothing); `p_holm`: Holm's step-down correction over the evaluable findings, per
  metric; `delong_p`: DeLong's test of the AUROC difference, a cross-check that assumes
  independent images;
- `verdict`: "better" / "worse" only when the interval excludes 0 (and, per finding, the Holm-
  corrected p is below alpha); else "no difference"; "not evaluable" for findings below
  `min_positives` positive groups.

`compare V1 V2` refuses two versions whose test sets differ (an image with a vector in one
only), then pairs runs of the same kind and config on both versions (the fingerprints of the data
and prompts read are left out of the pairing; `same_data` says whether they agreed). Every metric of the paired runs is shown
side by side; the paired columns are filled for the metrics above. Reads the store only; no torch.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from embedstore.analyses.runs import parse_config, run_label
from embedstore.errors import InputError

# Config keys that describe the data read rather than the analysis asked for.
DATA_KEYS = ("data", "prompts")
# Run kinds that describe how a version was made, not an analysis of it.
NOT_ANALYSES = ("finetune",)
# Run kinds that store per-image scores, so they can be compared paired.
SCORED_KINDS = ("zeroshot", "probe", "finetune")
PAIRED_METRICS = ("auroc", "ap", "f1")
PAIRED_COLUMNS = {"finding": pl.String, "metric": pl.String, "value_1": pl.Float64, "value_2": pl.Float64,
                  "diff": pl.Float64, "diff_lo": pl.Float64, "diff_hi": pl.Float64, "p_value": pl.Float64,
                  "p_holm": pl.Float64, "delong_p": pl.Float64, "verdict": pl.String, "n_images": pl.Int64,
                  "n_groups": pl.Int64}


# ---- the statistics --------------------------------------------------------------------------
def bootstrap_p(reps: np.ndarray) -> float:
    """Two-sided p-value of "no difference" from the replicates of a difference."""
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return float("nan")
    tail = min(int((reps <= 0).sum()), int((reps >= 0).sum()))
    return float(min(1.0, 2 * (tail + 1) / (reps.size + 1)))


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN entries are left out and stay NaN)."""
    p = np.asarray(p, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    order = idx[np.argsort(p[idx], kind="stable")]
    m = order.size
    out[order] = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    return out


def delong_paired(y: np.ndarray, s1: np.ndarray, s2: np.ndarray) -> tuple[float, float, float]:
    """(AUROC 2 - AUROC 1, its standard error, two-sided p) by DeLong's test for two correlated
    ROC curves (midrank form of Sun & Xu). Images are treated as independent."""
    from scipy.stats import norm, rankdata

    y = np.asarray(y).astype(bool)
    m, n = int(y.sum()), int((~y).sum())
    if m < 2 or n < 2:
        return float("nan"), float("nan"), float("nan")
    v10, v01, auc = [], [], []
    for s in (np.asarray(s1, np.float64), np.asarray(s2, np.float64)):
        tz = rankdata(s)
        tx, ty = rankdata(s[y]), rankdata(s[~y])
        auc.append((tz[y].sum() - m * (m + 1) / 2) / (m * n))
        v10.append((tz[y] - tx) / n)
        v01.append(1.0 - (tz[~y] - ty) / m)
    s10, s01 = np.cov(np.vstack(v10)), np.cov(np.vstack(v01))
    var = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / m + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / n
    diff = auc[1] - auc[0]
    if var <= 0:
        return float(diff), 0.0, 1.0 if diff == 0 else 0.0
    se = float(np.sqrt(var))
    return float(diff), se, float(2 * norm.sf(abs(diff) / se))


def _side_values(y, s, p, W) -> dict[str, np.ndarray]:
    """AUROC, AP and F1 of one side for every weight row (row 0: the sample itself)."""
    from embedstore.analyses.metrics import weighted_auroc_ap, weighted_counts

    auc, ap = weighted_auroc_ap(y, s, W)
    return {"auroc": auc, "ap": ap, "f1": weighted_counts(y, p, W)["f1"]}


def _verdict(lo, hi, p, alpha: float) -> str:
    if lo is None or not np.isfinite(lo):
        return "no difference"
    significant = p is None or (np.isfinite(p) and p < alpha)
    if lo > 0 and significant:
        return "better"
    if hi < 0 and significant:
        return "worse"
    return "no difference"


def paired_differences(Y: np.ndarray, S1: np.ndarray, S2: np.ndarray, P1: np.ndarray, P2: np.ndarray, groups,
                       findings: list[str], uncertain: str = "mask", blank: str = "mask", n_boot: int = 1000,
                       seed: int = 0, alpha: float = 0.05, min_positives: int | None = None) -> pl.DataFrame:
    """Per-finding and macro paired differences (side 2 - side 1) of AUROC, AP and F1 on the same
    rows: scores S1, S2 and decisions P1, P2 [n, F], labels Y, each row's group."""
    from embedstore.analyses.metrics import MIN_POSITIVES, apply_policy, bootstrap_weights, evaluable_findings, group_codes

    Y01, known = apply_policy(Y, uncertain, blank)
    groups = Y01.shape[0] if groups is None else groups
    W = bootstrap_weights(groups, n_boot, seed)
    ones = np.ones((1, Y01.shape[0]), dtype=np.float32)
    found = evaluable_findings(Y01, known, groups, findings, MIN_POSITIVES if min_positives is None else min_positives)
    evaluable = found["evaluable"].to_numpy()
    codes = group_codes(groups)
    rows, macro = [], {m: ([], [], []) for m in PAIRED_METRICS}
    for j, finding in enumerate(findings):
        m = known[:, j]
        Wj = np.concatenate([ones[:, m], W[:, m]])
        y = Y01[m, j]
        one, two = _side_values(y, S1[m, j], P1[m, j], Wj), _side_values(y, S2[m, j], P2[m, j], Wj)
        delong = delong_paired(y, S1[m, j], S2[m, j])[2] if evaluable[j] else np.nan
        for metric in PAIRED_METRICS:
            d = two[metric] - one[metric]
            row = {"finding": finding, "metric": metric, "value_1": one[metric][0], "value_2": two[metric][0],
                   "diff": d[0], "diff_lo": None, "diff_hi": None, "p_value": None, "p_holm": None,
                   "delong_p": delong if metric == "auroc" else None, "verdict": "not evaluable",
                   "n_images": int(m.sum()), "n_groups": int(np.unique(codes[m]).size)}
            if evaluable[j] and d.size > 2:
                row["diff_lo"], row["diff_hi"] = (float(q) for q in np.nanquantile(d[1:], [alpha / 2, 1 - alpha / 2]))
                row["p_value"] = bootstrap_p(d[1:])
            if evaluable[j]:
                for acc, v in zip(macro[metric], (one[metric], two[metric], d)):
                    acc.append(v)
            rows.append(row)
    frame = pl.DataFrame(rows, schema=PAIRED_COLUMNS)
    frame = _with_holm(frame, alpha)
    return pl.concat([frame, _macro_rows(macro, alpha, int(Y01.shape[0]), int(codes.max(initial=-1) + 1))])


def _with_holm(frame: pl.DataFrame, alpha: float) -> pl.DataFrame:
    """Holm-corrected p-values per metric over the evaluable findings, and the per-finding verdicts."""
    parts = []
    for metric in PAIRED_METRICS:
        part = frame.filter(pl.col("metric") == metric)
        p_holm = holm(part["p_value"].fill_null(np.nan).to_numpy())
        part = part.with_columns(pl.Series("p_holm", p_holm).fill_nan(None))
        verdicts = [r["verdict"] if r["p_value"] is None else _verdict(r["diff_lo"], r["diff_hi"], r["p_holm"], alpha)
                    for r in part.iter_rows(named=True)]
        parts.append(part.with_columns(pl.Series("verdict", verdicts, dtype=pl.String)))
    return pl.concat(parts).sort(pl.col("finding"), pl.col("metric"), maintain_order=True)


def _macro_rows(macro: dict, alpha: float, n_images: int, n_groups: int) -> pl.DataFrame:
    rows = []
    for metric, (one, two, diffs) in macro.items():
        row = {"finding": None, "metric": f"macro_{metric}", "value_1": None, "value_2": None, "diff": None,
               "diff_lo": None, "diff_hi": None, "p_value": None, "p_holm": None, "delong_p": None,
               "verdict": "not evaluable", "n_images": n_images, "n_groups": n_groups}
        if diffs:
            d = np.nanmean(np.vstack(diffs), axis=0)
            row.update(value_1=float(np.mean([v[0] for v in one])), value_2=float(np.mean([v[0] for v in two])),
                       diff=float(d[0]))
            if d.size > 2:
                lo, hi = np.nanquantile(d[1:], [alpha / 2, 1 - alpha / 2])
                row.update(diff_lo=float(lo), diff_hi=float(hi), p_value=bootstrap_p(d[1:]),
                           verdict=_verdict(lo, hi, None, alpha))
            else:
                row["verdict"] = "no difference"
        rows.append(row)
    return pl.DataFrame(rows, schema=PAIRED_COLUMNS)


# ---- runs in the store -----------------------------------------------------------------------
def _pairing_key(kind: str, config: dict) -> str:
    from embedstore.store import stable_hash

    return stable_hash({"kind": kind, "config": {k: v for k, v in config.items() if k not in DATA_KEYS}})


def _runs_of(store, version: str) -> list[dict]:
    """Every run on `version`, newest first, with its config parsed."""
    runs = store.runs().filter(pl.col("version") == version).sort(["started", "run_id"], descending=True)
    return [{"run_id": run_id, "kind": kind, "config": parse_config(config)}
            for run_id, kind, config in runs.select("run_id", "kind", "config").iter_rows()]


def _latest_runs(store, version: str) -> dict[str, dict]:
    """pairing key -> the latest analysis run of each kind + config on `version`."""
    out: dict[str, dict] = {}
    for run in _runs_of(store, version):
        if run["kind"] not in NOT_ANALYSES:
            out.setdefault(_pairing_key(run["kind"], run["config"]), run)
    return out


def _scored(store, run: dict, findings: list[str] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(ids, S, P, findings) of a run's stored per-image scores on the split it scored, as [n, F]
    matrices (a fine-tuned head stores every image's logits)."""
    df = store.image_scores(run["run_id"])
    if df.is_empty():
        raise InputError(f"run {run['run_id']} stored no per-image scores; run it again with --force")
    scored = store.image_groups().filter(pl.col("split") == run["config"].get("split", "test"))["id"]
    df = df.filter(pl.col("id").is_in(scored.to_list()))
    findings = findings or run["config"].get("findings") or sorted(set(df["finding"].to_list()))
    df = df.filter(pl.col("finding").is_in(findings))
    ids = np.unique(df["id"].to_numpy())
    wide = lambda col: (df.pivot(on="finding", index="id", values=col).sort("id").select(findings).to_numpy()
                        .astype(np.float64))
    return ids, wide("score"), wide("pred"), list(findings)


def _paired_runs(store, run_1: dict, run_2: dict, n_boot: int, seed: int, alpha: float) -> pl.DataFrame:
    """Paired differences of two runs' stored scores; refused unless they scored the same images."""
    findings = [f for f in run_1["config"].get("findings", []) if f in set(run_2["config"].get("findings", []))]
    ids1, S1, P1, findings = _scored(store, run_1, findings or None)
    ids2, S2, P2, _ = _scored(store, run_2, findings)
    if not np.array_equal(ids1, ids2):
        differ = len(set(ids1.tolist()) ^ set(ids2.tolist()))
        raise InputError(f"runs {run_1['run_id']} and {run_2['run_id']} scored different images ({differ} differ); "
                         "a paired comparison needs the same test images on both sides")
    cfg = run_1["config"]
    groups = store.image_groups().select("id", "group_id")
    group_of = dict(groups.iter_rows())
    Y = store.label_matrix(ids1, findings)
    return paired_differences(Y, S1, S2, P1, P2, np.array([group_of[int(i)] for i in ids1], dtype=object), findings,
                              cfg.get("uncertain", "mask"), cfg.get("blank", "mask"), n_boot, seed, alpha,
                              cfg.get("min_positives"))


def require_same_test_set(store, v1: str, v2: str) -> None:
    """InputError unless both versions have vectors for exactly the same test images: metrics on
    different test sets differ by the images as well as by the model."""
    a, b = store.split_ids(v1, "test"), store.split_ids(v2, "test")
    differ = np.setxor1d(a, b)
    if len(differ):
        raise InputError(f"versions {v1} and {v2} have different test sets: {len(differ)} of {len(np.union1d(a, b))} "
                         f"test images have a vector in only one; encode the same images into both before comparing")


COMPARE_COLUMNS = {"run": pl.String, "kind": pl.String, "finding": pl.String, "metric": pl.String,
                   "value_1": pl.Float64, "lo_1": pl.Float64, "hi_1": pl.Float64, "value_2": pl.Float64,
                   "lo_2": pl.Float64, "hi_2": pl.Float64, "diff": pl.Float64, "diff_lo": pl.Float64,
                   "diff_hi": pl.Float64, "p_value": pl.Float64, "p_holm": pl.Float64, "delong_p": pl.Float64,
                   "verdict": pl.String, "same_data": pl.Boolean, "run_1": pl.String, "run_2": pl.String}


# How each analysis is run again from its stored config (keys the config holds -> the function's).
RERUN_KEYS = {
    "zeroshot": ("rule", "templates", "calibrate_on", "operating_point", "split", "uncertain", "blank", "where",
                 "n_boot", "seed", "min_positives"),
    "probe": ("classifier", "grid", "calibrate_on", "operating_point", "uncertain", "blank", "where", "n_boot", "seed",
              "min_positives"),
    "separability": ("k", "uncertain", "where", "tsne_max", "seed"),
}


def _rerun(store, kind: str, version: str, config: dict) -> None:
    """Run an analysis on `version` with the settings a stored run of it used elsewhere."""
    from embedstore.analyses import probe, separability, zeroshot

    fn = {"zeroshot": zeroshot.zeroshot, "probe": probe.probe, "separability": separability.separability}[kind]
    kwargs = {k: config[k] for k in RERUN_KEYS[kind] if k in config}
    if "grid" in kwargs:
        kwargs["grid"] = tuple(kwargs["grid"])
    fn(store, version, **kwargs)


FLAGS = {"rule": "--rule", "templates": "--templates", "classifier": "--classifier", "k": "--k",
         "calibrate_on": "--calibrate-on", "operating_point": "--operating-point", "uncertain": "--uncertain",
         "blank": "--blank", "where": "--where", "n_boot": "--n-boot", "min_positives": "--min-positives"}


def _command(kind: str, version: str, config: dict) -> str:
    """The CLI command that makes the run `config` describes on `version`."""
    parts = [f"{FLAGS[k]} {config[k] if config[k] is not None else 'none'}"
             for k in RERUN_KEYS[kind] if k in FLAGS and k in config and config[k] not in (None, "mask")]
    return f"embedstore {kind} --version {version} " + " ".join(parts)


def fill_missing(store, v1: str, v2: str, run: bool = True) -> list[str]:
    """Run, on each version, the analyses the other has and it lacks (same settings); with
    `run=False` raise InputError naming the commands instead. Returns what was run."""
    a, b = _latest_runs(store, v1), _latest_runs(store, v2)
    todo = [(v2, a[k]) for k in a if k not in b and a[k]["kind"] in RERUN_KEYS]
    todo += [(v1, b[k]) for k in b if k not in a and b[k]["kind"] in RERUN_KEYS]
    if not a and not b:  # nothing run yet: the headline analyses on both
        todo = [(v, {"kind": kind, "config": {}}) for v in (v1, v2) for kind in ("zeroshot", "probe")]
    if todo and not run:
        commands = "; ".join(sorted({_command(r["kind"], v, r["config"]) for v, r in todo}))
        raise InputError(f"run the missing analyses first: {commands} (or leave out --no-run)")
    for version, r in todo:
        _rerun(store, r["kind"], version, r["config"])
    return [f"{r['kind']} on {v}" for v, r in todo]


def compare(store, v1: str, v2: str, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05,
            run_missing: bool = True) -> pl.DataFrame:
    """One row per (run, finding, metric) present on both versions (`value_1` is `v1`'s), with the
    paired difference, its interval, p-values and verdict where the metric can be paired. The
    analyses one version lacks are first run on it with the other's settings (`fill_missing`),
    unless `run_missing` is False."""
    v1, v2 = store.resolve_version(v1), store.resolve_version(v2)
    if v1 == v2:
        raise InputError(f"compare needs two different versions, got {v1} twice")
    require_same_test_set(store, v1, v2)
    fill_missing(store, v1, v2, run=run_missing)
    a, b = _latest_runs(store, v1), _latest_runs(store, v2)
    shared = [k for k in a if k in b]
    if not shared:
        return pl.DataFrame(schema=COMPARE_COLUMNS)
    pairs = pl.DataFrame({
        "run": [run_label(a[k]["kind"], a[k]["config"]) for k in shared],
        "kind": [a[k]["kind"] for k in shared],
        "same_data": [all(a[k]["config"].get(d) == b[k]["config"].get(d) for d in DATA_KEYS) for k in shared],
        "run_1": [a[k]["run_id"] for k in shared],
        "run_2": [b[k]["run_id"] for k in shared],
    })
    m = store.metrics_of(pairs["run_1"].to_list() + pairs["run_2"].to_list()).with_columns(
        pl.col("value", "lo", "hi").cast(pl.Float64).fill_nan(None))
    left = m.rename({"run_id": "run_1", "value": "value_1", "lo": "lo_1", "hi": "hi_1"})
    right = m.rename({"run_id": "run_2", "value": "value_2", "lo": "lo_2", "hi": "hi_2"})
    out = (pairs.join(left, on="run_1")
           .join(right, on=["run_2", "finding", "metric"], how="inner", nulls_equal=True)
           .with_columns((pl.col("value_2") - pl.col("value_1")).alias("diff")))
    paired = [_paired_runs(store, a[k], b[k], n_boot, seed, alpha).with_columns(pl.lit(a[k]["run_id"]).alias("run_1"))
              for k in shared if a[k]["kind"] in SCORED_KINDS]
    extra = ["diff_lo", "diff_hi", "p_value", "p_holm", "delong_p", "verdict"]
    if paired:
        stats = pl.concat(paired).select("run_1", "finding", "metric", *extra)
        out = out.join(stats, on=["run_1", "finding", "metric"], how="left", nulls_equal=True)
    else:
        out = out.with_columns(*[pl.lit(None, dtype=COMPARE_COLUMNS[c]).alias(c) for c in extra])
    return (out.select(list(COMPARE_COLUMNS))
            .sort(["kind", "run", pl.col("finding").is_not_null(), "finding", "metric"], nulls_last=False))


# ---- methods on one version ------------------------------------------------------------------
METHOD_KINDS = {"zeroshot": ("zeroshot", "rule", "pos-neg"), "probe": ("probe", "classifier", "logreg"),
                "finetuned": ("finetune", None, None)}


def _method_run(store, version: str, spec: str) -> dict:
    """The latest run on `version` that a method spec (`zeroshot:RULE`, `probe[:CLASSIFIER]`,
    `finetuned`) names; InputError saying which command makes it."""
    name, _, qualifier = spec.strip().partition(":")
    if name not in METHOD_KINDS:
        raise InputError(f"--methods: unknown method {spec!r}; use zeroshot:RULE, probe[:logreg|knn] or finetuned")
    kind, key, default = METHOD_KINDS[name]
    want = qualifier or default
    for run in _runs_of(store, version):
        if run["kind"] == kind and (key is None or run["config"].get(key) == want) \
                and run["config"].get("split", "test") == "test":
            if kind != "finetune" or not store.image_scores(run["run_id"]).is_empty():
                return run
    command = {"zeroshot": f"embedstore zeroshot --rule {want} --version {version}",
               "probe": f"embedstore probe --classifier {want} --version {version}",
               "finetuned": "embedstore finetune --objective bce (then compare on the new version)"}[name]
    raise InputError(f"--methods {spec}: no stored {name} run with a head's scores on version {version}; run `{command}` first"
                     if name == "finetuned" else f"--methods {spec}: no stored run on version {version}; run `{command}` first")


# How a run's scores became decisions: two methods are compared paired only when these agree, else
# the difference mixes the methods with their operating points, label policies or image sets. The
# evaluable bar (min_positives) need not agree: `paired_differences` applies the first run's bar to
# both sides, so both average the same findings.
SCORING_KEYS = ("calibrate_on", "operating_point", "uncertain", "blank", "where")


def scoring_settings(run: dict) -> dict:
    """The SCORING_KEYS values a run was scored with (None where not recorded, e.g. no operating
    point without calibration). A fine-tuned head recording none was scored by the shared defaults."""
    from embedstore.analyses.scoring import Scoring

    cfg = run["config"]
    if run["kind"] == "finetune":
        cfg = {**Scoring().run_config(), **cfg}
    return {k: cfg.get(k) for k in SCORING_KEYS}


def _flag(key: str, value) -> str:
    """The CLI flag that sets `key` to `value` (shell-quoted)."""
    if key == "where" and value is None:
        return "no --where"
    text = "none" if value is None else str(value)
    return f'{FLAGS[key]} "{text}"' if " " in text else f"{FLAGS[key]} {text}"


def require_scored_alike(spec_1: str, run_1: dict, spec_2: str, run_2: dict) -> None:
    """InputError naming the settings two methods' runs were scored with differently, and the fix."""
    a, b = scoring_settings(run_1), scoring_settings(run_2)
    differ = [k for k in SCORING_KEYS if a[k] != b[k]]
    if not differ:
        return
    said = "; ".join(f"{k} {a[k]!r} vs {b[k]!r}" for k in differ)
    flags = lambda side: " ".join(_flag(k, side[k]) for k in differ if not (k == "operating_point" and side[k] is None))
    raise InputError(f"--methods {spec_1},{spec_2}: their runs ({run_1['run_id']}, {run_2['run_id']}) were scored "
                     f"differently ({said}); re-run {spec_2} with {flags(a)} (or {spec_1} with {flags(b)}) so both "
                     "sides are scored alike")


def compare_methods(store, version: str | None, methods: list[str], n_boot: int = 1000, seed: int = 0,
                    alpha: float = 0.05) -> pl.DataFrame:
    """Paired differences between methods on one version's test images, for every pair in the
    order given (`method_2` minus `method_1`)."""
    version = store.resolve_version(version)
    specs = [m for m in methods if m.strip()]
    if len(specs) < 2:
        raise InputError(f"--methods needs at least two methods, e.g. zeroshot:pos-neg,probe; got {','.join(methods)!r}")
    runs = [(spec, _method_run(store, version, spec)) for spec in specs]
    frames = []
    for i, (spec_1, run_1) in enumerate(runs):
        for spec_2, run_2 in runs[i + 1:]:
            require_scored_alike(spec_1, run_1, spec_2, run_2)
            part = _paired_runs(store, run_1, run_2, n_boot, seed, alpha)
            frames.append(part.select(pl.lit(spec_1).alias("method_1"), pl.lit(spec_2).alias("method_2"), pl.all(),
                                      pl.lit(run_1["run_id"]).alias("run_1"), pl.lit(run_2["run_id"]).alias("run_2")))
    return pl.concat(frames)
