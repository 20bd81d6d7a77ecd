"""Every agreement metric on hand-made heatmaps and boxes with answers worked out by hand."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import f1_score, jaccard_score, precision_score, recall_score

from embedstore.errors import InputError
from embedstore.explain.agreement import (
    Threshold, agreement, bootstrap_mean, box_mask, centre_prior, item_metrics, random_heatmap,
)


def boxes(*rows, width=None, height=None):
    """Canonical boxes frame from (image_id, finding, x_min, y_min, x_max, y_max) tuples."""
    return pl.DataFrame(
        [dict(zip(("image_id", "finding", "x_min", "y_min", "x_max", "y_max"), r), reader="r",
              width=width, height=height) for r in rows],
        schema={"image_id": pl.String, "finding": pl.String, "x_min": pl.Float64, "y_min": pl.Float64,
                "x_max": pl.Float64, "y_max": pl.Float64, "reader": pl.String, "width": pl.Int64, "height": pl.Int64},
    )


def hand_map():
    """10x10: the 4x4 box (2,2)-(6,6) at 0.5 with its peak 1.0 at row 3 col 3; two 0.5 pixels outside."""
    h = np.zeros((10, 10), np.float32)
    h[2:6, 2:6] = 0.5
    h[3, 3] = 1.0
    h[8, 8:10] = 0.5
    return h


BOX = np.array([[2, 2, 6, 6]])


def test_box_mask_covers_exact_pixels_and_overlapped_fractions():
    m = box_mask(BOX, 10, 10)
    assert m.sum() == 16 and m[2:6, 2:6].all()
    # a fractional box covers every pixel it overlaps: columns 1..2, rows 0..1
    f = box_mask(np.array([[1.5, 0.2, 3.0, 2.0]]), 5, 5)
    assert set(zip(*np.nonzero(f))) == {(0, 1), (0, 2), (1, 1), (1, 2)}
    # two overlapping boxes make a union, counted once
    u = box_mask(np.array([[0, 0, 4, 4], [2, 2, 6, 6]]), 10, 10)
    assert u.sum() == 16 + 16 - 4


def test_all_metrics_on_a_hand_made_map_value_threshold():
    h, m = hand_map(), box_mask(BOX, 10, 10)
    got = item_metrics(h, m, "value:0.5")
    # mask T = 16 box pixels + 2 outside; T & M = 16; T | M = 18
    assert got["pointing"] == 1.0
    assert got["energy"] == pytest.approx((15 * 0.5 + 1.0) / (15 * 0.5 + 1.0 + 2 * 0.5))
    assert got["iou"] == pytest.approx(16 / 18)
    assert got["dice"] == pytest.approx(2 * 16 / (18 + 16))
    assert got["precision"] == pytest.approx(16 / 18)
    assert got["recall"] == pytest.approx(1.0)
    assert got["f1"] == pytest.approx(2 * (16 / 18) * 1.0 / (16 / 18 + 1.0))
    # the same numbers from scikit-learn on the flattened pixel masks
    t = (h >= 0.5).ravel()
    y = m.ravel()
    assert got["iou"] == pytest.approx(jaccard_score(y, t))
    assert got["precision"] == pytest.approx(precision_score(y, t))
    assert got["recall"] == pytest.approx(recall_score(y, t))
    assert got["f1"] == pytest.approx(f1_score(y, t)) and got["dice"] == pytest.approx(f1_score(y, t))


def test_top_share_threshold_keeps_the_k_highest_and_their_ties():
    h, m = hand_map(), box_mask(BOX, 10, 10)
    only_peak = item_metrics(h, m, "top:0.01")  # k = ceil(0.01 * 100) = 1: the single peak pixel
    assert only_peak["precision"] == 1.0 and only_peak["recall"] == pytest.approx(1 / 16)
    assert only_peak["iou"] == pytest.approx(1 / 16) and only_peak["dice"] == pytest.approx(2 / 17)
    # k = 10: the 10th highest value is 0.5, so all 18 pixels at >= 0.5 are kept (ties included)
    assert Threshold.parse("top:0.1").mask(h).sum() == 18
    assert Threshold.parse("top:10%").mask(h).sum() == 18
    # a strictly ordered map: exactly k pixels
    ramp = np.arange(100, dtype=np.float32).reshape(10, 10)
    sel = Threshold.parse("top:0.15").mask(ramp)
    assert sel.sum() == 15 and sel.ravel()[85:].all()


def test_otsu_splits_a_two_level_map():
    h = np.full((8, 8), 0.1, np.float32)
    h[:, 5:] = 0.9
    mask = Threshold.parse("otsu").mask(h)
    assert (mask == (h > 0.5)).all()


def test_pointing_misses_ties_and_flat_maps():
    m = box_mask(BOX, 10, 10)
    miss = np.zeros((10, 10), np.float32)
    miss[9, 9] = 1.0
    assert item_metrics(miss, m)["pointing"] == 0.0
    tie = np.zeros((10, 10), np.float32)
    tie[3, 3] = tie[9, 9] = 1.0  # one maximum inside, one outside
    assert item_metrics(tie, m)["pointing"] == 0.5
    flat = np.zeros((10, 10), np.float32)  # no information: area share, not a free hit
    got = item_metrics(flat, m)
    assert got["pointing"] == pytest.approx(0.16) and got["energy"] == pytest.approx(0.16)


def test_empty_threshold_mask_gives_zero_not_nan():
    m = box_mask(BOX, 10, 10)
    got = item_metrics(np.zeros((10, 10), np.float32), m, "value:0.5")
    assert got["precision"] == 0.0 and got["recall"] == 0.0 and got["f1"] == 0.0 and got["iou"] == 0.0


def test_baselines():
    c = centre_prior(11, 21)
    assert np.unravel_index(np.argmax(c), c.shape) == (5, 10) and c.max() == pytest.approx(1.0, abs=0.01)
    a, b = random_heatmap(5, 7, [0, 3]), random_heatmap(5, 7, [0, 3])
    assert (a == b).all() and not (a == random_heatmap(5, 7, [0, 4])).all()


def test_agreement_frames_and_summary():
    h1, h2 = hand_map(), np.zeros((10, 10), np.float32)
    h2[9, 9] = 1.0  # misses its box
    df = boxes(("a", "F", 2, 2, 6, 6), ("b", "F", 2, 2, 6, 6), ("b", "G", 0, 0, 10, 5))
    maps = {("a", "F"): h1, ("b", "F"): h2, ("b", "G"): h2, ("c", "F"): h1}  # ("c", "F") has no box: unused
    per_item, summary = agreement(maps, df, threshold="value:0.5", n_boot=200)
    assert per_item.height == 3 * 3  # three annotated items x (model, random, centre)
    model = per_item.filter(pl.col("heatmap") == "model").sort("image_id", "finding")
    assert model["pointing"].to_list() == [1.0, 0.0, 0.0]
    assert model["box_share"].to_list() == pytest.approx([0.16, 0.16, 0.5])
    row = summary.filter((pl.col("finding") == "F") & (pl.col("heatmap") == "model") & (pl.col("metric") == "pointing"))
    assert row["n"][0] == 2 and row["value"][0] == pytest.approx(0.5)
    assert row["lo"][0] <= 0.5 <= row["hi"][0] and row["lo"][0] >= 0.0 and row["hi"][0] <= 1.0
    overall = summary.filter(pl.col("finding").is_null() & (pl.col("heatmap") == "model") & (pl.col("metric") == "energy"))
    assert overall["n"][0] == 3 and overall["value"][0] == pytest.approx(np.mean(model["energy"].to_numpy()))
    assert set(summary["heatmap"]) == {"model", "random", "centre"} and set(summary["threshold"]) == {"value:0.5"}


def test_boxes_in_another_frame_are_scaled():
    df = boxes(("a", "F", 4, 4, 12, 12), width=20, height=20)  # annotated on a 20x20 original
    per_item, _ = agreement({("a", "F"): hand_map()}, df, threshold="value:0.5", baselines=False, n_boot=10)
    assert per_item.height == 1 and per_item["iou"][0] == pytest.approx(16 / 18)


def test_bootstrap_interval():
    v = np.array([0.0, 1.0, 1.0, 1.0])
    mean, lo, hi = bootstrap_mean(v, n_boot=500, seed=1)
    assert mean == 0.75 and 0.0 <= lo < 0.75 < hi <= 1.0
    assert bootstrap_mean(np.array([0.3, 0.3]), n_boot=50) == pytest.approx((0.3, 0.3, 0.3))


@pytest.mark.parametrize("row, words", [
    (("a", "F", 2, 2, 11, 6), "outside the 10x10 image"),
    (("a", "F", -1, 2, 6, 6), "outside"),
    (("a", "F", 6, 2, 2, 6), "x_min < x_max"),
    (("a", "F", None, 2, 6, 6), "not a number"),
])
def test_bad_boxes_are_input_errors(row, words):
    with pytest.raises(InputError, match=words):
        agreement({("a", "F"): hand_map()}, boxes(row))


def test_missing_heatmap_and_bad_threshold_are_input_errors():
    with pytest.raises(InputError, match="no heatmap for image 'z'"):
        agreement({("a", "F"): hand_map()}, boxes(("z", "F", 2, 2, 6, 6)))
    for bad in ("top:0", "top:2", "value:abc", "median", "otsu:3"):
        with pytest.raises(InputError, match="bad threshold"):
            Threshold.parse(bad)
    with pytest.raises(InputError, match="lacks columns"):
        agreement({}, pl.DataFrame({"image_id": ["a"]}))
