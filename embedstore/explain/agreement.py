"""How well heatmaps agree with annotated boxes, beside baselines on the same boxes.

Per annotated item (image, finding), with H the heatmap in the original frame, M the union of
that finding's boxes on the image and T the thresholded heatmap:

- `pointing`: the share of H's maximal pixels inside M: 1 / 0 when the maximum is unique (the
  pointing game of Zhang et al.); with ties, the chance a random pick among them hits, so a flat
  heatmap scores the box's area share instead of a free hit.
- `energy`: sum(H * M) / sum(H) (energy-based pointing game, Score-CAM paper). An all-zero H
  counts as flat (energy = area share of M).
- `iou` = |T & M| / |T | M|; `dice` = 2|T & M| / (|T| + |M|); `precision` = |T & M| / |T|;
  `recall` = |T & M| / |M|; `f1` = 2PR / (P + R). A quantity over an empty set is 0.
  The seed notebook's "F1 agreement" is this `f1`: the pixel F1 of the thresholded heatmap T
  against the union box mask M, which equals `dice` pixel for pixel (both are kept because both
  are asked for). It depends on the threshold (`top:0.15` unless told otherwise).
- `pixel_auroc`, `pixel_auprc`: threshold-free; H's pixels ranked against M's (AUROC, ties one
  half; average precision as scikit-learn defines it), through
  `embedstore.analyses.metrics.weighted_auroc_ap` with one row of unit weights. When the longer
  side exceeds MAX_PIXEL_SIDE (512) px, both are computed on a grid resampled to at most 512 px:
  H by area averaging (rounded to 1e-6 of its range, so equal heat over equal areas ties at any
  size), M as "any overlap" (a coarse pixel is in M when any of its pixels is), so
  a small box never vanishes. NaN when M covers the whole image (no negative pixel).
- `dice@val_threshold`: Dice at a `value:V` cut fitted on VALIDATION items, never on the items
  scored. H is min-max normalised to [0, 1] and V runs over VALUE_GRID (0, 0.02, ..., 1); V
  maximises the mean Dice over the val items of the item's finding when that finding has at
  least MIN_VAL_ITEMS (5) val items, else over all val items pooled (ties: the smallest V). Each
  heatmap kind (model and every baseline) gets its own fitted cut. NaN without val items.

A pixel belongs to M when it overlaps a box: columns floor(x_min) .. ceil(x_max) - 1, so integer
boxes cover exactly x_max - x_min columns. Boxes are in original-image pixels; when the boxes
table gives the annotation frame's `width` / `height` and it differs from the heatmap's, boxes
are scaled to the heatmap's frame.

Baselines (`heatmap` column), each seeded per item (by seed, image id and finding, so an item's
baseline does not depend on which other items are scored): "random", uniform noise;
"random_box", a box of each of the item's boxes' width and height placed uniformly at random
(integer offsets) inside the image, as a binary heatmap: chance localisation at the box's size;
"centre", a Gaussian at the image centre with sigma = `centre_sigma` x each side. A binary map
at `top:Q` keeps its ties, so a random box smaller than Q of the image thresholds to the whole
image (recall 1, precision = box share); its `dice@val_threshold` uses a cut fitted like the
model's.

Summaries: mean per (finding, heatmap, metric) over the items where the metric is defined, with
a 95 % percentile interval from a bootstrap that resamples patient GROUPS (`groups`: image id ->
group, from `Store.image_groups()`), not items: two findings of one image, or two images of one
patient, move together (`embedstore.analyses.metrics.mean_interval`). Finding None = all items.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from embedstore.errors import InputError

THRESHOLDED = ("iou", "dice", "precision", "recall", "f1")
VAL_DICE = "dice@val_threshold"
METRICS = ("pointing", "energy", *THRESHOLDED, "pixel_auroc", "pixel_auprc", VAL_DICE)
HEATMAPS = ("model", "random", "random_box", "centre")
BOX_COLUMNS = ("image_id", "finding", "x_min", "y_min", "x_max", "y_max")
MAX_PIXEL_SIDE = 512
PIXEL_GRID_DECIMALS = 6  # a shrunk heatmap is rounded to 1e-6 of its range (see _rounded_to_range)
VALUE_GRID = np.round(np.linspace(0.0, 1.0, 51), 2)
MIN_VAL_ITEMS = 5


@dataclass(frozen=True)
class Threshold:
    """How a heatmap becomes a mask. Text forms: "top:0.15" (default), "value:0.5", "otsu".

    - top:q — the ceil(q * N) highest pixels; ties with the last one taken are included.
    - value:v — pixels >= v (heatmaps are in [0, 1]).
    - otsu — Otsu's threshold on the heatmap quantised to 256 levels (OpenCV), pixels above it.
    """

    rule: str = "top"
    value: float | None = 0.15

    @classmethod
    def parse(cls, text: "str | Threshold") -> "Threshold":
        if isinstance(text, Threshold):
            return text
        raw = str(text).strip().lower()
        rule, _, arg = raw.partition(":")
        if rule == "otsu" and not arg:
            return cls("otsu", None)
        if rule in ("top", "value"):
            try:
                v = float(arg.rstrip("%")) / (100.0 if arg.endswith("%") else 1.0)
            except ValueError:
                v = math.nan
            ok = 0.0 < v <= 1.0 if rule == "top" else 0.0 <= v <= 1.0
            if ok:
                return cls(rule, v)
        raise InputError(f"bad threshold {text!r}; use top:Q (0 < Q <= 1, e.g. top:0.15), value:V (0..1) or otsu")

    def __str__(self) -> str:
        return self.rule if self.value is None else f"{self.rule}:{self.value:g}"

    def mask(self, heatmap: np.ndarray) -> np.ndarray:
        h = np.asarray(heatmap, dtype=np.float32)
        if self.rule == "top":
            k = max(1, math.ceil(self.value * h.size))
            cut = np.partition(h.ravel(), h.size - k)[h.size - k]  # the k-th highest value
            return h >= cut
        if self.rule == "value":
            return h >= self.value
        import cv2

        span = float(h.max() - h.min())
        if span <= 0:
            return np.ones(h.shape, dtype=bool)
        q = np.round((h - h.min()) / span * 255).astype(np.uint8)
        level, _ = cv2.threshold(q, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        return q > level  # OpenCV's own rule: above the level is foreground


def box_mask(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Boolean (height, width) mask of the pixels any box (rows x_min, y_min, x_max, y_max) overlaps."""
    mask = np.zeros((height, width), dtype=bool)
    for x0, y0, x1, y1 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        c0, r0 = int(math.floor(x0)), int(math.floor(y0))
        c1, r1 = int(math.ceil(x1)), int(math.ceil(y1))
        mask[max(r0, 0):min(r1, height), max(c0, 0):min(c1, width)] = True
    return mask


