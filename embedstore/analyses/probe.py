"""Probes on stored image vectors: one-vs-rest logistic regression (or kNN) per finding.

Trained on the train split; the logistic probe's C is chosen *per finding* on the validation
split by average precision, from the log grid 1e-4 .. 1e2 (one value a decade). The grid is
walked upwards from the most regularised end, each fit warm-starting the next, and a finding
leaves the path once its val AP has not improved for `PATIENCE` grid steps (fits at large C are
the slow ones). A finding whose chosen C is at either end of the grid is flagged (`C_at_edge`).
The decision threshold is fitted on val by the rule every method shares (`analyses.scoring`);
the default cut at probability 0.5 is kept beside it (`@default`). Everything is scored on test.

Masked labels (uncertain / missing under the policy) are left out of each finding's training
and scoring. Class weights are "balanced" against the findings' imbalance; features are
standardised with train statistics (folded back into the stored weights). The solver gives
scikit-learn's `LogisticRegression(C, class_weight="balanced")` on the standardised features
(its probabilities agree with the exact optimum to about 1e-5 at d = 512; tests check 1e-3 against
scikit-learn's lbfgs and 1e-4 against its newton-cholesky).

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
C_GRID = tuple(float(c) for c in 10.0 ** np.arange(-4, 3))  # on train-standardised features
FALLBACK_C = 1.0  # scikit-learn's default, for a finding whose val AP is undefined (no val positives)
PATIENCE = 2  # grid steps without a better val AP before a finding leaves the path
K_GRID = (5, 15, 45)


@dataclass
class ProbeFit:
    """What a probe learnt: per-finding linear weights (logreg) or the train set (knn)."""

    classifier: str
    findings: list[str]
    param: float  # the chosen k (knn); NaN for logreg, whose C is per finding
    val_macro_ap: dict[float, float] = field(default_factory=dict)  # knn: grid value -> macro AP on val
    coef: np.ndarray | None = None  # [F, d]; NaN rows for findings that could not be fitted
    intercept: np.ndarray | None = None  # [F]
    constant: np.ndarray | None = None  # [F] probability used where a finding had one class in train
    C: np.ndarray | None = None  # [F] the C chosen per finding (NaN: not fitted)
    val_ap: np.ndarray | None = None  # [F] val AP at the chosen C
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

    def choice_rows(self, grid: tuple) -> list[dict]:
        """Metric rows saying which C each finding got, and whether it sits at the grid's edge."""
        if self.C is None:
            return [{"finding": None, "metric": "param", "value": self.param}]
        edge = np.isin(self.C, (min(grid), max(grid)))
        rows = []
        for j, f in enumerate(self.findings):
            rows += [{"finding": f, "metric": "C", "value": self.C[j]},
                     {"finding": f, "metric": "C_at_edge", "value": float(edge[j]) if np.isfinite(self.C[j]) else None},
                     {"finding": f, "metric": "val_ap", "value": self.val_ap[j]}]
        return rows + [{"finding": None, "metric": "n_C_at_edge", "value": float(edge.sum())}]


def _ap_per_finding(Y01: np.ndarray, known: np.ndarray, S: np.ndarray) -> np.ndarray:
    """Average precision per finding on its known rows (scikit-learn's); NaN without both classes."""
    from embedstore.analyses.metrics import weighted_auroc_ap

    out = np.full(S.shape[1], np.nan)
    for j in range(S.shape[1]):
        m = known[:, j]
        y = Y01[m, j]
        if 0 < y.sum() < y.size:
            out[j] = weighted_auroc_ap(y, S[m, j], np.ones((1, y.size)))[1][0]
    return out


