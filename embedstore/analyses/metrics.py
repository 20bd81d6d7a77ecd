"""Multi-label metrics with masked labels and vectorised bootstrap intervals.

Labels come as a float matrix `Y [n, F]`: 1 positive, 0 negative, -1 uncertain, NaN missing.
Per finding, uncertain and missing entries are *masked* (left out), not counted as negative,
unless `uncertain="negative"` / `"positive"` says otherwise. Missing is always masked.

Overall multi-label metrics (macro / micro F1, exact match, LRAP, coverage error, ranking
loss, Hamming loss) need a full matrix: they use the images with no masked entry ("complete
rows"); `n_complete` says how many that was.

The bootstrap resamples images (the same replicates for every finding, seeded): each replicate
is a vector of multinomial counts used as sample weights, so AUROC and average precision of
all replicates come from one sort and a few cumulative sums (no Python loop over replicates).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

UNCERTAIN_POLICIES = ("mask", "negative", "positive")
# The columns of a metrics table, as the store's `metrics` table holds them (plus run_id).
METRIC_COLUMNS = {"finding": pl.Utf8, "metric": pl.Utf8, "value": pl.Float64, "lo": pl.Float64, "hi": pl.Float64}


def apply_policy(Y: np.ndarray, uncertain: str = "mask") -> tuple[np.ndarray, np.ndarray]:
    """(Y01, known): labels as 0/1 and the mask of entries that count, under the uncertain policy."""
    if uncertain not in UNCERTAIN_POLICIES:
        from embedstore.errors import InputError

        raise InputError(f"uncertain policy {uncertain!r} is not one of {', '.join(UNCERTAIN_POLICIES)}")
    Y = np.asarray(Y, dtype=np.float64)
    known = np.isfinite(Y)
    unc = known & (Y == -1)
    if uncertain == "mask":
        known &= ~unc
    Y01 = np.where(unc, 1.0 if uncertain == "positive" else 0.0, np.nan_to_num(Y, nan=0.0))
    return (Y01 > 0.5).astype(np.int8), known


def group_codes(groups) -> np.ndarray:
    """Integer codes 0..G-1 of the rows' groups (patients, else studies); an int n means n
    rows, each its own group."""
    if isinstance(groups, (int, np.integer)):
        return np.arange(int(groups))
    _, codes = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
    return codes.reshape(-1)


def bootstrap_weights(groups, n_boot: int, seed: int = 0) -> np.ndarray:
    """[n_boot, n] resampling counts that resample *groups*, not rows.

    `groups` labels each row with its cluster (patient, else study), or is the row count n when
    every row is its own group. Replicate b draws G groups with replacement; every row of a
    group drawn c times gets weight c. Images of one patient share labels, so resampling
    images would understate the spread.
    """
    codes = group_codes(groups)
    n, G = codes.size, int(codes.max()) + 1 if codes.size else 0
    rng = np.random.default_rng(seed)
    if n == 0 or n_boot == 0:
        return np.zeros((n_boot, n), dtype=np.float32)
    draws = rng.integers(0, G, size=(n_boot, G)) + (np.arange(n_boot) * G)[:, None]
    counts = np.bincount(draws.ravel(), minlength=n_boot * G).reshape(n_boot, G).astype(np.float32)
    return counts[:, codes]


def weighted_auroc_ap(y: np.ndarray, s: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUROC (ties count one half) and average precision (scikit-learn's step-wise definition)
    for each row of sample weights W [B, n]; NaN where a class has no weight.

    Only cumulative sums over the positives' and negatives' sorted scores are needed, looked up
    at each positive's score: O(B n) work with no loop over replicates.
    """
    y = np.asarray(y).astype(bool)
    s = np.asarray(s, dtype=np.float64)
    pos_i, neg_i = np.flatnonzero(y), np.flatnonzero(~y)
    pos_i, neg_i = pos_i[np.argsort(s[pos_i], kind="stable")], neg_i[np.argsort(s[neg_i], kind="stable")]
    sp, sn = s[pos_i], s[neg_i]
    # Weights are integer counts, so float32 cumulative sums are exact (below 2**24) and fast;
    # everything gathered from them is promoted to float64.
    W = np.asarray(W, dtype=np.float32)
    zero = np.zeros((W.shape[0], 1), dtype=np.float32)
    Cp = np.concatenate([zero, np.cumsum(W[:, pos_i], axis=1)], axis=1)
    Cn = np.concatenate([zero, np.cumsum(W[:, neg_i], axis=1)], axis=1)
    Wp = W[:, pos_i].astype(np.float64)
    P, N = Cp[:, -1].astype(np.float64), Cn[:, -1].astype(np.float64)
    lp = np.searchsorted(sp, sp, side="left")
    ln, rn = np.searchsorted(sn, sp, side="left"), np.searchsorted(sn, sp, side="right")
    neg_below = Cn[:, ln].astype(np.float64)
    neg_tied = Cn[:, rn] - neg_below
    tp, fp = P[:, None] - Cp[:, lp], N[:, None] - neg_below  # weight scoring >= each positive
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (Wp * (neg_below + 0.5 * neg_tied)).sum(axis=1) / (P * N)
        prec = np.where(tp + fp > 0, tp / np.where(tp + fp > 0, tp + fp, 1.0), 0.0)
        ap = (Wp * prec).sum(axis=1) / P
    auc[(P == 0) | (N == 0)] = np.nan
    ap[P == 0] = np.nan
    return auc, ap


