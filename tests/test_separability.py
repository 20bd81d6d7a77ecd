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
