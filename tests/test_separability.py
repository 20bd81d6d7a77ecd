"""Separability figures equal scikit-learn's; everything fitted sees train rows only."""

import numpy as np
import polars as pl
import pytest
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score

from embedstore.analyses import metrics as mt
from embedstore.analyses import separability as sp
import synthetic_vectors as synthetic
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
    from store_helpers import open_store as Store

    st = Store(tmp_path / "store")
    synthetic.to_store(syn, st)
    seen = spy_on_fitted_parts(monkeypatch)
    assert_fitted_on_train_scored_on_test(st, seen, sp.separability(st, tsne_max=60)[0])


def test_per_finding_figures_on_a_hand_worked_example():
    """Vectors in the plane from 3-4-5 triangles, so every cosine is a short decimal and each figure
    is worked out by hand below (no call to the module's helpers). Lengths vary on purpose (the
    figures are cosine-based and LDA is symmetric here): train positives of A have length 2,
    negatives 1/2, and the test rows lengths 1 to 5.

    Rows, by angle: train t0 (.8, .6), t1 (.8, -.6), t2 (.6, .8), t3 (.6, -.8), t4 (1, 0);
    test a (1, 0), b (.8, .6), c (.6, .8), d (0, 1), e (.6, -.8), f (.8, -.6). With k = 3 the
    neighbours (cosine) are a: t4 t0 t1; b: t0 t2 t4; c: t2 t0 t4; d: t2 t0 t4; e: t3 t1 t4;
    f: t1 t3 t4. "m" is a masked label, "-" one that does not count.

    finding  t0 t1 t2 t3 t4 | a b c d e f
    B         1  0  0  0  m | 1 1 0 0 0 0   one train positive: no LDA direction (fisher NaN)
    A         1  1  0  0  m | 1 1 1 0 0 m
    C         m  m  1  0  m | 1 1 0 0 1 0   a's three neighbours are all masked
    D         1  1  1  0  m | 1 1 1 1 1 1   no test negative
    B comes first so that skipping its LDA fit leaves A's in place.
    """
    m = np.nan
    lengths_tr, lengths_te = np.array([2, 2, .5, .5, 1]), np.array([1, 2, 3, 4, 5, 1])
    Xtr = np.array([[.8, .6], [.8, -.6], [.6, .8], [.6, -.8], [1, 0]]) * lengths_tr[:, None]
    Xte = np.array([[1, 0], [.8, .6], [.6, .8], [0, 1], [.6, -.8], [.8, -.6]]) * lengths_te[:, None]
    Ytr = np.array([[1, 1, m, 1], [0, 1, m, 1], [0, 0, 1, 1], [0, 0, 0, 0], [m, m, m, m]])
    Yte = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [0, 1, 0, 1], [0, 0, 0, 1], [0, 0, 1, 1], [0, m, 0, 1]])
    rows = sp.per_finding(Xtr, np.nan_to_num(Ytr).astype(int), np.isfinite(Ytr), Xte, np.nan_to_num(Yte).astype(int),
                          np.isfinite(Yte), ["B", "A", "C", "D"], k=3)
    got = {(r["finding"], r["metric"]): r["value"] for r in rows}

    # A. Train classes are symmetric about the x axis (covariances diagonal, mu1 - mu0 along x): the
    # LDA direction is the x axis and a test image projects on its x coordinate (unit test rows).
    # Fisher: positives a b c at 1, .8, .6 (mean .8, variance .08 / 3); negatives d e at 0, .6
    # (mean .3, variance .09): (.8 - .3)^2 / (.08 / 3 + .09) = 15 / 7
    assert got[("A", "fisher_ratio")] == pytest.approx(15 / 7, rel=1e-6)
    # kNN agreement, a: t0 + t1 + (t4 masked): 1; b: t0 + t2 -: 1/2; c: t2 - t0 +: 1/2; d: t2 - t0 +: 1/2;
    # e: t3 - t1 +: 1/2
    assert got[("A", "knn_agreement_pos")] == pytest.approx((1 + 1 / 2 + 1 / 2) / 3)
    assert got[("A", "knn_agreement")] == pytest.approx((1 + 4 * (1 / 2)) / 5)
    # silhouette, cosine distance 1 - x.y: ab .2, ac .4, bc .04, ad 1, ae .4, bd .4, be 1, cd .2,
    # ce 1.28, de 1.8. s = (b - a) / max(a, b) with a the mean distance to its own class, b to the other:
    # a: (.7 - .3) / .7; b: (.7 - .12) / .7; c: (.74 - .22) / .74; d: (1.6 / 3 - 1.8) / 1.8; e: (2.68 / 3 - 1.8) / 1.8
    assert got[("A", "silhouette")] == pytest.approx((4 / 7 + 29 / 35 + 26 / 37 - 19 / 27 - 68 / 135) / 5)
    # centroids of the unit rows (2.4, 1.4) / 3 and (.3, .1) point along (12, 7) and (3, 1): cosine 43 / sqrt(1930)
    assert got[("A", "centroid_distance")] == pytest.approx(1 - 43 / np.sqrt(1930))
    assert got[("A", "support")] == 3 and got[("A", "n")] == 5

    # B. a: t0 + t1 -: 1/2; b: t0 + t2 -: 1/2; c, d: t2 agrees, t0 not: 1/2; e: t3 t1 agree: 1; f: t1 t3: 1
    assert np.isnan(got[("B", "fisher_ratio")])
    assert got[("B", "knn_agreement_pos")] == pytest.approx(1 / 2)
    assert got[("B", "knn_agreement")] == pytest.approx((4 * (1 / 2) + 2) / 6)
    assert got[("B", "support")] == 2 and got[("B", "n")] == 6

    # C. a has no counted neighbour and is left out; b: t2 agrees; c, d: t2 does not; e: t3 does not;
    # f: t3 agrees
    assert got[("C", "knn_agreement")] == pytest.approx(2 / 5)
    assert got[("C", "knn_agreement_pos")] == pytest.approx(1 / 2)

    # D. a: t0 t1: 1; b, c, d: t0 t2: 1; e: t1 agrees, t3 not: 1/2; f the same: 1/2. One class only:
    # no LDA, silhouette or centroid distance.
    assert got[("D", "knn_agreement")] == pytest.approx(5 / 6)
    assert got[("D", "knn_agreement_pos")] == pytest.approx(5 / 6)
    for metric in ("fisher_ratio", "silhouette", "centroid_distance"):
        assert np.isnan(got[("D", metric)]), metric


