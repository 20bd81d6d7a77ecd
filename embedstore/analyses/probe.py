"""Probes on stored image vectors: one-vs-rest logistic regression (or kNN) per finding.

Trained on the train split, hyper-parameter (C, or k for kNN) chosen on the validation
split by macro average precision, scored on the test split. Masked labels (uncertain /
missing under the policy) are left out of each finding's training and scoring.
Class weights are "balanced" against the findings' imbalance; features are standardised with
train statistics (folded back into the stored weights).

The fitted weights are returned as a table (`probe_weights`: finding, intercept, coef) so the
probe's logit for finding f, `coef_f . x + intercept_f` on the stored (unit) vector x, can be
explained later by Grad-CAM without refitting.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from embedstore.errors import InputError

CLASSIFIERS = ("logreg", "knn")
C_GRID = (0.001, 0.01, 0.1)  # on train-standardised features
K_GRID = (5, 15, 45)


@dataclass
class ProbeFit:
    """What a probe learnt: per-finding linear weights (logreg) or the train set (knn)."""

    classifier: str
    findings: list[str]
    param: float  # the chosen C or k
    val_macro_ap: dict[float, float] = field(default_factory=dict)  # grid value -> macro AP on val
    coef: np.ndarray | None = None  # [F, d]; NaN rows for findings that could not be fitted
    intercept: np.ndarray | None = None  # [F]
    constant: np.ndarray | None = None  # [F] probability used where a finding had one class in train
    train_X: np.ndarray | None = None
    train_Y: np.ndarray | None = None  # 0/1 with NaN for masked

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """[n, F] probability of each finding."""
        if self.classifier == "knn":
            return _knn_scores(self.train_X, self.train_Y, X, int(self.param))
        z = X @ np.nan_to_num(self.coef).T + np.nan_to_num(self.intercept)
        p = 0.5 * (1.0 + np.tanh(0.5 * z))
        const = np.isfinite(self.constant)
        p[:, const] = self.constant[const]
        return p

    def weights_table(self) -> pl.DataFrame:
        """finding, intercept, coef (list of floats) for a logreg probe; empty for knn."""
        if self.coef is None:
            return pl.DataFrame(schema={"finding": pl.Utf8, "intercept": pl.Float64, "coef": pl.List(pl.Float32)})
        return pl.DataFrame({
            "finding": self.findings,
            "intercept": self.intercept.astype(np.float64),
            "coef": [row.astype(np.float32).tolist() for row in self.coef],
        }, schema={"finding": pl.Utf8, "intercept": pl.Float64, "coef": pl.List(pl.Float32)})


def _macro_ap(Y01: np.ndarray, known: np.ndarray, S: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    aps = []
    for j in range(S.shape[1]):
        m = known[:, j]
        y = Y01[m, j]
        if 0 < y.sum() < y.size:
            aps.append(average_precision_score(y, S[m, j]))
    return float(np.mean(aps)) if aps else float("nan")


def balanced_weights(Y01: np.ndarray, known: np.ndarray) -> np.ndarray:
    """[n, F] sample weights: scikit-learn's class_weight="balanced" per finding, 0 where masked."""
    n_known = known.sum(axis=0)
    n_pos = ((Y01 == 1) & known).sum(axis=0)
    n_neg = n_known - n_pos
    with np.errstate(divide="ignore", invalid="ignore"):
        w_pos = np.where(n_pos > 0, n_known / (2.0 * n_pos), 0.0)
        w_neg = np.where(n_neg > 0, n_known / (2.0 * n_neg), 0.0)
    return np.where(known, np.where(Y01 == 1, w_pos, w_neg), 0.0)


