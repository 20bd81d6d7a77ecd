"""Probes: equal to scikit-learn's LogisticRegression, beat zero-shot, masked labels left out."""

import numpy as np
import polars as pl
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score

from embedstore.analyses import metrics as mt
from embedstore.analyses import probe as pb
import synthetic_vectors as synthetic
from embedstore.analyses import zeroshot as zs


@pytest.fixture(scope="module")
def syn():
    return synthetic.make(n=3000, n_findings=6, d=48, seed=2)


def _splits(syn):
    Y01, known = mt.apply_policy(syn.Y)
    return Y01, known, syn.split == "train", syn.split == "val", syn.split == "test"


@pytest.mark.parametrize("C", [0.0001, 0.01, 1.0, 100.0])
def test_fit_logreg_equals_sklearn_balanced_logistic_regression_at_its_defaults(syn, C):
    Y01, known, tr, _, _ = _splits(syn)
    X = syn.X[tr]
    theta = pb.fit_logreg(X, Y01[tr], known[tr], C)  # the probe's own tolerance, not a tighter one
    for j in range(4):
        m = known[tr, j]
        ref = LogisticRegression(C=C, class_weight="balanced", tol=1e-10, max_iter=20000).fit(X[m], Y01[tr][m, j])
        mine = 1 / (1 + np.exp(-(syn.X @ theta[j, :-1] + theta[j, -1])))
        assert np.abs(mine - ref.predict_proba(syn.X)[:, 1]).max() < 1e-3


def test_masked_labels_get_no_weight_and_balanced_weights_match_sklearn(syn):
    Y01, known, tr, _, _ = _splits(syn)
    W = pb.balanced_weights(Y01[tr], known[tr])
    assert (W[~known[tr]] == 0).all()
    from sklearn.utils.class_weight import compute_sample_weight

    m = known[tr, 0]
    assert np.allclose(W[m, 0], compute_sample_weight("balanced", Y01[tr][m, 0]))


def test_c_is_chosen_per_finding_by_val_ap_and_weights_apply_to_stored_vectors(syn):
    Y01, known, tr, va, _ = _splits(syn)
    fit = pb.fit_probe(syn.X[tr], Y01[tr], known[tr], syn.X[va], Y01[va], known[va], syn.findings)
    S = fit.predict_proba(syn.X[va])
    grid = pb.C_GRID
    mean, std = syn.X[tr].mean(axis=0), syn.X[tr].std(axis=0)
    for j in range(len(syn.findings)):
        m = known[va, j]
        assert fit.val_ap[j] == pytest.approx(average_precision_score(Y01[va][m, j], S[m, j]))
        # refit this finding alone at every C the path visited: none beats the chosen one on val
        chosen = grid.index(fit.C[j])
        for C in grid[:chosen + pb.PATIENCE + 1]:
            th = pb.fit_logreg((syn.X[tr] - mean) / std, Y01[tr][:, [j]], known[tr][:, [j]], C)[0]
            coef = th[:-1] / std
            s = syn.X[va][m] @ coef + th[-1] - coef @ mean
            assert average_precision_score(Y01[va][m, j], s) <= fit.val_ap[j] + 1e-6
    assert len(set(fit.C.tolist())) > 1  # a choice per finding, not one C for all
    logits = syn.X[va] @ fit.coef.T + fit.intercept  # the stored weights act on unit vectors directly
    assert np.allclose(1 / (1 + np.exp(-logits)), S, atol=1e-8)


def test_the_choice_and_its_edge_are_reported(syn):
    Y01, known, tr, va, _ = _splits(syn)
    fit = pb.fit_probe(syn.X[tr], Y01[tr], known[tr], syn.X[va], Y01[va], known[va], syn.findings)
    assert fit.classifier == "logreg" and np.isnan(fit.param)  # a logistic probe's C is per finding, not one param
    rows = {(r["finding"], r["metric"]): r["value"] for r in fit.choice_rows(pb.C_GRID)}
    for j, f in enumerate(syn.findings):
        assert rows[(f, "C")] == fit.C[j]
        assert rows[(f, "C_at_edge")] == float(fit.C[j] in (1e-4, 1e2))
    assert rows[(None, "n_C_at_edge")] == sum(c in (1e-4, 1e2) for c in fit.C)


def test_probe_beats_zero_shot_macro_auroc(syn):
    Y01, known, tr, va, te = _splits(syn)
    fit = pb.fit_probe(syn.X[tr], Y01[tr], known[tr], syn.X[va], Y01[va], known[va], syn.findings)
    Sp = fit.predict_proba(syn.X[te])
    probe_t = mt.evaluate(syn.Y[te], Sp, Sp >= 0.5, syn.findings, n_boot=0)
    pv = zs.prompt_vectors(syn.texts, syn.M, syn.findings)
    best_zs = max(
        mt.metric_value(mt.evaluate(syn.Y[te], S, zs.default_predictions(S, r), syn.findings, n_boot=0), "macro_auroc")
        for r in zs.RULES for S in [zs.scores(syn.X[te], pv, r, syn.logit_scale)]
    )
    assert mt.metric_value(probe_t, "macro_auroc") > best_zs


