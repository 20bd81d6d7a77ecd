"""Near-duplicate images from stored vectors, and the split leaks they reveal (`embedstore duplicates`).

1. The space: the version's unit vectors, PCA-whitened by default (centred, rotated onto their
   principal axes, each axis scaled to unit variance, rows renormalised; axes with a variance
   below 1e-6 of the largest are dropped). Vision-language embeddings sit in a narrow cone, where
   every image's nearest neighbour is at cosine 0.95 or more; whitening spreads them so that a
   pair's cosine says how unusually close it is. `space="cosine"` searches the stored vectors as
   they are.
2. Each image's k = 10 + 1 nearest neighbours from a FAISS exact inner-product index (k-NN
   search), from other studies only.
3. The score of a pair (local scaling, the default): its cosine less the mean of the two images'
   *levels*, an image's level being its mean cosine to its 2nd .. 11th other-study neighbours.
   Some images sit in dense parts of the space (hubs: common anatomy, no finding) and are close to
   many others; a raw cosine then rewards density, not identity. Subtracting each image's own
   neighbourhood level (as CSLS does for cross-lingual retrieval, Conneau et al. 2018) asks how
   much closer a pair is than either image usually gets. The first neighbour is left out of the
   level because it may be the duplicate sought. `scaling="none"`: the score is the cosine.
   Measured on 1,000 phantom studies (bench/RESULTS.md): removing the findings first (projecting
   off the label-prompt or label-probe directions) made same-patient retrieval worse, not better;
   local scaling raised the recall reachable at precision 0.9 from 0.25 to 0.44.
4. The threshold: a score, or `auto`: the 99.9th percentile of each image's score with its
   second-nearest other-study neighbour (its nearest *ordinary* one: an image rarely has two
   near-duplicates of one view), so about one image in a thousand passes it by chance. Outlier
   rules on the first neighbours (Tukey's fences, median + k MAD) fail when many images have a
   duplicate: then the duplicates are the upper part of that distribution, not outliers in it.
   The pairs: each sought from its lower-level image, which needs a cosine of at least the
   threshold plus its own level: FAISS range searches over chunks of images of similar level,
   then the exact cut, so memory grows with the pairs found, not with n^2; pairs within one study (its frontal and lateral images) are left out.
5. The groups: connected components (scipy) of the split groups (patient, else study) that the
   pairs join. A group whose split groups lie in different splits is a probable leak; `regroup`
   writes it as one split group (splits stay frozen) and says how many images would move if the
   splits were drawn again with the group kept whole.

Stored as a run (`duplicate_pairs`, `duplicate_groups`, `metrics`), reused while the version's
vectors, splits and groups are unchanged.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import numpy as np
import polars as pl

from embedstore.errors import InputError

SPACES = ("whitened", "cosine")
SCALINGS = ("local", "none")
NEIGHBOURS = 10  # k of the k-NN search that gives each image's nearest neighbours from other studies
NULL_QUANTILE = 99.9  # auto: this percentile of the second-nearest-neighbour similarities
RANGE_CHUNK = 256  # rows per FAISS range search (rows of similar level share one radius)
MAX_PAIRS_PER_IMAGE = 50  # a threshold finding more pairs than this finds similar images, not duplicates
MERGED_PREFIX = "dup:"


@dataclass
class Duplicates:
    """What `duplicates` found: the run, the threshold and how it was chosen, the pairs and the
    groups (`to_polars()`: one row per group), and with `regroup` how many images changed group."""

    run: object  # analyses.runs.RunResult
    threshold: float
    rule: str
    pairs: pl.DataFrame
    groups: pl.DataFrame
    across_splits: bool = False
    regrouped: int | None = None

    @property
    def images_to_move(self) -> int:
        """Images outside their group's majority split: they would move if the splits were drawn
        again with every group kept whole."""
        return int(self.groups["would_move"].sum()) if self.groups.height else 0

    @property
    def summary(self) -> dict:
        crossing = self.groups.filter(pl.col("crosses_splits")) if self.groups.height else self.groups
        return {"run_id": self.run.run_id, "version": self.run.version, "threshold": round(self.threshold, 4),
                "rule": self.rule, "pairs": self.pairs.height, "groups": self.groups.height,
                "cross_split_groups": crossing.height, "images_to_move": self.images_to_move,
                "regrouped_images": self.regrouped, "reused": self.run.reused}

    def to_polars(self) -> pl.DataFrame:
        return self.groups


# ---- the NumPy / FAISS core ----------------------------------------------------------------
def search_space(X: np.ndarray, space: str = "whitened") -> np.ndarray:
    """float32 unit rows to search: the stored vectors (cosine) or their PCA-whitened form."""
    if space not in SPACES:
        raise InputError(f"--space {space!r}: use one of {', '.join(SPACES)}")
    X = np.asarray(X, dtype=np.float32)
    if space == "whitened" and len(X) > 2:
        Xc = X - X.mean(axis=0)
        vals, vecs = np.linalg.eigh((Xc.T @ Xc) / (len(X) - 1))
        keep = vals > vals.max() * 1e-6
        X = Xc @ (vecs[:, keep] / np.sqrt(vals[keep]))
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return np.ascontiguousarray(X / np.where(norms > 0, norms, 1.0), dtype=np.float32)


def other_neighbours(index, Z: np.ndarray, study: np.ndarray, k: int = NEIGHBOURS) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, rows) [n, k + 1]: each row's k + 1 nearest neighbours from other studies,
    best first (NaN / -1 where the k-NN search found fewer). The search goes deep enough to step
    over the row's own study (itself and its other views)."""
    _, per_study = np.unique(study, return_counts=True)
    D, I = index.search(Z, min(k + 1 + int(per_study.max()), len(Z)))
    other = (I >= 0) & (study[np.clip(I, 0, None)] != study[:, None])
    rank = np.cumsum(other, axis=1)
    sims, rows = np.full((len(Z), k + 1), np.nan), np.full((len(Z), k + 1), -1, dtype=np.int64)
    for j in range(k + 1):
        hit = other & (rank == j + 1)
        found = hit.any(axis=1)
        at = hit[found].argmax(axis=1)
        sims[found, j], rows[found, j] = D[found, at], I[found, at]
    return sims, rows


