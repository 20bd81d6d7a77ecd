"""Zero-shot classification from stored image and prompt vectors (no model forward pass).

Rules, all on the store's L2-normalised vectors, with `s` the model's logit scale:

- `raw-dot`: the seed notebook's rule, score = s * (x . t_pos) with one prompt per finding,
  positive when > 0. The seed used unnormalised vectors; a dot product of unnormalised
  vectors has the same sign as their cosine, so on a normalised store this reproduces the
  seed's decisions exactly (the score is the model's logit, up to the missing norms). Its
  threshold of 0 is why nearly everything comes out positive: CLIP-style image-text
  cosines are almost all positive.
- `cosine`: sigmoid(s * cos(x, t_pos)) >= threshold (default 0.5, i.e. logit >= 0). At the
  default it makes the same decisions as raw-dot (sigmoid(z) >= 0.5 iff z >= 0); it differs once
  thresholds are calibrated and uses the ensemble of prompts.
- `softmax`: softmax over findings of s * cos(x, t_pos); by default the top-1 finding is
  predicted positive (the rule assumes one finding per image); calibrated thresholds replace it.
- `pos-neg`: per finding, softmax over its positive and negative prompt (CheXzero):
  sigmoid(s * (cos(x, t_pos) - cos(x, t_neg))) >= 0.5.

Stored scores are the logits (log-probabilities for softmax), which rank images exactly as the
probabilities do but do not saturate to a tied 1.0 at CLIP's logit scale.

Templates: `single` uses the first prompt (store order) per finding and polarity; `ensemble`
averages the normalised embeddings of all of a finding's prompts per polarity, then
renormalises. Calibration picks per-finding thresholds that maximise F1 on another split; a
finding with fewer than MIN_CALIBRATION_POSITIVES positives there keeps the rule's default.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from embedstore.errors import InputError

RULES = ("raw-dot", "cosine", "softmax", "pos-neg")
TEMPLATES = ("single", "ensemble")


@dataclass
class PromptVectors:
    """One positive (and, where the store has one, negative) prompt vector per finding."""

    findings: list[str]
    positive: np.ndarray  # [F, d], unit rows
    negative: np.ndarray  # [F, d], unit rows; NaN rows where a finding has no negative prompt


def _unit(v: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.where(norm > 0, norm, 1.0)


def prompt_vectors(texts: pl.DataFrame, M: np.ndarray, findings: list[str], templates: str = "ensemble",
                   preferred: dict[str, str] | None = None) -> PromptVectors:
    """Per-finding prompt vectors from the store's text table (columns finding, polarity,
    template) and M. `single` takes the row whose template is `preferred[polarity]`, else the first."""
    if templates not in TEMPLATES:
        raise InputError(f"templates {templates!r} is not one of {', '.join(TEMPLATES)}")
    finding_col = texts["finding"].to_list()
    polarity_col = texts["polarity"].to_list()
    template_col = texts["template"].to_list() if "template" in texts.columns else [None] * texts.height
    preferred = preferred or {}
    d = M.shape[1]
    out = {"positive": np.full((len(findings), d), np.nan, np.float32),
           "negative": np.full((len(findings), d), np.nan, np.float32)}
    for j, finding in enumerate(findings):
        for polarity, mat in out.items():
            rows = [i for i, (f, p) in enumerate(zip(finding_col, polarity_col)) if f == finding and p == polarity]
            if not rows:
                continue
            if templates == "single":
                rows = [i for i in rows if template_col[i] == preferred.get(polarity)][:1] or rows[:1]
            vecs = _unit(M[rows].astype(np.float32))
            mat[j] = _unit(vecs.mean(axis=0))
    missing = [f for j, f in enumerate(findings) if not np.isfinite(out["positive"][j]).all()]
    if missing:
        raise InputError(f"no positive prompt embedding for {', '.join(missing)}; encode the prompts for this version first")
    return PromptVectors(list(findings), out["positive"], out["negative"])


def scores(X: np.ndarray, prompts: PromptVectors, rule: str, logit_scale: float) -> np.ndarray:
    """Scores [n, F] of images X (unit rows) under a rule; higher = more likely positive.

    Scores are logits, not probabilities: cosine's sigmoid(scale * cos) and pos-neg's two-way
    softmax are monotone in these, and in float64 they saturate to exactly 1.0 at CLIP's logit
    scale (100), which would tie every confident image and flatten AUROC. softmax gives
    log-probabilities over the findings for the same reason.
    """
    if rule not in RULES:
        raise InputError(f"zero-shot rule {rule!r} is not one of {', '.join(RULES)}")
    cos_pos = X @ prompts.positive.T
    if rule in ("raw-dot", "cosine"):
        return logit_scale * cos_pos
    if rule == "softmax":
        z = logit_scale * cos_pos
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    no_neg = [f for j, f in enumerate(prompts.findings) if not np.isfinite(prompts.negative[j]).all()]
    if no_neg:
        raise InputError(f"rule pos-neg needs a negative prompt for {', '.join(no_neg)}; add one to the prompts")
    return logit_scale * (cos_pos - X @ prompts.negative.T)


def default_predictions(S: np.ndarray, rule: str) -> np.ndarray:
    """Uncalibrated decisions: raw-dot dot > 0 (the seed notebook's rule); cosine and pos-neg
    probability >= 0.5, i.e. logit >= 0; softmax top-1."""
    if rule == "raw-dot":
        return (S > 0).astype(np.int8)
    if rule == "softmax":
        P = np.zeros(S.shape, np.int8)
        if S.size:
            P[np.arange(S.shape[0]), S.argmax(axis=1)] = 1
        return P
    return (S >= 0).astype(np.int8)


MIN_CALIBRATION_POSITIVES = 5  # fewer: a max-F1 threshold fitted to 1-4 positives generalises worse than the default


def calibrate_thresholds(Y01: np.ndarray, known: np.ndarray, S: np.ndarray,
                         min_positives: int = MIN_CALIBRATION_POSITIVES) -> np.ndarray:
    """Per-finding threshold t maximising the F1 of `score >= t` on (Y01, S), masked entries left
    out; NaN where the split has fewer than `min_positives` positives for a finding (the rule's
    default is kept there).

    Every distinct score is a candidate: one sort and two cumulative sums per finding (the same
    curve as scikit-learn's precision_recall_curve, without its per-call overhead).
    """
    out = np.full(S.shape[1], np.nan)
    for j in range(S.shape[1]):
        m = known[:, j]
        y, s = Y01[m, j].astype(bool), S[m, j]
        P = int(y.sum())
        if P < min_positives:
            continue
        order = np.argsort(-s, kind="stable")
        s, y = s[order], y[order]
        last = np.r_[s[1:] != s[:-1], True]  # last index of each run of equal scores
        tp = np.cumsum(y)[last]
        k = np.cumsum(~y)[last] + tp  # predicted positives at each candidate threshold
        f1 = 2 * tp / (k + P)
        out[j] = s[last][int(np.argmax(f1))]
    return out


def predict(S: np.ndarray, rule: str, thresholds: np.ndarray | None = None) -> np.ndarray:
    """Decisions: score >= the calibrated threshold where there is one, else the rule's default."""
    P = default_predictions(S, rule)
    if thresholds is not None:
        have = np.isfinite(thresholds)
        P[:, have] = (S[:, have] >= thresholds[have]).astype(np.int8)
    return P


# ---- store-facing -------------------------------------------------------------------------
def _preferred_templates() -> dict[str, str]:
    """The first generic template of each polarity in prompts.toml: the `single` prompt."""
    from embedstore.data.prompts import prompts_for

    rows = prompts_for("__probe__")
    return {pol: next((r["template"] for r in rows if r["polarity"] == pol), "") for pol in ("positive", "negative")}


def zeroshot(store, version: str | None = None, rule: str | list[str] = "all", templates: str = "ensemble",
             calibrate_on: str | None = None, split: str = "test", uncertain: str = "mask", where: str | None = None,
             n_boot: int = 1000, seed: int = 0, force: bool = False, data=None) -> list:
    """Zero-shot runs over stored vectors, one per rule ("all" = every rule); list of RunResult.

    Metrics are computed on `split`; with `calibrate_on` (e.g. "val") per-finding thresholds
    maximising F1 on that split replace each rule's default decision.
    """
    from embedstore.analyses.metrics import apply_policy, evaluate, without_nan_intervals
    from embedstore.analyses.runs import cached_run, load_data, refuse_fitted, require_split

    rules = list(RULES) if rule == "all" else ([rule] if isinstance(rule, str) else list(rule))
    bad = [r for r in rules if r not in RULES]
    if bad:
        raise InputError(f"zero-shot rule {bad[0]!r} is not one of {', '.join(RULES)} (or all)")
    if templates not in TEMPLATES:
        raise InputError(f"templates {templates!r} is not one of {', '.join(TEMPLATES)}")
    data = data or load_data(store, version, where)
    texts, M = store.text_vectors(data.version)
    test = require_split(data, split, "to score")
    refuse_fitted(store, data, data.ids[test], f"zeroshot on split {split!r}")
    cal = require_split(data, calibrate_on, "to calibrate thresholds") if calibrate_on else None
    if calibrate_on == split:
        raise InputError(f"--calibrate-on {calibrate_on} is the split being scored; calibrate on another split (e.g. val)")
    used = texts.filter(pl.col("finding").is_in(data.findings))
    base = {"templates": templates, "calibrate_on": calibrate_on, "split": split, "uncertain": uncertain,
            "where": where, "n_boot": n_boot, "seed": seed, "findings": data.findings,
            "data": data.fingerprint(), "prompts": sorted(used["text_hash"].to_list())}
    if calibrate_on:
        base["min_calibration_positives"] = MIN_CALIBRATION_POSITIVES  # runs calibrated by another rule are not reused
    results = []
    for r in rules:
        def compute(r=r):
            pv = prompt_vectors(texts, M, data.findings, templates, _preferred_templates())
            S = scores(data.X, pv, r, data.logit_scale)
            thresholds = None
            if cal is not None:
                Y01, known = apply_policy(data.Y[cal], uncertain)
                thresholds = calibrate_thresholds(Y01, known, S[cal])
            P = predict(S[test], r, thresholds)
            table = evaluate(data.Y[test], S[test], P, data.findings, uncertain, n_boot, seed)
            if thresholds is not None:
                extra = pl.DataFrame({"finding": data.findings, "metric": "threshold", "value": thresholds,
                                      "lo": None, "hi": None}, schema=table.schema)
                table = without_nan_intervals(pl.concat([table, extra]))
            return {"metrics": table, "image_scores": score_table(data.ids[test], data.findings, S[test], P)}

        results.append(cached_run(store, "zeroshot", data.version, {"rule": r, **base}, compute, force,
                                  tables=("metrics",)))
    return results


def score_table(ids: np.ndarray, findings: list[str], S: np.ndarray, P: np.ndarray) -> pl.DataFrame:
    """Long per-image table (id, finding, score, pred) in the store's `image_scores` columns."""
    n, F = S.shape
    return pl.DataFrame({
        "id": np.repeat(np.asarray(ids, dtype=np.int64), F),
        "finding": np.tile(np.asarray(findings, dtype=object), n).tolist(),
        "score": S.astype(np.float64).ravel(),
        "pred": P.astype(np.float64).ravel(),
    })