def test_knn_probe_scores_are_neighbour_label_fractions(syn):
    Y01, known, tr, va, te = _splits(syn)
    fit = pb.fit_probe(syn.X[tr], Y01[tr], known[tr], syn.X[va], Y01[va], known[va], syn.findings, "knn", grid=(7,))
    S = fit.predict_proba(syn.X[te][:5])
    sims = syn.X[te][:5] @ syn.X[tr].T
    for i in range(5):
        nn = np.argsort(-sims[i])[:7]
        lab = np.where(known[tr][nn, 0], Y01[tr][nn, 0], np.nan)
        assert S[i, 0] == pytest.approx(np.nanmean(lab))


def test_cooccurrence_counts_single_finding_images():
    Y = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]], dtype=float)
    known = np.ones_like(Y, dtype=bool)
    P = np.array([[1, 1, 0], [0, 1, 0], [1, 1, 1], [1, 1, 1], [1, 1, 1]], dtype=np.int8)
    co = pb.cooccurrence(Y.astype(np.int8), known, P, ["a", "b", "c"])
    get = lambda a, b: co.filter((co["predicted"] == a) & (co["present"] == b)).row(0, named=True)
    assert get("b", "a")["rate"] == 1.0 and get("b", "a")["n"] == 2  # rows 0, 1 only have a
    assert get("a", "a")["rate"] == 0.5
    assert get("c", "b")["rate"] == 1.0 and get("c", "b")["n"] == 1
    assert np.isnan(get("a", "c")["rate"]) and get("a", "c")["n"] == 0


def test_a_finding_with_one_class_in_train_gets_that_class_as_its_probability(syn):
    """No logistic fit without both classes: the probe predicts the one class it saw (0 or 1),
    has no C and no weights for it, and the other findings are fitted as usual."""
    Y01, known, tr, va, _ = _splits(syn)
    Ytr = Y01[tr].copy()
    Ytr[:, 0], Ytr[:, 1] = 0, 1
    fit = pb.fit_probe(syn.X[tr], Ytr, known[tr], syn.X[va], Y01[va], known[va], syn.findings)
    P = fit.predict_proba(syn.X[va])
    assert (P[:, 0] == 0).all() and (P[:, 1] == 1).all()
    assert np.isnan(fit.C[:2]).all() and np.isnan(fit.coef[:2]).all() and np.isfinite(fit.C[2:]).all()
    assert 0 < P[:, 2].min() < P[:, 2].max() < 1
    rows = {(r["finding"], r["metric"]): r["value"] for r in fit.choice_rows(pb.C_GRID)}
    assert rows[(syn.findings[0], "C_at_edge")] is None and rows[(syn.findings[2], "C_at_edge")] in (0.0, 1.0)
    empty = known[tr].copy()
    empty[:, 3] = False  # no known train label at all: probability 0
    assert (pb.fit_probe(syn.X[tr], Y01[tr], empty, syn.X[va], Y01[va], known[va], syn.findings)
            .predict_proba(syn.X[va][:5])[:, 3] == 0).all()


def test_a_finding_without_val_positives_takes_the_default_c(syn):
    """Its val AP is undefined, so no C can be chosen by it: scikit-learn's default C = 1."""
    Y01, known, tr, va, _ = _splits(syn)
    Yva = Y01[va].copy()
    Yva[:, 2] = 0
    fit = pb.fit_probe(syn.X[tr], Y01[tr], known[tr], syn.X[va], Yva, known[va], syn.findings)
    assert fit.C[2] == pb.FALLBACK_C == 1.0 and np.isnan(fit.val_ap[2]) and np.isfinite(fit.coef[2]).all()
    assert np.isfinite(fit.C).all() and np.isfinite(np.delete(fit.val_ap, 2)).all()


def test_a_constant_feature_gets_no_weight_and_the_weights_stay_finite(syn):
    """Standardising divides by each feature's train spread; a feature with none is left as is
    (its weight is 0, not NaN)."""
    Y01, known, tr, va, _ = _splits(syn)
    X = np.hstack([syn.X, np.full((len(syn.X), 1), 0.25, np.float32)])
    fit = pb.fit_probe(X[tr], Y01[tr], known[tr], X[va], Y01[va], known[va], syn.findings, grid=(0.01, 1.0))
    assert np.isfinite(fit.coef).all() and np.abs(fit.coef[:, -1]).max() < 1e-6
    ref = pb.fit_probe(syn.X[tr], Y01[tr], known[tr], syn.X[va], Y01[va], known[va], syn.findings, grid=(0.01, 1.0))
    np.testing.assert_allclose(fit.predict_proba(X[va]), ref.predict_proba(syn.X[va]), atol=1e-4)


