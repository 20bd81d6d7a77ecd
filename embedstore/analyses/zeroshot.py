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
renormalises (`prompt_vectors`, the one place prompts are averaged). By default raw-dot uses
`single`, as the seed did, and the other rules `ensemble`. Thresholds are fitted on val by the
rule every method shares (`analyses.scoring`); each rule's default decision is kept beside it
(`@default` metrics).
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


def ensemble(vectors: np.ndarray) -> np.ndarray:
    """One prompt vector from several phrasings: the mean of their unit vectors, re-normalised
    (CLIP's prompt ensembling). Every zero-shot score in embedstore averages prompts here."""
    return _unit(_unit(np.asarray(vectors, dtype=np.float32)).mean(axis=0))


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
            mat[j] = ensemble(M[rows])
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


def probabilities(S: np.ndarray, rule: str) -> np.ndarray:
    """The rule's probabilities from its stored scores: softmax's are exp(log-probability), the
    other rules' sigmoid(logit). Used to measure calibration."""
    if rule == "softmax":
        return np.exp(S)
    return 0.5 * (1.0 + np.tanh(0.5 * S))


def default_templates(rule: str) -> str:
    """raw-dot is the seed notebook's rule with one prompt per finding; the others average the ensemble."""
    return "single" if rule == "raw-dot" else "ensemble"


# ---- store-facing -------------------------------------------------------------------------
def _preferred_templates() -> dict[str, str]:
    """The first generic template of each polarity in prompts.toml: the `single` prompt."""
    from embedstore.data.prompts import prompts_for

    rows = prompts_for("__probe__")
    return {pol: next((r["template"] for r in rows if r["polarity"] == pol), "") for pol in ("positive", "negative")}


def zeroshot_tables(data, texts: pl.DataFrame, M: np.ndarray, rule: str, templates: str, scoring) -> dict:
    """The result tables of one rule on a version's data (`runs.VersionData`) and stored prompts."""
    from embedstore.analyses.scoring import score_method

    pv = prompt_vectors(texts, M, data.findings, templates, _preferred_templates())
    S = scores(data.X, pv, rule, data.logit_scale)
    return score_method(data.ids, data.Y, data.split, data.groups, data.findings, S, default_predictions(S, rule),
                        probabilities(S, rule), data.version, scoring)[0]


def rule_list(rule: str | list[str]) -> list[str]:
    """The rules asked for ("all" = every rule); InputError naming an unknown one."""
    rules = list(RULES) if rule == "all" else ([rule] if isinstance(rule, str) else list(rule))
    bad = [r for r in rules if r not in RULES]
    if bad:
        raise InputError(f"zero-shot rule {bad[0]!r} is not one of {', '.join(RULES)} (or all)")
    return rules


def zeroshot(store, version: str | None = None, rule: str | list[str] = "all", templates: str | None = None,
             calibrate_on: str | None = "val", operating_point: str = "max-f1", split: str = "test",
             uncertain: str = "mask", blank: str = "mask", where: str | None = None, n_boot: int = 1000,
             seed: int = 0, min_positives: int | None = None, force: bool = False, data=None):
    """Zero-shot runs over stored vectors, one per rule ("all" = every rule); `runs.Runs`.

    `templates` None gives each rule its default (raw-dot: single, the others: ensemble).
    Thresholds are fitted on `calibrate_on` (None: the rules' default thresholds only) by the
    shared `operating_point` rule and metrics computed on `split` (see `analyses.scoring`).
    """
    from embedstore.analyses.metrics import MIN_POSITIVES
    from embedstore.analyses.runs import Runs, cached_run, load_data, refuse_fitted
    from embedstore.analyses.scoring import Scoring

    rules = rule_list(rule)
    if templates is not None and templates not in TEMPLATES:
        raise InputError(f"templates {templates!r} is not one of {', '.join(TEMPLATES)}")
    scoring = Scoring(split, calibrate_on, operating_point, uncertain, blank, n_boot, seed,
                      MIN_POSITIVES if min_positives is None else min_positives)
    data = data or load_data(store, version, where)
    texts, M = store.text_vectors(data.version)
    refuse_fitted(store, data.version, data.ids[data.split == split], f"zeroshot on split {split!r}")
    used = texts.filter(pl.col("finding").is_in(data.findings))
    base = {**scoring.run_config(), "where": where, "findings": data.findings, "data": data.fingerprint(),
            "prompts": sorted(used["text_hash"].to_list())}
    results = []
    for r in rules:
        tmpl = templates or default_templates(r)
        results.append(cached_run(store, "zeroshot", data.version, {"rule": r, "templates": tmpl, **base},
                                  lambda r=r, tmpl=tmpl: zeroshot_tables(data, texts, M, r, tmpl, scoring),
                                  force, tables=("metrics", "run_findings")))
    return Runs(results, "rule")
