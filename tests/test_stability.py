"""`stability`: the analyses re-run on fresh stratified splits, in memory, summarised honestly."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

import synthetic_vectors as synthetic
from store_helpers import open_store
from embedstore.analyses.stability import resplit


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    st = open_store(tmp_path_factory.mktemp("stab"))
    synthetic.to_store(synthetic.make(n=900, n_findings=4, d=24, seed=3, signal=1.2), st)
    return st


def test_each_split_is_a_new_grouped_stratified_split(store):
    from embedstore.analyses.runs import load_data

    data = load_data(store)
    a, b = resplit(data, 0), resplit(data, 1)
    assert not np.array_equal(a.split, b.split)
    assert np.array_equal(a.split, resplit(data, 0).split)  # seeded
    for d in (a, b):
        shares = {s: float(np.mean(d.split == s)) for s in ("train", "val", "test")}
        assert shares == pytest.approx({"train": 0.7, "val": 0.1, "test": 0.2}, abs=0.02)
        for g in np.unique(d.groups):  # no group spans two splits
            assert len(set(d.split[d.groups == g])) == 1


def test_summary_is_the_spread_of_the_per_split_values_and_stores_nothing(store):
    before = store.image_groups()
    runs_before = store.runs().height
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
    assert result.ranking_holds == all(r == result.rankings[0] for r in result.rankings)
    assert store.image_groups().equals(before) and store.runs().height == runs_before


def test_one_split_is_refused(store):
    from embedstore.errors import InputError

    with pytest.raises(InputError, match="at least 2"):
        store.stability(repeats=1)