def test_knn_probe_chooses_k_by_val_macro_ap(syn):
    """k from the grid with the best macro AP on val (scikit-learn's AP of the neighbour
    fractions, brute-force neighbours here); without val positives, the middle of the grid."""
    Y01, known, tr, va, _ = _splits(syn)
    grid = (1, 9, 41)
    fit = pb.fit_probe(syn.X[tr], Y01[tr], known[tr], syn.X[va], Y01[va], known[va], syn.findings, "knn", grid=grid)
    order = np.argsort(-(syn.X[va] @ syn.X[tr].T), axis=1)
    lab = np.where(known[tr], Y01[tr], np.nan)
    for k in grid:
        S = np.nan_to_num(np.nanmean(lab[order[:, :k]], axis=1))
        aps = [average_precision_score(Y01[va][known[va, j], j], S[known[va, j], j]) for j in range(len(syn.findings))]
        assert fit.val_macro_ap[k] == pytest.approx(np.mean(aps))
    assert fit.param == max(grid, key=lambda k: fit.val_macro_ap[k]) and fit.findings == syn.findings
    assert fit.weights_table().is_empty() and fit.choice_rows(grid) == [{"finding": None, "metric": "param", "value": fit.param}]
    blind = pb.fit_probe(syn.X[tr], Y01[tr], known[tr], syn.X[va], np.zeros_like(Y01[va]), known[va], syn.findings,
                         "knn", grid=(1, 3, 9, 27, 81))
    assert blind.param == 9 and all(np.isnan(v) for v in blind.val_macro_ap.values())  # the middle of the grid
    # the best k need not be the largest: val images that are copies of train images are best with k = 1
    Xtr, Ytr, ktr = syn.X[tr][:300], Y01[tr][:300], known[tr][:300]
    copies = pb.fit_probe(Xtr, Ytr, ktr, Xtr, Ytr, ktr, syn.findings, "knn", grid=(1, 9, 41))
    assert copies.val_macro_ap[1] == 1.0 > copies.val_macro_ap[41] and copies.param == 1


def test_bad_classifier_and_empty_train_split_are_input_errors(syn):
    from embedstore.errors import InputError

    Y01, known, tr, va, _ = _splits(syn)
    with pytest.raises(InputError, match="^classifier 'svm' is not one of logreg, knn$"):
        pb.fit_probe(syn.X[tr], Y01[tr], known[tr], syn.X[va], Y01[va], known[va], syn.findings, "svm")
    with pytest.raises(InputError, match="^the train split has no image with a vector for this version; assign splits "
                                         "before probing$"):
        pb.fit_probe(syn.X[:0], Y01[:0], known[:0], syn.X[va], Y01[va], known[va], syn.findings)
    with pytest.raises(InputError, match="classifier 'svm' is not one of logreg, knn"):
        pb.probe(None, classifier="svm")


def test_stored_probe_weights_are_the_fitted_ones_as_float32_lists(syn):
    Y01, known, tr, va, _ = _splits(syn)
    fit = pb.fit_probe(syn.X[tr], Y01[tr], known[tr], syn.X[va], Y01[va], known[va], syn.findings, grid=(0.1,))
    table = fit.weights_table()
    assert table["finding"].to_list() == syn.findings
    np.testing.assert_allclose(np.asarray(table["coef"].to_list()), fit.coef, rtol=1e-6)
    np.testing.assert_allclose(table["intercept"].to_numpy(), fit.intercept)
    assert str(table.schema["coef"]) == "List(Float32)" and str(table.schema["intercept"]) == "Float64"


def test_knn_scores_of_many_queries_and_of_k_beyond_the_train_set(syn):
    """Every query (more than one 2,048-row block) gets the label fraction of its own k nearest
    train vectors; asking for more neighbours than there are train vectors uses them all."""
    Y01, known, tr, va, _ = _splits(syn)
    fit = pb.fit_probe(syn.X[tr][:60], Y01[tr][:60], known[tr][:60], syn.X[va], Y01[va], known[va], syn.findings,
                       "knn", grid=(3,))
    S = fit.predict_proba(syn.X)
    lab = np.where(known[tr][:60], Y01[tr][:60], np.nan)
    order = np.argsort(-(syn.X @ syn.X[tr][:60].T), axis=1)[:, :3]
    with np.errstate(invalid="ignore"):
        np.testing.assert_allclose(S, np.nan_to_num(np.nanmean(lab[order], axis=1)))
    everything = pb.fit_probe(syn.X[tr][:60], Y01[tr][:60], known[tr][:60], syn.X[va], Y01[va], known[va],
                              syn.findings, "knn", grid=(500,))
    np.testing.assert_allclose(everything.predict_proba(syn.X[:3]), np.tile(np.nanmean(lab, axis=0), (3, 1)))