def item_metrics(heatmap: np.ndarray, mask: np.ndarray, threshold: Threshold | str = "top:0.15") -> dict:
    """Every metric of one heatmap against one box mask but the val-fitted Dice (see the module
    docstring)."""
    h, m = _finite(heatmap), np.asarray(mask, dtype=bool)
    return {**pointing_metrics(h, m), **thresholded_metrics(Threshold.parse(threshold).mask(h), m),
            **pixel_ranking_metrics(h, m)}


def _finite(heatmap: np.ndarray) -> np.ndarray:
    # A heatmap with no signal at all (Grad-CAM's 0/0 on a dead layer gives NaN) is flat: it scores chance.
    return np.nan_to_num(np.asarray(heatmap, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)


def pointing_metrics(h: np.ndarray, m: np.ndarray) -> dict:
    peak = h == h.max()
    total = h.sum()
    return {"pointing": float(peak[m].sum() / peak.sum()),
            "energy": float(h[m].sum() / total) if total > 0 else float(m.mean())}


def thresholded_metrics(t: np.ndarray, m: np.ndarray) -> dict:
    """IoU, Dice, pixel precision / recall / F1 of the thresholded mask `t` against `m`."""
    inter, n_t, n_m = float((t & m).sum()), float(t.sum()), float(m.sum())
    union = float((t | m).sum())
    precision = inter / n_t if n_t else 0.0
    recall = inter / n_m if n_m else 0.0
    return {
        "iou": inter / union if union else 0.0,
        "dice": 2 * inter / (n_t + n_m) if n_t + n_m else 0.0,
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
    }


def pixel_ranking_metrics(h: np.ndarray, m: np.ndarray, max_side: int = MAX_PIXEL_SIDE) -> dict:
    """Pixel AUROC and average precision of the heatmap's values against the mask (on a grid of
    at most `max_side` px, see the module docstring)."""
    from embedstore.analyses.metrics import weighted_auroc_ap

    h, m = on_pixel_grid(h, m, max_side)
    auroc, ap = weighted_auroc_ap(m.ravel(), h.ravel(), np.ones((1, m.size), dtype=np.float32))
    return {"pixel_auroc": float(auroc[0]), "pixel_auprc": float(ap[0])}


def on_pixel_grid(h: np.ndarray, m: np.ndarray, max_side: int = MAX_PIXEL_SIDE) -> tuple[np.ndarray, np.ndarray]:
    """(heatmap, mask) resampled so the longer side is at most `max_side`: the heatmap by area
    averaging, the mask by any overlap. Unchanged when already small enough."""
    height, width = m.shape
    if max(height, width) <= max_side:
        return h, m
    import cv2

    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))  # OpenCV wants (width, height)
    small_h = cv2.resize(np.asarray(h, dtype=np.float32), size, interpolation=cv2.INTER_AREA)
    small_m = cv2.resize(m.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0
    return _rounded_to_range(small_h), small_m


def _rounded_to_range(h: np.ndarray) -> np.ndarray:
    # OpenCV's area weights are float32 sums, so equal heat over equal areas can average to
    # 0.99999994 or 1.0 by position. Rounded to 1e-6 of the map's range (so in any units, and the
    # ranking kept), such pixels tie again as pixel AUROC / AUPRC count ties.
    lo, hi = float(h.min()), float(h.max())
    span = hi - lo
    if not np.isfinite(span) or span <= 0:  # flat, or beyond float64: nothing to round against
        return h
    steps = np.round((h.astype(np.float64) - lo) / span, PIXEL_GRID_DECIMALS)  # float64: no overflow at float32's edge
    return (lo + steps * span).astype(h.dtype)


def normalised(heatmap: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1]; a flat heatmap becomes all zeros."""
    h = _finite(heatmap)
    span = h.max() - h.min()
    return (h - h.min()) / span if span > 0 else np.zeros_like(h)


def dice_curve(heatmap: np.ndarray, mask: np.ndarray, grid=VALUE_GRID) -> np.ndarray:
    """Dice of `normalised(heatmap) >= V` against the mask for every V in `grid` (one sort)."""
    h, m = normalised(heatmap).ravel(), np.asarray(mask, dtype=bool).ravel()
    values = np.asarray(grid, dtype=np.float64)
    n_t = h.size - np.searchsorted(np.sort(h), values, side="left")  # pixels >= V
    inter = int(m.sum()) - np.searchsorted(np.sort(h[m]), values, side="left")
    denominator = n_t + int(m.sum())
    return np.where(denominator > 0, 2 * inter / np.maximum(denominator, 1), 0.0)


@dataclass(frozen=True)
class ValThresholds:
    """`value:V` cuts fitted on val items: per finding with enough val items, else `pooled`.

    `n` maps a finding (None = pooled) to the number of val items its cut was fitted on."""

    per_finding: dict
    pooled: float
    n: dict

    def cut(self, finding: str) -> float:
        return self.per_finding.get(finding, self.pooled)

    def fitted_on(self, finding: str | None) -> int:
        return self.n.get(finding if finding in self.per_finding else None, 0)


def fit_val_thresholds(curves: Mapping[str, list], grid=VALUE_GRID, min_items: int = MIN_VAL_ITEMS) -> ValThresholds:
    """The V of `grid` maximising the mean Dice curve of a finding's val items (`curves`:
    finding -> list of `dice_curve`s) when it has at least `min_items`, else of all val items
    pooled; the smallest V on ties. No val item: pooled NaN (the Dice at it is NaN)."""
    values = np.asarray(grid, dtype=np.float64)

    def best(items: list) -> float:
        return float(values[int(np.argmax(np.mean(items, axis=0)))])

    everything = [c for items in curves.values() for c in items]
    per_finding = {f: best(items) for f, items in curves.items() if len(items) >= min_items}
    n = {f: len(curves[f]) for f in per_finding}
    n[None] = len(everything)
    return ValThresholds(per_finding, best(everything) if everything else math.nan, n)


def dice_at(heatmap: np.ndarray, mask: np.ndarray, value: float) -> float:
    """Dice of `normalised(heatmap) >= value`, as `dice_curve` computes it; NaN for a NaN cut."""
    return float(dice_curve(heatmap, mask, [value])[0]) if np.isfinite(value) else math.nan


def centre_prior(height: int, width: int, sigma: float = 0.25) -> np.ndarray:
    """A Gaussian bump at the image centre, sigma = `sigma` x each side, peak 1."""
    ys = (np.arange(height) + 0.5 - height / 2) / (sigma * height)
    xs = (np.arange(width) + 0.5 - width / 2) / (sigma * width)
    return np.exp(-0.5 * (ys[:, None] ** 2 + xs[None, :] ** 2)).astype(np.float32)


def random_heatmap(height: int, width: int, seed: int | list[int]) -> np.ndarray:
    return np.random.default_rng(seed).random((height, width), dtype=np.float32)


def random_boxes(boxes: np.ndarray, height: int, width: int, seed: int | list[int]) -> np.ndarray:
    """Each box (rows x_min, y_min, x_max, y_max) moved to a uniformly random integer offset at
    which it lies wholly inside the (height, width) image; width and height are kept."""
    rng = np.random.default_rng(seed)
    out = []
    for x0, y0, x1, y1 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        w, h = x1 - x0, y1 - y0
        nx = rng.integers(0, max(0, math.floor(width - w)) + 1)
        ny = rng.integers(0, max(0, math.floor(height - h)) + 1)
        out.append([nx, ny, nx + w, ny + h])
    return np.asarray(out, dtype=np.float64).reshape(-1, 4)


def random_box_heatmap(boxes: np.ndarray, height: int, width: int, seed: int | list[int]) -> np.ndarray:
    """Binary heatmap (1 inside) of `random_boxes`: chance localisation at the boxes' size."""
    return box_mask(random_boxes(boxes, height, width, seed), height, width).astype(np.float32)


