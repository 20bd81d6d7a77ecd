"""Separability figures equal scikit-learn's; everything fitted sees train rows only."""

import numpy as np
import pytest
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score

from embedstore.analyses import metrics as mt
from embedstore.analyses import separability as sp
from embedstore.analyses import synthetic
from separability_spy import assert_fitted_on_train_scored_on_test, spy_on_fitted_parts


@pytest.fixture(scope="module")
def syn():
    return synthetic.make(n=2000, n_findings=5, d=24, seed=3)


@pytest.mark.parametrize("k", [2, 4])
def test_silhouette_cosine_equals_sklearn(syn, k):
    labels = np.random.default_rng(k).integers(0, k, len(syn.X))
    assert sp.silhouette_cosine(syn.X, labels) == pytest.approx(silhouette_score(syn.X, labels, metric="cosine"), abs=1e-6)


def test_lda_direction_equals_sklearn_shrunk_lda(syn):
    Y01, known = mt.apply_policy(syn.Y)
    tr = syn.split == "train"
    lda = sp.LdaDirections(syn.X[tr], Y01[tr], known[tr], shrinkage=0.1)
    for j in range(3):
        m = known[tr, j]
        ref = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=0.1).fit(syn.X[tr][m], Y01[tr][m, j]).coef_[0]
        w = lda.W[j]
        assert np.allclose(w / np.linalg.norm(w), ref / np.linalg.norm(ref), atol=1e-4)


def test_single_finding_indices_equal_sklearn_and_ratio_by_hand(syn):
    Y01, known = mt.apply_policy(syn.Y)
    te = syn.split == "test"
    rows = {r["metric"]: r["value"] for r in sp.single_finding(syn.X[te], Y01[te], known[te], syn.findings)}
    Yt, kt = syn.Y[te], known[te]
    sel = (np.nansum(Yt == 1, axis=1) == 1) & kt.all(axis=1)  # independent selection
    X, lab = syn.X[te][sel].astype(np.float64), np.argmax(Yt[sel] == 1, axis=1)
    keep = np.isin(lab, [c for c in np.unique(lab) if (lab == c).sum() >= 2])
    X, lab = X[keep], lab[keep]
    assert rows["n_single"] == len(lab)
    assert rows["davies_bouldin"] == pytest.approx(davies_bouldin_score(X, lab))
    assert rows["calinski_harabasz"] == pytest.approx(calinski_harabasz_score(X, lab))
    assert rows["silhouette"] == pytest.approx(silhouette_score(X, lab, metric="cosine"), abs=1e-6)
    cents = {c: X[lab == c].mean(axis=0) for c in np.unique(lab)}
    intra = np.mean([np.linalg.norm(x - cents[c]) for x, c in zip(X, lab)])
    cs = list(cents.values())
    inter = np.mean([np.linalg.norm(a - b) for i, a in enumerate(cs) for b in cs[i + 1:]])
    assert rows["inter_intra_ratio"] == pytest.approx(inter / intra)


def test_per_finding_rows_by_hand(syn):
    Y01, known = mt.apply_policy(syn.Y)
    tr, te = syn.split == "train", syn.split == "test"
    rows = sp.per_finding(syn.X[tr], Y01[tr], known[tr], syn.X[te], Y01[te], known[te], syn.findings, k=5)
    got = {(r["finding"], r["metric"]): r["value"] for r in rows}
    j, f = 1, syn.findings[1]
    m = known[te, j]
    y, X = Y01[te][m, j], syn.X[te][m]
    assert got[(f, "silhouette")] == pytest.approx(silhouette_score(X, y, metric="cosine"), abs=1e-6)
    c1, c0 = X[y == 1].mean(0), X[y == 0].mean(0)
    assert got[(f, "centroid_distance")] == pytest.approx(1 - c1 @ c0 / np.linalg.norm(c1) / np.linalg.norm(c0), abs=1e-6)
    sims = X @ syn.X[tr].T
    agree = []
    for i in range(len(X)):
        nn = np.argsort(-sims[i])[:5]
        ok = known[tr][nn, j]
        if ok.any():
            agree.append((Y01[tr][nn, j][ok] == y[i]).mean())
    assert got[(f, "knn_agreement")] == pytest.approx(np.mean(agree))


def test_fitted_parts_see_train_rows_only(syn, monkeypatch, tmp_path):
    """Through the store: LDA, the kNN index and PCA receive exactly the train split's vectors."""
    from embedstore.api import Store

    st = Store(tmp_path / "store")
    synthetic.to_store(syn, st)
    seen = spy_on_fitted_parts(monkeypatch)
    assert_fitted_on_train_scored_on_test(st, seen, sp.separability(st, tsne_max=60))