# ---- behaviour `make mutation` found unchecked (scripts/mutation.py, bench/MUTATION.md) -----------
# Each expectation below is scikit-learn's or a hand computation, never a stored output of the probe.

def _rows(rows):
    """choice_rows as comparable tuples (NaN -> the string "nan")."""
    return [(r["finding"], r["metric"], "nan" if isinstance(r["value"], float) and np.isnan(r["value"]) else r["value"])
            for r in rows]


def test_choice_rows_by_hand_on_the_default_grid_and_another():
    C = np.array([1e-4, 1.0, 1e2, np.nan])
    fit = pb.ProbeFit("logreg", ["a", "b", "c", "d"], float("nan"), C=C, val_ap=np.array([0.5, 0.6, 0.7, np.nan]))
    assert _rows(fit.choice_rows(pb.C_GRID)) == [
        ("a", "C", 1e-4), ("a", "C_at_edge", 1.0), ("a", "val_ap", 0.5),
        ("b", "C", 1.0), ("b", "C_at_edge", 0.0), ("b", "val_ap", 0.6),
        ("c", "C", 1e2), ("c", "C_at_edge", 1.0), ("c", "val_ap", 0.7),
        ("d", "C", "nan"), ("d", "C_at_edge", None), ("d", "val_ap", "nan"),
        (None, "n_C_at_edge", 2.0)]
    fit.C = np.array([0.1, 1.0, 10.0, 10.0])  # the edges of (0.1, 1, 10): its own min and max
    rows = {(f, m): v for f, m, v in _rows(fit.choice_rows((1.0, 0.1, 10.0)))}
    assert [rows[(f, "C_at_edge")] for f in "abcd"] == [1.0, 0.0, 1.0, 1.0] and rows[(None, "n_C_at_edge")] == 3.0


def test_a_knn_probe_has_an_empty_weights_table_with_the_logreg_schema(syn):
    Y01, known, tr, va, _ = _splits(syn)
    knn = pb.ProbeFit("knn", syn.findings, 5.0, train_X=syn.X[tr], train_Y=Y01[tr].astype(float))
    logreg = pb.ProbeFit("logreg", ["a"], float("nan"), coef=np.ones((1, 3)), intercept=np.zeros(1))
    assert knn.weights_table().is_empty() and knn.weights_table().schema == logreg.weights_table().schema
    assert list(logreg.weights_table().schema) == ["finding", "intercept", "coef"]


def test_knn_scores_with_every_label_known_are_the_positive_fraction_of_scikit_learns_neighbours(syn):
    """No masked label: the plain mean over the k neighbours (per finding), as scikit-learn's
    brute-force cosine neighbours give them."""
    from sklearn.neighbors import NearestNeighbors

    Y01, _, tr, _, te = _splits(syn)
    Ytr = Y01[tr].astype(float)
    nn = NearestNeighbors(n_neighbors=9, metric="cosine", algorithm="brute").fit(syn.X[tr])
    _, idx = nn.kneighbors(syn.X[te][:200])
    want = Ytr[idx].mean(axis=1)  # [200, F]
    fit = pb.ProbeFit("knn", syn.findings, 9.0, train_X=syn.X[tr], train_Y=Ytr)
    np.testing.assert_allclose(fit.predict_proba(syn.X[te][:200]), want)


def test_balanced_weights_with_one_positive_and_with_masks_match_scikit_learn():
    from sklearn.utils.class_weight import compute_sample_weight

    Y = np.zeros((12, 4), dtype=np.int8)
    Y[3, 0] = 1  # one positive
    Y[:5, 1] = 1  # five of twelve, two of them masked
    Y[:, 2] = np.arange(12) % 3 == 0
    Y[1:, 3] = 1  # one negative
    known = np.ones_like(Y, dtype=bool)
    known[[0, 1, 7], 1] = False
    known[11, 2] = False
    W = pb.balanced_weights(Y, known)
    for j in range(4):
        m = known[:, j]
        np.testing.assert_allclose(W[m, j], compute_sample_weight("balanced", Y[m, j]))
        assert (W[~m, j] == 0).all()


def test_ap_per_finding_and_macro_ap_equal_scikit_learns_on_the_known_rows():
    rng = np.random.default_rng(3)
    Y = (rng.random((40, 5)) < 0.4).astype(np.int8)
    Y[:, 2] = 1  # one class only: undefined
    Y[:, 3] = 0
    Y[:, 4] = np.arange(40) == 5  # a single positive: defined
    known = rng.random(Y.shape) < 0.8
    known[5, 4] = True
    S = rng.random(Y.shape)
    aps = pb._ap_per_finding(Y, known, S)
    assert aps[4] == pytest.approx(average_precision_score(Y[known[:, 4], 4], S[known[:, 4], 4]))
    for j in range(2):
        assert aps[j] == pytest.approx(average_precision_score(Y[known[:, j], j], S[known[:, j], j]))
    assert np.isnan(aps[2:4]).all()
    assert pb._macro_ap(Y, known, S) == pytest.approx(np.mean(aps[[0, 1, 4]]))
    assert np.isnan(pb._macro_ap(Y[:, 2:4], known[:, 2:4], S[:, 2:4]))


