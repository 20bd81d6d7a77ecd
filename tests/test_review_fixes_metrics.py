"""Review fix: ECE gets a group-bootstrap interval like every other metric: each replicate is the
ECE of the data the replicate's weights stand for (rows repeated by their counts)."""

from __future__ import annotations

import numpy as np
import pytest

from embedstore.analyses import metrics as mt


def _data():
    rng = np.random.default_rng(21)
    groups = np.repeat(np.arange(80), 2)
    Y = np.repeat(rng.random((80, 2)) < 0.35, 2, axis=0).astype(np.float32)
    prob = np.clip(0.25 + 0.45 * Y + 0.25 * rng.normal(size=Y.shape), 0, 1)
    Y[3, 1] = np.nan  # a masked entry: left out of finding b only
    return Y, prob, groups


def test_each_ece_replicate_is_the_ece_of_the_rows_repeated_by_their_weights():
    Y, prob, groups = _data()
    Y01, known = mt.apply_policy(Y)
    W = mt.bootstrap_weights(groups, 40, seed=3)
    reps = mt.ece_replicates(Y01, known, prob, W)
    for b in (0, 17, 39):
        rows = np.repeat(np.arange(len(Y)), W[b].astype(int))
        for j in range(2):
            keep = rows[known[rows, j]]
            assert reps[b, j] == pytest.approx(mt.expected_calibration_error(Y01[keep, j], prob[keep, j]), rel=1e-5)


def test_ece_and_macro_ece_get_the_percentile_interval_of_their_replicates():
    Y, prob, groups = _data()
    t = mt.evaluate_run(Y, prob, ["a", "b"], {"": prob > 0.5}, groups=groups, prob=prob, n_boot=150, seed=6,
                        min_positives=1).metrics
    Y01, known = mt.apply_policy(Y)
    reps = mt.ece_replicates(Y01, known, prob, mt.bootstrap_weights(groups, 150, seed=6))
    for j, f in enumerate("ab"):
        row = t.filter((t["finding"] == f) & (t["metric"] == "ece"))
        assert row.select("lo", "hi").row(0) == pytest.approx(tuple(np.quantile(reps[:, j], [0.025, 0.975])))
        assert row["lo"][0] < row["value"][0] < row["hi"][0]
    macro = t.filter(t["finding"].is_null() & (t["metric"] == "macro_ece"))
    assert macro.select("lo", "hi").row(0) == pytest.approx(tuple(np.quantile(reps.mean(axis=1), [0.025, 0.975])))