def fit_logreg(X: np.ndarray, Y01: np.ndarray, known: np.ndarray, C: float, start: np.ndarray | None = None,
               tol: float = 1e-6, max_iter: int = 300) -> np.ndarray:
    """One-vs-rest L2 logistic regressions with balanced class weights, all findings at once.

    Minimises, for every finding f independently (the sum separates), scikit-learn's
    LogisticRegression(C=C, class_weight="balanced") objective
        C * sum_i w_if * logloss(y_if, x_i . coef_f + b_f) + 0.5 * ||coef_f||^2
    (intercept unpenalised), with scipy's L-BFGS on the stacked parameters: each iteration is
    two matrix products for all findings instead of one solver call per finding. `start`
    ([F, d + 1], e.g. the solution at a smaller C) warm-starts it. Returns [F, d + 1]
    (coef, then intercept); findings must have both classes among the known rows.
    """
    from scipy.optimize import minimize

    # float32 matrix products (twice the BLAS speed); losses and sums in float64.
    X = np.asarray(X, dtype=np.float32)
    XT = np.ascontiguousarray(X.T)
    n, d = X.shape
    F = Y01.shape[1]
    SW = balanced_weights(Y01, known)
    Y = Y01.astype(np.float64)
    scale = 1.0 / max(SW.sum(), 1.0)  # keeps the objective O(1) for L-BFGS's tolerances

    def objective(theta):
        W = theta.reshape(F, d + 1)
        Z = (X @ W[:, :d].T.astype(np.float32)).astype(np.float64) + W[:, d]
        loss = (SW * (np.logaddexp(0.0, Z) - Y * Z)).sum()
        R = SW * (0.5 * (1.0 + np.tanh(0.5 * Z)) - Y)
        grad = np.empty_like(W)
        grad[:, :d] = C * (XT @ R.astype(np.float32)).T + W[:, :d]  # (X.T @ R), not R.T @ X: the latter misses BLAS
        grad[:, d] = C * R.sum(axis=0)
        value = C * loss + 0.5 * (W[:, :d] ** 2).sum()
        return value * scale, grad.ravel() * scale

    theta0 = np.zeros(F * (d + 1)) if start is None else np.asarray(start, dtype=np.float64).ravel()
    res = minimize(objective, theta0, jac=True, method="L-BFGS-B",
                   options={"maxiter": max_iter, "gtol": tol, "ftol": 64 * np.finfo(float).eps})
    return res.x.reshape(F, d + 1)


def _constant_probs(Ytr, known_tr):
    """For findings with a single class in train: that class's probability (else NaN)."""
    out = np.full(Ytr.shape[1], np.nan)
    for j in range(Ytr.shape[1]):
        y = Ytr[known_tr[:, j], j]
        if y.size == 0 or y.min() == y.max():
            out[j] = float(y[0]) if y.size else 0.0
    return out


def _knn_scores(Xtr, Ytr_nan, Xq, k, exclude_self=False):
    """Fraction of the k nearest train vectors (cosine = dot on unit vectors) that are positive,
    per finding, over neighbours whose label for that finding is known."""
    k = max(1, min(k, Xtr.shape[0] - int(exclude_self)))
    out = np.empty((Xq.shape[0], Ytr_nan.shape[1]))
    for start in range(0, Xq.shape[0], 2048):  # bounded memory for the similarity block
        sim = Xq[start:start + 2048] @ Xtr.T
        if exclude_self:
            np.fill_diagonal(sim[:, start:start + 2048], -np.inf)
        nn = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        lab = Ytr_nan[nn]  # [b, k, F]
        with np.errstate(invalid="ignore"):
            out[start:start + 2048] = np.nanmean(lab, axis=1) if np.isnan(lab).any() else lab.mean(axis=1)
    return np.nan_to_num(out, nan=0.0)


def fit_probe(Xtr, Ytr01, known_tr, Xva, Yva01, known_va, findings, classifier="logreg", grid=None) -> ProbeFit:
    """Fit on train for each grid value, keep the one with the best macro AP on val."""
    if classifier not in CLASSIFIERS:
        raise InputError(f"classifier {classifier!r} is not one of {', '.join(CLASSIFIERS)}")
    if Xtr.shape[0] == 0:
        raise InputError("the train split has no image with a vector for this version; assign splits before probing")
    if classifier == "knn":
        Ynan = np.where(known_tr, Ytr01, np.nan)
        grid = tuple(grid or K_GRID)
        scores = {k: _macro_ap(Yva01, known_va, _knn_scores(Xtr, Ynan, Xva, k)) for k in grid}
        best = _best(scores, grid)
        return ProbeFit("knn", list(findings), float(best), scores, train_X=Xtr, train_Y=Ynan)
    grid = tuple(sorted(grid or C_GRID))
    constant = _constant_probs(Ytr01, known_tr)
    fittable = ~np.isfinite(constant)
    # Standardise with train statistics: unit vectors have tiny per-feature scales, which makes
    # L-BFGS slow; the scaler is folded back into the weights, so they apply to stored vectors.
    mean, std = Xtr.mean(axis=0), Xtr.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    Xs = (Xtr - mean) / std
    fits, scores, start = {}, {}, None
    d = Xtr.shape[1]
    for C in grid:  # ascending C: each fit warm-starts from the more regularised one
        start = fit_logreg(Xs, Ytr01[:, fittable], known_tr[:, fittable], C, start)
        coef = np.full((len(findings), d), np.nan)
        intercept = np.full(len(findings), np.nan)
        coef[fittable] = start[:, :d] / std
        intercept[fittable] = start[:, d] - coef[fittable] @ mean
        fits[C] = (coef, intercept)
        fit = ProbeFit("logreg", list(findings), C, coef=coef, intercept=intercept, constant=constant)
        scores[C] = _macro_ap(Yva01, known_va, fit.predict_proba(Xva)) if Xva.shape[0] else float("nan")
    best = _best(scores, grid)
    coef, intercept = fits[best]
    return ProbeFit("logreg", list(findings), float(best), scores, coef=coef, intercept=intercept, constant=constant)