def test_constant_probs_by_hand():
    Y = np.array([[1, 0, 1, 0], [1, 0, 0, 1], [1, 0, 1, 1]], dtype=np.int8)
    known = np.ones_like(Y, dtype=bool)
    known[:, 3] = False
    known[1, 2] = False  # finding 2's known rows are all positive
    out = pb._constant_probs(Y, known)
    assert out.tolist() == [1.0, 0.0, 1.0, 0.0]
    one = np.zeros_like(known)
    one[2, 0] = True  # a single known label (1): that class
    assert pb._constant_probs(Y, one)[0] == 1.0
    known[1, 2] = True
    assert np.isnan(pb._constant_probs(Y, known)[2])


def _version_data(n=900, seed=11, **kw):
    from embedstore.analyses.runs import VersionData

    s = synthetic.make(n=n, n_findings=3, d=12, seed=seed, uncertain_rate=0.15, missing_rate=0.15, **kw)
    return VersionData("v1", s.findings, s.ids, s.X, s.Y, s.split.astype(object), s.logit_scale,
                       np.asarray(s.ids, dtype=object))


@pytest.mark.parametrize("missing, purpose", [("train", "to fit the probe"),
                                              ("val", "to choose the probe's hyper-parameter"),
                                              ("test", "to score the probe")])
def test_probe_tables_names_the_missing_split_and_what_it_was_for(missing, purpose):
    from embedstore.analyses.scoring import Scoring
    from embedstore.errors import InputError

    data = _version_data(n=200)
    data.split[data.split == missing] = "other"
    with pytest.raises(InputError, match=rf"no image of version v1 is in split '{missing}' \(needed {purpose}"):
        pb.probe_tables(data, "logreg", pb.C_GRID, Scoring(n_boot=0, calibrate_on=None))


def test_probe_tables_names_the_version_when_the_calibration_split_is_missing():
    from embedstore.analyses.scoring import Scoring
    from embedstore.errors import InputError

    data = _version_data(n=200)
    with pytest.raises(InputError, match=r"no image of version v1 is in split 'holdout' \(needed to fit thresholds"):
        pb.probe_tables(data, "logreg", (1.0,), Scoring(n_boot=0, calibrate_on="holdout"))


@pytest.fixture(scope="module")
def tables():
    """probe_tables on synthetic data with a policy that is not the default (uncertain = positive,
    blank = negative, thresholds by Youden on val), and scikit-learn's view of the same data."""
    from embedstore.analyses.scoring import Scoring

    data = _version_data()
    scoring = Scoring("test", "val", "youden", "positive", "negative", 0, 0, 5)
    out = pb.probe_tables(data, "logreg", pb.C_GRID, scoring)
    Y01 = np.where(np.isnan(data.Y), 0, np.where(data.Y == -1, 1, data.Y)).astype(int)  # the policy by hand
    return data, out, Y01


def _metric(out, finding, metric):
    m = out["metrics"].filter((pl.col("finding") == finding) if finding else pl.col("finding").is_null())
    return m.filter(pl.col("metric") == metric)["value"].to_list()


def test_probe_tables_scores_are_scikit_learns_logistic_regression_at_the_stored_c(tables):
    data, out, Y01 = tables
    tr, va, te = (data.split == s for s in ("train", "val", "test"))
    mean, std = data.X[tr].mean(axis=0), data.X[tr].std(axis=0)
    scores = out["image_scores"]
    assert sorted(set(scores["id"].to_list())) == sorted(data.ids[te].tolist())
    weights = out["probe_weights"]
    assert weights["finding"].to_list() == data.findings
    for j, f in enumerate(data.findings):
        (C,) = _metric(out, f, "C")
        ref = LogisticRegression(C=C, class_weight="balanced", tol=1e-10, max_iter=20000)
        ref.fit((data.X[tr] - mean) / std, Y01[tr, j])
        mine = scores.filter(pl.col("finding") == f).sort("id")["score"].to_numpy()
        order = np.argsort(data.ids[te])
        want = ref.predict_proba((data.X[te][order] - mean) / std)[:, 1]
        assert np.abs(mine - want).max() < 1e-3
        coef = np.asarray(weights["coef"][j], dtype=np.float64)
        val_p = 1 / (1 + np.exp(-(data.X[va] @ coef + weights["intercept"][j])))
        assert _metric(out, f, "val_ap")[0] == pytest.approx(average_precision_score(Y01[va, j], val_p), abs=1e-3)
        assert _metric(out, f, "C_at_edge") == [float(C in (min(pb.C_GRID), max(pb.C_GRID)))]
        # the threshold maximises Youden's J on val (scikit-learn's ROC curve), the default cut is 0.5
        from sklearn.metrics import f1_score, roc_curve

        fpr, tpr, _ = roc_curve(Y01[va, j], val_p)
        (t,) = _metric(out, f, "threshold")
        t_here = val_p[np.argmin(np.abs(val_p - t))]  # the same val image's score from the float32 weights
        assert t_here == pytest.approx(t, abs=1e-5)
        j_at = (val_p[Y01[va, j] == 1] >= t_here).mean() - (val_p[Y01[va, j] == 0] >= t_here).mean()
        assert j_at == pytest.approx((tpr - fpr).max(), abs=1e-9)
        y_te = Y01[te][order, j]
        assert _metric(out, f, "f1@default")[0] == pytest.approx(f1_score(y_te, mine >= 0.5))
        assert _metric(out, f, "f1")[0] == pytest.approx(f1_score(y_te, mine >= t))
    extra = out["metrics"].filter(pl.col("metric").is_in(["C", "C_at_edge", "val_ap", "n_C_at_edge"]))
    assert extra.height == 3 * len(data.findings) + 1 and extra["lo"].is_null().all() and extra["hi"].is_null().all()