def item_seed(seed: int, image_id: str, finding: str) -> list[int]:
    """A seed of one item that does not depend on which other items are scored."""
    import hashlib

    digest = hashlib.sha1(f"{image_id}\0{finding}".encode()).digest()
    return [int(seed), int.from_bytes(digest[:8], "little")]


def item_heatmaps(h: np.ndarray, boxes: np.ndarray, seed: list[int], baselines: bool = True,
                  centre_sigma: float = 0.25) -> dict[str, np.ndarray]:
    """The model's heatmap and, with `baselines`, the baselines' on the same frame."""
    maps = {"model": h}
    if baselines:
        height, width = h.shape
        maps["random"] = random_heatmap(height, width, seed)
        maps["random_box"] = random_box_heatmap(boxes, height, width, [*seed, 1])
        maps["centre"] = centre_prior(height, width, centre_sigma)
    return maps


def _checked_boxes(boxes_df):
    import polars as pl

    missing = [c for c in BOX_COLUMNS if c not in boxes_df.columns]
    if missing:
        raise InputError(f"boxes table lacks columns {missing}; expected {list(BOX_COLUMNS)} (+ width, height)")
    coords = boxes_df.select("x_min", "y_min", "x_max", "y_max").cast(pl.Float64).to_numpy()  # null -> NaN
    bad_rows = ~np.isfinite(coords).all(axis=1) | (coords[:, 2] <= coords[:, 0]) | (coords[:, 3] <= coords[:, 1])
    bad = boxes_df.filter(pl.Series(bad_rows))
    if bad.height:
        r = bad.row(0, named=True)
        raise InputError(
            f"box of image {r['image_id']!r} finding {r['finding']!r} ({r['x_min']}, {r['y_min']}, {r['x_max']}, "
            f"{r['y_max']}) is empty or not a number; need x_min < x_max and y_min < y_max ({bad.height} such rows)"
        )
    return boxes_df


