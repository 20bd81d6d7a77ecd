"""Label-issue candidates from stored vectors (`embedstore label-issues`): the probe's out-of-sample
probabilities, cross-validated by group over train and val, through Cleanlab's multi-label
confident learning.

1. The images of train and val (test is never read), their labels as the probe sees them
   (uncertain and missing entries masked: never fitted on, never flagged).
2. Folds: `folds` folds of whole groups (patients, else studies), stratified over every finding at
   once (`data.splits.group_folds`), seeded.
3. Fold k is scored by the probe (`analyses.probe.fit_probe`: class-balanced logistic regression,
   C per finding) fitted on the other folds but fold k+1, on which its C is chosen. Every
   probability is out of sample, and no hyper-parameter saw the image it scores.
4. A finding whose fitting folds lack positives or negatives for some fold, or that has fewer
   positive groups than folds, cannot be cross-validated: it is named and skipped (`run_findings`,
   evaluable false, with the reason), never a crash.
5. Cleanlab (`cleanlab.multilabel_classification`): `find_multilabel_issues_per_class` flags
   (image, finding) labels by confident learning, `get_label_quality_scores_per_class` scores each
   label (the probability of the given label: low is suspect) and `get_label_quality_scores` each
   image; flagged images are ranked by the latter.

Stored as a run: `label_issues` (every scored label: given, probability, quality, flagged, image
rank and quality, fold), `run_findings`, `metrics`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import polars as pl

from embedstore.errors import InputError

DEFAULT_FOLDS = 5


@dataclass
class LabelIssues:
    """What `label-issues` found. `candidates`: the flagged (image, finding) labels, most suspect
    first (what `to_polars()` gives); `images`: flagged images ranked, with their suspect
    findings; `skipped`: findings that could not be cross-validated, and why."""

    run: object  # analyses.runs.RunResult
    candidates: pl.DataFrame
    images: pl.DataFrame
    skipped: pl.DataFrame

    @property
    def summary(self) -> dict:
        m = self.run.overall()
        return {"run_id": self.run.run_id, "version": self.run.version, "images": int(m.get("images", 0)),
                "findings": int(m.get("findings", 0)), "skipped_findings": self.skipped.height,
                "flagged_images": self.images.height, "flagged_labels": self.candidates.height,
                "folds": int(m.get("folds", 0)), "reused": self.run.reused}

    def to_polars(self) -> pl.DataFrame:
        return self.candidates


# ---- the NumPy core ---------------------------------------------------------------------------
def eligible(Y01: np.ndarray, known: np.ndarray, groups: np.ndarray, fold: np.ndarray, k: int) -> list[str | None]:
    """Per finding: None when every fold can be scored, else why not (the finding is skipped)."""
    reasons = []
    for j in range(Y01.shape[1]):
        pos = (Y01[:, j] == 1) & known[:, j]
        neg = (Y01[:, j] == 0) & known[:, j]
        n_groups = len(set(groups[pos].tolist()))
        if n_groups < k:
            reasons.append(f"{n_groups} positive group(s) in train and val, fewer than the {k} folds")
            continue
        bad = next((f for f in range(k) if not (pos & fit_rows(fold, f, k)).any()
                    or not (neg & fit_rows(fold, f, k)).any()), None)
        reasons.append(None if bad is None else f"no positive or no negative label in the images fitted for fold {bad + 1}")
    return reasons


def fit_rows(fold: np.ndarray, f: int, k: int) -> np.ndarray:
    """The rows the probe scoring fold f is fitted on: every fold but f and the one choosing C."""
    return (fold != f) & (fold != (f + 1) % k)


def out_of_sample(X: np.ndarray, Y01: np.ndarray, known: np.ndarray, fold: np.ndarray, k: int,
                  findings: list[str]) -> np.ndarray:
    """[n, F] probabilities, each row's from the probe that never saw it (see the module docstring)."""
    from embedstore.analyses.probe import fit_probe

    P = np.full(Y01.shape, np.nan)
    for f in range(k):
        tr, va, held = fit_rows(fold, f, k), fold == (f + 1) % k, fold == f
        fit = fit_probe(X[tr], Y01[tr], known[tr], X[va], Y01[va], known[va], findings)
        P[held] = fit.predict_proba(X[held])
    return P