def test_probe_tables_cooccurrence_is_the_stored_decisions_on_single_finding_test_images(tables):
    data, out, Y01 = tables
    te = data.split == "test"
    order = np.argsort(data.ids[te])
    P = out["image_scores"].sort("id", "finding")["pred"].to_numpy().reshape(-1, len(data.findings))
    Y = Y01[te][order]  # every label known under this policy
    co = out["cooccurrence"]
    for b, present in enumerate(data.findings):
        sel = (Y.sum(axis=1) == 1) & (Y[:, b] == 1)
        for a, predicted in enumerate(data.findings):
            row = co.filter((pl.col("predicted") == predicted) & (pl.col("present") == present)).row(0, named=True)
            assert row["n"] == sel.sum() > 0 and row["rate"] == pytest.approx(P[sel, a].mean())


def test_probe_tables_of_a_knn_probe_store_no_weights_and_say_which_k():
    from embedstore.analyses.scoring import Scoring

    data = _version_data(n=300)
    out = pb.probe_tables(data, "knn", (3, 7), Scoring(n_boot=0, min_positives=3))
    assert "probe_weights" not in out
    (k,) = _metric(out, None, "param")
    assert k in (3.0, 7.0) and out["metrics"].filter(pl.col("metric") == "param")["lo"].is_null().all()


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    """A real store of 400 synthetic images, two images a patient, 3 findings."""
    from store_helpers import open_store

    s = synthetic.make(n=400, n_findings=3, d=8, seed=5, images_per_patient=2)
    path = tmp_path_factory.mktemp("probe-store") / "store"
    st = open_store(path)
    version = synthetic.to_store(s, st)
    return st, version, s, path


def test_a_probe_run_stores_its_config_and_weights_and_is_reused_until_forced(small_store):
    from embedstore.analyses.metrics import MIN_POSITIVES
    from embedstore.analyses.runs import load_data
    from embedstore.errors import InputError

    st, version, s, _ = small_store
    runs = pb.probe(st, version, n_boot=0, operating_point="youden", uncertain="positive", blank="negative", seed=5,
                    min_positives=3, grid=(0.1, 1.0))
    (run,) = runs
    data = load_data(st, version)
    assert run.config == {"split": "test", "calibrate_on": "val", "operating_point": "youden", "uncertain": "positive",
                          "blank": "negative", "n_boot": 0, "seed": 5, "min_positives": 3,
                          "min_calibration_positives": 5, "classifier": "logreg", "grid": [0.1, 1.0], "where": None,
                          "findings": s.findings, "data": data.fingerprint(), "class_weight": "balanced",
                          "patience": pb.PATIENCE}
    assert not run.reused and runs.label == "classifier"
    loaded = pb.load_probe(st, run.run_id)  # the stored weights give the stored scores
    stored = st.image_scores(run.run_id).sort("id", "finding")
    X = data.X[np.searchsorted(data.ids, stored["id"].to_numpy()[::len(s.findings)])]
    assert loaded.findings == s.findings and loaded.classifier == "logreg" and np.isnan(loaded.param)
    np.testing.assert_allclose(loaded.predict_proba(X).ravel(), stored["score"].to_numpy(), rtol=1e-4, atol=1e-6)
    with pytest.raises(InputError, match=r"run 'nope' has no stored probe weights \(only logreg probes store them\)"):
        pb.load_probe(st, "nope")
    again = pb.probe(st, version, n_boot=0, operating_point="youden", uncertain="positive", blank="negative", seed=5,
                     min_positives=3, grid=(0.1, 1.0))[0]
    assert again.reused and again.run_id == run.run_id
    assert set(again.tables) == {"metrics", "run_findings", "cooccurrence"}
    assert again.tables["cooccurrence"].sort("predicted", "present").equals(
        run.tables["cooccurrence"].sort("predicted", "present"))
    forced = pb.probe(st, version, n_boot=0, operating_point="youden", uncertain="positive", blank="negative", seed=5,
                      min_positives=3, grid=(0.1, 1.0), force=True)[0]
    assert not forced.reused and forced.run_id != run.run_id
    knn = pb.probe(st, version, classifier="knn", n_boot=0, calibrate_on=None)[0]
    assert knn.config["grid"] == list(pb.K_GRID) and knn.config["class_weight"] is None
    assert "patience" not in knn.config and "operating_point" not in knn.config
    assert knn.config["min_positives"] == MIN_POSITIVES and knn.config["classifier"] == "knn"
    default = pb.probe(st, version)[0]  # the documented defaults (README): 1,000 patient-bootstrap replicates, seed 0
    assert {k: v for k, v in default.config.items() if k not in ("findings", "data")} == {
        "split": "test", "calibrate_on": "val", "operating_point": "max-f1", "uncertain": "mask", "blank": "mask",
        "n_boot": 1000, "seed": 0, "min_positives": MIN_POSITIVES, "min_calibration_positives": 5,
        "classifier": "logreg", "grid": list(pb.C_GRID), "where": None, "class_weight": "balanced",
        "patience": pb.PATIENCE}


