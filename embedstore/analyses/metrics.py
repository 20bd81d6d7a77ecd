"""Multi-label metrics with masked labels, evaluable findings and group-bootstrap intervals.

Labels come as a float matrix `Y [n, F]`: 1 positive, 0 negative, -1 uncertain, NaN missing (blank).
Per finding, uncertain and missing entries are *masked* (left out), not counted as negative,
unless the policies say otherwise: `uncertain="negative"|"positive"`, `blank="negative"` (the
seed study's CheXpert-on-IU-Xray setting counts both as negative).

Evaluable findings. A finding with fewer than `min_positives` positive *groups* (patients, else
studies) on the scored split, or as few negative groups, keeps its point estimates but gets no
interval and is marked "not evaluable" (`findings` table, with the reason). Every macro metric
averages exactly the evaluable findings, and `n_macro_findings` says how many that was.

Overall multi-label metrics (micro F1, exact match, Hamming loss, LRAP, coverage error, ranking
loss) need a full label row: they use the images with no masked entry ("complete rows";
`n_complete`). LRAP and coverage are given twice, each labelled: over all complete rows, as
scikit-learn computes them (`lrap`, `coverage_error`), and over the rows with at least one
positive label (`lrap_positive_rows`, `coverage_error_positive_rows`).

Intervals are percentile intervals of a bootstrap that resamples groups, never images
(`bootstrap_weights`): every replicate is a vector of counts used as sample weights, the same
replicates for every finding and metric, so macro metrics get intervals from the per-finding
replicates, and AUROC / AP of all replicates come from one sort and a few cumulative sums (no
Python loop over replicates).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

UNCERTAIN_POLICIES = ("mask", "negative", "positive")
BLANK_POLICIES = ("mask", "negative")
MIN_POSITIVES = 10  # positive groups on the scored split below which a finding is not evaluable
CALIBRATION_BINS = 10
# The columns of a metrics table, as the store's `metrics` table holds them (plus run_id).
METRIC_COLUMNS = {"finding": pl.Utf8, "metric": pl.Utf8, "value": pl.Float64, "lo": pl.Float64, "hi": pl.Float64}
FINDING_COLUMNS = {"finding": pl.Utf8, "evaluable": pl.Boolean, "reason": pl.Utf8, "positives": pl.Int64,
                   "positive_groups": pl.Int64, "n": pl.Int64}
def point_metrics(rows) -> pl.DataFrame:
    """A metrics table of point values without intervals from (finding or None, metric, value) rows."""
    return pl.DataFrame([{"finding": f, "metric": m, "value": float(v), "lo": None, "hi": None} for f, m, v in rows],
                        schema=METRIC_COLUMNS)


CALIBRATION_COLUMNS = {"finding": pl.Utf8, "bin": pl.Int32, "lower": pl.Float64, "upper": pl.Float64,
                       "mean_predicted": pl.Float64, "observed": pl.Float64, "n": pl.Int64}


def apply_policy(Y: np.ndarray, uncertain: str = "mask", blank: str = "mask") -> tuple[np.ndarray, np.ndarray]:
    """(Y01, known): labels as 0/1 and the mask of entries that count, under the label policies."""
    from embedstore.errors import InputError

    if uncertain not in UNCERTAIN_POLICIES:
        raise InputError(f"uncertain policy {uncertain!r} is not one of {', '.join(UNCERTAIN_POLICIES)}")
    if blank not in BLANK_POLICIES:
        raise InputError(f"blank policy {blank!r} is not one of {', '.join(BLANK_POLICIES)}")
    Y = np.asarray(Y, dtype=np.float64)
    known = np.isfinite(Y) | (blank == "negative")
    unc = np.isfinite(Y) & (Y == -1)
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


def auroc_ap(y: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    """AUROC and average precision of one score vector (scikit-learn's definitions)."""
    auc, ap = weighted_auroc_ap(y, s, np.ones((1, len(y)), dtype=np.float32))
    return float(auc[0]), float(ap[0])


def macro_auroc(scores: np.ndarray, labels: np.ndarray) -> tuple[float, list[float | None]]:
    """Mean AUROC over the findings with both classes among their known labels (1 / 0), and the
    per-finding values (None where a finding has one class): the fine-tune loop's early-stopping score."""
    per = []
    for f in range(labels.shape[1]):
        y, s = labels[:, f], scores[:, f]
        known = (y == 0) | (y == 1)
        both = known.any() and 0 < y[known].sum() < known.sum()
        per.append(auroc_ap(y[known], s[known])[0] if both else None)
    valid = [a for a in per if a is not None]
    return (float(np.mean(valid)) if valid else float("nan")), per


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


@dataclass
class Evaluation:
    """What `evaluate_run` computed, as the store's result tables hold it (without run_id)."""

    metrics: pl.DataFrame  # finding (None = overall), metric, value, lo, hi
    findings: pl.DataFrame  # finding, evaluable, reason, positives, positive_groups, n
    calibration: pl.DataFrame  # reliability-curve bins per finding (None = pooled over evaluable findings)

    def tables(self) -> dict[str, pl.DataFrame]:
        out = {"metrics": self.metrics, "run_findings": self.findings}
        if self.calibration.height:
            out["calibration"] = self.calibration
        return out


def evaluable_findings(Y01: np.ndarray, known: np.ndarray, groups, findings: list[str],
                       min_positives: int = MIN_POSITIVES) -> pl.DataFrame:
    """Which findings can be evaluated: at least `min_positives` positive groups and as many
    negative groups among the known entries; the reason for each one that cannot."""
    codes = group_codes(groups)
    rows = []
    for j, finding in enumerate(findings):
        m = known[:, j]
        pos, neg = m & (Y01[:, j] == 1), m & (Y01[:, j] == 0)
        n_pos, n_neg = np.unique(codes[pos]).size, np.unique(codes[neg]).size
        reason = None
        if n_pos < min_positives:
            reason = f"{n_pos} positive groups on the scored split, fewer than {min_positives}"
        elif n_neg < min_positives:
            reason = f"{n_neg} negative groups on the scored split, fewer than {min_positives}"
        rows.append({"finding": finding, "evaluable": reason is None, "reason": reason,
                     "positives": int(pos.sum()), "positive_groups": int(n_pos), "n": int(m.sum())})
    return pl.DataFrame(rows, schema=FINDING_COLUMNS)


def ranking_rows(Y01: np.ndarray, S: np.ndarray, chunk: int = 4096) -> dict[str, np.ndarray]:
    """Per-row LRAP, coverage error and ranking loss exactly as scikit-learn defines them
    (scikit-learn's value is their mean over rows, its sample-weighted value their weighted mean),
    so one weighted mean per bootstrap replicate gives the replicates.

    A row with no positive label (or only positives) has LRAP 1 and ranking loss 0; its
    coverage error is 0. Ties count against the ranking, as in scikit-learn.
    """
    y, s = np.asarray(Y01).astype(bool), np.asarray(S, dtype=np.float64)
    n, F = y.shape
    out = {k: np.zeros(n) for k in ("lrap", "coverage_error", "ranking_loss")}
    for a in range(0, n, chunk):
        yb, sb = y[a:a + chunk], s[a:a + chunk]
        ge = sb[:, None, :] >= sb[:, :, None]  # [rows, j, k]: label k scores at least as high as j
        rank = ge.sum(axis=2)
        pos_rank = (ge & yb[:, None, :]).sum(axis=2)
        n_pos = yb.sum(axis=1)
        trivial = (n_pos == 0) | (n_pos == F)
        with np.errstate(invalid="ignore", divide="ignore"):
            lrap = np.where(yb, pos_rank / rank, 0.0).sum(axis=1) / n_pos
            wrong = (ge & yb[:, :, None] & ~yb[:, None, :]).sum(axis=(1, 2))
            loss = wrong / (n_pos * (F - n_pos))
        out["lrap"][a:a + chunk] = np.where(trivial, 1.0, lrap)
        out["ranking_loss"][a:a + chunk] = np.where(trivial, 0.0, loss)
        out["coverage_error"][a:a + chunk] = np.where(yb, rank, 0).max(axis=1)
    return out


def reliability(y: np.ndarray, p: np.ndarray, bins: int = CALIBRATION_BINS) -> dict[str, np.ndarray]:
    """Reliability-curve bins (scikit-learn's `calibration_curve`, uniform strategy): for each
    non-empty bin its edges, mean predicted probability, observed positive rate and count."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    ids = np.searchsorted(edges[1:-1], p)
    total = np.bincount(ids, minlength=bins)
    keep = total > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        pred = np.bincount(ids, weights=p, minlength=bins) / total
        observed = np.bincount(ids, weights=y.astype(np.float64), minlength=bins) / total
    return {"bin": np.flatnonzero(keep), "lower": edges[:-1][keep], "upper": edges[1:][keep],
            "mean_predicted": pred[keep], "observed": observed[keep], "n": total[keep]}


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """ECE: the count-weighted mean |observed - predicted| over the reliability bins."""
    r = reliability(y, p, bins)
    return float((r["n"] * np.abs(r["observed"] - r["mean_predicted"])).sum() / max(len(y), 1))


def ece_replicates(Y01: np.ndarray, known: np.ndarray, prob: np.ndarray, W: np.ndarray,
                   bins: int = CALIBRATION_BINS) -> np.ndarray:
    """[B, F] ECE of every finding for each weight row of W [B, n] (masked entries left out): per
    bin, |weighted positives - weighted predicted sum|, summed and divided by the total weight
    (count x |observed - predicted| is the same thing). One matrix product for all findings."""
    p = np.where(known, np.asarray(prob, dtype=np.float64), 0.0)
    n, F = p.shape
    edges = np.linspace(0.0, 1.0, bins + 1)
    onehot = (np.searchsorted(edges[1:-1], p)[:, :, None] == np.arange(bins)) & known[:, :, None]  # [n, F, bins]
    parts = np.stack([onehot, onehot * p[:, :, None], onehot * Y01[:, :, None]], axis=2)  # [n, F, 3, bins]
    sums = (np.asarray(W, dtype=np.float32) @ parts.reshape(n, -1).astype(np.float32)).astype(np.float64)
    sums = sums.reshape(W.shape[0], F, 3, bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.abs(sums[:, :, 2] - sums[:, :, 1]).sum(axis=2) / sums[:, :, 0].sum(axis=2)


class _Rows:
    """Collects metric rows; an interval only where replicates are given."""

    def __init__(self, alpha: float):
        self.alpha, self.rows = alpha, []

    def add(self, finding, metric: str, point: float, reps: np.ndarray | None = None) -> None:
        iv = _interval(float(point), reps if reps is not None else np.empty(0), self.alpha)
        self.rows.append({"finding": finding, "metric": metric, "value": iv.value, "lo": iv.lo, "hi": iv.hi})

    def frame(self) -> pl.DataFrame:
        return without_nan_intervals(pl.DataFrame(self.rows, schema=METRIC_COLUMNS))


def _weighted_mean(v: np.ndarray, W: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return (W @ v) / W.sum(axis=1)


def evaluate_run(Y: np.ndarray, S: np.ndarray, findings: list[str], predictions: dict[str, np.ndarray],
                 groups=None, prob: np.ndarray | None = None, uncertain: str = "mask", blank: str = "mask",
                 n_boot: int = 1000, seed: int = 0, alpha: float = 0.05,
                 min_positives: int = MIN_POSITIVES) -> Evaluation:
    """Every metric of one method on one split.

    Y: labels [n, F] (1/0/-1/NaN); S: scores [n, F] (higher = more likely); `predictions` maps a
    metric-name suffix to 0/1 decisions [n, F]: "" for the run's operating point, "@default" for
    the uncalibrated default threshold kept beside it. `groups` labels each row's patient (else
    study) for the bootstrap (None: each row its own group). `prob` [n, F], the method's
    probabilities, adds Brier score, ECE and reliability bins.
    """
    Y01, known = apply_policy(Y, uncertain, blank)
    S = np.asarray(S, dtype=np.float64)
    preds = {k: np.asarray(v).astype(np.int8) for k, v in predictions.items()}
    groups = Y01.shape[0] if groups is None else groups
    W = bootstrap_weights(groups, n_boot, seed)
    ones = np.ones((1, Y01.shape[0]), dtype=np.float32)
    table = evaluable_findings(Y01, known, groups, findings, min_positives)
    evaluable = table["evaluable"].to_numpy()
    out = _Rows(alpha)
    macro = _per_finding(out, Y01, known, S, preds, prob, W, ones, findings, evaluable, table)
    names = ["macro_auroc", "macro_ap", *(f"macro_f1{k}" for k in preds)]
    names += ["macro_brier", "macro_ece"] if prob is not None else []
    for name in names:  # NaN, not absent, when no finding is evaluable
        points, reps = macro.get(name, ([], []))
        value = float(np.mean(points)) if points else np.nan
        rep = np.nanmean(np.stack(reps), axis=0) if reps and W.shape[0] else None
        out.add(None, name, value, rep)
    out.add(None, "n_findings", len(findings))
    out.add(None, "n_macro_findings", int(evaluable.sum()))
    _overall(out, Y01, known, S, preds, W)
    calibration = _calibration(Y01, known, prob, findings, evaluable) if prob is not None else \
        pl.DataFrame(schema=CALIBRATION_COLUMNS)
    return Evaluation(out.frame(), table, calibration)


RATE_METRICS = ("prevalence", "pred_rate", "bias", "precision", "recall", "f1")


def _per_finding(out: _Rows, Y01, known, S, preds, prob, W, ones, findings, evaluable, table) -> dict:
    """Per-finding rows; returns macro name -> (evaluable points, their replicate arrays)."""
    K = known.astype(np.float32)
    point_counts = {k: weighted_counts_matrix(Y01 * K, P * K, K, ones) for k, P in preds.items()}
    rep_counts = {k: weighted_counts_matrix(Y01 * K, P * K, K, W) for k, P in preds.items()}
    if prob is not None:  # every finding's squared errors and their replicates in one product
        SQ = np.where(known, (np.asarray(prob, dtype=np.float64) - Y01) ** 2, 0.0).astype(np.float32)
        sums = W @ np.concatenate([SQ, K], axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            brier_reps = sums[:, :SQ.shape[1]].astype(np.float64) / sums[:, SQ.shape[1]:]
        ece_reps = ece_replicates(Y01, known, prob, W)
    macro: dict[str, tuple[list, list]] = {}

    def keep(name, point, reps):
        pts, rs = macro.setdefault(name, ([], []))
        pts.append(point)
        if reps is not None:
            rs.append(reps)

    for j, finding in enumerate(findings):
        m, ev = known[:, j], bool(evaluable[j])
        y = Y01[m, j]
        auc, ap = weighted_auroc_ap(y, S[m, j], np.concatenate([ones[:, m], W[:, m]]))
        for name, values in (("auroc", auc), ("ap", ap)):
            out.add(finding, name, values[0], values[1:] if ev else None)
            if ev:
                keep(f"macro_{name}", values[0], values[1:])
        for suffix in preds:
            for name in RATE_METRICS:
                point, reps = point_counts[suffix][name][0, j], rep_counts[suffix][name][:, j]
                out.add(finding, name + suffix, point, reps if ev else None)
            if ev:
                keep(f"macro_f1{suffix}", point_counts[suffix]["f1"][0, j], rep_counts[suffix]["f1"][:, j])
        if prob is not None:
            p = np.asarray(prob[m, j], dtype=np.float64)
            brier = float(((p - y) ** 2).mean()) if y.size else np.nan
            out.add(finding, "brier", brier, brier_reps[:, j] if ev else None)
            ece = expected_calibration_error(y, p) if y.size else np.nan
            out.add(finding, "ece", ece, ece_reps[:, j] if ev else None)
            if ev:
                keep("macro_brier", brier, brier_reps[:, j])
                keep("macro_ece", ece, ece_reps[:, j])
        row = table.row(j, named=True)
        out.add(finding, "support", row["positives"])
        out.add(finding, "positive_groups", row["positive_groups"])
        out.add(finding, "n", row["n"])
    return macro


def _overall(out: _Rows, Y01, known, S, preds, W) -> None:
    """Overall multi-label metrics on the complete rows, each with a group-bootstrap interval."""
    rows = known.all(axis=1)
    out.add(None, "n_complete", int(rows.sum()))
    if not rows.any():
        return
    y, s, Wc = Y01[rows].astype(bool), S[rows], W[:, rows]

    def mean_of(name, per_row, sel=None):
        sel = np.ones(len(per_row), bool) if sel is None else sel
        out.add(None, name, float(per_row[sel].mean()) if sel.any() else np.nan,
                _weighted_mean(per_row[sel], Wc[:, sel]) if sel.any() else None)

    for suffix, P in preds.items():
        p = P[rows].astype(bool)
        mean_of("exact_match" + suffix, (p == y).all(axis=1).astype(np.float64))
        mean_of("hamming_loss" + suffix, (p != y).mean(axis=1))
        tp, pp, pos = (p & y).sum(axis=1), p.sum(axis=1), y.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            den = pp.sum() + pos.sum()
            point = 2 * tp.sum() / den if den else 0.0  # zero_division=0, as in scikit-learn
            reps = np.nan_to_num(2 * (Wc @ tp) / (Wc @ pp + Wc @ pos), nan=0.0)
        out.add(None, "micro_f1" + suffix, point, reps)
    has_pos = y.any(axis=1)
    out.add(None, "n_ranked", int(has_pos.sum()))
    if y.shape[1] < 2:  # ranking needs at least two labels
        return
    ranked = ranking_rows(y, s)
    for name in ("lrap", "coverage_error", "ranking_loss"):
        mean_of(name, ranked[name])
    for name in ("lrap", "coverage_error"):
        mean_of(f"{name}_positive_rows", ranked[name], has_pos)


def _calibration(Y01, known, prob, findings, evaluable) -> pl.DataFrame:
    """Reliability bins per finding and pooled over the evaluable findings (finding None)."""
    frames = []
    pooled_y, pooled_p = [], []
    for j, finding in enumerate(findings):
        m = known[:, j]
        y, p = Y01[m, j], np.asarray(prob[m, j], dtype=np.float64)
        if y.size:
            frames.append({"finding": finding, **reliability(y, p)})
        if evaluable[j]:
            pooled_y.append(y)
            pooled_p.append(p)
    if pooled_y:
        frames.append({"finding": None, **reliability(np.concatenate(pooled_y), np.concatenate(pooled_p))})
    parts = [pl.DataFrame({k: (v if k != "finding" else [v] * len(f["bin"])) for k, v in f.items()},
                          schema=CALIBRATION_COLUMNS) for f in frames]
    return pl.concat(parts) if parts else pl.DataFrame(schema=CALIBRATION_COLUMNS)


def evaluate(Y: np.ndarray, S: np.ndarray, P: np.ndarray, findings: list[str], uncertain: str = "mask",
             n_boot: int = 1000, seed: int = 0, alpha: float = 0.05, groups=None, blank: str = "mask",
             min_positives: int = MIN_POSITIVES) -> pl.DataFrame:
    """The metrics table of `evaluate_run` for one set of decisions P (see there)."""
    return evaluate_run(Y, S, findings, {"": P}, groups=groups, uncertain=uncertain, blank=blank, n_boot=n_boot,
                        seed=seed, alpha=alpha, min_positives=min_positives).metrics


def without_nan_intervals(table: pl.DataFrame) -> pl.DataFrame:
    """lo / hi NULL (not NaN) where there is no interval, so SQL's `lo IS NULL` finds them."""
    return table.with_columns(pl.col("lo").fill_nan(None), pl.col("hi").fill_nan(None))


def metric_value(table: pl.DataFrame, metric: str, finding: str | None = None) -> float:
    """One value from a metrics table (finding None = overall); NaN when absent."""
    cond = pl.col("finding").is_null() if finding is None else pl.col("finding") == finding
    hit = table.filter(cond & (pl.col("metric") == metric))
    return float(hit["value"][0]) if hit.height else float("nan")
