"""`embedstore stability --repeats N`: how much the headline numbers move when the split moves.

The split is re-drawn N times, the way the store's frozen split was drawn (groups stratified over
every finding at once, `data.splits.stratify_groups`, seeds `seed` .. `seed + N - 1`), and on each
the zero-shot rules, the linear probe and separability are run again in memory. Nothing is stored:
these splits are not the store's, and every stored run keeps using the frozen one. Reported: each
headline metric's mean, standard deviation, minimum and maximum over the splits, and whether the
ranking of the methods by macro AUROC is the same on every split. Each split's macro metrics average
the same findings: those evaluable on every split (`Stability.findings`, counted in the summary's
`findings` column), so the spread is the split's, not that of a changing set. Bootstrap intervals are not
recomputed (they answer another question: the spread over patients within one split).

A fine-tuned version is refused: a new split would score it on images it was trained on.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import polars as pl

from embedstore.errors import InputError

# Headline macro metrics, and the per-finding metric each averages; methods are ranked by macro AUROC.
HEADLINES = {"macro_auroc": "auroc", "macro_f1": "f1", "macro_f1@default": "f1@default"}
SEPARABILITY_HEADLINES = ("inter_intra_ratio", "silhouette")


@dataclass
class Stability:
    """Per-split values, their summary, and the methods' ranking on each split. Every macro value
    averages the same findings on every split: those evaluable on all of them (`findings`)."""

    per_split: pl.DataFrame  # split_seed, method, metric, value
    summary: pl.DataFrame  # method, metric, mean, sd, min, max, splits, findings (averaged over; null: not a macro)
    rankings: list[list[str]]  # per split: methods by macro AUROC, best first
    findings: list[str] = dataclasses.field(default_factory=list)  # evaluable on every split

    @property
    def ranking_holds(self) -> bool:
        """True when every split ranks the methods in the same order."""
        return all(r == self.rankings[0] for r in self.rankings)

    def to_polars(self) -> pl.DataFrame:
        return self.summary


def resplit(data, seed: int):
    """A copy of `data` (runs.VersionData) with a new stratified split of its groups."""
    from embedstore.analyses.metrics import apply_policy
    from embedstore.data.splits import stratify_groups

    names, row_of = np.unique(np.asarray(data.groups, dtype=str), return_inverse=True)
    Y01, known = apply_policy(data.Y)
    positive = np.zeros((len(names), Y01.shape[1]), dtype=bool)
    np.logical_or.at(positive, row_of, (Y01 == 1) & known)
    return dataclasses.replace(data, split=stratify_groups(positive, seed)[row_of])


def _one_split(data, texts, M, scoring) -> tuple[list[dict], set[str]]:
    """Every method's per-finding headline values on one split (finding None: separability's overall
    values), and the findings evaluable there."""
    from embedstore.analyses.metrics import apply_policy
    from embedstore.analyses.probe import C_GRID, probe_tables
    from embedstore.analyses.separability import separability_tables
    from embedstore.analyses.zeroshot import RULES, default_templates, zeroshot_tables

    methods = {f"zeroshot:{r}": (lambda r=r: zeroshot_tables(data, texts, M, r, default_templates(r), scoring))
               for r in RULES}
    methods["probe"] = lambda: probe_tables(data, "logreg", C_GRID, scoring)
    rows, evaluable = [], set()
    for name, compute in methods.items():
        tables = compute()
        per = tables["metrics"].filter(pl.col("finding").is_not_null() & pl.col("metric").is_in(list(HEADLINES.values())))
        rows += [{"method": name, **r} for r in per.select("finding", "metric", "value").iter_rows(named=True)]
        evaluable = set(tables["run_findings"].filter(pl.col("evaluable"))["finding"])  # labels only: same for all
    Y01, known = apply_policy(data.Y, scoring.uncertain, scoring.blank)
    tr, te = data.split == "train", data.split == "test"
    sep = separability_tables(data.X[tr], Y01[tr], known[tr], data.X[te], Y01[te], known[te], data.ids[te],
                              data.findings, project=False)["metrics"].filter(pl.col("finding").is_null())
    overall = dict(zip(sep["metric"].to_list(), sep["value"].to_list()))
    rows += [{"method": "separability", "finding": None, "metric": k, "value": overall.get(k)} for k in SEPARABILITY_HEADLINES]
    return rows, evaluable


def _macros(per_finding: pl.DataFrame, common: list[str]) -> pl.DataFrame:
    """Each split's macro headline per method: the mean of its per-finding values over `common`
    (NaN when empty), beside separability's overall values."""
    macro = pl.DataFrame({"macro": list(HEADLINES), "metric": list(HEADLINES.values())})
    found = (per_finding.filter(pl.col("finding").is_in(common)).join(macro, on="metric")
             .group_by("split_seed", "method", "macro", maintain_order=True).agg(pl.col("value").mean())
             .rename({"macro": "metric"}))
    keys = per_finding.filter(pl.col("finding").is_not_null()).select("split_seed", "method").unique(maintain_order=True)
    macros = keys.join(macro.select(pl.col("macro").alias("metric")), how="cross")
    macros = macros.join(found, on=["split_seed", "method", "metric"], how="left")
    sep = per_finding.filter(pl.col("finding").is_null()).select("split_seed", "method", "metric", "value")
    return pl.concat([macros.select("split_seed", "method", "metric", "value"), sep])


