"""How well stored vectors separate findings, multi-label aware. Fitted on train, scored on test.

Per finding (test images whose label for it is known):
- `silhouette`: positive-vs-negative silhouette with cosine distance (exact, every test image:
  on unit vectors the mean cosine distance to a set is 1 - x . mean(set), so no pairwise matrix);
- `fisher_ratio`: (m1 - m0)^2 / (v1 + v0) of the test images' projections on the LDA direction
  fitted on train (within-class covariance shrunk towards a scaled identity, alpha 0.1);
- `knn_agreement` / `knn_agreement_pos`: over the k nearest *train* images (cosine) of each test
  image, the fraction whose label for the finding equals the test image's; `_pos` over the
  positive test images only (negatives dominate the plain figure);
- `centroid_distance`: cosine distance between the positive and negative centroids.

On test images with exactly one positive finding (every other label known and negative):
`silhouette` (cosine), `davies_bouldin`, `calinski_harabasz` (scikit-learn, Euclidean) and the
seed study's `inter_intra_ratio` = mean Euclidean distance between class centroids / mean
Euclidean distance of an image to its class centroid. Classes with fewer than 2 images are left out.

Projections: PCA fitted on train, applied to the test images; t-SNE of at most `tsne_max`
test images (seeded sample) on their 50-d PCA coordinates; UMAP likewise when installed.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from embedstore.analyses.metrics import METRIC_COLUMNS

LDA_SHRINKAGE = 0.1
KNN_K = 15
TSNE_MAX = 300


def _unit(X):
    n = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(n > 0, n, 1.0)


def silhouette_cosine(X: np.ndarray, labels: np.ndarray) -> float:
    """scikit-learn's silhouette_score(X, labels, metric="cosine"), in O(n d k) memory and time."""
    X = _unit(np.asarray(X, dtype=np.float64))
    classes, inv = np.unique(labels, return_inverse=True)
    if not 2 <= len(classes) < len(labels):
        return float("nan")
    onehot = np.zeros((len(labels), len(classes)))
    onehot[np.arange(len(labels)), inv] = 1.0
    sizes = onehot.sum(axis=0)
    sums = onehot.T @ X  # [k, d]
    dist_sum = sizes[None, :] - X @ sums.T  # sum over each class of (1 - cos)
    own = dist_sum[np.arange(len(labels)), inv] - (1.0 - (X * X).sum(axis=1))  # minus self distance
    own_size = sizes[inv]
    with np.errstate(invalid="ignore", divide="ignore"):
        a = np.where(own_size > 1, own / (own_size - 1), 0.0)
        mean_other = dist_sum / sizes[None, :]
    mean_other[np.arange(len(labels)), inv] = np.inf
    b = mean_other.min(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.where(own_size > 1, (b - a) / np.maximum(a, b), 0.0)
    return float(np.nan_to_num(s).mean())


def silhouette_binary(X: np.ndarray, Y01: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Per finding, `silhouette_cosine(X[known_f], Y01[known_f, f])`, all findings in two
    matrix products (positives' and negatives' vector sums); NaN where a class has < 1 member."""
    X = _unit(np.asarray(X, dtype=np.float64))
    pos = ((Y01 == 1) & known).astype(np.float64)
    neg = ((Y01 == 0) & known).astype(np.float64)
    n1, n0 = pos.sum(axis=0), neg.sum(axis=0)
    self_d = 1.0 - (X * X).sum(axis=1, keepdims=True)  # ~0: a unit vector's distance to itself
    d1 = n1 - X @ (pos.T @ X).T  # [n, F] summed cosine distance to the positives
    d0 = n0 - X @ (neg.T @ X).T
    is_pos = pos > 0
    own_n = np.where(is_pos, n1, n0)
    with np.errstate(invalid="ignore", divide="ignore"):
        a = np.where(own_n > 1, (np.where(is_pos, d1, d0) - self_d) / (own_n - 1), 0.0)
        b = np.where(is_pos, d0 / n0, d1 / n1)
        s = np.where(own_n > 1, (b - a) / np.maximum(a, b), 0.0)
    s = np.where(known, np.nan_to_num(s), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = s.sum(axis=0) / known.sum(axis=0)
    out[(n1 < 1) | (n0 < 1)] = np.nan
    return out


def inter_intra_ratio(X: np.ndarray, labels: np.ndarray) -> float:
    """Mean distance between class centroids over mean distance of a point to its centroid."""
    classes, inv = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        return float("nan")
    cents = np.stack([X[inv == k].mean(axis=0) for k in range(len(classes))])
    intra = np.linalg.norm(X - cents[inv], axis=1).mean()
    iu = np.triu_indices(len(classes), 1)
    inter = np.linalg.norm(cents[:, None] - cents[None, :], axis=2)[iu].mean()
    return float(inter / intra) if intra > 0 else float("nan")


class LdaDirections:
    """Per-finding two-class LDA direction Sigma^-1 (mu1 - mu0), fitted on train vectors.

    Sigma = sum_k prior_k * ((1 - a) C_k + a * tr(C_k)/d * I), the same estimate as scikit-learn's
    LinearDiscriminantAnalysis(solver="lsqr", shrinkage=a). The second moments of all train rows
    are computed once; each finding then needs only its positives' (few) rows.
    """

    def __init__(self, Xtr, Y01, known, shrinkage: float = LDA_SHRINKAGE):
        from threadpoolctl import threadpool_limits

        X32 = np.asarray(Xtr, dtype=np.float32)
        d = X32.shape[1]
        total = (X32.T @ X32).astype(np.float64)  # second moments of every train row, once
        total_sum = X32.sum(axis=0, dtype=np.float64)
        eye = np.eye(d)
        self.W = np.full((Y01.shape[1], d), np.nan)
        for j in range(Y01.shape[1]):
            m = known[:, j]
            pos, neg = m & (Y01[:, j] == 1), m & (Y01[:, j] == 0)
            n1, n0 = int(pos.sum()), int(neg.sum())
            if n1 < 2 or n0 < 2:
                continue
            Xp, Xu = X32[pos], X32[~m]
            T1 = (Xp.T @ Xp).astype(np.float64)
            T0 = total - T1 - (Xu.T @ Xu).astype(np.float64)
            s1 = Xp.sum(axis=0, dtype=np.float64)
            mu1, mu0 = s1 / n1, (total_sum - s1 - Xu.sum(axis=0, dtype=np.float64)) / n0
            C1, C0 = T1 / n1 - np.outer(mu1, mu1), T0 / n0 - np.outer(mu0, mu0)
            pooled = (n1 * C1 + n0 * C0) / (n1 + n0)
            ridge = shrinkage * (n1 * np.trace(C1) + n0 * np.trace(C0)) / ((n1 + n0) * d)
            sigma = (1 - shrinkage) * pooled + ridge * eye
            with threadpool_limits(1):  # a 512 x 512 solve gains nothing from threads, and they
                self.W[j] = np.linalg.solve(sigma, mu1 - mu0)  # spin badly on a busy 2-core machine


def fisher_ratio(z: np.ndarray, y: np.ndarray) -> float:
    """(m1 - m0)^2 / (v1 + v0) of 1-D projections z by class y."""
    z1, z0 = z[y == 1], z[y == 0]
    if z1.size < 2 or z0.size < 2:
        return float("nan")
    v = z1.var() + z0.var()
    return float((z1.mean() - z0.mean()) ** 2 / v) if v > 0 else float("nan")


def knn_neighbours(Xtr: np.ndarray, Xte: np.ndarray, k: int = KNN_K) -> np.ndarray:
    """[n_test, k] row indices into Xtr of each test vector's nearest train vectors (cosine)."""
    k = max(1, min(k, Xtr.shape[0]))
    out = np.empty((Xte.shape[0], k), dtype=np.int64)
    Xtr_u = _unit(Xtr)
    for s in range(0, Xte.shape[0], 2048):
        sim = _unit(Xte[s:s + 2048]) @ Xtr_u.T
        out[s:s + 2048] = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    return out


def per_finding(Xtr, Ytr, known_tr, Xte, Yte, known_te, findings, k: int = KNN_K) -> list[dict]:
    """Rows (finding, metric, value) of the per-finding figures; see the module docstring."""
    lda = LdaDirections(Xtr, Ytr, known_tr)
    nn = knn_neighbours(Xtr, Xte, k) if Xtr.shape[0] else None
    Xte_u = _unit(np.asarray(Xte, dtype=np.float64))
    silhouettes = silhouette_binary(Xte_u, Yte, known_te)
    rows = []
    for j, f in enumerate(findings):
        m = known_te[:, j]
        y, X = Ytr[:, j], Xte_u[m]
        yt = Yte[m, j]
        vals = {"silhouette": float(silhouettes[j]),
                "fisher_ratio": fisher_ratio(X @ lda.W[j], yt) if np.isfinite(lda.W[j]).all() else np.nan}
        if nn is not None:
            lab = y[nn[m]]  # [n_known_test, k] train labels of the neighbours
            counted = known_tr[:, j][nn[m]]  # neighbours whose label is masked are not counted
            den = counted.sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                agree = ((lab == yt[:, None]) & counted).sum(axis=1) / den
            ok = den > 0
            vals["knn_agreement"] = float(agree[ok].mean()) if ok.any() else np.nan
            vals["knn_agreement_pos"] = float(agree[ok & (yt == 1)].mean()) if (ok & (yt == 1)).any() else np.nan
        if 0 < yt.sum() < yt.size:
            c1, c0 = X[yt == 1].mean(axis=0), X[yt == 0].mean(axis=0)
            vals["centroid_distance"] = float(1 - c1 @ c0 / (np.linalg.norm(c1) * np.linalg.norm(c0)))
        else:
            vals["centroid_distance"] = np.nan
        vals["support"], vals["n"] = float(yt.sum()), float(yt.size)
        rows += [{"finding": f, "metric": name, "value": v, "lo": None, "hi": None} for name, v in vals.items()]
    return rows


def single_finding(Xte, Yte, known_te, findings) -> list[dict]:
    """Overall rows: cluster indices on test images with exactly one positive finding."""
    from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score

    pos = (Yte == 1) & known_te
    sel = (pos.sum(axis=1) == 1) & known_te.all(axis=1)
    labels = pos[sel].argmax(axis=1)
    classes, counts = np.unique(labels, return_counts=True)
    keep = np.isin(labels, classes[counts >= 2])
    X, labels = np.asarray(Xte, dtype=np.float64)[sel][keep], labels[keep]
    vals = {"n_single": float(len(labels)), "n_classes": float(len(np.unique(labels)))}
    if len(np.unique(labels)) >= 2:
        vals["silhouette"] = silhouette_cosine(X, labels)
        vals["davies_bouldin"] = float(davies_bouldin_score(X, labels))
        vals["calinski_harabasz"] = float(calinski_harabasz_score(X, labels))
        vals["inter_intra_ratio"] = inter_intra_ratio(X, labels)
    return [{"finding": None, "metric": name, "value": v, "lo": None, "hi": None} for name, v in vals.items()]


def projections(Xtr, Xte, ids_te, seed: int = 0, tsne_max: int = TSNE_MAX) -> pl.DataFrame:
    """2-D projections of the test images: PCA fitted on train; t-SNE (and UMAP if installed) of
    a seeded sample of at most `tsne_max` test images, on their train-fitted 50-d PCA."""
    from sklearn.decomposition import PCA

    schema = {"method": pl.Utf8, "id": pl.Int64, "x": pl.Float64, "y": pl.Float64}
    if Xtr.shape[0] < 3 or Xte.shape[0] < 3:
        return pl.DataFrame(schema=schema)
    from threadpoolctl import threadpool_limits

    n_comp = min(50, Xtr.shape[1], Xtr.shape[0])
    with threadpool_limits(1):  # d x d eigh: small LAPACK work that threads only slow down here
        pca = PCA(n_components=n_comp, svd_solver="covariance_eigh").fit(Xtr)
    Z = pca.transform(Xte)
    frames = [pl.DataFrame({"method": "pca", "id": ids_te, "x": Z[:, 0], "y": Z[:, 1]}, schema=schema)]
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(Xte.shape[0], size=min(tsne_max, Xte.shape[0]), replace=False))
    for method, fn in (("tsne", _tsne), ("umap", _umap)):
        xy = fn(Z[pick], seed)
        if xy is not None:
            frames.append(pl.DataFrame({"method": method, "id": ids_te[pick], "x": xy[:, 0], "y": xy[:, 1]}, schema=schema))
    return pl.concat(frames)


def _tsne(Z, seed):
    from sklearn.manifold import TSNE

    if Z.shape[0] < 5:
        return None
    from threadpoolctl import threadpool_limits

    perplexity = min(30.0, (Z.shape[0] - 1) / 3)
    with threadpool_limits(1):  # OpenMP threads in the Barnes-Hut gradient only add overhead at this size
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                    max_iter=500, n_jobs=1).fit_transform(Z)


