"""Metrics equal scikit-learn's on the same arrays; masking, intervals and edge cases."""

import numpy as np
import pytest
from sklearn import metrics as skm

from embedstore.analyses import metrics as mt


def _data(n=600, F=4, seed=0, ties=False):
    rng = np.random.default_rng(seed)
    Y = (rng.random((n, F)) < [0.3, 0.1, 0.05, 0.2][:F]).astype(np.float32)
    S = rng.normal(size=(n, F)) + 1.2 * Y
    if ties:
        S = np.round(S, 1)
    Y[rng.random(Y.shape) < 0.05] = -1
    Y[rng.random(Y.shape) < 0.05] = np.nan
    P = (S > 0.6).astype(np.int8)
    return Y, S, P


@pytest.mark.parametrize("ties", [False, True])
def test_weighted_auroc_ap_equal_sklearn_with_sample_weights(ties):
    rng = np.random.default_rng(1)
    y = rng.random(400) < 0.2
    s = rng.normal(size=400) + y
    if ties:
        s = np.round(s, 1)
    W = mt.bootstrap_weights(400, 6, seed=3)
    W = np.vstack([np.ones(400, np.float32), W])
    auc, ap = mt.weighted_auroc_ap(y, s, W)
    for b in range(W.shape[0]):
        assert auc[b] == pytest.approx(skm.roc_auc_score(y, s, sample_weight=W[b]), abs=1e-9)
        assert ap[b] == pytest.approx(skm.average_precision_score(y, s, sample_weight=W[b]), abs=1e-9)


def test_per_finding_metrics_equal_sklearn_on_masked_entries():
    Y, S, P = _data(ties=True)
    names = [f"f{j}" for j in range(Y.shape[1])]
    table = mt.evaluate(Y, S, P, names, n_boot=50)
    for j, f in enumerate(names):
        keep = np.isfinite(Y[:, j]) & (Y[:, j] != -1)  # masked independently of the code under test
        y, s, p = Y[keep, j].astype(int), S[keep, j], P[keep, j]
        assert mt.metric_value(table, "n", f) == keep.sum()
        assert mt.metric_value(table, "support", f) == y.sum()
        assert mt.metric_value(table, "prevalence", f) == pytest.approx(y.mean())
        assert mt.metric_value(table, "pred_rate", f) == pytest.approx(p.mean())
        assert mt.metric_value(table, "bias", f) == pytest.approx(p.mean() / y.mean())
        assert mt.metric_value(table, "precision", f) == pytest.approx(skm.precision_score(y, p, zero_division=0))
        assert mt.metric_value(table, "recall", f) == pytest.approx(skm.recall_score(y, p))
        assert mt.metric_value(table, "f1", f) == pytest.approx(skm.f1_score(y, p))
        assert mt.metric_value(table, "auroc", f) == pytest.approx(skm.roc_auc_score(y, s))
        assert mt.metric_value(table, "ap", f) == pytest.approx(skm.average_precision_score(y, s))


def test_overall_metrics_equal_sklearn_on_complete_rows():
    Y, S, P = _data()
    table = mt.evaluate(Y, S, P, ["a", "b", "c", "d"], n_boot=0)
    rows = np.all(np.isfinite(Y) & (Y != -1), axis=1)
    y, s, p = Y[rows].astype(int), S[rows], P[rows]
    assert mt.metric_value(table, "n_complete") == rows.sum()
    assert mt.metric_value(table, "macro_f1") == pytest.approx(skm.f1_score(y, p, average="macro", zero_division=0))
    assert mt.metric_value(table, "micro_f1") == pytest.approx(skm.f1_score(y, p, average="micro"))
    assert mt.metric_value(table, "exact_match") == pytest.approx(skm.accuracy_score(y, p))
    assert mt.metric_value(table, "hamming_loss") == pytest.approx(skm.hamming_loss(y, p))
    ranked = y.any(axis=1)
    assert mt.metric_value(table, "lrap") == pytest.approx(skm.label_ranking_average_precision_score(y[ranked], s[ranked]))
    assert mt.metric_value(table, "coverage_error") == pytest.approx(skm.coverage_error(y[ranked], s[ranked]))
    assert mt.metric_value(table, "ranking_loss") == pytest.approx(skm.label_ranking_loss(y[ranked], s[ranked]))


def test_masked_entries_do_not_count():
    Y, S, P = _data()
    masked = ~(np.isfinite(Y) & (Y != -1))
    S2, P2 = S.copy(), P.copy()
    S2[masked], P2[masked] = 99.0, 1  # anything at masked entries must not change per-finding figures
    a = mt.evaluate(Y, S, P, list("abcd"), n_boot=20)
    b = mt.evaluate(Y, S2, P2, list("abcd"), n_boot=20)
    per = lambda t: t.filter(t["finding"].is_not_null())
    assert per(a).equals(per(b))


def test_uncertain_policy_negative_counts_uncertain_as_negative():
    Y, S, P = _data()
    t = mt.evaluate(Y, S, P, list("abcd"), uncertain="negative", n_boot=0)
    keep = np.isfinite(Y[:, 0])
    y = (Y[keep, 0] == 1).astype(int)
    assert mt.metric_value(t, "n", "a") == keep.sum()
    assert mt.metric_value(t, "auroc", "a") == pytest.approx(skm.roc_auc_score(y, S[keep, 0]))


def test_intervals_contain_point_and_shrink_with_n():
    widths = []
    for n in (300, 5000):
        Y, S, P = _data(n=n, F=1, seed=2)
        t = mt.evaluate(Y, S, P, ["a"], n_boot=400, seed=0)
        row = t.filter((t["metric"] == "auroc") & (t["finding"] == "a"))
        v, lo, hi = row["value"][0], row["lo"][0], row["hi"][0]
        assert lo <= v <= hi
        for name in ("f1", "ap", "precision", "recall"):
            r = t.filter((t["metric"] == name) & (t["finding"] == "a"))
            assert r["lo"][0] <= r["value"][0] <= r["hi"][0]
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2


def test_bootstrap_is_seeded():
    Y, S, P = _data()
    a = mt.evaluate(Y, S, P, list("abcd"), n_boot=50, seed=5)
    b = mt.evaluate(Y, S, P, list("abcd"), n_boot=50, seed=5)
    assert a.equals(b)


def test_finding_without_positives_gives_nan_not_crash():
    Y, S, P = _data(F=2)
    Y[:, 1] = np.where(np.isfinite(Y[:, 1]), 0, np.nan)
    t = mt.evaluate(Y, S, P, ["a", "b"], n_boot=20)
    assert np.isnan(mt.metric_value(t, "auroc", "b"))
    assert np.isnan(mt.metric_value(t, "ap", "b"))
    assert mt.metric_value(t, "support", "b") == 0
    assert np.isfinite(mt.metric_value(t, "auroc", "a"))
    assert mt.metric_value(t, "macro_auroc") == pytest.approx(mt.metric_value(t, "auroc", "a"))