def weighted_counts(y: np.ndarray, p: np.ndarray, W: np.ndarray) -> dict[str, np.ndarray]:
    """Confusion-matrix derived rates for each weight row (one matrix product each)."""
    y, p = y.astype(np.float32), p.astype(np.float32)
    return _rates(W.sum(axis=1), W @ (y * p), W @ y, W @ p)


def weighted_counts_matrix(Y: np.ndarray, P: np.ndarray, K: np.ndarray, W: np.ndarray) -> dict[str, np.ndarray]:
    """`weighted_counts` for every finding at once: Y, P, K [n, F] (zero where masked) -> [B, F]."""
    Y, P, K = (np.asarray(a, dtype=np.float32) for a in (Y, P, K))
    F = Y.shape[1]
    out = W @ np.concatenate([K, Y * P, Y, P], axis=1)  # one BLAS call for all four counts
    return _rates(*(out[:, i * F:(i + 1) * F] for i in range(4)))


def _rates(n, tp, pos, pred) -> dict[str, np.ndarray]:
    n, tp, pos, pred = (np.asarray(a, dtype=np.float64) for a in (n, tp, pos, pred))
    with np.errstate(invalid="ignore", divide="ignore"):
        prevalence, pred_rate = pos / n, pred / n
        precision = np.where(pred > 0, tp / pred, 0.0)  # zero_division=0, as in scikit-learn
        recall = np.where(pos > 0, tp / pos, 0.0)
        f1 = np.where(pos + pred > 0, 2 * tp / (pos + pred), 0.0)
        bias = pred_rate / prevalence
    bias[pos == 0] = np.nan
    return {"prevalence": prevalence, "pred_rate": pred_rate, "bias": bias,
            "precision": precision, "recall": recall, "f1": f1}


@dataclass
class Interval:
    value: float
    lo: float
    hi: float


def _interval(point: float, reps: np.ndarray, alpha: float) -> Interval:
    reps = reps[np.isfinite(reps)]
    if not np.isfinite(point) or reps.size < 2:
        return Interval(float(point), np.nan, np.nan)
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    return Interval(float(point), float(lo), float(hi))


