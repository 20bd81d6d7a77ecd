"""Metrics equal scikit-learn's on the same arrays; masking, intervals and edge cases."""

import numpy as np
import polars as pl
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
    table = mt.evaluate(Y, S, P, ["a", "b", "c", "d"], n_boot=0, min_positives=1)
    rows = np.all(np.isfinite(Y) & (Y != -1), axis=1)
    y, s, p = Y[rows].astype(int), S[rows], P[rows]
    assert mt.metric_value(table, "n_complete") == rows.sum()
    assert mt.metric_value(table, "micro_f1") == pytest.approx(skm.f1_score(y, p, average="micro"))
    assert mt.metric_value(table, "exact_match") == pytest.approx(skm.accuracy_score(y, p))
    assert mt.metric_value(table, "hamming_loss") == pytest.approx(skm.hamming_loss(y, p))
    # LRAP and coverage twice, each labelled: over all rows (scikit-learn's own) and over rows with a positive
    assert mt.metric_value(table, "lrap") == pytest.approx(skm.label_ranking_average_precision_score(y, s))
    assert mt.metric_value(table, "coverage_error") == pytest.approx(skm.coverage_error(y, s))
    assert mt.metric_value(table, "ranking_loss") == pytest.approx(skm.label_ranking_loss(y, s))
    ranked = y.any(axis=1)
    assert mt.metric_value(table, "n_ranked") == ranked.sum()
    assert mt.metric_value(table, "lrap_positive_rows") == pytest.approx(
        skm.label_ranking_average_precision_score(y[ranked], s[ranked]))
    assert mt.metric_value(table, "coverage_error_positive_rows") == pytest.approx(
        skm.coverage_error(y[ranked], s[ranked]))


def test_macro_metrics_equal_sklearn_macro_over_the_evaluable_findings():
    rng = np.random.default_rng(4)
    n = 500
    Y = (rng.random((n, 4)) < [0.3, 0.01, 0.2, 0.1]).astype(np.float32)  # b: about 5 positives
    S = rng.normal(size=(n, 4)) + Y
    P = (S > 0.5).astype(np.int8)
    t = mt.evaluate(Y, S, P, list("abcd"), n_boot=0, min_positives=10)
    ev = [0, 2, 3]
    assert mt.metric_value(t, "n_macro_findings") == 3 and mt.metric_value(t, "n_findings") == 4
    y = Y[:, ev].astype(int)
    assert mt.metric_value(t, "macro_auroc") == pytest.approx(skm.roc_auc_score(y, S[:, ev], average="macro"))
    assert mt.metric_value(t, "macro_ap") == pytest.approx(skm.average_precision_score(y, S[:, ev], average="macro"))
    assert mt.metric_value(t, "macro_f1") == pytest.approx(skm.f1_score(y, P[:, ev], average="macro"))


def test_ranking_rows_weighted_equal_sklearn_sample_weights():
    rng = np.random.default_rng(2)
    y = (rng.random((300, 5)) < 0.25).astype(int)
    s = np.round(rng.normal(size=(300, 5)) + y, 1)  # ties
    w = rng.integers(0, 4, size=300).astype(float)
    rows = mt.ranking_rows(y, s)
    avg = lambda v: float((v * w).sum() / w.sum())
    assert avg(rows["lrap"]) == pytest.approx(skm.label_ranking_average_precision_score(y, s, sample_weight=w))
    assert avg(rows["coverage_error"]) == pytest.approx(skm.coverage_error(y, s, sample_weight=w))
    assert avg(rows["ranking_loss"]) == pytest.approx(skm.label_ranking_loss(y, s, sample_weight=w))
    tiled = mt.ranking_rows(y[:20], s[:20], chunk=3)  # blocks of 3 rows, the last one short, give the same rows
    assert all(np.array_equal(tiled[k], rows[k][:20]) for k in rows)