def cleanlab_scores(Y01: np.ndarray, known: np.ndarray, P: np.ndarray):
    """(flagged [n, F] bool, label quality [n, F], image quality [n]) from Cleanlab's multi-label
    confident learning; masked entries are never flagged (their quality is NaN)."""
    import warnings

    from cleanlab.multilabel_classification.filter import find_multilabel_issues_per_class
    from cleanlab.multilabel_classification.rank import get_label_quality_scores, get_label_quality_scores_per_class

    labels = [np.flatnonzero(row).tolist() for row in (Y01 == 1) & known]
    P = np.clip(P, 1e-6, 1 - 1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cleanlab warns about classes it finds no issue in
        flagged = np.asarray(find_multilabel_issues_per_class(labels, P, n_jobs=1), dtype=bool).reshape(P.shape)
        quality = np.asarray(get_label_quality_scores_per_class(labels, P), dtype=np.float64).reshape(P.shape)
        image_quality = np.asarray(get_label_quality_scores(labels, P), dtype=np.float64)
    return flagged & known, np.where(known, quality, np.nan), image_quality


def label_issue_tables(ids: np.ndarray, X: np.ndarray, Y: np.ndarray, groups: np.ndarray, findings: list[str],
                       folds: int, seed: int) -> dict[str, pl.DataFrame]:
    """label_issues, run_findings and metrics of the train + val images given (see the module docstring)."""
    from embedstore.analyses.metrics import apply_policy, point_metrics
    from embedstore.data.splits import group_folds

    Y01, known = apply_policy(Y, "mask", "mask")
    fold = group_folds(groups, (Y01 == 1) & known, folds, seed)
    reasons = eligible(Y01, known, groups, fold, folds)
    keep = np.array([r is None for r in reasons])
    if not keep.any():
        raise InputError(f"no finding can be cross-validated over {folds} folds of train and val (each needs "
                         f"positives in every fold's fitting images); first: {findings[0]}: {reasons[0]}; "
                         "give fewer --folds or more labelled images")
    kept = [f for f, ok in zip(findings, keep) if ok]
    t0 = time.perf_counter()
    P = out_of_sample(X, Y01[:, keep], known[:, keep], fold, folds, kept)
    t1 = time.perf_counter()
    flagged, quality, image_quality = cleanlab_scores(Y01[:, keep], known[:, keep], P)
    t2 = time.perf_counter()
    image_rank = np.full(len(ids), -1)
    suspect = np.flatnonzero(flagged.any(axis=1))
    image_rank[suspect[np.argsort(image_quality[suspect], kind="stable")]] = np.arange(1, len(suspect) + 1)
    F = len(kept)
    rows = pl.DataFrame({
        "id": np.repeat(ids, F), "finding": np.tile(np.array(kept, dtype=object), len(ids)).tolist(),
        "given": np.where(known[:, keep], Y01[:, keep], -1).ravel(), "probability": P.ravel(),
        "quality": quality.ravel(), "flagged": flagged.ravel(), "image_rank": np.repeat(image_rank, F),
        "image_quality": np.repeat(image_quality, F), "fold": np.repeat(fold + 1, F)})
    rows = rows.with_columns(pl.when(pl.col("given") >= 0).then(pl.col("given")).cast(pl.Int8).alias("given"),
                             pl.when(pl.col("image_rank") > 0).then(pl.col("image_rank")).cast(pl.Int32).alias("image_rank"))
    found = pl.DataFrame({
        "finding": findings, "evaluable": keep.tolist(), "reason": reasons,
        "positives": ((Y01 == 1) & known).sum(axis=0).astype(np.int64),
        "positive_groups": [len(set(groups[(Y01[:, j] == 1) & known[:, j]].tolist())) for j in range(len(findings))],
        "n": known.sum(axis=0).astype(np.int64)})
    per = [(f, "flagged", float(flagged[:, j].sum())) for j, f in enumerate(kept)]
    overall = [("images", len(ids)), ("findings", F), ("skipped_findings", int((~keep).sum())), ("folds", folds),
               ("flagged_images", len(suspect)), ("flagged_labels", int(flagged.sum())),
               ("flagged_share", float(flagged.sum() / max(known[:, keep].sum(), 1))),
               ("probe_seconds", t1 - t0), ("cleanlab_seconds", t2 - t1)]
    metrics = point_metrics(per + [(None, m, v) for m, v in overall])
    return {"label_issues": rows, "run_findings": found, "metrics": metrics}


# ---- store-facing ---------------------------------------------------------------------------
def label_issues(store, version: str | None = None, folds: int = DEFAULT_FOLDS, seed: int = 0,
                 where: str | None = None, force: bool = False) -> LabelIssues:
    """Label-issue candidates of `version`'s train and val images, stored as a run (see the module
    docstring); `where` narrows the images (a predicate over image columns)."""
    from embedstore.analyses.runs import cached_run, load_data

    if not isinstance(folds, int) or folds < 3:  # one fold is scored, the next chooses C, the rest fit
        raise InputError(f"--folds {folds}: give at least 3 (each fold is scored by a probe fitted on the others "
                         "but one, on which its C is chosen)")
    data = load_data(store, version, where)
    rows = np.isin(data.split, ["train", "val"])
    if not rows.any():
        raise InputError(f"version {data.version} has no train or val images{' matching ' + repr(where) if where else ''}; "
                         "label-issues cross-validates over them (test is never used)")
    ids, X, Y, groups = data.ids[rows], data.X[rows], data.Y[rows], data.groups[rows]
    config = {"folds": folds, "seed": seed, "where": where, "findings": data.findings, "data": data.fingerprint(),
              "probe": "logreg, class_weight balanced, C per finding on the next fold", "uncertain": "mask",
              "blank": "mask"}
    run = cached_run(store, "label-issues", data.version, config,
                     lambda: label_issue_tables(ids, X, Y, groups, data.findings, folds, seed), force,
                     tables=("metrics", "run_findings"))
    return result_of(store, run)


def result_of(store, run) -> LabelIssues:
    """A stored label-issues run as a `LabelIssues`."""
    rows = store.label_issue_rows(run.run_id)
    candidates = rows.with_row_index("rank", offset=1).select(
        "rank", "image_id", "finding", "given", "probability", "quality", "image_rank", "split", "study_id", "fold", "id")
    images = (rows.filter(pl.col("image_rank").is_not_null()).sort("image_rank", "quality")
              .group_by("image_rank", maintain_order=True)
              .agg(pl.col("image_id").first(), pl.col("image_quality").first(),
                   pl.col("finding").str.join(", ").alias("suspect_findings"),
                   pl.format("{}={}", "finding", "given").str.join(", ").alias("given"),
                   pl.col("probability").round(3).cast(pl.String).str.join(", ").alias("probabilities"),
                   pl.col("split").first(), pl.col("study_id").first()))
    found = run.tables.get("run_findings", pl.DataFrame(schema={"finding": pl.String, "evaluable": pl.Boolean,
                                                                "reason": pl.String}))
    skipped = found.filter(~pl.col("evaluable")).select("finding", "reason", "positives", "positive_groups")
    return LabelIssues(run, candidates, images, skipped)