def mean_interval(values, groups, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> Interval:
    """The mean of `values` with a percentile interval from a group bootstrap (`groups` as in
    `bootstrap_weights`): e.g. a localisation score over items, clustered by patient."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return Interval(np.nan, np.nan, np.nan)
    W = bootstrap_weights(groups, n_boot, seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        reps = (W @ v) / W.sum(axis=1)
    return _interval(float(v.mean()), reps, alpha)


def finding_metrics(y: np.ndarray, score: np.ndarray, pred: np.ndarray, W: np.ndarray | None = None,
                    alpha: float = 0.05, counts: dict[str, np.ndarray] | None = None) -> dict[str, Interval]:
    """Metrics of one finding over its unmasked images; W [B, n] are bootstrap weights (or None);
    `counts` are the replicates' rates when already computed (see `weighted_counts_matrix`)."""
    y, score, pred = np.asarray(y), np.asarray(score, dtype=np.float64), np.asarray(pred)
    ones = np.ones((1, y.size), dtype=np.float32)
    W = ones[:0] if W is None else W
    out: dict[str, Interval] = {}
    point = weighted_counts(y, pred, ones)
    reps = counts if counts is not None else weighted_counts(y, pred, W)
    for name in ("prevalence", "pred_rate", "bias", "precision", "recall", "f1"):
        out[name] = _interval(float(point[name][0]) if y.size else np.nan, reps[name], alpha)
    auc, ap = weighted_auroc_ap(y, score, np.concatenate([ones, W]))
    out["auroc"] = _interval(auc[0], auc[1:], alpha)
    out["ap"] = _interval(ap[0], ap[1:], alpha)
    out["support"] = Interval(float(y.sum()), np.nan, np.nan)  # positives evaluated
    out["n"] = Interval(float(y.size), np.nan, np.nan)
    return out


def overall_metrics(Y01: np.ndarray, known: np.ndarray, S: np.ndarray, P: np.ndarray) -> dict[str, float]:
    """scikit-learn's multi-label metrics on the complete rows (no masked entry)."""
    from sklearn import metrics as skm

    rows = known.all(axis=1)
    out = {"n_complete": float(rows.sum())}
    if not rows.any():
        return out
    y, s, p = Y01[rows], S[rows], P[rows].astype(np.int8)
    out["macro_f1"] = float(skm.f1_score(y, p, average="macro", zero_division=0))
    out["micro_f1"] = float(skm.f1_score(y, p, average="micro", zero_division=0))
    out["exact_match"] = float(skm.accuracy_score(y, p))
    out["hamming_loss"] = float(skm.hamming_loss(y, p))
    has_pos = y.any(axis=1)  # ranking metrics are undefined on rows without a positive label
    out["n_ranked"] = float(has_pos.sum())
    if has_pos.any() and y.shape[1] > 1:  # ranking needs at least two labels
        out["lrap"] = float(skm.label_ranking_average_precision_score(y[has_pos], s[has_pos]))
        out["coverage_error"] = float(skm.coverage_error(y[has_pos], s[has_pos]))
        out["ranking_loss"] = float(skm.label_ranking_loss(y[has_pos], s[has_pos]))
    return out


def evaluate(Y: np.ndarray, S: np.ndarray, P: np.ndarray, findings: list[str], uncertain: str = "mask",
             n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> pl.DataFrame:
    """Per-finding metrics (with bootstrap intervals) and overall metrics, as a metrics table.

    Y: labels [n, F] (1/0/-1/NaN); S: scores [n, F] (higher = more likely); P: 0/1 predictions.
    Rows with finding = None are overall. `macro_auroc` / `macro_ap` are the means of the
    per-finding (masked) values over findings where they are defined.
    """
    Y01, known = apply_policy(Y, uncertain)
    S, P = np.asarray(S, dtype=np.float64), np.asarray(P).astype(np.int8)
    W = bootstrap_weights(Y01.shape[0], n_boot, seed)
    # Confusion counts of every replicate and finding at once: masked entries get zero weight.
    K = known.astype(np.float32)
    reps = weighted_counts_matrix(Y01 * K, P * K, K, W)
    rows: list[dict] = []
    per: dict[str, list[float]] = {"auroc": [], "ap": [], "f1": []}
    for j, finding in enumerate(findings):
        m = known[:, j]
        res = finding_metrics(Y01[m, j], S[m, j], P[m, j], W[:, m], alpha,
                              counts={k: v[:, j] for k, v in reps.items()})
        for name, iv in res.items():
            rows.append({"finding": finding, "metric": name, "value": iv.value, "lo": iv.lo, "hi": iv.hi})
        for name in per:
            per[name].append(res[name].value)
    for name, vals in per.items():
        arr = np.asarray(vals, dtype=float)
        value = float(np.nanmean(arr)) if np.isfinite(arr).any() else np.nan
        rows.append({"finding": None, "metric": f"macro_{name}_masked" if name == "f1" else f"macro_{name}",
                     "value": value, "lo": np.nan, "hi": np.nan})
    for name, value in overall_metrics(Y01, known, S, P).items():
        rows.append({"finding": None, "metric": name, "value": value, "lo": np.nan, "hi": np.nan})
    return without_nan_intervals(pl.DataFrame(rows, schema=METRIC_COLUMNS))


def without_nan_intervals(table: pl.DataFrame) -> pl.DataFrame:
    """lo / hi NULL (not NaN) where there is no interval, so SQL's `lo IS NULL` finds them."""
    return table.with_columns(pl.col("lo").fill_nan(None), pl.col("hi").fill_nan(None))


def metric_value(table: pl.DataFrame, metric: str, finding: str | None = None) -> float:
    """One value from a metrics table (finding None = overall); NaN when absent."""
    cond = pl.col("finding").is_null() if finding is None else pl.col("finding") == finding
    hit = table.filter(cond & (pl.col("metric") == metric))
    return float(hit["value"][0]) if hit.height else float("nan")