def test_a_finding_below_min_positive_groups_is_not_evaluable_and_left_out_of_macro():
    rng = np.random.default_rng(5)
    n = 400
    groups = np.repeat(np.arange(n // 4), 4)  # four images per patient
    Y = np.zeros((n, 2), np.float32)
    Y[:, 0] = np.repeat(rng.random(n // 4) < 0.3, 4)
    Y[groups < 6, 1] = 1  # 24 positive images, but only 6 positive patients
    S = rng.normal(size=(n, 2)) + Y
    P = (S > 0.5).astype(np.int8)
    ev = mt.evaluate_run(Y, S, ["a", "b"], {"": P}, groups=groups, n_boot=100, min_positives=10)
    f = ev.findings.filter(ev.findings["finding"] == "b").row(0, named=True)
    assert f["evaluable"] is False and f["positive_groups"] == 6 and f["positives"] == 24
    assert "6 positive groups" in f["reason"]
    t = ev.metrics
    b = t.filter((t["finding"] == "b") & (t["metric"] == "auroc"))
    assert np.isfinite(b["value"][0]) and b["lo"][0] is None and b["hi"][0] is None  # point, no interval
    a = t.filter((t["finding"] == "a") & (t["metric"] == "auroc"))
    assert a["lo"][0] is not None
    macro = t.filter(t["finding"].is_null() & (t["metric"] == "macro_auroc"))
    assert macro["value"][0] == pytest.approx(a["value"][0])  # the macro covers exactly the evaluable set
    assert macro["lo"][0] is not None and macro["hi"][0] is not None
    assert mt.metric_value(t, "n_macro_findings") == 1


def test_group_bootstrap_is_wider_than_image_bootstrap_for_clustered_labels():
    rng = np.random.default_rng(6)
    G = 300
    groups = np.repeat(np.arange(G), 2)  # a frontal and a lateral image share their study's labels
    y = np.repeat(rng.random(G) < 0.3, 2).astype(np.float32)[:, None]
    s = np.repeat(rng.normal(size=G), 2)[:, None] + y + 0.3 * rng.normal(size=(2 * G, 1))
    P = (s > 0.5).astype(np.int8)

    def width(g):
        t = mt.evaluate(y, s, P, ["a"], n_boot=2000, seed=1, groups=g)
        row = t.filter((t["finding"] == "a") & (t["metric"] == "auroc"))
        return row["hi"][0] - row["lo"][0]

    assert width(groups) > 1.2 * width(None)


def test_bootstrap_weights_move_a_group_together():
    groups = np.array(["p1", "p1", "p2", "p3", "p3", "p3"])
    W = mt.bootstrap_weights(groups, 200, seed=0)
    assert (W[:, 0] == W[:, 1]).all() and (W[:, 3] == W[:, 5]).all()
    assert W.sum(axis=1).min() > 0 and not (W[:, 0] == W[:, 2]).all()
    # each replicate draws as many groups as there are: the mean count of a group is 1
    assert W[:, [0, 2, 3]].mean() == pytest.approx(1.0, abs=0.1)


def test_nominal_95_interval_covers_the_truth_90_to_99_percent_of_the_time():
    """Simulate 300 data sets from a known population (binormal scores: the true AUROC is
    Phi(d / sqrt(2))), one bootstrap interval each; count how often it covers the truth. Through
    `evaluate_run` at its defaults, as every stored run (`scoring.score_method`) calls it."""
    from scipy.stats import norm

    reps, n, prev, d = 300, 400, 0.25, 1.0
    rng = np.random.default_rng(11)
    true_auc = norm.cdf(d / np.sqrt(2))
    covered = []
    for r in range(reps):
        y = (rng.random(n) < prev).astype(np.float32)
        s = rng.normal(size=n) + d * y
        t = mt.evaluate_run(y[:, None], s[:, None], ["a"], {"": (s > 0.5)[:, None]}, n_boot=300, seed=r,
                            min_positives=1).metrics
        row = t.filter((t["finding"] == "a") & (t["metric"] == "auroc"))
        covered.append(row["lo"][0] <= true_auc <= row["hi"][0])
    rate = float(np.mean(covered))
    assert 0.90 <= rate <= 0.99, rate


def test_macro_interval_covers_the_true_macro_auroc():
    """As above for the macro AUROC of three findings, through `evaluate` at its defaults."""
    from scipy.stats import norm

    reps, n = 200, 400
    shifts, prev = np.array([0.6, 1.0, 1.4]), np.array([0.3, 0.2, 0.15])
    truth = norm.cdf(shifts / np.sqrt(2)).mean()
    rng = np.random.default_rng(12)
    covered = []
    for r in range(reps):
        Y = (rng.random((n, 3)) < prev).astype(np.float32)
        S = rng.normal(size=(n, 3)) + shifts * Y
        t = mt.evaluate(Y, S, (S > 0.5).astype(np.int8), list("abc"), n_boot=300, seed=r, min_positives=1)
        row = t.filter(t["finding"].is_null() & (t["metric"] == "macro_auroc"))
        covered.append(row["lo"][0] <= truth <= row["hi"][0])
    rate = float(np.mean(covered))
    assert 0.90 <= rate <= 0.99, rate


def test_brier_and_reliability_equal_sklearn():
    from sklearn.calibration import calibration_curve

    rng = np.random.default_rng(8)
    Y = (rng.random((500, 2)) < [0.3, 0.2]).astype(np.float32)
    prob = np.clip(0.2 + 0.5 * Y + 0.2 * rng.normal(size=Y.shape), 0, 1)
    ev = mt.evaluate_run(Y, prob, ["a", "b"], {"": prob > 0.5}, prob=prob, n_boot=0, min_positives=1)
    for j, f in enumerate("ab"):
        y = Y[:, j].astype(int)
        assert mt.metric_value(ev.metrics, "brier", f) == pytest.approx(skm.brier_score_loss(y, prob[:, j]))
        true, pred = calibration_curve(y, prob[:, j], n_bins=10)
        bins = ev.calibration.filter(ev.calibration["finding"] == f)
        assert np.allclose(bins["observed"].to_numpy(), true) and np.allclose(bins["mean_predicted"].to_numpy(), pred)
        ece = (bins["n"].to_numpy() * np.abs(true - pred)).sum() / len(y)
        assert mt.metric_value(ev.metrics, "ece", f) == pytest.approx(ece)
    assert ev.calibration.filter(ev.calibration["finding"].is_null())["n"].sum() == Y.size


def test_blank_negative_counts_missing_labels_as_negative():
    Y, S, P = _data()
    t = mt.evaluate(Y, S, P, list("abcd"), uncertain="negative", blank="negative", n_boot=0, min_positives=1)
    y = (Y[:, 0] == 1).astype(int)  # blank and uncertain both negative: every row counts
    assert mt.metric_value(t, "n", "a") == len(y)
    assert mt.metric_value(t, "auroc", "a") == pytest.approx(skm.roc_auc_score(y, S[:, 0]))
    assert mt.metric_value(t, "n_complete") == len(y)


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


def test_intervals_are_the_2_5_and_97_5_percentiles_of_the_patient_bootstrap_replicates():
    """Each replicate is scikit-learn's metric with the replicate's patient counts as sample
    weights; a per-finding interval is the 2.5th and 97.5th percentile of its replicates, the macro
    interval that of the replicates' mean over the findings, `mean_interval` that of weighted means."""
    rng = np.random.default_rng(9)
    groups = np.repeat(np.arange(80), 2)
    Y = np.repeat(rng.random((80, 2)) < [0.4, 0.3], 2, axis=0).astype(np.float32)
    S = rng.normal(size=Y.shape) + Y
    P = (S > 0.5).astype(np.int8)
    t = mt.evaluate_run(Y, S, ["a", "b"], {"": P}, groups=groups, n_boot=200, seed=3, min_positives=1).metrics
    W = mt.bootstrap_weights(groups, 200, seed=3)
    q = lambda reps: np.quantile(reps, [0.025, 0.975])  # noqa: E731
    row = lambda f, m: t.filter((t["finding"].is_null() if f is None else t["finding"] == f) & (t["metric"] == m))  # noqa: E731
    aurocs = []
    for j, f in enumerate("ab"):
        reps = np.array([skm.roc_auc_score(Y[:, j], S[:, j], sample_weight=w) for w in W])
        aurocs.append(reps)
        assert row(f, "auroc").select("lo", "hi").row(0) == pytest.approx(tuple(q(reps)))
        f1 = [skm.f1_score(Y[:, j], P[:, j], sample_weight=w) for w in W]
        assert row(f, "f1").select("lo", "hi").row(0) == pytest.approx(tuple(q(f1)))
    assert row(None, "macro_auroc").select("lo", "hi").row(0) == pytest.approx(tuple(q(np.mean(aurocs, axis=0))))
    v = rng.random(160)
    iv = mt.mean_interval(v, groups, n_boot=200, seed=3)
    assert (iv.value, iv.lo, iv.hi) == pytest.approx((v.mean(), *q(W @ v / W.sum(axis=1))))


def test_weighted_counts_equal_sklearn_with_sample_weights():
    """The paired comparisons' F1 replicates (`compare`): one row of rates per weight row."""
    rng = np.random.default_rng(10)
    y = rng.random(300) < 0.3
    p = rng.random(300) < 0.4
    W = np.vstack([np.ones(300), mt.bootstrap_weights(300, 5, seed=1)]).astype(np.float32)
    got = mt.weighted_counts(y, p, W)
    for b, w in enumerate(W):
        assert got["f1"][b] == pytest.approx(skm.f1_score(y, p, sample_weight=w))
        assert got["precision"][b] == pytest.approx(skm.precision_score(y, p, sample_weight=w))
        assert got["recall"][b] == pytest.approx(skm.recall_score(y, p, sample_weight=w))
        assert got["prevalence"][b] == pytest.approx(np.average(y, weights=w))
        assert got["pred_rate"][b] == pytest.approx(np.average(p, weights=w))


def test_evaluate_passes_every_setting_and_defaults_to_1000_replicates_seed_0():
    Y, S, P = _data(n=300, F=2)
    base = mt.evaluate(Y, S, P, ["a", "b"], n_boot=100, seed=1)
    lo = lambda t: t.filter((t["finding"] == "a") & (t["metric"] == "auroc"))["lo"][0]  # noqa: E731
    assert lo(mt.evaluate(Y, S, P, ["a", "b"], n_boot=100, seed=2)) != lo(base)  # the seed reaches the bootstrap
    assert lo(mt.evaluate(Y, S, P, ["a", "b"], n_boot=100, seed=1, alpha=0.5)) > lo(base)  # so does alpha
    assert lo(mt.evaluate(Y, S, P, ["a", "b"], n_boot=0)) is None  # and n_boot: no replicate, no interval
    assert mt.evaluate(Y, S, P, ["a", "b"]).equals(mt.evaluate(Y, S, P, ["a", "b"], n_boot=1000, seed=0))
    assert mt.evaluate_run(Y, S, ["a", "b"], {"": P}).metrics.equals(mt.evaluate(Y, S, P, ["a", "b"]))  # its defaults too
    few = mt.evaluate(Y, S, P, ["a", "b"], n_boot=0, min_positives=200)
    assert mt.metric_value(few, "n_macro_findings") == 0 and np.isnan(mt.metric_value(few, "macro_auroc"))


def test_mean_interval_of_one_value_and_of_none():
    one = mt.mean_interval([0.3], ["g"], n_boot=50)
    assert (one.value, one.lo, one.hi) == pytest.approx((0.3, 0.3, 0.3))
    none = mt.mean_interval([], [], n_boot=50)
    assert np.isnan([none.value, none.lo, none.hi]).all()
    v = np.random.default_rng(4).random(10)  # documented defaults: 1000 replicates, seed 0
    assert vars(mt.mean_interval(v, np.arange(10))) == vars(mt.mean_interval(v, np.arange(10), n_boot=1000, seed=0))


def test_expected_calibration_error_by_hand():
    # one item: |observed - predicted| = |1 - 0.8|
    assert mt.expected_calibration_error(np.array([1]), np.array([0.8])) == pytest.approx(0.2)
    # two bins of [0, .5) and [.5, 1]: (.1, .2 | y 0, 1) -> |.5 - .15|; (.7, .9 | y 1, 1) -> |1 - .8|
    y, p = np.array([0, 1, 1, 1]), np.array([0.1, 0.2, 0.7, 0.9])
    assert mt.expected_calibration_error(y, p, bins=2) == pytest.approx((2 * 0.35 + 2 * 0.2) / 4)


def test_metric_value_of_an_absent_metric_is_nan():
    t = mt.evaluate(*_data(n=200, F=1), ["a"], n_boot=0)
    assert np.isnan(mt.metric_value(t, "no_such_metric")) and np.isnan(mt.metric_value(t, "auroc", "zz"))
    assert mt.metric_value(t, "n_findings") == 1.0


def test_rates_with_nothing_predicted_one_positive_or_none_equal_sklearn_zero_division_0():
    """Finding a: nothing predicted; b: a single positive, predicted; c: no positive, nothing
    predicted. scikit-learn's zero_division=0 gives 0 where a rate has no denominator; bias
    (predicted rate over prevalence) has none without positives."""
    Y = np.zeros((30, 3), np.float32)
    Y[:6, 0], Y[0, 1] = 1, 1
    P = np.zeros((30, 3), np.int8)
    P[0, 1] = 1
    t = mt.evaluate(Y, np.random.default_rng(0).normal(size=Y.shape), P, list("abc"), n_boot=0, min_positives=1)
    for j, f in enumerate("abc"):
        y, p = Y[:, j].astype(int), P[:, j]
        assert mt.metric_value(t, "precision", f) == skm.precision_score(y, p, zero_division=0)
        assert mt.metric_value(t, "recall", f) == skm.recall_score(y, p, zero_division=0)
        assert mt.metric_value(t, "f1", f) == skm.f1_score(y, p, zero_division=0)
    assert mt.metric_value(t, "bias", "b") == 1.0 and mt.metric_value(t, "bias", "a") == 0.0
    assert np.isnan(mt.metric_value(t, "bias", "c"))


def test_overall_intervals_are_percentiles_of_weighted_replicates():
    """Exact match, micro F1 and LRAP replicates are scikit-learn's with each replicate's patient
    counts as sample weights, over the complete rows."""
    rng = np.random.default_rng(11)
    groups = np.repeat(np.arange(100), 2)
    Y = (rng.random((200, 3)) < 0.3).astype(np.float32)
    S = rng.normal(size=Y.shape) + Y
    P = (S > 0.5).astype(np.int8)
    t = mt.evaluate_run(Y, S, list("abc"), {"": P}, groups=groups, n_boot=200, seed=4, min_positives=1).metrics
    W = mt.bootstrap_weights(groups, 200, seed=4)
    y = Y.astype(int)
    for name, fn in (("exact_match", lambda w: skm.accuracy_score(y, P, sample_weight=w)),
                     ("micro_f1", lambda w: skm.f1_score(y, P, average="micro", sample_weight=w)),
                     ("lrap", lambda w: skm.label_ranking_average_precision_score(y, S, sample_weight=w))):
        row = t.filter(t["finding"].is_null() & (t["metric"] == name))
        want = np.quantile([fn(w) for w in W], [0.025, 0.975])
        assert row.select("lo", "hi").row(0) == pytest.approx(tuple(want)), name


def test_evaluable_findings_count_known_positive_and_negative_groups_at_the_bar():
    """Exactly `min_positives` groups is enough; a finding short of negative groups is not
    evaluable and says so; masked entries count for neither class."""
    n = 40
    Y = np.zeros((n, 3), np.float32)
    Y[:10, 0] = 1  # 10 positive and 30 negative groups: evaluable at a bar of 10
    Y[:31, 1] = 1  # 9 negative groups: not
    Y[:10, 2] = 1
    Y[10:31, 2] = np.nan  # 9 known negatives (masked rows are not negatives)
    Y = np.c_[Y, (np.arange(n) < 30).astype(np.float32)]  # 30 positive and exactly 10 negative groups: evaluable
    ev = mt.evaluate_run(Y, np.random.default_rng(1).normal(size=Y.shape), list("abcd"), {"": Y > 0.5}, n_boot=0,
                         min_positives=10)
    rows = {r["finding"]: r for r in ev.findings.iter_rows(named=True)}
    assert rows["a"]["evaluable"] and rows["a"]["reason"] is None
    assert rows["d"]["evaluable"] and rows["d"]["reason"] is None
    assert not rows["b"]["evaluable"] and rows["b"]["reason"] == "9 negative groups on the scored split, fewer than 10"
    assert not rows["c"]["evaluable"] and rows["c"]["reason"] == "9 negative groups on the scored split, fewer than 10"
    assert (rows["c"]["positives"], rows["c"]["n"]) == (10, 19)
    assert ev.findings.schema == pl.Schema(mt.FINDING_COLUMNS)
    every = mt.evaluate_run(Y[:, :1], Y[:, :1], ["a"], {"": Y[:, :1] > 0.5}, n_boot=0, min_positives=10)
    assert every.findings.schema == pl.Schema(mt.FINDING_COLUMNS)  # no reason at all: still a text column


def test_calibration_tables_have_the_store_columns_even_when_empty():
    Y = np.array([[1.0], [0.0], [1.0]], np.float32)
    prob = np.array([[0.9], [0.2], [0.6]])
    with_prob = mt.evaluate_run(Y, prob, ["a"], {"": prob > 0.5}, prob=prob, n_boot=0, min_positives=1)
    assert with_prob.calibration.schema == pl.Schema(mt.CALIBRATION_COLUMNS)
    assert "calibration" in with_prob.tables() and {"brier", "ece"} <= set(with_prob.metrics["metric"])
    without = mt.evaluate_run(Y, prob, ["a"], {"": prob > 0.5}, n_boot=0, min_positives=1)
    assert without.calibration.is_empty() and without.calibration.schema == pl.Schema(mt.CALIBRATION_COLUMNS)
    assert "calibration" not in without.tables() and not {"brier", "macro_brier", "macro_ece"} & set(without.metrics["metric"])
    unknown = mt.evaluate_run(np.full((3, 1), np.nan), prob, ["a"], {"": prob > 0.5}, prob=prob, n_boot=0)
    assert unknown.calibration.is_empty() and unknown.calibration.schema == pl.Schema(mt.CALIBRATION_COLUMNS)


def test_label_policies_are_checked_and_uncertain_positive_counts_as_positive():
    from embedstore.errors import InputError

    Y, S, P = _data()
    with pytest.raises(InputError, match="uncertain policy 'maybe' is not one of mask, negative, positive"):
        mt.evaluate(Y, S, P, list("abcd"), uncertain="maybe", n_boot=0)
    with pytest.raises(InputError, match="blank policy 'positive' is not one of mask, negative"):
        mt.evaluate(Y, S, P, list("abcd"), blank="positive", n_boot=0)
    t = mt.evaluate(Y, S, P, list("abcd"), uncertain="positive", n_boot=0, min_positives=1)
    keep = np.isfinite(Y[:, 0])
    y = (Y[keep, 0] != 0).astype(int)  # 1 and -1 both positive
    assert mt.metric_value(t, "support", "a") == y.sum() and mt.metric_value(t, "n", "a") == keep.sum()
    assert mt.metric_value(t, "auroc", "a") == pytest.approx(skm.roc_auc_score(y, S[keep, 0]))


def test_bootstrap_weights_without_replicates_or_rows_are_empty_and_integer_groups_mean_rows():
    assert mt.bootstrap_weights(5, 0).shape == (0, 5)
    assert mt.bootstrap_weights(np.array([], dtype=str), 4).shape == (4, 0)
    W = mt.bootstrap_weights(6, 300, seed=2)  # six rows, each its own group
    assert W.shape == (300, 6) and (W.sum(axis=1) == 6).all() and not (W[:, 0] == W[:, 1]).all()
    assert mt.bootstrap_weights(6, 1, seed=2).sum() == 6  # one replicate is a replicate, not an empty one
    np.testing.assert_array_equal(mt.group_codes(3), [0, 1, 2])
    codes = mt.group_codes(["b", "a", "b", "c"])
    assert codes[0] == codes[2] != codes[1] != codes[3] and set(codes) == {0, 1, 2}


def test_auroc_and_ap_of_a_one_class_finding():
    """All positive: AUROC undefined, AP 1 (scikit-learn's); all negative: both undefined."""
    s = np.array([0.1, 0.4, 0.3])
    auc, ap = mt.weighted_auroc_ap(np.ones(3, bool), s, np.ones((1, 3)))
    assert np.isnan(auc[0]) and ap[0] == pytest.approx(skm.average_precision_score([1, 1, 1], s))
    auc, ap = mt.weighted_auroc_ap(np.zeros(3, bool), s, np.ones((1, 3)))
    assert np.isnan(auc[0]) and np.isnan(ap[0])


def test_ranking_rows_with_no_or_only_positive_labels_equal_sklearn():
    y = np.array([[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 1]])
    s = np.array([[0.1, 0.5, 0.2], [0.3, 0.2, 0.1], [0.2, 0.9, 0.9], [0.5, 0.5, 0.4]])
    rows = mt.ranking_rows(y, s)
    for i in range(len(y)):
        assert rows["lrap"][i] == pytest.approx(skm.label_ranking_average_precision_score(y[i:i + 1], s[i:i + 1]))
        assert rows["ranking_loss"][i] == pytest.approx(skm.label_ranking_loss(y[i:i + 1], s[i:i + 1]))
        assert rows["coverage_error"][i] == pytest.approx(skm.coverage_error(y[i:i + 1], s[i:i + 1]))


def test_reliability_bins_of_probabilities_on_the_bin_edges_equal_sklearn():
    from sklearn.calibration import calibration_curve

    p = np.array([0.0, 0.1, 0.1, 0.2, 0.5, 0.5, 0.9, 1.0, 1.0, 0.35])
    y = np.array([0, 0, 1, 0, 1, 0, 1, 1, 1, 0])
    r = mt.reliability(y, p)
    observed, predicted = calibration_curve(y, p, n_bins=10)
    np.testing.assert_allclose(r["observed"], observed)
    np.testing.assert_allclose(r["mean_predicted"], predicted)
    assert r["n"].sum() == len(p) and (np.diff(r["bin"]) > 0).all()
    np.testing.assert_allclose(r["upper"] - r["lower"], 0.1)


def test_overall_metrics_without_complete_rows_or_with_one_finding():
    Y, S, P = _data(n=100, F=2)
    Y[::2, 0], Y[1::2, 1] = np.nan, np.nan  # no row has both labels
    t = mt.evaluate(Y, S, P, ["a", "b"], n_boot=0, min_positives=1)
    assert mt.metric_value(t, "n_complete") == 0 and np.isnan(mt.metric_value(t, "micro_f1"))
    one = mt.evaluate(*_data(n=100, F=1), ["a"], n_boot=0, min_positives=1)
    assert np.isfinite(mt.metric_value(one, "micro_f1")) and np.isnan(mt.metric_value(one, "lrap"))
    quiet = mt.evaluate(np.zeros((10, 2)), np.zeros((10, 2)), np.zeros((10, 2), np.int8), ["a", "b"], n_boot=20,
                        min_positives=1)
    assert mt.metric_value(quiet, "micro_f1") == 0.0  # nothing to find, nothing found: zero_division=0
    micro = quiet.filter(quiet["metric"] == "micro_f1")
    assert micro.select("lo", "hi").row(0) == (0.0, 0.0)  # and so in every replicate


def test_brier_intervals_are_percentiles_of_weighted_replicates():
    rng = np.random.default_rng(12)
    groups = np.repeat(np.arange(60), 2)
    Y = np.repeat(rng.random((60, 2)) < 0.4, 2, axis=0).astype(np.float32)
    prob = np.clip(0.3 + 0.4 * Y + 0.2 * rng.normal(size=Y.shape), 0, 1)
    t = mt.evaluate_run(Y, prob, ["a", "b"], {"": prob > 0.5}, groups=groups, prob=prob, n_boot=150, seed=6,
                        min_positives=1).metrics
    W = mt.bootstrap_weights(groups, 150, seed=6)
    reps = np.array([[skm.brier_score_loss(Y[:, j], prob[:, j], sample_weight=w) for w in W] for j in range(2)])
    for j, f in enumerate("ab"):
        row = t.filter((t["finding"] == f) & (t["metric"] == "brier"))
        assert row.select("lo", "hi").row(0) == pytest.approx(tuple(np.quantile(reps[j], [0.025, 0.975])), rel=1e-5)
    macro = t.filter(t["finding"].is_null() & (t["metric"] == "macro_brier"))
    assert macro.select("lo", "hi").row(0) == pytest.approx(tuple(np.quantile(reps.mean(axis=0), [0.025, 0.975])), rel=1e-5)


def test_edges_of_the_bootstrap_and_of_one_positive_or_negative():
    """A single positive (or negative) still ranks; two replicates still make an interval;
    a default seed is seed 0; an interval that cannot be made is NaN, not None."""
    auc, ap = mt.weighted_auroc_ap(np.array([1, 0, 0], bool), np.array([0.9, 0.1, 0.5]), np.ones((1, 3)))
    assert (auc[0], ap[0]) == (1.0, 1.0)
    auc, ap = mt.weighted_auroc_ap(np.array([1, 1, 0], bool), np.array([0.9, 0.1, 0.5]), np.ones((1, 3)))
    assert auc[0] == 0.5 and ap[0] == pytest.approx(skm.average_precision_score([1, 1, 0], [0.9, 0.1, 0.5]))
    g = np.repeat(np.arange(5), 2)
    np.testing.assert_array_equal(mt.bootstrap_weights(g, 10), mt.bootstrap_weights(g, 10, seed=0))
    Y, S, P = _data(n=200, F=2)
    two = mt.evaluate(Y, S, P, ["a", "b"], n_boot=2, min_positives=1)
    row = two.filter((two["finding"] == "a") & (two["metric"] == "auroc"))
    assert row["lo"][0] is not None and row["lo"][0] <= row["hi"][0]
    assert np.isfinite(mt.metric_value(two, "lrap"))  # two findings are enough to rank
    one = mt.mean_interval([1.0, 2.0], ["p", "q"], n_boot=1)
    assert one.value == 1.5 and np.isnan(one.lo) and np.isnan(one.hi)


def test_a_finding_that_is_not_evaluable_has_no_interval_for_any_metric():
    rng = np.random.default_rng(13)
    Y = (rng.random((300, 2)) < [0.3, 0.01]).astype(np.float32)
    prob = np.clip(0.3 + 0.3 * Y + 0.1 * rng.normal(size=Y.shape), 0, 1)
    ev = mt.evaluate_run(Y, prob, ["a", "b"], {"": prob > 0.5, "@default": prob > 0.4}, prob=prob, n_boot=50)
    rows = ev.metrics.filter(pl.col("finding") == "b")
    assert rows["lo"].null_count() == rows.height and rows["hi"].null_count() == rows.height
    a = ev.metrics.filter((pl.col("finding") == "a") & pl.col("metric").is_in(["auroc", "f1", "f1@default", "brier"]))
    assert a["lo"].null_count() == 0


def test_a_finding_without_known_labels_has_no_brier_or_ece():
    Y = np.array([[1, np.nan], [0, np.nan], [1, np.nan]], np.float32)
    prob = np.array([[0.9, 0.5], [0.2, 0.5], [0.6, 0.5]])
    ev = mt.evaluate_run(Y, prob, ["a", "b"], {"": prob > 0.5}, prob=prob, n_boot=0, min_positives=1)
    assert np.isnan(mt.metric_value(ev.metrics, "brier", "b")) and np.isnan(mt.metric_value(ev.metrics, "ece", "b"))
    assert mt.metric_value(ev.metrics, "brier", "a") == pytest.approx((0.01 + 0.04 + 0.16) / 3)


def test_rows_with_a_positive_none_left_have_no_positive_row_figures():
    Y = np.zeros((20, 2), np.float32)
    S = np.random.default_rng(0).normal(size=Y.shape)
    t = mt.evaluate(Y, S, np.zeros_like(Y, np.int8), ["a", "b"], n_boot=30, min_positives=1)
    assert mt.metric_value(t, "n_ranked") == 0
    row = t.filter(t["finding"].is_null() & (t["metric"] == "lrap_positive_rows"))
    assert np.isnan(row["value"][0]) and row["lo"][0] is None


def test_auroc_ap_and_macro_auroc_equal_sklearn_on_the_known_labels():
    """auroc_ap is scikit-learn's AUROC and AP of one score vector (ties included); macro_auroc
    (the fine-tune loop's early-stopping score) averages the AUROC of the findings with both
    classes among their known labels (1 / 0; -1 and NaN left out), None for the others."""
    rng = np.random.default_rng(11)
    n = 80
    S = np.round(rng.normal(size=(n, 4)), 1)  # rounded: ties
    Y = (rng.random((n, 4)) < 0.3).astype(np.float64)
    Y[:, 0] = (S[:, 0] + rng.normal(scale=1.0, size=n) > 0.5)
    Y[rng.random((n, 4)) < 0.15] = -1
    Y[rng.random((n, 4)) < 0.1] = np.nan
    Y[:, 2] = np.where(np.isnan(Y[:, 2]), np.nan, 0.0)  # one class only
    Y[:, 3] = np.where(np.isfinite(Y[:, 3]), Y[:, 3], -1)
    for j in (0, 1):
        k = (Y[:, j] == 0) | (Y[:, j] == 1)
        auc, ap = mt.auroc_ap(Y[k, j], S[k, j])
        assert auc == pytest.approx(skm.roc_auc_score(Y[k, j], S[k, j]))
        assert ap == pytest.approx(skm.average_precision_score(Y[k, j], S[k, j]))
        assert auc != pytest.approx(ap)
    mean, per = mt.macro_auroc(S, Y)
    want = []
    for j in range(4):
        k = (Y[:, j] == 0) | (Y[:, j] == 1)
        want.append(skm.roc_auc_score(Y[k, j], S[k, j]) if 0 < Y[k, j].sum() < k.sum() else None)
    assert per[2] is None and None not in (per[0], per[1], per[3])
    assert per == [pytest.approx(w) if w is not None else None for w in want]
    assert mean == pytest.approx(np.mean([w for w in want if w is not None]))
    one_positive = np.zeros((n, 1))
    one_positive[0] = 1
    assert mt.macro_auroc(S[:, :1], one_positive)[1][0] == pytest.approx(skm.roc_auc_score(one_positive[:, 0], S[:, 0]))
    nan_mean, none = mt.macro_auroc(S[:, 2:3], Y[:, 2:3])
    assert np.isnan(nan_mean) and none == [None]
    assert mt.macro_auroc(S[:, :2], np.ones((n, 2)))[1] == [None, None]  # positives only: one class too


def test_point_metrics_is_a_metrics_table_of_floats_without_intervals():
    rows = ((f, m, v) for f, m, v in [(None, "n", 3), ("A", "auroc", 0.75)])
    table = mt.point_metrics(rows)
    assert dict(table.schema) == mt.METRIC_COLUMNS
    assert table.to_dicts() == [{"finding": None, "metric": "n", "value": 3.0, "lo": None, "hi": None},
                                {"finding": "A", "metric": "auroc", "value": 0.75, "lo": None, "hi": None}]
    assert mt.point_metrics([]).is_empty() and dict(mt.point_metrics([]).schema) == mt.METRIC_COLUMNS


@pytest.mark.parametrize("bins", [10, 4])
def test_ece_replicates_are_the_ece_of_each_resample_per_finding(bins):
    """Each weight row of W (integer counts here) gives, per finding, the ECE of the known rows
    repeated that many times, as `expected_calibration_error` (reliability bins) computes it;
    masked entries are left out whatever their probability; a probability on a bin edge falls in the
    bin below it (bins closed on the right), as in `reliability`."""
    rng = np.random.default_rng(12)
    n, F = 90, 3
    prob = rng.random((n, F))
    prob[:6, 0] = [0.0, 0.25, 0.5, 0.75, 1.0, 0.1]  # edges
    Y01 = (rng.random((n, F)) < prob).astype(np.int64)  # calibrated: bins err both ways (merging two would show)
    known = rng.random((n, F)) > 0.2
    known[:6, 0] = True
    prob = np.where(known, prob, np.nan)
    W = np.vstack([np.ones(n), rng.integers(0, 3, n), rng.poisson(1.0, n)]).astype(np.float32)
    got = mt.ece_replicates(Y01, known, prob, W, bins=bins)
    assert got.shape == (3, F)
    for b in range(3):
        for f in range(F):
            k = known[:, f]
            w = W[b, k].astype(int)
            want = mt.expected_calibration_error(np.repeat(Y01[k, f], w), np.repeat(prob[k, f], w), bins=bins)
            assert got[b, f] == pytest.approx(want, rel=1e-5, abs=1e-7), (b, f)


def test_brier_intervals_leave_masked_labels_out_of_every_replicate():
    """As above with uncertain (-1) and blank (NaN) labels, masked by default: each replicate's
    Brier score is over the known rows only (their weights), not NaN and not counting a masked
    row as 0."""
    rng = np.random.default_rng(13)
    groups = np.repeat(np.arange(60), 2)
    Y = np.repeat(rng.random((60, 2)) < 0.4, 2, axis=0).astype(np.float32)
    prob = np.clip(0.3 + 0.4 * Y + 0.2 * rng.normal(size=Y.shape), 0, 1)
    Y[rng.random(Y.shape) < 0.1] = -1
    Y[rng.random(Y.shape) < 0.1] = np.nan
    t = mt.evaluate_run(Y, prob, ["a", "b"], {"": prob > 0.5}, groups=groups, prob=prob, n_boot=150, seed=6,
                        min_positives=1).metrics
    W = mt.bootstrap_weights(groups, 150, seed=6)
    for j, f in enumerate("ab"):
        k = (Y[:, j] == 0) | (Y[:, j] == 1)
        reps = [skm.brier_score_loss(Y[k, j], prob[k, j], sample_weight=w[k]) for w in W]
        row = t.filter((t["finding"] == f) & (t["metric"] == "brier"))
        assert row.select("lo", "hi").row(0) == pytest.approx(tuple(np.quantile(reps, [0.025, 0.975])), rel=1e-5)


def test_ece_intervals_are_percentiles_of_the_resampled_ece():
    """A finding's ECE interval: the 2.5 and 97.5 percentiles of the ECE of each bootstrap
    resample (integer weights: the rows repeated), as `expected_calibration_error` computes it."""
    rng = np.random.default_rng(14)
    groups = np.repeat(np.arange(60), 2)
    Y = np.repeat(rng.random((60, 2)) < 0.4, 2, axis=0).astype(np.float32)
    prob = np.clip(0.3 + 0.4 * Y + 0.2 * rng.normal(size=Y.shape), 0, 1)
    t = mt.evaluate_run(Y, prob, ["a", "b"], {"": prob > 0.5}, groups=groups, prob=prob, n_boot=100, seed=3,
                        min_positives=1).metrics
    W = mt.bootstrap_weights(groups, 100, seed=3).astype(int)
    for j, f in enumerate("ab"):
        reps = [mt.expected_calibration_error(np.repeat(Y[:, j], w), np.repeat(prob[:, j], w)) for w in W]
        row = t.filter((t["finding"] == f) & (t["metric"] == "ece"))
        assert row.select("lo", "hi").row(0) == pytest.approx(tuple(np.quantile(reps, [0.025, 0.975])), rel=1e-5)


def test_macro_f1_has_an_interval_from_the_findings_f1_replicates():
    """macro_f1's interval: percentiles of the per-replicate mean of the evaluable findings' F1
    replicates (as macro_brier's above), not a point without an interval."""
    rng = np.random.default_rng(15)
    groups = np.repeat(np.arange(60), 2)
    Y = np.repeat(rng.random((60, 2)) < 0.4, 2, axis=0).astype(np.float32)
    S = 0.3 + 0.4 * Y + 0.3 * rng.normal(size=Y.shape)
    P = (S > 0.5).astype(np.int8)
    t = mt.evaluate_run(Y, S, ["a", "b"], {"": P}, groups=groups, n_boot=100, seed=4, min_positives=1).metrics
    W = mt.bootstrap_weights(groups, 100, seed=4)
    reps = np.array([[skm.f1_score(Y[:, j], P[:, j], sample_weight=w, zero_division=0) for w in W] for j in range(2)])
    macro = t.filter(t["finding"].is_null() & (t["metric"] == "macro_f1"))
    assert macro.select("lo", "hi").row(0) == pytest.approx(tuple(np.quantile(reps.mean(axis=0), [0.025, 0.975])), rel=1e-5)
