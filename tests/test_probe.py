"""Probes: equal to scikit-learn's LogisticRegression, beat zero-shot, masked labels left out."""

import numpy as np
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
    assert fit.param == max(grid, key=lambda k: fit.val_macro_ap[k])
    assert fit.weights_table().is_empty() and fit.choice_rows(grid) == [{"finding": None, "metric": "param", "value": fit.param}]
    blind = pb.fit_probe(syn.X[tr], Y01[tr], known[tr], syn.X[va], np.zeros_like(Y01[va]), known[va], syn.findings,
                         "knn", grid=grid)
    assert blind.param == 9 and all(np.isnan(v) for v in blind.val_macro_ap.values())


def test_bad_classifier_and_empty_train_split_are_input_errors(syn):
    from embedstore.errors import InputError

    Y01, known, tr, va, _ = _splits(syn)
    with pytest.raises(InputError, match="classifier 'svm' is not one of logreg, knn"):
        pb.fit_probe(syn.X[tr], Y01[tr], known[tr], syn.X[va], Y01[va], known[va], syn.findings, "svm")
    with pytest.raises(InputError, match="the train split has no image with a vector for this version"):
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