def local_levels(sims: np.ndarray, scaling: str = "local") -> np.ndarray:
    """Each row's neighbourhood level: the mean similarity to its 2nd .. (k+1)th other-study
    neighbours (the 1st is left out: it may be the duplicate sought); 0 for every row when
    `scaling` is "none". A row with no such neighbours gets the median level."""
    if scaling not in SCALINGS:
        raise InputError(f"--scaling {scaling!r}: use one of {', '.join(SCALINGS)}")
    if scaling == "none" or sims.shape[1] < 2:
        return np.zeros(len(sims))
    ordinary = sims[:, 1:]
    counts = np.isfinite(ordinary).sum(axis=1)
    level = np.where(counts > 0, np.nansum(ordinary, axis=1) / np.maximum(counts, 1), np.nan)
    return np.where(np.isfinite(level), level, np.nanmedian(level) if np.isfinite(level).any() else 0.0)


def nearest_other(sims: np.ndarray, rows: np.ndarray, level: np.ndarray) -> np.ndarray:
    """[n, 2]: each row's score with its first and second nearest neighbours from other studies
    (NaN where the k-NN search found fewer); a pair's score is its similarity less the mean of
    the two images' levels."""
    out = np.full((len(sims), 2), np.nan)
    for j in (0, 1):
        if j < sims.shape[1]:
            found = rows[:, j] >= 0
            out[found, j] = sims[found, j] - (level[found] + level[rows[found, j]]) / 2
    return out


def auto_threshold(nn: np.ndarray) -> float:
    """The 99.9th percentile of the second-nearest-neighbour scores `nn[:, 1]` (below 1)."""
    second = nn[:, 1][np.isfinite(nn[:, 1])]
    if second.size < 4:
        raise InputError(f"--threshold auto needs the neighbours of at least 4 images from other studies, found "
                         f"{second.size}; give --threshold SCORE")
    return float(min(np.percentile(second, NULL_QUANTILE), np.nextafter(np.float32(1.0), np.float32(0.0))))


def parse_threshold(threshold) -> float | None:
    """None for "auto", else the score as a float in (-1, 1]; InputError naming the value."""
    if threshold is None or str(threshold).strip().lower() == "auto":
        return None
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise InputError(f"--threshold {threshold!r}: give auto or a score such as 0.3") from None
    if not -1.0 < value <= 1.0:
        raise InputError(f"--threshold {threshold!r}: a score lies in (-1, 1]; give auto or e.g. 0.3")
    return value