def test_fisher_ratio_needs_two_per_class_and_some_spread():
    # two per class: means 1 and 4, variances 1 and 1: (4 - 1)^2 / 2
    assert sp.fisher_ratio(np.array([0.0, 2.0, 3.0, 5.0]), np.array([0, 0, 1, 1])) == pytest.approx(4.5)
    assert np.isnan(sp.fisher_ratio(np.array([0.0, 2.0, 3.0]), np.array([0, 0, 1])))  # one positive
    assert np.isnan(sp.fisher_ratio(np.array([0.0, 3.0, 5.0]), np.array([0, 1, 1])))  # one negative
    assert np.isnan(sp.fisher_ratio(np.array([1.0, 1.0, 4.0, 4.0]), np.array([0, 0, 1, 1])))  # no spread


def test_inter_intra_ratio_by_hand():
    # two classes, centroids (0, 0) and (6, 8) (distance 10); every point 1 from its centroid
    X = np.array([[-1.0, 0], [1, 0], [6, 7], [6, 9]])
    assert sp.inter_intra_ratio(X, np.array([0, 0, 1, 1])) == pytest.approx(10.0)
    assert np.isnan(sp.inter_intra_ratio(X, np.zeros(4)))  # one class
    assert np.isnan(sp.inter_intra_ratio(np.array([[0.0, 1], [0, 1], [2, 0], [2, 0]]), np.array([0, 0, 1, 1])))  # no spread


