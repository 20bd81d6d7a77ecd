"""Views inferred from stored vectors (`embedstore infer-views`).

1. Known views: the images whose view (frontal / lateral) the data set names or a `--views` file
   gives; the others are unknown.
2. The probe: scikit-learn's `LogisticRegression` (class-balanced, on standardised stored
   vectors), fitted on the known views of train and val only, so no test image is ever fitted on.
3. Its accuracy on views it never saw: cross-validated over `folds` folds of whole groups
   (patients, else studies) of train and val, and on the known views of test (held out).
4. The images whose view is unknown, in every split, get the probe's view and its probability
   (`inferred_view`, `inferred_view_confidence`): their own columns of `images`, never written
   over a known or given view, and usable in `--where` (e.g. `coalesce(view, inferred_view) =
   'frontal'`).

Stored as a run (`metrics`; the unknown images' P(lateral) in `image_scores`), reused while the
vectors, views and splits are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from embedstore.errors import InputError

VIEWS = ("frontal", "lateral")
MIN_KNOWN = 10  # known views of each kind in train and val needed to fit the probe
DEFAULT_FOLDS = 5


@dataclass
class InferredViews:
    """What `infer-views` did: the run, its accuracy on held-out known views, and the inferred views
    (`to_polars()`: image_id, split, inferred_view, inferred_view_confidence)."""

    run: object  # analyses.runs.RunResult
    inferred: pl.DataFrame

    @property
    def summary(self) -> dict:
        m = self.run.overall()
        get = lambda k: None if m.get(k) is None or m[k] != m[k] else m[k]  # noqa: E731 - NaN: not measured
        return {"run_id": self.run.run_id, "version": self.run.version, "known_fit": int(m["known_fit"]),
                "cv_accuracy": get("cv_accuracy"), "test_known": int(m["test_known"]),
                "test_accuracy": get("test_accuracy"), "inferred": self.inferred.height,
                "inferred_frontal": int((self.inferred["inferred_view"] == "frontal").sum()),
                "inferred_lateral": int((self.inferred["inferred_view"] == "lateral").sum()),
                "reused": self.run.reused}

    def to_polars(self) -> pl.DataFrame:
        return self.inferred


def view_probe():
    """The probe: standardise, then class-balanced logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000))


def view_tables(ids: np.ndarray, X: np.ndarray, view: np.ndarray, split: np.ndarray, groups: np.ndarray,
                folds: int, seed: int) -> dict[str, pl.DataFrame]:
    """metrics (known views, cross-validated and test accuracy) and image_scores (P(lateral) of the
    unknown views) for one version's vectors; `view` is "frontal" / "lateral" / None per row."""
    from embedstore.analyses.metrics import point_metrics
    from embedstore.data.splits import group_folds

    known = np.isin(view, VIEWS)
    fit_rows = known & np.isin(split, ["train", "val"])
    y = (view == "lateral").astype(np.int64)
    counts = {v: int((fit_rows & (view == v)).sum()) for v in VIEWS}
    if min(counts.values()) < MIN_KNOWN:
        raise InputError(f"no view probe possible: train and val hold {counts['frontal']} known frontal and "
                         f"{counts['lateral']} known lateral views (needs {MIN_KNOWN} of each); give views with "
                         "`encode --views FILE` (Open-i: nlmcxr_dicom_metadata.csv.gz)")
    Xf, yf, gf = X[fit_rows], y[fit_rows], groups[fit_rows]
    folds = min(folds, len(set(gf.tolist())))
    fold = group_folds(gf, np.stack([yf == 0, yf == 1], axis=1), folds, seed)
    cv_pred = np.empty(len(yf), dtype=np.int64)
    for f in range(folds):
        model = view_probe().fit(Xf[fold != f], yf[fold != f])
        cv_pred[fold == f] = model.predict(Xf[fold == f])
    model = view_probe().fit(Xf, yf)
    test_rows = known & (split == "test")
    test_acc = float((model.predict(X[test_rows]) == y[test_rows]).mean()) if test_rows.any() else float("nan")
    unknown = ~known
    p = model.predict_proba(X[unknown])[:, 1] if unknown.any() else np.zeros(0)
    metrics = [("known_fit", fit_rows.sum()), ("known_frontal_fit", counts["frontal"]),
               ("known_lateral_fit", counts["lateral"]), ("folds", folds), ("cv_accuracy", (cv_pred == yf).mean()),
               ("test_known", test_rows.sum()), ("test_accuracy", test_acc), ("unknown", unknown.sum())]
    return {
        "metrics": point_metrics((None, m, v) for m, v in metrics),
        "image_scores": pl.DataFrame({"id": ids[unknown], "finding": ["lateral"] * int(unknown.sum()),
                                      "score": p.astype(np.float64), "pred": (p >= 0.5).astype(np.float64)},
                                     schema={"id": pl.Int64, "finding": pl.String, "score": pl.Float64,
                                             "pred": pl.Float64}),
    }


def infer_views(store, version: str | None = None, folds: int = DEFAULT_FOLDS, seed: int = 0,
                force: bool = False) -> InferredViews:
    """Fit the view probe on the known views of train and val, state its accuracy on held-out known
    views, and write the inferred view of every image whose view is unknown (see the module docstring)."""
    from embedstore.analyses.runs import cached_run
    from embedstore.store import fingerprint

    if not isinstance(folds, int) or folds < 2:
        raise InputError(f"--folds {folds}: give at least 2")
    version = store.version(version).id  # a bad --version fails read-only, before the lock
    with store.writer():  # it writes the views after its run: a busy store fails here, before either
        return _infer_views(store, version, folds, seed, force)


def _infer_views(store, version, folds, seed, force) -> InferredViews:
    from embedstore.analyses.runs import cached_run
    from embedstore.store import fingerprint

    info = store.version(version)
    ids, X = store.image_vectors(info.id)
    meta = pl.DataFrame({"id": ids}).join(store.image_meta(), on="id", how="left")
    view = np.array(meta["view"].to_list(), dtype=object)
    split = np.array(meta["split"].fill_null("none").to_list(), dtype=object)
    groups = np.array(meta["group_id"].to_list(), dtype=object)
    config = {"folds": folds, "seed": seed, "probe": "sklearn LogisticRegression(C=1, balanced), standardised",
              "data": fingerprint(ids, view.astype(str).tolist(), split.tolist(), groups.tolist())}
    run = cached_run(store, "infer-views", info.id, config,
                     lambda: view_tables(ids, X, view, split, groups, folds, seed), force,
                     tables=("metrics", "image_scores"))
    scores = run.tables["image_scores"]
    frame = scores.select("id", pl.when(pl.col("pred") > 0.5).then(pl.lit("lateral")).otherwise(pl.lit("frontal"))
                          .alias("inferred_view"),
                          pl.max_horizontal("score", 1 - pl.col("score")).alias("inferred_view_confidence"))
    store.write_inferred_views(frame)
    inferred = (frame.join(meta.select("id", "image_id", "split"), on="id", how="left")
                .select("image_id", "split", "inferred_view", "inferred_view_confidence", "id").sort("id"))
    return InferredViews(run, inferred)


def view_coverage(store) -> pl.DataFrame:
    """Per split: views known, given and inferred, frontal and lateral, and unknown (`data.splits.view_table`)."""
    from embedstore.data.splits import view_table

    return view_table(store.view_coverage())