def range_pairs(index, Z: np.ndarray, level: np.ndarray, threshold: float, chunk: int = RANGE_CHUNK):
    """(a, b, scores), a < b, of every pair whose score (similarity less the mean of the two levels)
    is at least `threshold`. Each pair is sought from its lower-level image, which needs a cosine of
    at least threshold + its own level: FAISS range searches over chunks of images of similar
    level, each at its lowest such cosine, then the exact cut; memory grows with the pairs found."""
    order = np.argsort(level, kind="stable")
    rows, cols, scores, found = [], [], [], 0
    for start in range(0, len(order), chunk):
        q = order[start:start + chunk]
        lims, D, I = index.range_search(Z[q], threshold + float(level[q].min()))
        found += len(I)
        if found > MAX_PAIRS_PER_IMAGE * len(Z):
            raise InputError(f"--threshold {threshold:.4f} joins over {found:,} pairs among {len(Z):,} images: similar "
                             "images, not duplicates; give a higher --threshold (or auto)")
        r, c = np.repeat(q, np.diff(lims).astype(np.int64)), I.astype(np.int64)
        score = D.astype(np.float64) - (level[r] + level[c]) / 2
        keep = (score >= threshold) & (level[c] >= level[r]) & (r != c)
        rows.append(r[keep]), cols.append(c[keep]), scores.append(score[keep])
    r, c, score = np.concatenate(rows), np.concatenate(cols), np.concatenate(scores)
    pair = np.stack([np.minimum(r, c), np.maximum(r, c)], axis=1)
    pair, first = np.unique(pair, axis=0, return_index=True)  # a pair of equal levels is found from both sides
    return pair[:, 0], pair[:, 1], score[first]


def find_pairs(Z: np.ndarray, study: np.ndarray, threshold: float | None, k: int = NEIGHBOURS, scaling: str = "local",
               range_chunk: int = RANGE_CHUNK):
    """(pairs [m, 2] row indices a < b, their score [m], threshold, nn scores, search seconds)."""
    import faiss

    t0 = time.perf_counter()
    index = faiss.IndexFlatIP(Z.shape[1])
    index.add(Z)
    sims, rows = other_neighbours(index, Z, study, k)
    level = local_levels(sims, scaling)
    nn = nearest_other(sims, rows, level)
    if threshold is None:
        threshold = auto_threshold(nn)
    a, b, score = range_pairs(index, Z, level, float(threshold), range_chunk)
    seconds = time.perf_counter() - t0
    keep = study[a] != study[b]
    return np.stack([a[keep], b[keep]], axis=1), score[keep], float(threshold), nn, seconds


