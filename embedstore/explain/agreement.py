"""How well heatmaps agree with annotated boxes, beside two baselines on the same boxes.

Per annotated (image, finding), with H the heatmap in the original frame, M the union of that
finding's boxes on the image and T the thresholded heatmap:

- `pointing`: the share of H's maximal pixels inside M: 1 / 0 when the maximum is unique (the
  pointing game of Zhang et al.); with ties, the chance a random pick among them hits, so a flat
  heatmap scores the box's area share instead of a free hit.
- `energy`: sum(H * M) / sum(H) (energy-based pointing game, Score-CAM paper). An all-zero H
  counts as flat (energy = area share of M).
- `iou` = |T & M| / |T | M|; `dice` = 2|T & M| / (|T| + |M|); `precision` = |T & M| / |T|;
  `recall` = |T & M| / |M|; `f1` = 2PR / (P + R), which equals Dice on pixels (both kept because
  both are asked for). A quantity over an empty set is 0.

A pixel belongs to M when it overlaps a box: columns floor(x_min) .. ceil(x_max) - 1, so integer
boxes cover exactly x_max - x_min columns. Boxes are in original-image pixels; when the boxes
table gives the annotation frame's `width` / `height` and it differs from the heatmap's, boxes
are scaled to the heatmap's frame.

Baselines (`heatmap` column): "random", uniform noise seeded per item; "centre", a Gaussian at
the image centre with sigma = `centre_sigma` x each side. Summaries: mean per (finding,
heatmap, metric) with a percentile bootstrap interval over items; finding None = all items.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from embedstore.errors import InputError

METRICS = ("pointing", "energy", "iou", "dice", "precision", "recall", "f1")
BOX_COLUMNS = ("image_id", "finding", "x_min", "y_min", "x_max", "y_max")


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
    """Every metric of one heatmap against one box mask (see the module docstring)."""
    # A heatmap with no signal at all (Grad-CAM's 0/0 on a dead layer gives NaN) is flat: it scores chance.
    h = np.nan_to_num(np.asarray(heatmap, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    m = np.asarray(mask, dtype=bool)
    peak = h == h.max()
    pointing = float(peak[m].sum() / peak.sum())
    total = h.sum()
    energy = float(h[m].sum() / total) if total > 0 else float(m.mean())
    t = Threshold.parse(threshold).mask(h)
    inter, n_t, n_m = float((t & m).sum()), float(t.sum()), float(m.sum())
    union = float((t | m).sum())
    precision = inter / n_t if n_t else 0.0
    recall = inter / n_m if n_m else 0.0
    return {
        "pointing": pointing,
        "energy": energy,
        "iou": inter / union if union else 0.0,
        "dice": 2 * inter / (n_t + n_m) if n_t + n_m else 0.0,
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
    }


def centre_prior(height: int, width: int, sigma: float = 0.25) -> np.ndarray:
    """A Gaussian bump at the image centre, sigma = `sigma` x each side, peak 1."""
    ys = (np.arange(height) + 0.5 - height / 2) / (sigma * height)
    xs = (np.arange(width) + 0.5 - width / 2) / (sigma * width)
    return np.exp(-0.5 * (ys[:, None] ** 2 + xs[None, :] ** 2)).astype(np.float32)


def random_heatmap(height: int, width: int, seed: int | list[int]) -> np.ndarray:
    return np.random.default_rng(seed).random((height, width), dtype=np.float32)


def bootstrap_mean(values: np.ndarray, n_boot: int = 1000, ci: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """(mean, lo, hi): percentile bootstrap interval of the mean."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return math.nan, math.nan, math.nan
    idx = np.random.default_rng(seed).integers(0, v.size, size=(n_boot, v.size))
    means = v[idx].mean(axis=1)
    a = (1 - ci) / 2
    return float(v.mean()), float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


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
              seed: int = 0):
    """Per-item metrics and per-finding summaries.

    `heatmaps_by_image_finding` maps (image_id, finding) -> heatmap (height, width) in the
    original frame (any Mapping; it is read once per annotated item, so a lazy one works).
    `boxes_df`: canonical boxes (image_id, finding, x_min, y_min, x_max, y_max[, width, height]).

    Returns (per_item, summary) polars DataFrames:
    per_item: image_id, finding, heatmap ("model" | "random" | "centre"), n_boxes, box_share, metrics...
    summary: finding (None = all), heatmap, metric, n, value (mean), lo, hi, threshold.
    """
    import polars as pl

    thr = Threshold.parse(threshold)
    boxes_df = _checked_boxes(boxes_df)
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in boxes_df.iter_rows(named=True):
        groups.setdefault((str(r["image_id"]), str(r["finding"])), []).append(r)
    rows = []
    for n, key in enumerate(sorted(groups)):
        image_id, finding = key
        if key not in heatmaps_by_image_finding:
            raise InputError(f"no heatmap for image {image_id!r} finding {finding!r} (it has boxes)")
        h = np.asarray(heatmaps_by_image_finding[key], dtype=np.float32)
        if h.ndim != 2:
            raise InputError(f"heatmap of image {image_id!r} finding {finding!r} has shape {h.shape}; need 2-D")
        height, width = h.shape
        mask = box_mask(_boxes_in_frame(groups[key], image_id, finding, height, width), height, width)
        maps = {"model": h}
        if baselines:
            maps["random"] = random_heatmap(height, width, [seed, n])
            maps["centre"] = centre_prior(height, width, centre_sigma)
        for name, hm in maps.items():
            rows.append({"image_id": image_id, "finding": finding, "heatmap": name, "n_boxes": len(groups[key]),
                         "box_share": float(mask.mean()), **item_metrics(hm, mask, thr)})
    schema = {"image_id": pl.String, "finding": pl.String, "heatmap": pl.String, "n_boxes": pl.Int64,
              "box_share": pl.Float64, **{m: pl.Float64 for m in METRICS}}
    per_item = pl.DataFrame(rows, schema=schema)
    return per_item, summarise(per_item, thr, n_boot, ci, seed)


def summarise(per_item, threshold: Threshold | str = "top:0.15", n_boot: int = 1000, ci: float = 0.95, seed: int = 0):
    """Mean and bootstrap interval per (finding, heatmap, metric); finding None = every item."""
    import polars as pl

    out = []
    findings = sorted(set(per_item["finding"].to_list()))
    for finding in [*findings, None]:
        part = per_item if finding is None else per_item.filter(pl.col("finding") == finding)
        for heatmap in ("model", "random", "centre"):
            sel = part.filter(pl.col("heatmap") == heatmap)
            if not sel.height:
                continue
            for metric in METRICS:
                value, lo, hi = bootstrap_mean(sel[metric].to_numpy(), n_boot, ci, seed)
                out.append({"finding": finding, "heatmap": heatmap, "metric": metric, "n": sel.height,
                            "value": value, "lo": lo, "hi": hi, "threshold": str(Threshold.parse(threshold))})
    schema = {"finding": pl.String, "heatmap": pl.String, "metric": pl.String, "n": pl.Int64,
              "value": pl.Float64, "lo": pl.Float64, "hi": pl.Float64, "threshold": pl.String}
    return pl.DataFrame(out, schema=schema)