def test_silhouettes_with_singleton_classes_equal_sklearn():
    """A class of one point scores 0 (scikit-learn's convention); all points in classes of their
    own has no silhouette (scikit-learn refuses it)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(9, 3))
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 2, 1])  # class 2 is one point
    assert sp.silhouette_cosine(X, labels) == pytest.approx(silhouette_score(X, labels, metric="cosine"), abs=1e-9)
    assert np.isnan(sp.silhouette_cosine(X, np.arange(9)))
    Y = np.array([[1], [0], [0], [0], [0], [0], [0], [0], [0]])  # one positive
    got = sp.silhouette_binary(X, Y, np.ones_like(Y, bool))[0]
    assert got == pytest.approx(silhouette_score(X, Y[:, 0], metric="cosine"), abs=1e-9)


def test_single_finding_keeps_classes_of_two_or_more():
    """Complete rows with exactly one positive: classes a (three images), b (two) and c (one,
    left out); a row with two positives and one with a masked label are not single-finding."""
    X = np.array([[1.0, 0, 0], [.9, .1, 0], [.8, .2, 0], [0, 1, 0], [0, .9, .1], [0, 0, 1], [1, 1, 0], [.5, .5, .5]])
    Y = np.array([[1, 0, 0], [1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 0]])
    known = np.ones_like(Y, bool)
    known[7, 0] = False
    rows = {r["metric"]: r["value"] for r in sp.single_finding(X, Y, known, ["a", "b", "c"])}
    assert rows["n_single"] == 5 and rows["n_classes"] == 2
    labels = np.array([0, 0, 0, 1, 1])
    assert rows["davies_bouldin"] == pytest.approx(davies_bouldin_score(X[:5], labels))
    assert rows["silhouette"] == pytest.approx(silhouette_score(X[:5], labels, metric="cosine"), abs=1e-9)
    one = {r["metric"]: r["value"] for r in sp.single_finding(X[:3], Y[:3], known[:3], ["a", "b", "c"])}
    assert one == {"n_single": 3.0, "n_classes": 1.0}  # one class: no cluster index


def test_knn_neighbours_are_the_nearest_by_cosine_for_every_query():
    """More queries than one block of the chunked search (4,096 and then some); each row's
    neighbours are the k train vectors of highest cosine, whatever the vectors' lengths."""
    rng = np.random.default_rng(1)
    Xtr = rng.normal(size=(40, 4)) * rng.uniform(0.1, 10, size=(40, 1))
    Xte = rng.normal(size=(4500, 4)) * rng.uniform(0.1, 10, size=(4500, 1))
    nn = sp.knn_neighbours(Xtr, Xte, k=3)
    cos = (Xte / np.linalg.norm(Xte, axis=1, keepdims=True)) @ (Xtr / np.linalg.norm(Xtr, axis=1, keepdims=True)).T
    want = np.sort(np.argsort(-cos, axis=1)[:, :3], axis=1)
    np.testing.assert_array_equal(np.sort(nn, axis=1), want)
    assert (sp.knn_neighbours(Xtr[:2], Xte[:5], k=15) >= 0).all() and sp.knn_neighbours(Xtr[:2], Xte[:5]).shape == (5, 2)
    np.testing.assert_array_equal(sp.knn_neighbours(Xtr, Xte[:50], k=1)[:, 0], np.argmax(cos[:50], axis=1))


def test_per_finding_without_train_images_has_no_knn_figures():
    X = np.random.default_rng(2).normal(size=(6, 3))
    Y = np.array([[1], [1], [0], [0], [1], [0]])
    rows = sp.per_finding(X[:0], Y[:0], np.ones((0, 1), bool), X, Y, np.ones_like(Y, bool), ["a"])
    names = {r["metric"] for r in rows}
    assert "knn_agreement" not in names and np.isnan([r["value"] for r in rows if r["metric"] == "fisher_ratio"][0])
    assert {"silhouette", "centroid_distance", "support", "n"} <= names