def group_components(pairs: np.ndarray, group_of_row: np.ndarray) -> dict[str, int]:
    """Split group -> component number (0, 1, ... in order of each component's smallest group
    id) over the split groups the pairs join; groups in no pair are left out."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if not len(pairs):
        return {}
    names, codes = np.unique(group_of_row[pairs.ravel()], return_inverse=True)
    codes = codes.reshape(-1, 2)
    graph = coo_matrix((np.ones(len(codes)), (codes[:, 0], codes[:, 1])), shape=(len(names), len(names)))
    _, label = connected_components(graph, directed=False)
    order = {c: i for i, c in enumerate(dict.fromkeys(label))}  # names are sorted: numbered by smallest id
    return {str(g): order[c] for g, c in zip(names, label)}


# ---- the tables a run stores, and the result shown -------------------------------------------
def duplicate_tables(ids: np.ndarray, X: np.ndarray, meta: pl.DataFrame, threshold: float | None, space: str,
                     k: int = NEIGHBOURS, scaling: str = "local") -> dict[str, pl.DataFrame]:
    """duplicate_pairs (id_a, id_b, similarity: the pair's score), duplicate_groups (group_no, id: every image of the
    split groups each component joins) and metrics (threshold, nearest-neighbour quartiles, counts,
    the search's seconds) of one version's vectors `X` (rows `ids`; `meta` from `Storage.image_meta`)."""
    rows = pl.DataFrame({"id": ids}).join(meta.select("id", "study_id", "group_id"), on="id", how="left")
    study = np.array(rows["study_id"].fill_null("").to_list(), dtype=object)
    study = np.where(study == "", np.array([f"image:{i}" for i in ids], dtype=object), study)
    group = np.array(rows["group_id"].to_list(), dtype=object)
    from embedstore.analyses.metrics import point_metrics

    Z = search_space(X, space)
    pairs, sims, threshold, nn, seconds = find_pairs(Z, study, threshold, k, scaling)
    component = group_components(pairs, group)
    members = meta.filter(pl.col("group_id").is_in(list(component))).select(
        pl.col("group_id").replace_strict(component, return_dtype=pl.Int32).alias("group_no"), "id").sort("group_no", "id")
    q = [np.nanpercentile(nn[:, j], p) if np.isfinite(nn[:, j]).any() else np.nan
         for j, p in ((0, 50), (0, 99), (1, 50), (1, NULL_QUANTILE))]
    metrics = [("threshold", threshold), ("nn_median", q[0]), ("nn_p99", q[1]), ("nn2_median", q[2]), ("nn2_p99.9", q[3]),
               ("pairs", len(pairs)), ("groups", len(set(component.values()))), ("dims", Z.shape[1]),
               ("images", len(ids)), ("search_seconds", seconds)]
    return {
        "duplicate_pairs": pl.DataFrame({"id_a": ids[pairs[:, 0]] if len(pairs) else np.zeros(0, np.int64),
                                         "id_b": ids[pairs[:, 1]] if len(pairs) else np.zeros(0, np.int64),
                                         "similarity": sims}),
        "duplicate_groups": members,
        "metrics": point_metrics((None, m, v) for m, v in metrics),
    }


def group_table(members: pl.DataFrame, pairs: pl.DataFrame, meta: pl.DataFrame) -> pl.DataFrame:
    """One row per group: its split groups, studies, images, splits, whether it crosses splits,
    how many images lie outside its majority split (`would_move`), its ids, labels and best pair."""
    schema = {"group_no": pl.Int32, "split_groups": pl.UInt32, "studies": pl.UInt32, "images": pl.UInt32,
              "splits": pl.String, "crosses_splits": pl.Boolean, "would_move": pl.Int64, "max_similarity": pl.Float64,
              "study_ids": pl.String, "image_ids": pl.String, "labels": pl.String, "group_ids": pl.String}
    if not members.height:
        return pl.DataFrame(schema=schema)
    m = members.join(meta, on="id", how="left").with_columns(pl.col("split").fill_null("none"))
    majority = (m.group_by("group_no", "split").len().sort("group_no", "len", "split", descending=[False, True, False])
                .group_by("group_no", maintain_order=True).agg(pl.col("len").first().alias("in_majority")))
    best = pairs.group_by("group_no").agg(pl.col("similarity").max().alias("max_similarity"))
    labels = (m.select("group_no", pl.col("labels").str.split(", ")).explode("labels").drop_nulls().unique()
              .group_by("group_no").agg(pl.col("labels").sort().str.join(", ")))
    out = (m.group_by("group_no").agg(
        pl.col("group_id").n_unique().alias("split_groups"), pl.col("study_id").n_unique().alias("studies"),
        pl.len().alias("images"), pl.col("split").unique().sort().str.join(",").alias("splits"),
        pl.col("study_id").unique().sort().str.join(",").alias("study_ids"),
        pl.col("image_id").sort().str.join(",").alias("image_ids"),
        pl.col("group_id").unique().sort().str.join(",").alias("group_ids"))
        .join(majority, on="group_no").join(best, on="group_no", how="left").join(labels, on="group_no", how="left")
        .with_columns(pl.col("splits").str.contains(",").alias("crosses_splits"),
                      (pl.col("images") - pl.col("in_majority")).cast(pl.Int64).alias("would_move")))
    return out.select(list(schema)).cast(schema).sort("group_no")


def merged_groups(members: pl.DataFrame, meta: pl.DataFrame) -> pl.DataFrame:
    """id, group_id: every image of a group that joins several split groups, given one merged id,
    `dup:` + the smallest of its split groups' ids (without an earlier `dup:`), so a second run
    over merged groups names them the same."""
    m = members.join(meta.select("id", "group_id"), on="id", how="left")
    name = (m.group_by("group_no").agg(pl.col("group_id").n_unique().alias("n"),
                                      pl.col("group_id").str.strip_prefix(MERGED_PREFIX).min().alias("base"))
            .filter(pl.col("n") > 1).select("group_no", (pl.lit(MERGED_PREFIX) + pl.col("base")).alias("merged")))
    return m.join(name, on="group_no").select("id", pl.col("merged").alias("group_id"))


# ---- store-facing ---------------------------------------------------------------------------
def duplicates(store, version: str | None = None, threshold="auto", across_splits: bool = False,
               regroup: bool = False, space: str = "whitened", k: int = NEIGHBOURS, force: bool = False,
               scaling: str = "local") -> Duplicates:
    """Near-duplicate pairs and groups of `version`'s images, stored as a run (see the module
    docstring); `across_splits` shows only the groups that cross splits; `regroup` merges each
    group's split groups into one (`Storage.merge_split_groups`)."""
    from embedstore.analyses.runs import cached_run
    from embedstore.store import fingerprint

    value = parse_threshold(threshold)
    if space not in SPACES:
        raise InputError(f"--space {space!r}: use one of {', '.join(SPACES)}")
    if scaling not in SCALINGS:
        raise InputError(f"--scaling {scaling!r}: use one of {', '.join(SCALINGS)}")
    version = store.version(version).id  # a bad --version fails read-only, before the lock
    # --regroup writes split groups after the run: a busy store fails before either is written
    with store.writer() if regroup else contextlib.nullcontext():
        return _duplicates(store, version, value, across_splits, regroup, space, k, force, scaling)


