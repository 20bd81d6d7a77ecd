"""Near-duplicate images from stored vectors, and the split leaks they reveal (`embedstore duplicates`).

1. The space: the version's unit vectors, PCA-whitened by default (centred, rotated onto their
   principal axes, each axis scaled to unit variance, rows renormalised; axes with a variance
   below 1e-6 of the largest are dropped). Vision-language embeddings sit in a narrow cone, where
   every image's nearest neighbour is at cosine 0.95 or more; whitening spreads them so that a
   pair's cosine says how unusually close it is. `space="cosine"` searches the stored vectors as
   they are.
2. Each image's nearest neighbours from a FAISS exact inner-product index (k-NN search), from
   other studies only: the first gives its nearest-neighbour similarity, the second its
   similarity to its nearest *ordinary* neighbour (an image rarely has two near-duplicates of one
   view, so its second neighbour is an ordinary one even when its first is a duplicate).
3. The threshold: a cosine, or `auto`: the 99.9th percentile of the second-neighbour
   similarities, so about one image in a thousand passes it by chance. Outlier rules on the first
   neighbours (Tukey's fences, median + k MAD) fail when many images have a duplicate: then the
   duplicates are the upper part of that distribution, not outliers in it.
4. The pairs: FAISS range search at the threshold, so memory grows with the pairs found, not with
   n^2; pairs within one study (its frontal and lateral images) are left out.
5. The groups: connected components (scipy) of the split groups (patient, else study) that the
   pairs join. A group whose split groups lie in different splits is a probable leak; `regroup`
   writes it as one split group (splits stay frozen) and says how many images would move if the
   splits were drawn again with the group kept whole.

Stored as a run (`duplicate_pairs`, `duplicate_groups`, `metrics`), reused while the version's
vectors, splits and groups are unchanged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import polars as pl

from embedstore.errors import InputError

SPACES = ("whitened", "cosine")
NEIGHBOURS = 10  # k of the k-NN search that gives each image's nearest neighbours from other studies
NULL_QUANTILE = 99.9  # auto: this percentile of the second-nearest-neighbour similarities
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


def nearest_other(index, Z: np.ndarray, study: np.ndarray, k: int = NEIGHBOURS) -> np.ndarray:
    """[n, 2]: each row's similarity to its first and second nearest neighbours from other studies
    (NaN where the k-NN search found fewer)."""
    D, I = index.search(Z, min(k + 1, len(Z)))
    other = (I >= 0) & (study[np.clip(I, 0, None)] != study[:, None])
    rank = np.cumsum(other, axis=1)
    out = np.full((len(Z), 2), np.nan)
    for j in (0, 1):
        hit = other & (rank == j + 1)
        found = hit.any(axis=1)
        out[found, j] = D[found, hit[found].argmax(axis=1)]
    return out


def auto_threshold(nn: np.ndarray) -> float:
    """The 99.9th percentile of the second-nearest-neighbour similarities `nn[:, 1]` (below 1)."""
    second = nn[:, 1][np.isfinite(nn[:, 1])]
    if second.size < 4:
        raise InputError(f"--threshold auto needs the neighbours of at least 4 images from other studies, found "
                         f"{second.size}; give --threshold COSINE")
    return float(min(np.percentile(second, NULL_QUANTILE), np.nextafter(np.float32(1.0), np.float32(0.0))))


def parse_threshold(threshold) -> float | None:
    """None for "auto", else the cosine as a float in (-1, 1]; InputError naming the value."""
    if threshold is None or str(threshold).strip().lower() == "auto":
        return None
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise InputError(f"--threshold {threshold!r}: give auto or a cosine such as 0.95") from None
    if not -1.0 < value <= 1.0:
        raise InputError(f"--threshold {threshold!r}: a cosine lies in (-1, 1]; give auto or e.g. 0.95")
    return value


def find_pairs(Z: np.ndarray, study: np.ndarray, threshold: float | None, k: int = NEIGHBOURS):
    """(pairs [m, 2] row indices a < b, their similarity [m], threshold, nn similarities, search seconds)."""
    import faiss

    t0 = time.perf_counter()
    index = faiss.IndexFlatIP(Z.shape[1])
    index.add(Z)
    nn = nearest_other(index, Z, study, k)
    if threshold is None:
        threshold = auto_threshold(nn)
    lims, D, I = index.range_search(Z, float(threshold))
    seconds = time.perf_counter() - t0
    if len(I) > MAX_PAIRS_PER_IMAGE * len(Z):
        raise InputError(f"--threshold {threshold:.4f} joins {len(I):,} pairs among {len(Z):,} images: similar images, "
                         "not duplicates; give a higher --threshold (or auto)")
    rows = np.repeat(np.arange(len(Z)), np.diff(lims).astype(np.int64))
    keep = (rows < I) & (study[rows] != study[I])
    return np.stack([rows[keep], I[keep]], axis=1), D[keep].astype(np.float64), float(threshold), nn, seconds


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
                     k: int = NEIGHBOURS) -> dict[str, pl.DataFrame]:
    """duplicate_pairs (id_a, id_b, similarity), duplicate_groups (group_no, id: every image of the
    split groups each component joins) and metrics (threshold, nearest-neighbour quartiles, counts,
    the search's seconds) of one version's vectors `X` (rows `ids`; `meta` from `Storage.image_meta`)."""
    rows = pl.DataFrame({"id": ids}).join(meta.select("id", "study_id", "group_id"), on="id", how="left")
    study = np.array(rows["study_id"].fill_null("").to_list(), dtype=object)
    study = np.where(study == "", np.array([f"image:{i}" for i in ids], dtype=object), study)
    group = np.array(rows["group_id"].to_list(), dtype=object)
    from embedstore.analyses.metrics import point_metrics

    Z = search_space(X, space)
    pairs, sims, threshold, nn, seconds = find_pairs(Z, study, threshold, k)
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
               regroup: bool = False, space: str = "whitened", k: int = NEIGHBOURS, force: bool = False) -> Duplicates:
    """Near-duplicate pairs and groups of `version`'s images, stored as a run (see the module
    docstring); `across_splits` shows only the groups that cross splits; `regroup` merges each
    group's split groups into one (`Storage.merge_split_groups`)."""
    from embedstore.analyses.runs import cached_run
    from embedstore.store import fingerprint

    value = parse_threshold(threshold)
    if space not in SPACES:
        raise InputError(f"--space {space!r}: use one of {', '.join(SPACES)}")
    info = store.version(version)
    ids, X = store.image_vectors(info.id)
    if len(ids) < 2:
        raise InputError(f"version {info.id} has {len(ids)} image vector(s); duplicates needs at least 2")
    meta = store.image_meta()
    known = meta.filter(pl.col("id").is_in(ids.tolist()))
    config = {"threshold": "auto" if value is None else value, "space": space, "k": k,
              "rule": f"second-neighbour-p{NULL_QUANTILE:g}", "data": fingerprint(known["id"].to_numpy(),
                                                                      known["split"].fill_null("").to_list(),
                                                                      known["group_id"].to_list(),
                                                                      known["study_id"].fill_null("").to_list())}
    run = cached_run(store, "duplicates", info.id, config, lambda: duplicate_tables(ids, X, meta, value, space, k),
                     force, tables=("metrics", "duplicate_pairs", "duplicate_groups"))
    metric = dict(zip(run.metrics["metric"].to_list(), run.metrics["value"].to_list()))
    rule = (f"given: {metric['threshold']:.4f}" if value is not None else
            auto_rule_text(metric)) + f" ({'PCA-whitened' if space == 'whitened' else 'stored'} vectors)"
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


def auto_rule_text(metric: dict) -> str:
    return (f"auto: the {NULL_QUANTILE:g}th percentile of {int(metric['images']):,} images' similarities to their "
            f"second-nearest neighbour from another study (median {metric['nn2_median']:.3f}) = "
            f"{metric['threshold']:.4f}; nearest neighbours: median {metric['nn_median']:.3f}, 99th percentile "
            f"{metric['nn_p99']:.3f}")