def test_probe_reads_only_the_where_rows_and_refuses_a_tuned_versions_own_images(small_store, tmp_path):
    from embedstore.errors import InputError
    from store_helpers import copy_store

    st, version, s, path = small_store
    run = pb.probe(st, version, n_boot=0, min_positives=3, where="view = 'frontal'", grid=(1.0,))[0]
    frontal = set(st.images("view = 'frontal'")["id"].to_list())
    scored = set(st.image_scores(run.run_id)["id"].to_list())
    assert run.config["where"] == "view = 'frontal'" and scored and scored <= frontal
    assert scored == {int(i) for i, sp in zip(s.ids, s.split) if sp == "test"} & frontal
    tuned = copy_store(path, tmp_path / "tuned")
    storage = tuned._storage
    test_ids = np.asarray([i for i, sp in zip(s.ids, s.split) if sp == "test"], dtype=np.int64)
    v2 = storage.create_version(version, {"name": "tuned", "embed_dim": 8, "logit_scale": 100.0}, {}, "float32",
                                "finetune", fit_ids={"train": test_ids[:3], "val": test_ids[3:5]})
    storage.add_image_vectors(v2, s.ids, [f"t{i}" for i in range(len(s.ids))], s.X)
    storage.complete_version(v2)
    with pytest.raises(InputError, match=rf"probe would score version {v2} on 3 image\(s\) it .* and 2 it was"):
        pb.probe(tuned, v2, n_boot=0, grid=(1.0,))


@pytest.mark.parametrize("C", [0.01, 1.0, 100.0])
def test_fit_logreg_reaches_newton_choleskys_optimum_to_1e_5(syn, C):
    """The module's promise (about 1e-5 of the exact optimum; newton-cholesky solves the same
    objective exactly), on standardised features as the probe fits them."""
    import warnings

    Y01, known, tr, _, _ = _splits(syn)
    X = (syn.X[tr] - syn.X[tr].mean(axis=0)) / syn.X[tr].std(axis=0)
    theta = pb.fit_logreg(X, Y01[tr][:, :3], known[tr][:, :3], C)
    for j in range(3):
        m = known[tr, j]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its line search may hand the last steps to lbfgs
            ref = LogisticRegression(C=C, class_weight="balanced", solver="newton-cholesky", tol=1e-10,
                                     max_iter=1000).fit(X[m], Y01[tr][m, j])
        mine = 1 / (1 + np.exp(-(X @ theta[j, :-1] + theta[j, -1])))
        assert np.abs(mine - ref.predict_proba(X)[:, 1]).max() < 1e-5