def _best(scores: dict, grid: tuple):
    """Grid value with the highest finite score; the middle value when none is finite (no val)."""
    finite = {g: s for g, s in scores.items() if np.isfinite(s)}
    return max(finite, key=finite.get) if finite else grid[len(grid) // 2]


def cooccurrence(Y01: np.ndarray, known: np.ndarray, P: np.ndarray, findings: list[str]) -> pl.DataFrame:
    """For each pair (predicted a, present b): how often a is predicted on images where b is the
    only positive finding (every other label known and negative). The diagonal is the recall on
    such images; off-diagonal entries are the probe's co-occurrence leakage."""
    only = (Y01 == 1) & known
    single = only.sum(axis=1) == 1
    complete = known.all(axis=1)
    rows = []
    for b, present in enumerate(findings):
        sel = single & complete & only[:, b]
        n = int(sel.sum())
        rates = P[sel].mean(axis=0) if n else np.full(len(findings), np.nan)
        for a, predicted in enumerate(findings):
            rows.append({"predicted": predicted, "present": present, "rate": float(rates[a]), "n": n})
    return pl.DataFrame(rows, schema={"predicted": pl.Utf8, "present": pl.Utf8, "rate": pl.Float64, "n": pl.Int64})


# ---- store-facing -------------------------------------------------------------------------
def probe(store, version: str | None = None, classifier: str = "logreg", grid: tuple | None = None,
          uncertain: str = "mask", where: str | None = None, n_boot: int = 1000, seed: int = 0,
          force: bool = False, data=None):
    """Probe run: fit on train, choose C (or k) on val by macro AP, score test; a RunResult.

    Tables: metrics (plus overall `param`, `val_macro_ap@<value>`), image_scores, cooccurrence,
    and probe_weights (logreg only).
    """
    from embedstore.analyses.metrics import apply_policy, evaluate
    from embedstore.analyses.runs import cached_run, load_data, refuse_fitted, require_split
    from embedstore.analyses.zeroshot import score_table

    if classifier not in CLASSIFIERS:
        raise InputError(f"classifier {classifier!r} is not one of {', '.join(CLASSIFIERS)}")
    data = data or load_data(store, version, where)
    tr = require_split(data, "train", "to fit the probe")
    va = require_split(data, "val", "to choose the probe's hyper-parameter")
    te = require_split(data, "test", "to score the probe")
    refuse_fitted(store, data, data.ids[te], "probe")
    grid = tuple(grid or (C_GRID if classifier == "logreg" else K_GRID))
    config = {"classifier": classifier, "grid": list(grid), "uncertain": uncertain, "where": where,
              "n_boot": n_boot, "seed": seed, "findings": data.findings, "data": data.fingerprint(),
              "threshold": 0.5, "class_weight": "balanced" if classifier == "logreg" else None}

    def compute():
        Y01, known = apply_policy(data.Y, uncertain)
        fit = fit_probe(data.X[tr], Y01[tr], known[tr], data.X[va], Y01[va], known[va], data.findings,
                        classifier, grid)
        S = fit.predict_proba(data.X[te])
        P = (S >= 0.5).astype(np.int8)
        table = evaluate(data.Y[te], S, P, data.findings, uncertain, n_boot, seed)
        extra = [{"finding": None, "metric": "param", "value": fit.param, "lo": None, "hi": None}]
        extra += [{"finding": None, "metric": f"val_macro_ap@{g:g}", "value": v, "lo": None, "hi": None}
                  for g, v in fit.val_macro_ap.items()]
        out = {"metrics": pl.concat([table, pl.DataFrame(extra, schema=table.schema)]),
               "image_scores": score_table(data.ids[te], data.findings, S, P),
               "cooccurrence": cooccurrence(Y01[te], known[te], P, data.findings)}
        if classifier == "logreg":
            out["probe_weights"] = fit.weights_table()
        return out

    return cached_run(store, "probe", data.version, config, compute, force, tables=("metrics", "cooccurrence"))


def load_probe(store, run_id: str) -> ProbeFit:
    """The fitted logistic-regression probe of a stored run (for Grad-CAM of its logit)."""
    with store.connect() as con:
        df = con.sql("SELECT finding, intercept, coef FROM probe_weights WHERE run_id = ? ORDER BY finding",
                     params=[run_id]).pl()
    if not df.height:
        raise InputError(f"run {run_id!r} has no stored probe weights (only logreg probes store them)")
    coef = np.asarray(df["coef"].to_list(), dtype=np.float64)
    return ProbeFit("logreg", df["finding"].to_list(), float("nan"), coef=coef,
                    intercept=df["intercept"].to_numpy().astype(np.float64),
                    constant=np.where(np.isfinite(coef).all(axis=1), np.nan, 0.0))