def test_projections_pca_from_train_and_a_seeded_tsne_sample():
    """PCA is fitted on train and applied to test (scikit-learn's, up to each axis's sign); t-SNE
    runs on a seeded sample of at most `tsne_max` test images, with the documented settings, on
    their train-fitted PCA coordinates; too few images give no projection."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    rng = np.random.default_rng(3)
    Xtr, Xte = rng.normal(size=(80, 6)), rng.normal(size=(40, 6))
    ids = np.arange(100, 140)
    out = sp.projections(Xtr, Xte, ids, seed=4, tsne_max=25)
    pca = out.filter(out["method"] == "pca")
    Z = PCA(n_components=6).fit(Xtr).transform(Xte)
    assert pca["id"].to_list() == ids.tolist()
    for col, j in (("x", 0), ("y", 1)):
        got = pca[col].to_numpy()
        assert np.allclose(got, Z[:, j], atol=1e-8) or np.allclose(got, -Z[:, j], atol=1e-8), col
    tsne = out.filter(out["method"] == "tsne")
    pick = np.sort(np.random.default_rng(4).choice(40, size=25, replace=False))
    assert tsne["id"].to_list() == ids[pick].tolist()
    Zs = PCA(n_components=6, svd_solver="covariance_eigh").fit(Xtr).transform(Xte)[pick]
    ref = TSNE(n_components=2, perplexity=min(30.0, 24 / 3), init="pca", random_state=4, max_iter=500,
               n_jobs=1).fit_transform(Zs)
    np.testing.assert_allclose(tsne.select("x", "y").to_numpy(), ref, rtol=1e-5, atol=1e-5)
    assert set(out["method"]) <= {"pca", "tsne", "umap"}
    small = sp.projections(Xtr, Xte[:4], ids[:4])
    assert set(small["method"]) == {"pca"} and small.height == 4  # t-SNE needs five images
    assert sp.projections(Xtr, Xte[:5], ids[:5]).filter(pl.col("method") == "tsne").height == 5
    assert sp.projections(Xtr[:2], Xte, ids).is_empty() and sp.projections(Xtr, Xte[:2], ids[:2]).is_empty()
    narrow = sp.projections(Xtr[:, :4], Xte[:5, :4], ids[:5])
    assert set(narrow["method"]) == {"pca", "tsne"}  # t-SNE counts images, not coordinates


def test_separability_run_passes_its_parameters_and_is_reused(tmp_path):
    """Through the store, on a named version beside a later one: k, the uncertain policy, the
    seed and tsne_max reach the figures (they equal `separability_tables` on that version's
    train and test rows with the same settings); the config records them; the same call reuses
    the run with both tables, `force` replaces it."""
    from dataclasses import replace

    from embedstore.analyses.runs import load_data
    from store_helpers import open_store as Store

    syn = synthetic.make(n=500, n_findings=3, d=8, seed=5, uncertain_rate=0.1)
    st = Store(tmp_path / "store")
    version = synthetic.to_store(syn, st)
    synthetic.to_store(replace(syn, X=np.roll(syn.X, 1, axis=0)), st, name="later")
    run = sp.separability(st, version, k=7, uncertain="positive", tsne_max=30, seed=2)[0]
    assert run.kind == "separability" and run.version == version and not run.reused
    data = load_data(st, version)
    Y01, known = mt.apply_policy(data.Y, "positive")
    tr, te = data.split == "train", data.split == "test"
    want = sp.separability_tables(data.X[tr], Y01[tr], known[tr], data.X[te], Y01[te], known[te], data.ids[te],
                                  data.findings, k=7, seed=2, tsne_max=30)
    key = ["finding", "metric"]
    assert run.metrics.sort(key, nulls_last=True).equals(want["metrics"].sort(key, nulls_last=True))
    assert run.tables["projections"].equals(want["projections"])
    assert {k: run.config[k] for k in ("k", "uncertain", "where", "tsne_max", "seed", "lda_shrinkage", "findings")} == \
        {"k": 7, "uncertain": "positive", "where": None, "tsne_max": 30, "seed": 2, "lda_shrinkage": 0.1,
         "findings": data.findings}
    assert run.config["data"] == data.fingerprint()
    again = sp.separability(st, version, k=7, uncertain="positive", tsne_max=30, seed=2)[0]
    assert again.reused and again.run_id == run.run_id and {"metrics", "projections"} <= set(again.tables)
    assert st.sql(f"SELECT kind FROM runs WHERE run_id = '{run.run_id}'")["kind"][0] == "separability"
    forced = sp.separability(st, version, k=7, uncertain="positive", tsne_max=30, seed=2, force=True)[0]
    assert not forced.reused and forced.run_id != run.run_id
    default = sp.separability(st, version, tsne_max=30)[0]
    assert (default.config["k"], default.config["seed"], default.config["uncertain"]) == (15, 0, "mask")


def test_separability_tables_are_its_parts_with_the_settings_passed(syn):
    """The metrics table is per_finding's rows (with the k passed) followed by single_finding's, in
    METRIC_COLUMNS' types; the projections get the seed and tsne_max passed; the defaults are
    KNN_K, seed 0 and TSNE_MAX, and project=False leaves the projections out."""
    Y01, known = mt.apply_policy(syn.Y)
    tr, te = syn.split == "train", syn.split == "test"
    fit, scored = (syn.X[tr], Y01[tr], known[tr]), (syn.X[te], Y01[te], known[te])
    ids = np.arange(te.sum(), dtype=np.int64) * 3 + 11
    got = sp.separability_tables(*fit, *scored, ids, syn.findings, k=4, seed=3, tsne_max=20)
    rows = sp.per_finding(*fit, *scored, syn.findings, k=4) + sp.single_finding(*scored, syn.findings)
    assert dict(got["metrics"].schema) == mt.METRIC_COLUMNS
    assert got["metrics"].equals(pl.DataFrame(rows, schema=mt.METRIC_COLUMNS))
    assert {"n_single", "davies_bouldin"} <= set(got["metrics"].filter(pl.col("finding").is_null())["metric"])
    assert got["projections"].equals(sp.projections(syn.X[tr], syn.X[te], ids, seed=3, tsne_max=20))
    default = sp.separability_tables(*fit, *scored, ids, syn.findings, tsne_max=20)
    rows = sp.per_finding(*fit, *scored, syn.findings, k=sp.KNN_K) + sp.single_finding(*scored, syn.findings)
    assert default["metrics"].equals(pl.DataFrame(rows, schema=mt.METRIC_COLUMNS))
    assert not default["metrics"].equals(got["metrics"])  # k reaches the kNN figures
    assert default["projections"].equals(sp.projections(syn.X[tr], syn.X[te], ids, seed=0, tsne_max=20))
    assert not default["projections"].equals(got["projections"])  # the seed reaches the t-SNE sample
    assert set(sp.separability_tables(*fit, *scored, ids, syn.findings, project=False)) == {"metrics"}


def test_separability_reads_the_where_rows_names_a_missing_split_and_refuses_a_tuned_versions_own_images(tmp_path):
    """`where` selects the images read (the figures are those of `separability_tables` on them);
    a version without train or test images is refused naming the split and what it was needed
    for; a fine-tuned version is not scored on the images it was trained or early-stopped on."""
    from dataclasses import replace

    from embedstore.analyses.runs import load_data
    from embedstore.errors import InputError
    from store_helpers import copy_tuned_on_test_images
    from store_helpers import open_store as Store

    syn = synthetic.make(n=400, n_findings=3, d=8, seed=6)
    path = tmp_path / "store"
    st = Store(path)
    version = synthetic.to_store(syn, st)
    where = "view = 'frontal'"
    run = sp.separability(st, version, where=where, tsne_max=30)[0]
    data = load_data(st, version, where)
    assert 0 < len(data.ids) < len(syn.ids) and set(data.ids.tolist()) == set(st.images(where)["id"].to_list())
    Y01, known = mt.apply_policy(data.Y)
    tr, te = data.split == "train", data.split == "test"
    want = sp.separability_tables(data.X[tr], Y01[tr], known[tr], data.X[te], Y01[te], known[te], data.ids[te],
                                  data.findings, tsne_max=30)
    key = ["finding", "metric"]
    assert run.config["where"] == where
    assert run.metrics.sort(key, nulls_last=True).equals(want["metrics"].sort(key, nulls_last=True))
    assert run.tables["projections"].equals(want["projections"])

    full = load_data(st, version)
    no_train = replace(full, split=np.where(full.split == "train", "val", full.split))
    with pytest.raises(InputError, match=r"in split 'train' \(needed to fit LDA, kNN and PCA\)"):
        sp.separability(st, data=no_train)
    no_test = replace(full, split=np.where(full.split == "test", "val", full.split))
    with pytest.raises(InputError, match=r"in split 'test' \(needed to score\)"):
        sp.separability(st, data=no_test)

    tuned, v2 = copy_tuned_on_test_images(path, tmp_path / "tuned", full)
    with pytest.raises(InputError, match=rf"^separability would score version {v2} on 3 image\(s\) it .* and 2 it was"):
        sp.separability(tuned, v2, tsne_max=30)


def test_fisher_ratio_of_a_small_spread_and_single_finding_indices_of_float32_vectors_in_float64():
    """fisher_ratio's "no spread" is a variance of exactly 0, not a small one; the cluster indices of
    stored (float32) vectors are scikit-learn's on the same numbers in float64 (in float32
    Davies-Bouldin loses ~4e-4 on vectors far from the origin)."""
    # means 0.1 and 1.1, variances 0.01 and 0.01: 1 / 0.02
    assert sp.fisher_ratio(np.array([0.0, 0.2, 1.0, 1.2]), np.array([0, 0, 1, 1])) == pytest.approx(50.0)
    rng = np.random.default_rng(0)
    X = (np.array([10.0, -10, 10]) + 1e-3 * rng.normal(size=(40, 3))).astype(np.float32)
    labels = np.repeat([0, 1], 20)
    X[labels == 1, 0] += 2e-3
    Y = np.stack([labels == 0, labels == 1], axis=1).astype(int)
    rows = {r["metric"]: r["value"] for r in sp.single_finding(X, Y, np.ones_like(Y, bool), ["a", "b"])}
    X64 = X.astype(np.float64)
    assert rows["davies_bouldin"] == pytest.approx(davies_bouldin_score(X64, labels), rel=1e-9)
    assert rows["calinski_harabasz"] == pytest.approx(calinski_harabasz_score(X64, labels), rel=1e-9)


def _tight_float32_classes(n=12, seed=0):
    """n stored (float32) unit-ish vectors close to one direction: five positives a little to one
    side, the rest to the other. Their cosine distances are ~1e-6, below float32's resolution of
    1 - cos, so a figure computed in float32 is visibly off (~1e-1 relative)."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) < 5).astype(int)
    X = np.zeros((n, 3))
    X[:, 0] = 1
    X[:, 1] = np.where(y == 1, 1e-3, -1e-3) + 3e-4 * rng.normal(size=n)
    X[:, 2] = 3e-4 * rng.normal(size=n)
    return X.astype(np.float32), y