def test_per_finding_figures_on_a_hand_worked_example():
    """Unit vectors in the plane from 3-4-5 triangles, so every cosine is a short decimal and each
    figure is worked out by hand below (no call to the module's helpers).

    Train, finding A: positives (.8, +-.6), negatives (.6, +-.8), (1, 0) masked. Both classes are
    symmetric about the x axis, so their covariances are diagonal and mu1 - mu0 = (.2, 0): the
    shrunk LDA direction is the x axis and a test image projects onto its x coordinate.
    Test, A: positives a = (1, 0), b = (.8, .6), c = (.6, .8); negatives d = (0, 1), e = (.6, -.8);
    (.8, -.6) masked. Finding B has one train positive (no LDA) and no test positive."""
    Xtr = np.array([[.8, .6], [.8, -.6], [.6, .8], [.6, -.8], [1, 0]])
    Ytr = np.array([[1, 1], [1, 0], [0, 0], [0, 0], [0, 0]])
    known_tr = np.array([[1, 1], [1, 1], [1, 1], [1, 1], [0, 0]], bool)
    Xte = np.array([[1, 0], [.8, .6], [.6, .8], [0, 1], [.6, -.8], [.8, -.6]])
    Yte = np.array([[1, 0], [1, 0], [1, 0], [0, 0], [0, 0], [0, 0]])
    known_te = np.array([[1, 1], [1, 1], [1, 1], [1, 1], [1, 1], [0, 1]], bool)
    rows = sp.per_finding(Xtr, Ytr, known_tr, Xte, Yte, known_te, ["A", "B"], k=3)
    got = {(r["finding"], r["metric"]): r["value"] for r in rows}

    # fisher: x of the positives 1, .8, .6 (mean .8, variance .08 / 3); negatives 0, .6 (mean .3,
    # variance .09): (.8 - .3)^2 / (.08 / 3 + .09) = 15 / 7
    assert got[("A", "fisher_ratio")] == pytest.approx(15 / 7, rel=1e-6)
    # kNN, k = 3 by angle: a's neighbours are (1, 0) (masked, not counted) and (.8, +-.6), both
    # positive: 1. b: (.8, .6) +, (.6, .8) -, (1, 0) masked: 1/2. c: (.6, .8) -, (.8, .6) +: 1/2.
    # d: (.6, .8) -, (.8, .6) +: 1/2. e: (.6, -.8) -, (.8, -.6) +: 1/2.
    assert got[("A", "knn_agreement_pos")] == pytest.approx((1 + 1 / 2 + 1 / 2) / 3)
    assert got[("A", "knn_agreement")] == pytest.approx((1 + 4 * (1 / 2)) / 5)
    # silhouette, cosine distance 1 - x.y: ab .2, ac .4, bc .04, ad 1, ae .4, bd .4, be 1, cd .2,
    # ce 1.28, de 1.8. s = (b - a) / max(a, b) with a the mean distance to its own class, b to the other:
    # a: (.7 - .3) / .7; b: (.7 - .12) / .7; c: (.74 - .22) / .74; d: (1.6 / 3 - 1.8) / 1.8; e: (2.68 / 3 - 1.8) / 1.8
    assert got[("A", "silhouette")] == pytest.approx((4 / 7 + 29 / 35 + 26 / 37 - 19 / 27 - 68 / 135) / 5)
    # centroids (2.4, 1.4) / 3 and (.3, .1) point along (12, 7) and (3, 1): cosine 43 / sqrt(193 * 10)
    assert got[("A", "centroid_distance")] == pytest.approx(1 - 43 / np.sqrt(1930))
    assert got[("A", "support")] == 3 and got[("A", "n")] == 5

    # B: one train positive gives no LDA direction; no test positive, no positive-side figure.
    for metric in ("fisher_ratio", "knn_agreement_pos", "silhouette", "centroid_distance"):
        assert np.isnan(got[("B", metric)]), metric
    # the B labels of the neighbours, (.8, .6) being the one positive: a, b, c, d agree with one of
    # two counted; e = (.6, -.8) and (.8, -.6) with both of theirs
    assert got[("B", "knn_agreement")] == pytest.approx((4 * (1 / 2) + 2) / 6)
    assert got[("B", "support")] == 0 and got[("B", "n")] == 6