def _umap(Z, seed):
    try:
        import umap  # optional; not a dependency
    except ImportError:
        return None
    return umap.UMAP(n_components=2, random_state=seed).fit_transform(Z)


def separability_tables(Xtr, Ytr, known_tr, Xte, Yte, known_te, ids_te, findings, k: int = KNN_K,
                        seed: int = 0, tsne_max: int = TSNE_MAX, project: bool = True) -> dict[str, pl.DataFrame]:
    """`metrics` and `projections` tables for one version; train arrays fit, test arrays score."""
    rows = per_finding(Xtr, Ytr, known_tr, Xte, Yte, known_te, findings, k) + single_finding(Xte, Yte, known_te, findings)
    out = {"metrics": pl.DataFrame(rows, schema=METRIC_COLUMNS)}
    if project:
        out["projections"] = projections(Xtr, Xte, np.asarray(ids_te), seed, tsne_max)
    return out


# ---- store-facing -------------------------------------------------------------------------
def separability(store, version: str | None = None, k: int = KNN_K, uncertain: str = "mask",
                 where: str | None = None, tsne_max: int = TSNE_MAX, seed: int = 0, force: bool = False, data=None):
    """Separability run: anything fitted (LDA, kNN index, PCA) on train, every figure on test;
    `runs.Runs` with the one run."""
    from embedstore.analyses.metrics import apply_policy
    from embedstore.analyses.runs import Runs, cached_run, load_data, refuse_fitted, require_split

    data = data or load_data(store, version, where)
    tr = require_split(data, "train", "to fit LDA, kNN and PCA")
    te = require_split(data, "test", "to score")
    refuse_fitted(store, data.version, data.ids[te], "separability")
    config = {"k": k, "uncertain": uncertain, "where": where, "tsne_max": tsne_max, "seed": seed,
              "lda_shrinkage": LDA_SHRINKAGE, "findings": data.findings, "data": data.fingerprint()}

    def compute():
        Y01, known = apply_policy(data.Y, uncertain)
        return separability_tables(data.X[tr], Y01[tr], known[tr], data.X[te], Y01[te], known[te],
                                   data.ids[te], data.findings, k, seed, tsne_max)

    return Runs([cached_run(store, "separability", data.version, config, compute, force,
                            tables=("metrics", "projections"))])
