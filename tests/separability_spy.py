"""Watches what the separability analysis fits on: shared by the synthetic and the phantom tests."""

from __future__ import annotations

import numpy as np

from embedstore.analyses import separability as sp


def spy_on_fitted_parts(monkeypatch) -> dict:
    """Patch LDA, the kNN index and the projections to record the vectors they receive."""
    seen: dict = {}
    real_lda, real_knn, real_proj = sp.LdaDirections.__init__, sp.knn_neighbours, sp.projections

    def lda(self, Xtr, *a, **k):
        seen["lda"] = np.array(Xtr)
        real_lda(self, Xtr, *a, **k)

    def knn(Xtr, Xte, *a, **k):
        seen["knn_train"], seen["knn_query"] = np.array(Xtr), np.array(Xte)
        return real_knn(Xtr, Xte, *a, **k)

    def proj(Xtr, Xte, ids, *a, **k):
        seen["pca"], seen["proj_ids"] = np.array(Xtr), np.array(ids)
        return real_proj(Xtr, Xte, ids, *a, **k)

    monkeypatch.setattr(sp.LdaDirections, "__init__", lda)
    monkeypatch.setattr(sp, "knn_neighbours", knn)
    monkeypatch.setattr(sp, "projections", proj)
    return seen


def assert_fitted_on_train_scored_on_test(st, seen: dict, result) -> None:
    """LDA, the kNN index and PCA got exactly the train vectors; queries and projections test only."""
    ids, X = st.image_vectors()
    split = dict(zip(*[st.images()[c].to_list() for c in ("id", "split")]))
    train = np.array([split[i] == "train" for i in ids])
    test = np.array([split[i] == "test" for i in ids])
    for key in ("lda", "knn_train", "pca"):
        assert np.array_equal(seen[key], X[train])
    assert np.array_equal(seen["knn_query"], X[test])
    assert set(seen["proj_ids"]) == set(ids[test])
    proj = result.tables["projections"]
    assert set(proj["method"].unique()) >= {"pca", "tsne"}
    assert set(proj["id"].to_list()) <= set(ids[test].tolist())