def test_silhouettes_in_float64_with_a_single_negative_and_a_zero_vector_equal_sklearn():
    """Float32 vectors are scored in float64; a finding with exactly one negative still has a
    silhouette (that point scores 0); a zero vector's distance to itself is 0, as in scikit-learn."""
    X, y = _tight_float32_classes()
    one_negative = np.r_[0, np.ones(len(y) - 1)].astype(int)
    Y = np.stack([y, one_negative], axis=1)
    got = sp.silhouette_binary(X, Y, np.ones_like(Y, bool))
    X64 = X.astype(np.float64)
    for j in range(2):
        assert got[j] == pytest.approx(silhouette_score(X64, Y[:, j], metric="cosine"), rel=1e-6), j
    assert sp.silhouette_cosine(X, y) == pytest.approx(silhouette_score(X64, y, metric="cosine"), rel=1e-6)
    Z = X64.copy()
    Z[2] = 0.0
    got = sp.silhouette_binary(Z, y[:, None], np.ones((len(y), 1), bool))[0]
    assert got == pytest.approx(silhouette_score(Z, y, metric="cosine"), rel=1e-6)
    assert sp.silhouette_cosine(Z, y) == pytest.approx(silhouette_score(Z, y, metric="cosine"), rel=1e-6)


def test_per_finding_centroid_distance_in_float64_and_with_a_single_test_positive():
    """The centroid distance of float32 test vectors is computed in float64 (here ~2e-6, which
    float32 gets ~3 % wrong), and a finding with exactly one test positive has one."""
    X, y = _tight_float32_classes()
    Y = np.stack([y, np.r_[1, np.zeros(len(y) - 1)]], axis=1).astype(int)
    known = np.ones_like(Y, bool)
    rows = sp.per_finding(X, Y, known, X, Y, known, ["a", "b"], k=3)
    got = {r["finding"]: r["value"] for r in rows if r["metric"] == "centroid_distance"}
    U = X.astype(np.float64) / np.linalg.norm(X.astype(np.float64), axis=1, keepdims=True)
    for j, f in enumerate(["a", "b"]):
        m = Y[:, j] == 1
        c1, c0 = U[m].mean(axis=0), U[~m].mean(axis=0)
        assert got[f] == pytest.approx(1 - c1 @ c0 / (np.linalg.norm(c1) * np.linalg.norm(c0)), rel=1e-6), f