def _duplicates(store, version, value, across_splits, regroup, space, k, force, scaling) -> Duplicates:
    from embedstore.analyses.runs import cached_run
    from embedstore.store import fingerprint

    info = store.version(version)
    ids, X = store.image_vectors(info.id)
    if len(ids) < 2:
        raise InputError(f"version {info.id} has {len(ids)} image vector(s); duplicates needs at least 2")
    meta = store.image_meta()
    known = meta.filter(pl.col("id").is_in(ids.tolist()))
    config = {"threshold": "auto" if value is None else value, "space": space, "k": k, "scaling": scaling,
              "rule": f"second-neighbour-p{NULL_QUANTILE:g}", "data": fingerprint(known["id"].to_numpy(),
                                                                      known["split"].fill_null("").to_list(),
                                                                      known["group_id"].to_list(),
                                                                      known["study_id"].fill_null("").to_list())}
    run = cached_run(store, "duplicates", info.id, config, lambda: duplicate_tables(ids, X, meta, value, space, k, scaling),
                     force, tables=("metrics", "duplicate_pairs", "duplicate_groups"))
    metric = dict(zip(run.metrics["metric"].to_list(), run.metrics["value"].to_list()))
    rule = (f"given: {metric['threshold']:.4f}" if value is not None else
            auto_rule_text(metric, scaling)) + f" ({'PCA-whitened' if space == 'whitened' else 'stored'} vectors; " + (
            f"score = cosine - mean of the two images' levels, a level being an image's mean cosine to its 2nd-{k + 1}th "
            "other-study neighbours)" if scaling == "local" else "score = cosine)")
    members = run.tables["duplicate_groups"]
    pairs = store.duplicate_pairs(run.run_id)
    groups = group_table(members, pairs, meta)
    regrouped = None
    if regroup:
        regrouped = store.merge_split_groups(merged_groups(members, meta))
    if across_splits:
        crossing = groups.filter(pl.col("crosses_splits"))
        groups, pairs = crossing, pairs.filter(pl.col("group_no").is_in(crossing["group_no"].to_list()))
    return Duplicates(run, float(metric["threshold"]), rule, pairs, groups, across_splits, regrouped)


def stored_groups(store, run_id: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(groups, pairs) of a stored duplicates run, beside the images' current metadata (the report)."""
    members = store.run_tables(run_id, ("duplicate_groups",))["duplicate_groups"]
    pairs = store.duplicate_pairs(run_id)
    return group_table(members, pairs, store.image_meta()), pairs


def auto_rule_text(metric: dict, scaling: str = "local") -> str:
    return (f"auto: the {NULL_QUANTILE:g}th percentile of {int(metric['images']):,} images' scores with their "
            f"second-nearest neighbour from another study (median {metric['nn2_median']:.3f}) = "
            f"{metric['threshold']:.4f}; nearest neighbours: median {metric['nn_median']:.3f}, 99th percentile "
            f"{metric['nn_p99']:.3f}")
