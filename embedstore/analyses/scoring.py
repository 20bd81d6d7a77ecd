"""How every method is scored, by one rule, so methods compare like for like.

A method (a zero-shot rule, the linear probe, a fine-tuned head) gives scores for every image.
Its operating point is fitted on one split (`calibrate_on`, val by default) by one shared rule,
`max-f1` (the threshold with the best F1) or `youden` (the best TPR - FPR), per finding; a
finding with fewer than `MIN_CALIBRATION_POSITIVES` positives there keeps the method's default
threshold. Metrics are then computed on another split (test) with `metrics.evaluate_run`, at the
fitted operating point (plain metric names) and at the default threshold (names ending in
`@default`), so the uncalibrated result stays beside the calibrated one, labelled. Nothing is
fitted on the split that is scored.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import polars as pl

from embedstore.analyses.metrics import MIN_POSITIVES
from embedstore.errors import InputError

OPERATING_POINTS = ("max-f1", "youden")
MIN_CALIBRATION_POSITIVES = 5  # fewer: a threshold fitted to 1-4 positives generalises worse than the default
DEFAULT_SUFFIX = "@default"


@dataclass(frozen=True)
class Scoring:
    """How a method's scores become stored results: the split scored, the split thresholds are
    fitted on (None: default cuts only) and by which rule, the label policies, the bootstrap and
    the evaluable-finding bar. Every analysis run's config holds these values."""

    scored: str = "test"
    calibrate_on: str | None = "val"
    operating_point: str = "max-f1"
    uncertain: str = "mask"
    blank: str = "mask"
    n_boot: int = 1000
    seed: int = 0
    min_positives: int = MIN_POSITIVES

    def __post_init__(self):
        check_operating_point(self.operating_point)
        if self.calibrate_on is not None and self.calibrate_on == self.scored:
            raise InputError(f"--calibrate-on {self.calibrate_on} is the split being scored; pass --calibrate-on none "
                             "(default thresholds) or another split to fit them on")

    def run_config(self) -> dict:
        """The keys a run's config stores (the operating point only where thresholds are fitted)."""
        out = asdict(self)
        out["split"] = out.pop("scored")
        if self.calibrate_on:
            out["min_calibration_positives"] = MIN_CALIBRATION_POSITIVES
        else:
            out.pop("operating_point")
        return out


def check_operating_point(rule: str) -> str:
    if rule not in OPERATING_POINTS:
        raise InputError(f"--operating-point {rule!r}: choose one of {', '.join(OPERATING_POINTS)}")
    return rule


def fit_thresholds(Y01: np.ndarray, known: np.ndarray, S: np.ndarray, rule: str = "max-f1",
                   min_positives: int = MIN_CALIBRATION_POSITIVES) -> np.ndarray:
    """Per-finding threshold t (predict `score >= t`) that maximises the rule on (Y01, S), masked
    entries left out; NaN where there are fewer than `min_positives` positives (or no negatives).

    Every distinct score is a candidate: one sort and two cumulative sums per finding (the same
    curves as scikit-learn's precision_recall_curve / roc_curve, without their per-call overhead).
    """
    check_operating_point(rule)
    out = np.full(S.shape[1], np.nan)
    for j in range(S.shape[1]):
        m = known[:, j]
        y, s = Y01[m, j].astype(bool), S[m, j]
        P, N = int(y.sum()), int((~y).sum())
        if P < min_positives or N == 0:
            continue
        order = np.argsort(-s, kind="stable")
        s, y = s[order], y[order]
        last = np.r_[s[1:] != s[:-1], True]  # last index of each run of equal scores
        tp, fp = np.cumsum(y)[last], np.cumsum(~y)[last]
        objective = 2 * tp / (tp + fp + P) if rule == "max-f1" else tp / P - fp / N
        out[j] = s[last][int(np.argmax(objective))]
    return out


def apply_thresholds(S: np.ndarray, default: np.ndarray, thresholds: np.ndarray | None) -> np.ndarray:
    """Decisions: score >= the fitted threshold where there is one, else the method's default."""
    P = np.array(default, dtype=np.int8, copy=True)
    if thresholds is not None:
        have = np.isfinite(thresholds)
        P[:, have] = (S[:, have] >= thresholds[have]).astype(np.int8)
    return P


def split_mask(split: np.ndarray, name: str, version: str, purpose: str) -> np.ndarray:
    """Rows of split `name`; InputError naming the splits present when there are none."""
    m = np.asarray(split) == name
    if not m.any():
        present = ", ".join(sorted({str(s) for s in split}))
        raise InputError(f"no image of version {version} is in split {name!r} (needed {purpose}); "
                         f"splits present: {present}")
    return m


def score_method(ids: np.ndarray, Y: np.ndarray, split: np.ndarray, groups: np.ndarray, findings: list[str],
                 S: np.ndarray, default: np.ndarray, prob: np.ndarray | None, version: str,
                 scoring: Scoring = Scoring(), every_image: bool = False) -> tuple[dict[str, pl.DataFrame], np.ndarray]:
    """The result tables of one method whose scores S, default decisions and probabilities are
    given for every row (image) of `ids`: thresholds fitted on `scoring.calibrate_on`, every
    metric on `scoring.scored`. Returns (tables, decisions on the scored rows at the fitted
    operating point); the tables are metrics (with a per-finding `threshold` row), run_findings,
    calibration and image_scores (the scored images' scores and those decisions; every image's
    with `every_image`, e.g. a fine-tuned head's logits, its thresholds applied to all of them)."""
    from embedstore.analyses.metrics import apply_policy, evaluate_run

    sc = scoring
    test = split_mask(split, sc.scored, version, "to score")
    predictions = {"": default[test]}
    thresholds = None
    if sc.calibrate_on:
        cal = split_mask(split, sc.calibrate_on, version, "to fit thresholds; or pass --calibrate-on none")
        Y01, known = apply_policy(Y[cal], sc.uncertain, sc.blank)
        thresholds = fit_thresholds(Y01, known, S[cal], sc.operating_point)
        predictions = {"": apply_thresholds(S[test], default[test], thresholds), DEFAULT_SUFFIX: default[test]}
    evaluation = evaluate_run(Y[test], S[test], findings, predictions, groups=groups[test],
                              prob=None if prob is None else prob[test], uncertain=sc.uncertain, blank=sc.blank,
                              n_boot=sc.n_boot, seed=sc.seed, min_positives=sc.min_positives)
    tables = evaluation.tables()
    if thresholds is not None:
        rows = pl.DataFrame({"finding": findings, "metric": "threshold", "value": thresholds, "lo": None, "hi": None},
                            schema=tables["metrics"].schema)
        tables["metrics"] = pl.concat([tables["metrics"], rows])
    rows = slice(None) if every_image else test
    tables["image_scores"] = score_table(ids[rows], findings, S[rows], apply_thresholds(S[rows], default[rows], thresholds))
    return tables, predictions[""]


def score_table(ids: np.ndarray, findings: list[str], S: np.ndarray, P: np.ndarray) -> pl.DataFrame:
    """Long per-image table (id, finding, score, pred) in the store's `image_scores` columns."""
    n, F = S.shape
    return pl.DataFrame({
        "id": np.repeat(np.asarray(ids, dtype=np.int64), F),
        "finding": np.tile(np.asarray(findings, dtype=object), n).tolist(),
        "score": S.astype(np.float64).ravel(),
        "pred": P.astype(np.float64).ravel(),
    })