def test_knn_neighbours_of_a_large_train_set_are_the_k_nearest_for_k_1_and_2():
    """k = 1 gives one column; on a train set too large for numpy to sort it whole, the k columns
    are the k nearest (argpartition at k - 1), not k - 1 of them and any other."""
    rng = np.random.default_rng(4)
    Xtr, Xte = rng.normal(size=(3000, 4)), rng.normal(size=(30, 4))
    cos = (Xte / np.linalg.norm(Xte, axis=1, keepdims=True)) @ (Xtr / np.linalg.norm(Xtr, axis=1, keepdims=True)).T
    for k in (1, 2, 15):
        nn = sp.knn_neighbours(Xtr, Xte, k=k)
        assert nn.shape == (30, k)
        np.testing.assert_array_equal(np.sort(nn, axis=1), np.sort(np.argsort(-cos, axis=1)[:, :k], axis=1))


def test_projections_at_their_size_limits_and_on_wide_vectors():
    """Three train and three test images are enough for PCA (with as many axes as train images);
    fewer give an empty table with the projection schema; the default seed is 0; t-SNE runs on at
    most 50 PCA axes (vectors wider than 50) with perplexity at most 30 (samples above 91)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    rng = np.random.default_rng(5)
    Xtr, Xte = rng.normal(size=(80, 6)), rng.normal(size=(100, 6))
    ids = np.arange(500, 600)
    assert sp.projections(Xtr[:3], Xte[:4], ids[:4]).height == 4
    assert sp.projections(Xtr, Xte[:3], ids[:3])["method"].to_list() == ["pca"] * 3
    empty = sp.projections(Xtr[:2], Xte, ids)
    assert empty.is_empty() and dict(empty.schema) == {"method": pl.Utf8, "id": pl.Int64, "x": pl.Float64, "y": pl.Float64}
    default = sp.projections(Xtr, Xte[:40], ids[:40], tsne_max=10).filter(pl.col("method") == "tsne")
    assert default["id"].to_list() == ids[np.sort(np.random.default_rng(0).choice(40, size=10, replace=False))].tolist()

    def tsne_of(Z, n):
        return TSNE(n_components=2, perplexity=min(30.0, (n - 1) / 3), init="pca", random_state=0, max_iter=500,
                    n_jobs=1).fit_transform(Z)

    got = sp.projections(Xtr, Xte, ids, tsne_max=100).filter(pl.col("method") == "tsne")  # perplexity 30, not 33
    Z = PCA(n_components=6, svd_solver="covariance_eigh").fit(Xtr).transform(Xte)
    np.testing.assert_allclose(got.select("x", "y").to_numpy(), tsne_of(Z, 100), rtol=1e-5, atol=1e-5)
    Wtr, Wte = rng.normal(size=(80, 60)), rng.normal(size=(12, 60))
    got = sp.projections(Wtr, Wte, ids[:12]).filter(pl.col("method") == "tsne")
    Z = PCA(n_components=50, svd_solver="covariance_eigh").fit(Wtr).transform(Wte)
    np.testing.assert_allclose(got.select("x", "y").to_numpy(), tsne_of(Z, 12), rtol=1e-5, atol=1e-5)