def _boxes_in_frame(rows, image_id: str, finding: str, height: int, width: int) -> np.ndarray:
    """The item's boxes (k, 4) in the heatmap's frame; InputError for a box outside the image."""
    out = []
    for r in rows:
        bw, bh = r.get("width"), r.get("height")
        fw, fh = (bw or width), (bh or height)
        box = np.array([r["x_min"], r["y_min"], r["x_max"], r["y_max"]], dtype=np.float64)
        if box[0] < 0 or box[1] < 0 or box[2] > fw or box[3] > fh:
            raise InputError(
                f"box ({box[0]:g}, {box[1]:g}, {box[2]:g}, {box[3]:g}) of image {image_id!r} finding {finding!r} "
                f"lies outside the {fw}x{fh} image; fix the box file (coordinates are original-image pixels)"
            )
        out.append(box * np.array([width / fw, height / fh, width / fw, height / fh]))
    return np.asarray(out)


def agreement(heatmaps_by_image_finding: Mapping, boxes_df, threshold: Threshold | str = "top:0.15",
              baselines: bool = True, centre_sigma: float = 0.25, n_boot: int = 1000, ci: float = 0.95,
              seed: int = 0, groups: Mapping[str, str] | None = None, val_boxes=None):
    """Per-item metrics and per-finding summaries of the items in `boxes_df`.

    `heatmaps_by_image_finding` maps (image_id, finding) -> heatmap (height, width) in the
    original frame (any Mapping; it is read once per annotated item, so a lazy one works).
    `boxes_df`: canonical boxes (image_id, finding, x_min, y_min, x_max, y_max[, width, height])
    of the items to score. `val_boxes`: boxes of the validation items, used ONLY to fit the
    `dice@val_threshold` cuts (their heatmaps must be in the mapping too); None: no such cut.
    `groups`: image_id -> patient group for the bootstrap (None: each image its own group).

    Returns (per_item, summary) polars DataFrames:
    per_item: image_id, finding, heatmap (HEATMAPS), n_boxes, box_share, val_threshold, metrics...
    summary: finding (None = all), heatmap, metric, n, value (mean), lo, hi, threshold; metric
    "val_threshold" rows give each fitted cut with n = the val items it was fitted on.
    """
    import polars as pl

    thr = Threshold.parse(threshold)
    items = _items(boxes_df)
    val_items = _items(val_boxes) if val_boxes is not None else {}
    fitted = _fit_on_val(heatmaps_by_image_finding, val_items, baselines, centre_sigma, seed)
    rows = []
    for key in sorted(items):
        h, boxes = _item_frame(heatmaps_by_image_finding, key, items[key])
        mask = box_mask(boxes, *h.shape)
        for name, hm in item_heatmaps(h, boxes, item_seed(seed, *key), baselines, centre_sigma).items():
            cut = fitted[name].cut(key[1]) if name in fitted else math.nan
            rows.append({"image_id": key[0], "finding": key[1], "heatmap": name, "n_boxes": len(items[key]),
                         "box_share": float(mask.mean()), "val_threshold": cut, **item_metrics(hm, mask, thr),
                         VAL_DICE: dice_at(hm, mask, cut)})
    schema = {"image_id": pl.String, "finding": pl.String, "heatmap": pl.String, "n_boxes": pl.Int64,
              "box_share": pl.Float64, "val_threshold": pl.Float64, **{m: pl.Float64 for m in METRICS}}
    per_item = pl.DataFrame(rows, schema=schema)
    summary = summarise(per_item, thr, n_boot, ci, seed, groups)
    return per_item, pl.concat([summary, _threshold_rows(fitted, per_item, thr)])


