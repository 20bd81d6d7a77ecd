"""`stability`: the analyses re-run on fresh stratified splits, in memory, summarised honestly."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

import synthetic_vectors as synthetic
from store_helpers import open_store
from embedstore.analyses.stability import resplit
from embedstore.store import Storage


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    st = open_store(tmp_path_factory.mktemp("stab"))
    synthetic.to_store(synthetic.make(n=900, n_findings=4, d=24, seed=3, signal=1.2), st)
    return st


def test_each_split_is_a_new_grouped_stratified_split(store):
    from embedstore.analyses.runs import load_data

    data = load_data(Storage(store.path))
    a, b = resplit(data, 0), resplit(data, 1)
    assert not np.array_equal(a.split, b.split)
    assert np.array_equal(a.split, resplit(data, 0).split)  # seeded
    for d in (a, b):
        shares = {s: float(np.mean(d.split == s)) for s in ("train", "val", "test")}
        assert shares == pytest.approx({"train": 0.7, "val": 0.1, "test": 0.2}, abs=0.02)
        for g in np.unique(d.groups):  # no group spans two splits
            assert len(set(d.split[d.groups == g])) == 1


def test_summary_is_the_spread_of_the_per_split_values_and_stores_nothing(store):
    low = Storage(store.path)
    before = low.image_groups()
    runs_before = low.runs().height
    result = store.stability(repeats=3, seed=5)
    assert sorted(result.per_split["split_seed"].unique().to_list()) == [5, 6, 7]
    probe = result.per_split.filter((pl.col("method") == "probe") & (pl.col("metric") == "macro_auroc"))
    row = result.summary.filter((pl.col("method") == "probe") & (pl.col("metric") == "macro_auroc")).row(0, named=True)
    values = probe["value"].to_numpy()
    assert row["mean"] == pytest.approx(values.mean()) and row["sd"] == pytest.approx(values.std(ddof=1))
    assert (row["min"], row["max"], row["splits"]) == (values.min(), values.max(), 3)
    assert row["sd"] > 0  # the splits really differ
    # the probe beats every zero-shot rule on this data on every split, so the top of the ranking holds
    assert all(r[0] == "probe" for r in result.rankings) and len(result.rankings) == 3
    assert low.image_groups().equals(before) and low.runs().height == runs_before


def test_one_split_is_refused(store):
    from embedstore.errors import InputError

    with pytest.raises(InputError, match="at least 2"):
        store.stability(repeats=1)


def _per_split(values: dict[int, dict[str, float]]) -> pl.DataFrame:
    rows = [{"split_seed": s, "method": m, "metric": "macro_auroc", "value": v}
            for s, by_method in values.items() for m, v in by_method.items()]
    return pl.DataFrame(rows, schema={"split_seed": pl.Int64, "method": pl.String, "metric": pl.String,
                                      "value": pl.Float64})


def test_ranking_is_read_per_split_and_holds_only_when_no_split_reorders():
    from embedstore.analyses.stability import Stability, rankings_of

    steady = rankings_of(_per_split({0: {"a": 0.6, "b": 0.8, "c": 0.7}, 1: {"a": 0.55, "b": 0.9, "c": 0.65}}))
    assert steady == [["b", "c", "a"], ["b", "c", "a"]]
    assert Stability(pl.DataFrame(), pl.DataFrame(), steady).ranking_holds
    flipped = rankings_of(_per_split({0: {"a": 0.6, "b": 0.8}, 1: {"a": 0.7, "b": 0.8}, 2: {"a": 0.9, "b": 0.8}}))
    assert flipped[2] == ["a", "b"]
    assert not Stability(pl.DataFrame(), pl.DataFrame(), flipped).ranking_holds


def test_every_split_averages_the_findings_evaluable_on_all_splits(store):
    """min_positives is set so that one finding is evaluable on some splits only: each split's
    macro must average the same (common) findings, read here from a run of the probe on that split.
    (Splits are stratified on the masked labels, so counting uncertain labels as positive is what
    makes the positive counts differ between splits.)"""
    from embedstore.analyses.metrics import apply_policy
    from embedstore.analyses.probe import C_GRID, probe_tables
    from embedstore.analyses.runs import load_data
    from embedstore.analyses.scoring import Scoring

    data = load_data(Storage(store.path))
    seeds = (5, 6, 7)
    splits = [resplit(data, s) for s in seeds]
    Y01, known = apply_policy(data.Y, uncertain="positive")
    positives = np.array([[len(set(d.groups[(d.split == "test") & (Y01[:, j] == 1) & known[:, j]]))
                           for j in range(Y01.shape[1])] for d in splits])  # [split, finding] positive groups
    varies = [j for j in range(positives.shape[1]) if positives[:, j].min() < positives[:, j].max()]
    j = min(varies, key=lambda k: positives[:, k].max())  # the rarest: the others stay evaluable
    bar = int(positives[:, j].max())  # evaluable on the split(s) with the most positives only
    common = [f for k, f in enumerate(data.findings) if (positives[:, k] >= bar).all()]
    assert data.findings[j] not in common and common, (bar, positives)
    result = store.stability(repeats=3, seed=5, min_positives=bar, uncertain="positive")
    assert result.findings == common
    for s, d in zip(seeds, splits):
        per = probe_tables(d, "logreg", C_GRID, Scoring(uncertain="positive", n_boot=0, min_positives=bar))["metrics"]
        auroc = per.filter(pl.col("finding").is_in(common) & (pl.col("metric") == "auroc"))["value"].mean()
        got = result.per_split.filter((pl.col("split_seed") == s) & (pl.col("method") == "probe")
                                      & (pl.col("metric") == "macro_auroc"))["value"].item()
        assert got == pytest.approx(auroc)
    macros = result.summary.filter(pl.col("metric").str.starts_with("macro"))
    assert (macros["findings"] == len(common)).all()