def test_the_c_path_follows_its_documented_rule(syn, monkeypatch):
    """Replayed from the fits themselves: along the ascending grid a finding keeps the first C with
    its best val AP (scikit-learn's), leaves the path after PATIENCE steps without a strictly
    better one, and is fitted at no C after that."""
    Y01, known, tr, va, _ = _splits(syn)
    calls = []
    real = pb.fit_logreg

    def spy(X, Y, kn, C, start=None, **kw):
        theta = real(X, Y, kn, C, start, **kw)
        calls.append((C, Y, theta.copy()))
        return theta

    monkeypatch.setattr(pb, "fit_logreg", spy)
    grid = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
    fit = pb.fit_probe(syn.X[tr], Y01[tr], known[tr], syn.X[va], Y01[va], known[va], syn.findings, grid=grid)
    mean, std = syn.X[tr].mean(axis=0), syn.X[tr].std(axis=0)
    visited = {j: [] for j in range(len(syn.findings))}
    ap = {j: [] for j in range(len(syn.findings))}
    for C, Ysub, theta in calls:
        cols = [j for j in range(len(syn.findings)) if any((Ysub[:, k] == Y01[tr][:, j]).all() for k in range(Ysub.shape[1]))]
        assert len(cols) == Ysub.shape[1]  # the findings still on the path (their label columns)
        for k, j in enumerate(cols):
            coef = theta[k, :-1] / std
            s = syn.X[va] @ coef + theta[k, -1] - coef @ mean
            m = known[va, j]
            visited[j].append(C)
            ap[j].append(average_precision_score(Y01[va][m, j], s[m]))
    for j in range(len(syn.findings)):
        best, since, want, chosen = -np.inf, 0, [], None
        for i, C in enumerate(grid):
            want.append(C)
            if i == len(ap[j]):  # the probe left earlier than the rule says (the assert below fails)
                break
            a = ap[j][i]
            if a > best:
                best, since, chosen = a, 0, C
            else:
                since += 1
                if since >= pb.PATIENCE:
                    break
        assert visited[j] == want and fit.C[j] == chosen
        assert fit.val_ap[j] == pytest.approx(best, abs=1e-9)


def test_a_finding_without_val_positives_takes_the_middle_c_of_a_grid_without_1(syn):
    Y01, known, tr, va, _ = _splits(syn)
    Yva = Y01[va].copy()
    Yva[:, 2] = 0
    grid = (10.0, 0.001, 100.0, 0.1, 0.01)  # sorted: 0.001, 0.01, 0.1, 10, 100; the middle one is 0.1
    fit = pb.fit_probe(syn.X[tr], Y01[tr], known[tr], syn.X[va], Yva, known[va], syn.findings, grid=grid)
    assert fit.C[2] == 0.1 and np.isnan(fit.val_ap[2]) and np.isfinite(fit.coef[2]).all()


def test_a_separable_finding_keeps_the_most_regularised_c_that_reaches_its_best_ap(syn):
    """Val AP 1 at every C: no later C improves on the first, so the first is kept (and is at the edge)."""
    Y01, known, tr, va, _ = _splits(syn)
    X = syn.X.copy()
    X[:, 0] = np.where(Y01[:, 0] == 1, 1.0, -1.0)  # a feature that is the label
    fit = pb.fit_probe(X[tr], Y01[tr], known[tr], X[va], Y01[va], known[va], syn.findings, grid=(0.01, 0.1, 1.0))
    assert fit.val_ap[0] == 1.0 and fit.C[0] == 0.01
    # alone, it leaves the path after PATIENCE steps: the C left on the grid are never fitted
    alone = pb.fit_probe(X[tr], Y01[tr][:, :1], known[tr][:, :1], X[va], Y01[va][:, :1], known[va][:, :1],
                         syn.findings[:1], grid=(0.01, 0.1, 1.0, 10.0, 100.0))
    assert alone.C.tolist() == [0.01] and alone.val_ap.tolist() == [1.0]


def test_knn_probe_default_grid_and_cooccurrence_leave_out_images_with_an_unknown_label(syn):
    Y01, known, tr, va, _ = _splits(syn)
    fit = pb.fit_probe(syn.X[tr][:300], Y01[tr][:300], known[tr][:300], syn.X[va], Y01[va], known[va], syn.findings,
                       "knn")
    assert tuple(fit.val_macro_ap) == pb.K_GRID
    Y = np.array([[1, 0], [1, 0], [0, 1]], dtype=np.int8)
    kn = np.array([[True, True], [True, False], [True, True]])  # row 1: its other label unknown
    P = np.array([[1, 1], [0, 0], [0, 1]], dtype=np.int8)
    co = pb.cooccurrence(Y, kn, P, ["a", "b"])
    rows = {(r["predicted"], r["present"]): (r["rate"], r["n"]) for r in co.iter_rows(named=True)}
    assert rows == {("a", "a"): (1.0, 1), ("b", "a"): (1.0, 1), ("a", "b"): (0.0, 1), ("b", "b"): (1.0, 1)}


def test_knn_scores_of_more_queries_than_two_blocks(syn):
    """4,200 queries (three 2,048-row blocks): every row is its own neighbours' label fraction."""
    Y01, _, tr, _, _ = _splits(syn)
    Xtr, Ytr = syn.X[tr][:50], Y01[tr][:50].astype(float)
    Xq = np.vstack([syn.X, syn.X[:1200]])
    order = np.argsort(-(Xq @ Xtr.T), axis=1)[:, :4]
    fit = pb.ProbeFit("knn", syn.findings, 4.0, train_X=Xtr, train_Y=Ytr)
    np.testing.assert_allclose(fit.predict_proba(Xq), Ytr[order].mean(axis=1))