def rankings_of(per_split: pl.DataFrame) -> list[list[str]]:
    """Per split (in order): the methods by macro AUROC, best first."""
    auroc = per_split.filter((pl.col("metric") == "macro_auroc") & pl.col("value").is_not_null()
                             & pl.col("value").is_not_nan())
    return [g.sort("value", descending=True)["method"].to_list()
            for _, g in auroc.group_by("split_seed", maintain_order=True)]


def stability(store, version: str | None = None, repeats: int = 5, seed: int = 0, where: str | None = None,
              uncertain: str = "mask", blank: str = "mask", min_positives: int | None = None) -> Stability:
    """Re-run the analyses on `repeats` fresh stratified splits; see the module docstring."""
    from embedstore.analyses.metrics import MIN_POSITIVES
    from embedstore.analyses.runs import load_data
    from embedstore.analyses.scoring import Scoring

    if repeats < 2:
        raise InputError(f"--repeats {repeats}: give at least 2 splits to measure a spread")
    data = load_data(store, version, where)
    fitted = store.fitted_ids(data.version)
    if any(len(ids) for ids in fitted.values()):
        raise InputError(f"version {data.version} is fine-tuned: a new split would score it on images it was trained "
                         "on; run stability on its base version")
    texts, M = store.text_vectors(data.version)
    scoring = Scoring(uncertain=uncertain, blank=blank, n_boot=0,
                      min_positives=MIN_POSITIVES if min_positives is None else min_positives)
    rows, evaluable = [], []
    for s in range(seed, seed + repeats):
        found, ev = _one_split(resplit(data, s), texts, M, scoring)
        rows += [{"split_seed": s, **r} for r in found]
        evaluable.append(ev)
    per_finding = pl.DataFrame(rows, schema={"split_seed": pl.Int64, "method": pl.String, "finding": pl.String,
                                             "metric": pl.String, "value": pl.Float64})
    # A macro over a different set of findings on each split would mix the spread of the split with
    # that of the set: average only the findings evaluable on every split.
    common = [f for f in data.findings if all(f in ev for ev in evaluable)]
    per_split = _macros(per_finding, common)
    summary = (per_split.group_by("method", "metric", maintain_order=True)
               .agg(pl.col("value").mean().alias("mean"), pl.col("value").std().alias("sd"),
                    pl.col("value").min().alias("min"), pl.col("value").max().alias("max"),
                    pl.col("value").count().alias("splits"))
               .with_columns(pl.when(pl.col("metric").is_in(list(HEADLINES))).then(pl.lit(len(common)))
                             .alias("findings")))
    return Stability(per_split, summary, rankings_of(per_split), common)
