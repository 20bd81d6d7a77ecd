"""Probes: equal to scikit-learn's LogisticRegression, beat zero-shot, masked labels left out."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score

from embedstore.analyses import metrics as mt
from embedstore.analyses import probe as pb
from embedstore.analyses import synthetic
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