def _macro_ap(Y01: np.ndarray, known: np.ndarray, S: np.ndarray) -> float:
    aps = _ap_per_finding(Y01, known, S)
    return float(np.nanmean(aps)) if np.isfinite(aps).any() else float("nan")


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
               tol: float = 1e-7, max_iter: int = 5000) -> np.ndarray:
    """One-vs-rest L2 logistic regressions with balanced class weights, all findings at once.

    Minimises, for every finding f independently (the sum separates), scikit-learn's
    LogisticRegression(C=C, class_weight="balanced") objective
        C * sum_i w_if * logloss(y_if, x_i . coef_f + b_f) + 0.5 * ||coef_f||^2
    (intercept unpenalised), with scipy's L-BFGS on the stacked parameters: each iteration is
    two matrix products for all findings instead of one solver call per finding. Each finding's
    objective is divided by its own C * (sum of its weights), so every finding's gradient is on
    one scale and the stopping rule holds for each of them, not only for their sum. `start`
    ([F, d + 1], e.g. the solution at a smaller C) warm-starts it. Returns [F, d + 1] (coef, then
    intercept); findings must have both classes among the known rows.

    Two passes: float32 products (twice the BLAS speed) get close, then float64 polishes until the
    gradient is below `POLISH_GTOL / max(C, 1)`. float32 alone stalls (its rounding of the loss
    stops the line search) 1e-3 to 1e-2 away in probability at d = 512; and after the scaling the
    flattest directions have curvature ~ 1 / (C n), so the gradient bar shrinks with C.
    Probabilities then match the exact optimum (scikit-learn's newton-cholesky) to about 1e-5.
    """
    from scipy.optimize import minimize
    from threadpoolctl import threadpool_limits

    F, d = Y01.shape[1], X.shape[1]
    theta = np.zeros(F * (d + 1)) if start is None else np.asarray(start, dtype=np.float64).ravel()
    passes = ((np.float32, tol, FTOL32), (np.float64, POLISH_GTOL / max(C, 1.0), 0.0))
    with threadpool_limits(1):  # hundreds of small products: BLAS threads only spin (20x slower on a busy machine)
        for dtype, gtol, ftol in passes:
            objective = _logreg_objective(X, Y01, known, C, dtype)
            theta = minimize(objective, theta, jac=True, method="L-BFGS-B",
                             options={"maxiter": max_iter, "gtol": gtol, "ftol": ftol, "maxcor": 20}).x
    return theta.reshape(F, d + 1)


POLISH_GTOL = 1e-8  # the float64 pass's gradient bar at C <= 1 (scaled objective)
FTOL32 = 1e-9  # the float32 pass only gets close (its rounding stalls it anyway); the float64 pass converges


def _logreg_objective(X, Y01, known, C: float, dtype):
    """(value, gradient) of fit_logreg's scaled objective, matrix products in `dtype`, sums in float64."""
    X = np.asarray(X, dtype=dtype)
    XT = np.ascontiguousarray(X.T)
    d, F = X.shape[1], Y01.shape[1]
    SW = balanced_weights(Y01, known)
    Y = Y01.astype(np.float64)
    scale = 1.0 / (C * np.maximum(SW.sum(axis=0), 1.0))  # [F]: per-finding normalisation

    def objective(theta):
        W = theta.reshape(F, d + 1)
        Z = (W[:, :d].astype(dtype) @ XT).T.astype(np.float64) + W[:, d]  # this orientation is 4x faster
        loss = (SW * (np.logaddexp(0.0, Z) - Y * Z)).sum(axis=0)
        R = SW * (0.5 * (1.0 + np.tanh(0.5 * Z)) - Y)
        grad = np.empty_like(W)
        grad[:, :d] = C * (XT @ R.astype(dtype)).T + W[:, :d]  # (X.T @ R), not R.T @ X: the latter misses BLAS
        grad[:, d] = C * R.sum(axis=0)
        value = C * loss + 0.5 * (W[:, :d] ** 2).sum(axis=1)
        return float((value * scale).sum()), (grad * scale[:, None]).ravel()

    return objective


def _constant_probs(Ytr, known_tr):
    """For findings with a single class in train: that class's probability (else NaN)."""
    out = np.full(Ytr.shape[1], np.nan)
    for j in range(Ytr.shape[1]):
        y = Ytr[known_tr[:, j], j]
        if y.size == 0 or y.min() == y.max():
            out[j] = float(y[0]) if y.size else 0.0
    return out