def _items(boxes_df) -> dict[tuple[str, str], list[dict]]:
    """(image_id, finding) -> its box rows, after checking the boxes."""
    out: dict[tuple[str, str], list[dict]] = {}
    for r in _checked_boxes(boxes_df).iter_rows(named=True):
        out.setdefault((str(r["image_id"]), str(r["finding"])), []).append(r)
    return out


def _item_frame(heatmaps: Mapping, key: tuple[str, str], rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """The item's heatmap and its boxes (k, 4) in the heatmap's frame."""
    image_id, finding = key
    if key not in heatmaps:
        raise InputError(f"no heatmap for image {image_id!r} finding {finding!r} (it has boxes)")
    h = np.asarray(heatmaps[key], dtype=np.float32)
    if h.ndim != 2:
        raise InputError(f"heatmap of image {image_id!r} finding {finding!r} has shape {h.shape}; need 2-D")
    return h, _boxes_in_frame(rows, image_id, finding, *h.shape)


def _fit_on_val(heatmaps: Mapping, val_items: dict, baselines: bool, centre_sigma: float,
                seed: int) -> dict[str, ValThresholds]:
    """heatmap kind -> its `value:V` cuts fitted on the val items alone (empty without val items)."""
    if not val_items:
        return {}
    curves: dict[str, dict[str, list]] = {}
    for key in sorted(val_items):
        h, boxes = _item_frame(heatmaps, key, val_items[key])
        mask = box_mask(boxes, *h.shape)
        for name, hm in item_heatmaps(h, boxes, item_seed(seed, *key), baselines, centre_sigma).items():
            curves.setdefault(name, {}).setdefault(key[1], []).append(dice_curve(hm, mask))
    return {name: fit_val_thresholds(by_finding) for name, by_finding in curves.items()}


def _threshold_rows(fitted: dict[str, ValThresholds], per_item, thr: Threshold):
    """Summary rows "val_threshold": the cut each scored finding got (None: the pooled cut)."""
    import polars as pl

    findings = sorted(set(per_item["finding"].to_list()))
    rows = [{"finding": f, "heatmap": name, "metric": "val_threshold", "n": cuts.fitted_on(f),
             "value": cuts.pooled if f is None else cuts.cut(f), "lo": None, "hi": None, "threshold": str(thr)}
            for name, cuts in fitted.items() for f in [*findings, None]]
    return pl.DataFrame(rows, schema=_summary_schema())


def summarise(per_item, threshold: Threshold | str = "top:0.15", n_boot: int = 1000, ci: float = 0.95, seed: int = 0,
              groups: Mapping[str, str] | None = None):
    """Mean and group-bootstrap interval per (finding, heatmap, metric) over the items where the
    metric is defined; finding None = every item. `groups`: image_id -> patient group."""
    import polars as pl

    from embedstore.analyses.metrics import mean_interval

    out = []
    findings = sorted(set(per_item["finding"].to_list()))
    for finding in [*findings, None]:
        part = per_item if finding is None else per_item.filter(pl.col("finding") == finding)
        for heatmap in HEATMAPS:
            sel = part.filter(pl.col("heatmap") == heatmap)
            for metric in METRICS:
                values = sel[metric].to_numpy()
                defined = np.isfinite(values)
                if not defined.any():
                    continue
                ids = sel["image_id"].filter(pl.Series(defined)).to_list()
                group_of = [groups.get(i, i) if groups is not None else i for i in ids]
                iv = mean_interval(values[defined], group_of, n_boot, seed, alpha=1 - ci)
                out.append({"finding": finding, "heatmap": heatmap, "metric": metric, "n": int(defined.sum()),
                            "value": iv.value, "lo": iv.lo, "hi": iv.hi, "threshold": str(Threshold.parse(threshold))})
    return pl.DataFrame(out, schema=_summary_schema())


def _summary_schema() -> dict:
    import polars as pl

    return {"finding": pl.String, "heatmap": pl.String, "metric": pl.String, "n": pl.Int64, "value": pl.Float64,
            "lo": pl.Float64, "hi": pl.Float64, "threshold": pl.String}