def _knn_scores(Xtr, Ytr_nan, Xq, k):
    """Fraction of the k nearest train vectors (cosine = dot on unit vectors) that are positive,
    per finding, over neighbours whose label for that finding is known."""
    k = max(1, min(k, Xtr.shape[0]))
    out = np.empty((Xq.shape[0], Ytr_nan.shape[1]))
    for start in range(0, Xq.shape[0], 2048):  # bounded memory for the similarity block
        sim = Xq[start:start + 2048] @ Xtr.T
        nn = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        lab = Ytr_nan[nn]  # [b, k, F]
        with np.errstate(invalid="ignore"):
            out[start:start + 2048] = np.nanmean(lab, axis=1) if np.isnan(lab).any() else lab.mean(axis=1)
    return np.nan_to_num(out, nan=0.0)


def fit_probe(Xtr, Ytr01, known_tr, Xva, Yva01, known_va, findings, classifier="logreg", grid=None) -> ProbeFit:
    """Fit on train; choose the hyper-parameter on val (C per finding, or one k for knn)."""
    if classifier not in CLASSIFIERS:
        raise InputError(f"classifier {classifier!r} is not one of {', '.join(CLASSIFIERS)}")
    if Xtr.shape[0] == 0:
        raise InputError("the train split has no image with a vector for this version; assign splits before probing")
    if classifier == "knn":
        Ynan = np.where(known_tr, Ytr01, np.nan)
        grid = tuple(grid or K_GRID)
        scores = {k: _macro_ap(Yva01, known_va, _knn_scores(Xtr, Ynan, Xva, k)) for k in grid}
        finite = {g: v for g, v in scores.items() if np.isfinite(v)}
        best = max(finite, key=finite.get) if finite else grid[len(grid) // 2]
        return ProbeFit("knn", list(findings), float(best), scores, train_X=Xtr, train_Y=Ynan)
    return _logreg_path(Xtr, Ytr01, known_tr, Xva, Yva01, known_va, findings, tuple(sorted(grid or C_GRID)))


class _Path:
    """The best C found so far for each finding along the C grid, and who is still on it."""

    def __init__(self, F: int, d: int, active: np.ndarray):
        self.active = active.copy()
        self.best_ap = np.full(F, -np.inf)
        self.C, self.val_ap = np.full(F, np.nan), np.full(F, np.nan)
        self.coef, self.intercept = np.full((F, d), np.nan), np.full(F, np.nan)
        self.since_best = np.zeros(F, dtype=int)

    def update(self, idx, C, ap, coef, intercept, fallback_C: float) -> None:
        for k, j in enumerate(idx):
            undefined = not np.isfinite(ap[k])  # no val positives: take scikit-learn's default C
            if (undefined and C == fallback_C) or (not undefined and ap[k] > self.best_ap[j]):
                self.best_ap[j] = ap[k] if not undefined else -np.inf
                self.C[j], self.val_ap[j] = C, ap[k]
                self.coef[j], self.intercept[j] = coef[k], intercept[k]
                self.since_best[j] = 0
                self.active[j] = not undefined
            elif not undefined:
                self.since_best[j] += 1
                self.active[j] = self.since_best[j] < PATIENCE


def _logreg_path(Xtr, Ytr01, known_tr, Xva, Yva01, known_va, findings, grid) -> ProbeFit:
    constant = _constant_probs(Ytr01, known_tr)
    # Standardise with train statistics: unit vectors have tiny per-feature scales, which makes
    # L-BFGS slow; the scaler is folded back into the weights, so they apply to stored vectors.
    mean, std = Xtr.mean(axis=0), Xtr.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    Xs = (Xtr - mean) / std
    d = Xtr.shape[1]
    path = _Path(len(findings), d, ~np.isfinite(constant))
    start = np.zeros((len(findings), d + 1))
    fallback = FALLBACK_C if FALLBACK_C in grid else grid[len(grid) // 2]
    for C in grid:  # ascending C: each fit warm-starts from the more regularised one
        idx = np.flatnonzero(path.active)
        if not idx.size:
            break
        start[idx] = fit_logreg(Xs, Ytr01[:, idx], known_tr[:, idx], C, start[idx])
        coef = start[idx, :d] / std
        intercept = start[idx, d] - coef @ mean
        z = Xva @ coef.T + intercept
        ap = _ap_per_finding(Yva01[:, idx], known_va[:, idx], 0.5 * (1.0 + np.tanh(0.5 * z)))
        path.update(idx, C, ap, coef, intercept, fallback)
    return ProbeFit("logreg", list(findings), float("nan"), coef=path.coef, intercept=path.intercept,
                    constant=constant, C=path.C, val_ap=path.val_ap)


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
def probe_tables(data, classifier: str, grid: tuple, scoring) -> dict:
    """The result tables of one probe on a version's data (`runs.VersionData`): fit on train,
    C (or k) and the threshold on val, every metric on the scored split."""
    from embedstore.analyses.metrics import apply_policy
    from embedstore.analyses.runs import require_split
    from embedstore.analyses.scoring import score_method

    tr = require_split(data, "train", "to fit the probe")
    va = require_split(data, "val", "to choose the probe's hyper-parameter")
    te = require_split(data, scoring.scored, "to score the probe")
    Y01, known = apply_policy(data.Y, scoring.uncertain, scoring.blank)
    fit = fit_probe(data.X[tr], Y01[tr], known[tr], data.X[va], Y01[va], known[va], data.findings, classifier, grid)
    S = fit.predict_proba(data.X)
    out, P = score_method(data.ids, data.Y, data.split, data.groups, data.findings, S, (S >= 0.5).astype(np.int8),
                          S, data.version, scoring)
    extra = pl.DataFrame([{**r, "lo": None, "hi": None} for r in fit.choice_rows(grid)], schema=out["metrics"].schema)
    out["metrics"] = pl.concat([out["metrics"], extra])
    out["cooccurrence"] = cooccurrence(Y01[te], known[te], P, data.findings)
    if classifier == "logreg":
        out["probe_weights"] = fit.weights_table()
    return out


def probe(store, version: str | None = None, classifier: str = "logreg", grid: tuple | None = None,
          calibrate_on: str | None = "val", operating_point: str = "max-f1", uncertain: str = "mask",
          blank: str = "mask", where: str | None = None, n_boot: int = 1000, seed: int = 0,
          min_positives: int | None = None, force: bool = False, data=None):
    """Probe run: fit on train, choose C per finding (or k) on val, fit the threshold on val by
    the shared operating-point rule, score test; `runs.Runs` with the one run.

    Tables: metrics (plus per-finding `C`, `C_at_edge`, `val_ap`, `threshold`), run_findings,
    calibration, image_scores, cooccurrence, and probe_weights (logreg only).
    """
    from embedstore.analyses.metrics import MIN_POSITIVES
    from embedstore.analyses.runs import Runs, cached_run, load_data, refuse_fitted
    from embedstore.analyses.scoring import Scoring

    if classifier not in CLASSIFIERS:
        raise InputError(f"classifier {classifier!r} is not one of {', '.join(CLASSIFIERS)}")
    scoring = Scoring("test", calibrate_on, operating_point, uncertain, blank, n_boot, seed,
                      MIN_POSITIVES if min_positives is None else min_positives)
    data = data or load_data(store, version, where)
    refuse_fitted(store, data.version, data.ids[data.split == "test"], "probe")
    grid = tuple(grid or (C_GRID if classifier == "logreg" else K_GRID))
    config = {**scoring.run_config(), "classifier": classifier, "grid": list(grid), "where": where,
              "findings": data.findings, "data": data.fingerprint(),
              "class_weight": "balanced" if classifier == "logreg" else None}
    if classifier == "logreg":
        config["patience"] = PATIENCE
    return Runs([cached_run(store, "probe", data.version, config, lambda: probe_tables(data, classifier, grid, scoring),
                            force, tables=("metrics", "run_findings", "cooccurrence"))], "classifier")


def load_probe(store, run_id: str) -> ProbeFit:
    """The fitted logistic-regression probe of a stored run (for Grad-CAM of its logit)."""
    df = store.probe_weights(run_id=run_id)
    if not df.height:
        raise InputError(f"run {run_id!r} has no stored probe weights (only logreg probes store them)")
    coef = np.asarray(df["coef"].to_list(), dtype=np.float64)
    return ProbeFit("logreg", df["finding"].to_list(), float("nan"), coef=coef,
                    intercept=df["intercept"].to_numpy().astype(np.float64),
                    constant=np.where(np.isfinite(coef).all(axis=1), np.nan, 0.0))
