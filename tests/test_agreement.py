"""Every agreement metric on hand-made heatmaps and boxes with answers worked out by hand."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import (
    average_precision_score, f1_score, jaccard_score, precision_score, recall_score, roc_auc_score,
)

from embedstore.analyses.metrics import mean_interval
from embedstore.errors import InputError
from embedstore.explain.agreement import (
    METRICS, VAL_DICE, Threshold, agreement, box_mask, centre_prior, item_metrics, on_pixel_grid, random_box_heatmap,
    random_boxes, random_heatmap, summarise,
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
    assert only_peak["f1"] == pytest.approx(only_peak["dice"])  # F1 of precision 1 and recall 1/16
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
    assert per_item.height == 3 * 4  # three annotated items x (model, random, random_box, centre)
    model = per_item.filter(pl.col("heatmap") == "model").sort("image_id", "finding")
    assert model["pointing"].to_list() == [1.0, 0.0, 0.0]
    assert model["box_share"].to_list() == pytest.approx([0.16, 0.16, 0.5])
    row = summary.filter((pl.col("finding") == "F") & (pl.col("heatmap") == "model") & (pl.col("metric") == "pointing"))
    assert row["n"][0] == 2 and row["value"][0] == pytest.approx(0.5)
    assert row["lo"][0] <= 0.5 <= row["hi"][0] and row["lo"][0] >= 0.0 and row["hi"][0] <= 1.0
    overall = summary.filter(pl.col("finding").is_null() & (pl.col("heatmap") == "model") & (pl.col("metric") == "energy"))
    assert overall["n"][0] == 3 and overall["value"][0] == pytest.approx(np.mean(model["energy"].to_numpy()))
    assert set(summary["heatmap"]) == {"model", "random", "random_box", "centre"}
    assert set(summary["threshold"]) == {"value:0.5"}


def test_boxes_in_another_frame_are_scaled():
    df = boxes(("a", "F", 4, 4, 12, 12), width=20, height=20)  # annotated on a 20x20 original
    per_item, _ = agreement({("a", "F"): hand_map()}, df, threshold="value:0.5", baselines=False, n_boot=10)
    assert per_item.height == 1 and per_item["iou"][0] == pytest.approx(16 / 18)


def model_items(ids: list[str], pointing, rest: float = 0.5) -> pl.DataFrame:
    """A per-item table of the model's heatmap for finding F: the given pointing values, every
    other metric `rest` (NaN: undefined, left out of the summary)."""
    per_item = pl.DataFrame({"image_id": ids, "finding": "F", "heatmap": "model", "pointing": np.asarray(pointing, float)})
    return per_item.with_columns(*[pl.lit(rest, dtype=pl.Float64).alias(m) for m in METRICS if m != "pointing"])


def test_summary_interval_is_a_group_bootstrap_of_the_mean():
    """Two patients with five items each: resampling patients moves each patient's items
    together, so a replicate can hold only one patient's items (mean 0 or 1) far more often than
    a bootstrap over single items would allow."""
    ids = [f"a{i}" for i in range(5)] + [f"b{i}" for i in range(5)]
    values = [1.0] * 5 + [0.0] * 5
    per_item = model_items(ids, values)
    patients = {i: i[0] for i in ids}

    def pointing(summary):
        row = summary.filter(pl.col("finding").is_null() & (pl.col("metric") == "pointing")).row(0, named=True)
        return row["value"], row["lo"], row["hi"]

    by_patient = pointing(summarise(per_item, n_boot=500, seed=1, groups=patients))
    assert by_patient == pytest.approx(tuple(vars(mean_interval(values, list(patients.values()), 500, 1)).values()))
    assert by_patient == pytest.approx((0.5, 0.0, 1.0))  # a quarter of the replicates hold one patient only
    by_item = pointing(summarise(per_item, n_boot=500, seed=1))  # no groups: each image its own group
    assert by_item[0] == 0.5 and 0.0 < by_item[1] < 0.5 < by_item[2] < 1.0
    constant = summarise(per_item, n_boot=50, groups=patients).filter(pl.col("metric") == "energy")
    assert constant.select("value", "lo", "hi").row(0) == pytest.approx((0.5, 0.5, 0.5))


def test_summary_interval_covers_the_true_mean_90_to_99_percent_of_the_time():
    """400 simulated studies of 60 patients with three items each (a patient effect shared by its
    items, so items are not independent) and a known mean 0.5; each summarised at its defaults
    (the interval `mean_interval` gives at its own), the nominal 95 % interval must cover 0.5 in
    90 to 99 % of them (about 94 % here; an 80 % interval covers about 80 %)."""
    rng = np.random.default_rng(21)
    G, per = 60, 3
    ids = [f"i{k}" for k in range(G * per)]
    patients = {i: f"p{k // per}" for k, i in enumerate(ids)}
    covered = []
    for r in range(400):
        values = 0.5 + 0.1 * np.repeat(rng.normal(size=G), per) + 0.1 * rng.normal(size=G * per)
        summary = summarise(model_items(ids, values, rest=np.nan), n_boot=300, seed=r, groups=patients)
        row = summary.filter(pl.col("finding").is_null()).row(0, named=True)
        if r < 10:
            direct = mean_interval(values, list(patients.values()), 300, r)
            assert (row["value"], row["lo"], row["hi"]) == pytest.approx((direct.value, direct.lo, direct.hi))
        covered.append(row["lo"] <= 0.5 <= row["hi"])
    assert 0.90 <= np.mean(covered) <= 0.99, np.mean(covered)


def test_agreement_summary_is_the_summary_of_its_items():
    """`agreement` summarises its per-item table as `summarise` does at the same defaults."""
    ids = "abcdefgh"
    df = boxes(*[(i, "F", k % 4, 1, k % 4 + 5, 6) for k, i in enumerate(ids)])
    maps = {(i, "F"): np.random.default_rng(k).random((10, 10)).astype(np.float32) for k, i in enumerate(ids)}
    groups = {i: f"p{k // 2}" for k, i in enumerate(ids)}  # four patients, two images each
    per_item, summary = agreement(maps, df, n_boot=200, seed=3, groups=groups)
    assert summary.equals(summarise(per_item, n_boot=200, seed=3, groups=groups))
    assert (summary["hi"] > summary["lo"]).any()


@pytest.mark.parametrize("row, words", [
    (("a", "F", 2, 2, 11, 6), r"box \(2, 2, 11, 6\) of image 'a' finding 'F' lies outside the 10x10 image; fix the box file"),
    (("a", "F", -1, 2, 6, 6), r"box \(-1, 2, 6, 6\) of image 'a' finding 'F' lies outside"),
    (("a", "F", 2, -1, 6, 6), r"box \(2, -1, 6, 6\) of image 'a' finding 'F' lies outside"),
    (("a", "F", 2, 2, 6, 10.5), r"box \(2, 2, 6, 10.5\) of image 'a' finding 'F' lies outside"),
    (("a", "F", 6, 2, 2, 6), "x_min < x_max"),
    (("a", "F", 2, 2, 2, 6), r"box of image 'a' finding 'F' \(2.0, 2.0, 2.0, 6.0\) is empty or not a number"),
    (("a", "F", 2, 6, 6, 6), r"box of image 'a' finding 'F' \(2.0, 6.0, 6.0, 6.0\) is empty"),
    (("a", "F", None, 2, 6, 6), "not a number"),
])
def test_bad_boxes_are_input_errors(row, words):
    with pytest.raises(InputError, match=words):
        agreement({("a", "F"): hand_map()}, boxes(row))


def test_a_box_is_checked_x_against_x_and_y_against_y():
    per_item, _ = agreement({("a", "F"): hand_map()}, boxes(("a", "F", 0, 6, 3, 9)), baselines=False, n_boot=10)
    assert per_item["box_share"].to_list() == pytest.approx([0.09])  # x_max 3 < y_min 6 is a fine box
    with pytest.raises(InputError, match="is empty"):
        agreement({("a", "F"): hand_map()}, boxes(("a", "F", 5, 0, 5, 4)))  # no width, though x_max > y_min


def test_missing_heatmap_and_bad_threshold_are_input_errors():
    with pytest.raises(InputError, match="no heatmap for image 'z'"):
        agreement({("a", "F"): hand_map()}, boxes(("z", "F", 2, 2, 6, 6)))
    for bad in ("top:0", "top:2", "value:abc", "median", "otsu:3"):
        with pytest.raises(InputError, match="bad threshold"):
            Threshold.parse(bad)
    with pytest.raises(InputError, match="lacks columns"):
        agreement({}, pl.DataFrame({"image_id": ["a"]}))


# ---- threshold-free pixel metrics --------------------------------------------------------------

@pytest.mark.parametrize("make", [hand_map, lambda: np.random.default_rng(3).random((10, 10)).astype(np.float32)])
def test_pixel_auroc_and_auprc_equal_scikit_learns_on_the_flattened_pixels(make):
    h, m = make(), box_mask(BOX, 10, 10)  # hand_map has many tied pixels
    got = item_metrics(h, m)
    assert got["pixel_auroc"] == pytest.approx(roc_auc_score(m.ravel(), h.ravel()), abs=1e-12)
    assert got["pixel_auprc"] == pytest.approx(average_precision_score(m.ravel(), h.ravel()), abs=1e-12)


def test_pixel_metrics_of_a_large_image_use_a_grid_of_at_most_512_px():
    height, width = 1200, 900
    ys, xs = np.mgrid[0:height, 0:width]
    h = np.exp(-((xs - 300) ** 2 + (ys - 700) ** 2) / (2 * 150.0 ** 2)).astype(np.float32)
    m = box_mask(np.array([[200, 600, 400, 800]]), height, width)
    small_h, small_m = on_pixel_grid(h, m)
    assert small_h.shape == small_m.shape == (512, 384)
    tiny = box_mask(np.array([[10, 10, 11, 11]]), height, width)  # a 1-pixel box does not vanish
    assert on_pixel_grid(h, tiny)[1].sum() == 1
    got = item_metrics(h, m)
    assert got["pixel_auroc"] == pytest.approx(roc_auc_score(m.ravel(), h.ravel()), abs=0.01)
    whole = item_metrics(h, np.ones((height, width), bool))
    assert np.isnan(whole["pixel_auroc"]) and whole["pixel_auprc"] == 1.0  # no negative pixel


# ---- the size-matched random box ---------------------------------------------------------------

def test_random_box_keeps_each_box_size_and_lies_inside_the_image():
    boxes = np.array([[2.0, 3.0, 9.0, 7.0], [0.5, 0.0, 20.0, 2.25], [0.0, 0.0, 20.0, 10.0]])
    placed = [random_boxes(boxes, 10, 20, [0, s]) for s in range(200)]
    for got in placed:
        np.testing.assert_allclose(got[:, 2] - got[:, 0], boxes[:, 2] - boxes[:, 0])
        np.testing.assert_allclose(got[:, 3] - got[:, 1], boxes[:, 3] - boxes[:, 1])
        assert (got[:, :2] >= 0).all() and (got[:, 2] <= 20).all() and (got[:, 3] <= 10).all()
    corners = {tuple(p[0, :2]) for p in placed}
    assert len(corners) > 20 and max(x for x, _ in corners) == 13 and max(y for _, y in corners) == 6  # every offset
    one = random_box_heatmap(boxes[:1], 10, 20, [0, 1])
    assert set(np.unique(one)) == {0.0, 1.0} and one.sum() == 7 * 4  # binary, exactly the box's pixels
    assert (one == random_box_heatmap(boxes[:1], 10, 20, [0, 1])).all()


def test_random_box_baseline_is_scored_beside_the_model():
    per_item, summary = agreement({("a", "F"): hand_map()}, boxes(("a", "F", 2, 2, 6, 6)), n_boot=10)
    row = per_item.filter(pl.col("heatmap") == "random_box").row(0, named=True)
    assert row["box_share"] == pytest.approx(0.16) and 0.0 <= row["pointing"] <= 1.0
    assert row["energy"] == pytest.approx(row["pointing"])  # a binary map: both are the overlap share
    assert {"pointing", "pixel_auroc", "dice"} <= set(summary.filter(pl.col("heatmap") == "random_box")["metric"])


# ---- Dice at a cut fitted on val items ---------------------------------------------------------

def ring_map(ring: float) -> np.ndarray:
    """The BOX at 0.8 with a one-pixel ring around it at `ring`: normalised, the box is 1.0 and
    the ring ring / 0.8, so the best value:V cut is the smallest grid value above the ring."""
    h = np.zeros((10, 10), np.float32)
    h[1:7, 1:7] = ring
    h[2:6, 2:6] = 0.8
    return h


def val_setup(val_ring=0.5, test_map=None):
    val = [(f"v{i}", "F") for i in range(5)] + [("w0", "G")]
    maps = {key: ring_map(val_ring) for key in val}
    maps[("t", "F")] = hand_map() if test_map is None else test_map
    maps[("t", "G")] = hand_map() if test_map is None else test_map
    val_boxes = boxes(*[(i, f, 2, 2, 6, 6) for i, f in val])
    per_item, summary = agreement(maps, boxes(("t", "F", 2, 2, 6, 6), ("t", "G", 2, 2, 6, 6)), baselines=False,
                                  val_boxes=val_boxes, n_boot=10)
    return per_item.sort("finding"), summary


def test_val_threshold_is_fitted_on_val_items_only():
    per_item, summary = val_setup(val_ring=0.5)
    assert per_item["image_id"].to_list() == ["t", "t"]  # val items are never scored
    assert per_item["val_threshold"].to_list() == pytest.approx([0.64, 0.64])  # ring at 0.625 once normalised
    # the hand map normalised: box 0.5, peak 1.0, two outside pixels 0.5; at 0.64 only the peak is kept
    assert per_item[VAL_DICE].to_list() == pytest.approx([2 / 17, 2 / 17])
    moved, _ = val_setup(val_ring=0.3)  # another val heatmap: another cut
    assert moved["val_threshold"].to_list() == pytest.approx([0.38, 0.38])
    other_test = np.zeros((10, 10), np.float32)
    other_test[2:6, 2:6] = 1.0
    same, _ = val_setup(val_ring=0.5, test_map=other_test)  # another test heatmap: the same cut
    assert same["val_threshold"].to_list() == per_item["val_threshold"].to_list()
    assert same[VAL_DICE].to_list() == pytest.approx([1.0, 1.0])
    cut = summary.filter(pl.col("metric") == "val_threshold").sort("finding", nulls_last=True)
    assert cut["finding"].to_list() == ["F", "G", None] and cut["n"].to_list() == [5, 6, 6]  # G: pooled
    assert cut["value"].to_list() == pytest.approx([0.64, 0.64, 0.64]) and set(cut["heatmap"]) == {"model"}
    assert set(cut["threshold"]) == {"top:0.15"} and cut["lo"].null_count() == cut["hi"].null_count() == 3


def test_val_threshold_per_finding_with_five_val_items_else_pooled():
    val = [(f"v{i}", "F") for i in range(5)] + [(f"w{i}", "G") for i in range(4)]
    maps = {key: ring_map(0.5 if key[1] == "F" else 0.3) for key in val}
    maps.update({("t", "F"): hand_map(), ("t", "G"): hand_map()})
    per_item, _ = agreement(maps, boxes(("t", "F", 2, 2, 6, 6), ("t", "G", 2, 2, 6, 6)), baselines=False, n_boot=10,
                            val_boxes=boxes(*[(i, f, 2, 2, 6, 6) for i, f in val]))
    cuts = dict(zip(per_item["finding"], per_item["val_threshold"]))
    # F has five val items: its own cut. G has four: the cut of all nine pooled, where F's ring
    # (0.625) is only cleared above it, so the pooled mean Dice peaks at F's cut too
    assert cuts["F"] == pytest.approx(0.64) and cuts["G"] == pytest.approx(0.64)
    per_item, _ = agreement(maps, boxes(("t", "G", 2, 2, 6, 6)), baselines=False, n_boot=10,
                            val_boxes=boxes(*[(i, f, 2, 2, 6, 6) for i, f in val if f == "G"]))
    assert per_item["val_threshold"][0] == pytest.approx(0.38)  # G's four alone, pooled: their own optimum
    five = val + [("w4", "G")]
    maps[("w4", "G")] = ring_map(0.3)
    per_item, summary = agreement(maps, boxes(("t", "F", 2, 2, 6, 6), ("t", "G", 2, 2, 6, 6)), baselines=False,
                                  n_boot=10, val_boxes=boxes(*[(i, f, 2, 2, 6, 6) for i, f in five]))
    assert dict(zip(per_item["finding"], per_item["val_threshold"])) == pytest.approx({"F": 0.64, "G": 0.38})  # each its own
    cut = summary.filter(pl.col("metric") == "val_threshold").sort("finding", nulls_last=True)
    assert cut["value"].to_list() == pytest.approx([0.64, 0.38, 0.64])  # the summary says the same; all ten pooled: F's


def test_without_val_items_the_val_dice_is_left_out():
    per_item, summary = agreement({("a", "F"): hand_map()}, boxes(("a", "F", 2, 2, 6, 6)), n_boot=10)
    assert per_item[VAL_DICE].is_nan().all()
    assert VAL_DICE not in set(summary["metric"]) and "val_threshold" not in set(summary["metric"])
    with pytest.raises(InputError, match="no heatmap for image 'v'"):
        agreement({("a", "F"): hand_map()}, boxes(("a", "F", 2, 2, 6, 6)), val_boxes=boxes(("v", "F", 2, 2, 6, 6)))


# ---- thresholds, masks and edge cases ----------------------------------------------------------

@pytest.mark.parametrize("text, rule, value, shown", [
    (" TOP:0.2 ", "top", 0.2, "top:0.2"), ("top:1", "top", 1.0, "top:1"), ("value:0", "value", 0.0, "value:0"),
    ("value:1", "value", 1.0, "value:1"), ("value:50%", "value", 0.5, "value:0.5"), ("Otsu", "otsu", None, "otsu"),
])
def test_threshold_texts_and_their_bounds(text, rule, value, shown):
    t = Threshold.parse(text)
    assert (t.rule, t.value, str(t)) == (rule, value, shown)
    assert Threshold.parse(t) is t


@pytest.mark.parametrize("bad", ["value:1.01", "value:-0.1", "top:1.5", "top:-1", "top:", "value", "otsu:0.5", "top:0.2X"])
def test_thresholds_out_of_their_range_are_refused(bad):
    with pytest.raises(InputError, match=r"bad threshold .*; use top:Q \(0 < Q <= 1, e.g. top:0.15\), value:V \(0..1\) or otsu"):
        Threshold.parse(bad)


def test_value_cut_keeps_pixels_at_the_value_and_otsu_of_a_flat_map_keeps_all():
    h = np.array([[0.2, 0.5], [0.5, 0.9]], np.float32)
    np.testing.assert_array_equal(Threshold.parse("value:0.5").mask(h), [[False, True], [True, True]])
    assert Threshold.parse("otsu").mask(np.full((3, 3), 0.4, np.float32)).all()
    three = np.array([[0.0, 0.1, 0.9, 1.0]], np.float32)  # two clusters: Otsu keeps the upper one
    np.testing.assert_array_equal(Threshold.parse("otsu").mask(three), [[False, False, True, True]])
    np.testing.assert_array_equal(Threshold.parse("otsu").mask(3 * three), [[False, False, True, True]])  # any units
    at_cut = item_metrics(np.full((4, 4), 0.7, np.float32), np.eye(4, dtype=bool), "value:0.7")  # 0.7 in float32
    assert at_cut["recall"] == 1.0
    flat = item_metrics(np.zeros((10, 10)), box_mask(BOX, 10, 10), "otsu")  # a flat map's mask is every pixel
    assert (flat["recall"], flat["precision"]) == pytest.approx((1.0, 0.16))


def test_box_mask_clips_to_the_image():
    m = box_mask(np.array([[-2.0, -1.0, 2.0, 3.0], [8.5, 8.0, 12.0, 11.0]]), 10, 10)
    assert m[:3, :2].all() and m[8:, 8:].all() and m.sum() == 3 * 2 + 2 * 2


def test_thresholded_metrics_over_empty_sets_are_zero():
    empty, some = np.zeros((4, 4), bool), np.eye(4, dtype=bool)
    for t, m in ((some, empty), (empty, some), (empty, empty)):
        got = item_metrics(t.astype(np.float32), m, "value:0.5")
        assert {k: got[k] for k in ("iou", "dice", "precision", "recall", "f1")} == dict.fromkeys(
            ("iou", "dice", "precision", "recall", "f1"), 0.0)
    whole = item_metrics(np.ones((4, 4), np.float32), some, "value:0.5")  # T is everything: precision 4/16
    assert (whole["precision"], whole["recall"], whole["iou"]) == pytest.approx((0.25, 1.0, 0.25))


def test_pixel_grid_of_a_thin_image_keeps_one_column():
    h = np.random.default_rng(0).random((2000, 3)).astype(np.float32)
    m = np.zeros((2000, 3), bool)
    m[100:110, 2] = True
    small_h, small_m = on_pixel_grid(h, m)
    assert small_h.shape == small_m.shape == (512, 1) and small_m.sum() >= 2
    same_h, same_m = on_pixel_grid(h[:512], m[:512])  # 512 px already: unchanged
    assert np.array_equal(same_h, h[:512]) and np.array_equal(same_m, m[:512])


def test_dice_curve_is_dice_at_each_value_of_the_min_max_normalised_map():
    from embedstore.explain.agreement import dice_at, dice_curve, normalised

    h = np.random.default_rng(1).random((12, 12)).astype(np.float32) * 7 + 3
    m = box_mask(BOX, 12, 12)
    n = (h - h.min()) / (h.max() - h.min())
    grid = np.array([0.0, 0.3, 0.5, 0.97, 1.0])
    for v, got in zip(grid, dice_curve(h, m, grid)):
        t = n >= v
        assert got == pytest.approx(2 * (t & m).sum() / (t.sum() + m.sum()))
        assert dice_at(h, m, v) == pytest.approx(got)
    assert np.isnan(dice_at(h, m, float("nan")))
    assert (normalised(np.full((3, 3), 2.0)) == 0).all() and normalised(h).max() == pytest.approx(1.0)
    assert dice_curve(np.zeros((3, 3)), np.zeros((3, 3), bool), [0.5])[0] == 0.0  # nothing kept, nothing boxed


def test_fitted_val_cut_takes_the_smallest_value_on_ties_and_needs_five_items_per_finding():
    from embedstore.explain.agreement import fit_val_thresholds

    grid = np.array([0.1, 0.2, 0.3])
    f_items = [np.array([0.9, 0.9, 0.0])] * 5  # 0.1 and 0.2 tie: the smaller
    g_items = [np.array([0.0, 0.2, 0.8])] * 4  # alone: 0.3
    fitted = fit_val_thresholds({"F": f_items, "G": g_items}, grid=grid)
    # F has five items: its own cut. G has four: the pooled cut, of the means .5, .589, .356 -> 0.2
    assert (fitted.cut("F"), fitted.cut("G"), fitted.pooled) == (0.1, 0.2, 0.2)
    assert fitted.fitted_on("F") == 5 and fitted.fitted_on("G") == 9 and fitted.fitted_on(None) == 9
    assert fit_val_thresholds({"G": g_items}, grid=grid, min_items=4).cut("G") == 0.3
    none = fit_val_thresholds({}, grid=grid)
    assert np.isnan(none.pooled) and none.fitted_on("F") == 0


def test_centre_prior_is_a_gaussian_of_sigma_times_each_side():
    c = centre_prior(100, 200, sigma=0.1)  # sigma 10 rows, 20 columns; centre (50, 100)
    # pixel (59, 99) has its centre at (59.5, 99.5): 0.95 sigma down, 0.025 sigma left
    assert c[59, 99] == pytest.approx(np.exp(-0.5 * (0.95 ** 2 + 0.025 ** 2)), rel=1e-5)
    # pixel (49, 139): 0.05 sigma up, 1.975 sigma right
    assert c[49, 139] == pytest.approx(np.exp(-0.5 * (0.05 ** 2 + 1.975 ** 2)), rel=1e-5)


def test_an_items_baselines_do_not_depend_on_the_other_items_scored():
    from embedstore.explain.agreement import item_seed

    assert item_seed(0, "a", "F") == item_seed(0, "a", "F") != item_seed(0, "a", "G") != item_seed(1, "a", "F")
    maps = {("a", "F"): hand_map(), ("b", "F"): hand_map()}
    alone, _ = agreement(maps, boxes(("a", "F", 2, 2, 6, 6)), n_boot=10)
    both, _ = agreement(maps, boxes(("a", "F", 2, 2, 6, 6), ("b", "F", 1, 1, 4, 4)), n_boot=10)
    pick = lambda t: t.filter((pl.col("image_id") == "a") & (pl.col("heatmap") != "model")).sort("heatmap")  # noqa: E731
    assert pick(alone).equals(pick(both))
    other_seed, _ = agreement(maps, boxes(("a", "F", 2, 2, 6, 6)), n_boot=10, seed=1)
    assert not pick(other_seed).filter(pl.col("heatmap") == "random").equals(pick(alone).filter(pl.col("heatmap") == "random"))


def test_without_baselines_only_the_model_is_scored_and_centre_sigma_reaches_the_prior():
    maps = {("a", "F"): hand_map()}
    per_item, summary = agreement(maps, boxes(("a", "F", 2, 2, 6, 6)), baselines=False, n_boot=10)
    assert per_item["heatmap"].to_list() == ["model"] and set(summary["heatmap"]) == {"model"}
    wide, _ = agreement(maps, boxes(("a", "F", 2, 2, 6, 6)), centre_sigma=2.0, n_boot=10)
    narrow, _ = agreement(maps, boxes(("a", "F", 2, 2, 6, 6)), centre_sigma=0.05, n_boot=10)
    energy = lambda t: t.filter(pl.col("heatmap") == "centre")["energy"][0]  # noqa: E731
    assert energy(wide) == pytest.approx(0.16, abs=0.03) and energy(narrow) > 0.9  # flat vs peaked at (5, 5)


def test_boxes_reaching_the_image_edge_are_inside():
    per_item, _ = agreement({("a", "F"): hand_map()}, boxes(("a", "F", 0, 0, 10, 10)), baselines=False, n_boot=10)
    assert per_item["box_share"][0] == 1.0


def test_a_heatmap_that_is_not_2d_is_an_input_error():
    with pytest.raises(InputError, match=r"heatmap of image 'a' finding 'F' has shape \(10, 10, 3\); need 2-D"):
        agreement({("a", "F"): np.zeros((10, 10, 3))}, boxes(("a", "F", 2, 2, 6, 6)))


def test_every_heatmap_kind_gets_a_val_cut_fitted_on_its_own_val_maps():
    """With baselines, each kind's `value:V` cut is the one fitted on that kind's val heatmaps,
    built as for scored items (the item's boxes, its seed, the centre prior's sigma); the result
    is reproducible."""
    from embedstore.explain.agreement import dice_curve, fit_val_thresholds, item_heatmaps, item_seed

    val = [(f"v{i}", "F") for i in range(5)]
    maps = {key: ring_map(0.3 + 0.1 * i) for i, key in enumerate(val)}
    maps[("t", "F")] = hand_map()
    val_boxes = boxes(*[(i, f, 1, 2, 6, 7) for i, f in val])
    run = lambda: agreement(maps, boxes(("t", "F", 2, 2, 6, 6)), val_boxes=val_boxes, centre_sigma=0.1,  # noqa: E731
                            n_boot=10, seed=3)
    per_item, summary = run()
    mask = box_mask(np.array([[1, 2, 6, 7]]), 10, 10)
    curves: dict = {}
    for key in val:
        hms = item_heatmaps(maps[key], np.array([[1.0, 2, 6, 7]]), item_seed(3, *key), True, 0.1)
        for name, hm in hms.items():
            curves.setdefault(name, []).append(dice_curve(hm, mask))
    got = dict(zip(per_item["heatmap"], per_item["val_threshold"]))
    assert set(got) == {"model", "random", "random_box", "centre"}
    for name, items in curves.items():
        assert got[name] == fit_val_thresholds({"F": items}).cut("F"), name
    assert run()[0].equals(per_item)


def test_baseline_defaults():
    """The centre prior's sigma is a quarter of each side unless told; an item's heatmaps are the
    model's and all three baselines unless told."""
    from embedstore.explain.agreement import item_heatmaps

    assert np.array_equal(centre_prior(40, 60), centre_prior(40, 60, sigma=0.25))
    maps = item_heatmaps(hand_map(), BOX.astype(float), [0, 1])
    assert list(maps) == ["model", "random", "random_box", "centre"]
    assert np.array_equal(maps["centre"], centre_prior(10, 10, 0.25))


def test_the_first_bad_box_is_named_with_the_count_and_valid_boxes_pass():
    """Only rows with a bad box are refused (a box whose x_min exceeds its y_max is fine)."""
    df = boxes(("a", "F", 5, 0, 8, 4), ("b", "F", 1, None, 3, 4), ("c", "F", 3, 3, 1, 1))
    with pytest.raises(InputError, match=r"box of image 'b' finding 'F' .* \(2 such rows\)"):
        agreement({("a", "F"): hand_map(), ("b", "F"): hand_map(), ("c", "F"): hand_map()}, df)
    per_item, _ = agreement({("a", "F"): hand_map()}, df.head(1), baselines=False, n_boot=10)
    assert per_item["box_share"][0] == pytest.approx(12 / 100)


def test_non_finite_heatmap_pixels_count_as_zero():
    h = hand_map().astype(np.float64)
    broken = h.copy()
    broken[0, 0], broken[0, 1], broken[9, 0] = np.nan, np.inf, -np.inf
    m = box_mask(BOX, 10, 10)
    assert item_metrics(broken, m, "value:0.5") == pytest.approx(item_metrics(h, m, "value:0.5"))


def test_no_annotated_item_gives_empty_tables_with_their_columns():
    per_item, summary = agreement({("a", "F"): hand_map()}, boxes(("a", "F", 2, 2, 6, 6)).head(0), n_boot=10)
    assert per_item.is_empty() and {"image_id", "n_boxes", "pointing", VAL_DICE} <= set(per_item.columns)
    assert summary.is_empty() and {"finding", "heatmap", "metric", "value", "lo", "hi"} <= set(summary.columns)
    assert summarise(per_item).schema == summary.schema  # summarise alone keeps the columns too


def test_per_item_rows_count_boxes_and_use_the_threshold_given():
    two = boxes(("a", "F", 2, 2, 6, 6), ("a", "F", 7, 7, 9, 9))
    per_item, _ = agreement({("a", "F"): hand_map()}, two, threshold="value:0.9", baselines=False, n_boot=10)
    row = per_item.row(0, named=True)
    assert row["n_boxes"] == 2 and row["box_share"] == pytest.approx(20 / 100)
    assert row["precision"] == 1.0 and row["iou"] == pytest.approx(1 / 20)  # value:0.9 keeps the peak only


def test_agreement_and_summarise_defaults():
    maps = {(i, "F"): np.random.default_rng(k).random((10, 10)).astype(np.float32) for k, i in enumerate("abc")}
    df = boxes(("a", "F", 2, 2, 6, 6), ("b", "F", 1, 1, 5, 5), ("c", "F", 0, 3, 4, 9))
    per_item, summary = agreement(maps, df)
    p2, s2 = agreement(maps, df, threshold="top:0.15", baselines=True, centre_sigma=0.25, n_boot=1000, ci=0.95, seed=0)
    assert per_item.equals(p2) and summary.equals(s2)
    assert summarise(per_item).equals(summarise(per_item, "top:0.15", n_boot=1000, ci=0.95, seed=0))
    # three items: each interval end is the all-lowest or all-highest mean whatever n_boot and seed;
    # eight items tell other defaults apart
    more = {(i, "F"): np.random.default_rng(k).random((10, 10)).astype(np.float32) for k, i in enumerate("abcdefgh")}
    more_df = boxes(*[(i, "F", k % 4, 1, k % 4 + 5, 6) for k, i in enumerate("abcdefgh")])
    p8, s8 = agreement(more, more_df)
    assert s8.equals(agreement(more, more_df, n_boot=1000, seed=0)[1])
    assert summarise(p8).equals(summarise(p8, n_boot=1000, seed=0))
    narrow = summarise(per_item, ci=0.5).filter(pl.col("finding").is_null() & (pl.col("metric") == "iou"))
    wide = summary.filter(pl.col("finding").is_null() & (pl.col("metric") == "iou") & (pl.col("heatmap") == "model"))
    assert (narrow.filter(pl.col("heatmap") == "model")["hi"][0] - narrow.filter(pl.col("heatmap") == "model")["lo"][0]
            < wide["hi"][0] - wide["lo"][0])


def test_summary_skips_only_the_undefined_metric_and_unknown_images_are_their_own_group():
    """A box covering the whole image has no pixel AUROC (no negative pixel) but still a pixel
    AUPRC and the rest; images missing from `groups` are resampled alone."""
    maps = {("a", "F"): hand_map(), ("b", "F"): hand_map()}
    per_item, summary = agreement(maps, boxes(("a", "F", 0, 0, 10, 10), ("b", "F", 0, 0, 10, 10)), baselines=False,
                                  n_boot=10)
    names = set(summary.filter(pl.col("finding") == "F")["metric"])
    assert "pixel_auroc" not in names and {"pixel_auprc", "pointing", "energy", "iou"} <= names
    values = [1.0, 0.0, 1.0, 0.0]
    items = model_items(["a", "b", "c", "d"], values)
    partial = summarise(items, n_boot=300, seed=2, groups={"a": "p", "b": "p"})
    full = summarise(items, n_boot=300, seed=2, groups={"a": "p", "b": "p", "c": "c", "d": "d"})
    assert partial.equals(full)


@pytest.mark.parametrize("scale, background", [(1.0, 0.0), (1e-4, 0.0), (1.0, 0.5), (1.0, -1.0)])
def test_equal_heat_over_equal_areas_ties_on_the_pixel_grid_at_any_size_and_scale(scale, background):
    for height, width in ((700, 300), (777, 613), (600, 512)):
        box = np.full((height, width), background * scale, np.float32)
        box[100:400, 50:250] = scale
        values = np.unique(on_pixel_grid(box, box > background * scale)[0])
        assert (values.min(), values.max()) == pytest.approx((background * scale, scale), rel=1e-6), (height, width)
        assert (np.diff(values) > 1e-6 * scale * (1 - background)).all(), (height, width)


def test_the_pixel_grid_of_a_map_at_the_edge_of_float32_stays_finite():
    h = np.zeros((600, 600), np.float32)
    h[:300], h[300:] = 3e38, -3e38
    small, _ = on_pixel_grid(h, h > 0)
    assert small.dtype == np.float32 and np.isfinite(small).all() and small.max() > 0 > small.min()


def test_int_masks_and_small_grids():
    """A 0/1 integer mask counts as the boolean mask; pixel metrics on a grid of `max_side` are
    scikit-learn's on the resampled pixels; the grid averages area (a 3x shrink of a 1-in-3
    pattern is 1/3 everywhere); a thin horizontal image keeps one row."""
    from embedstore.explain.agreement import dice_curve, pixel_ranking_metrics

    h, m = hand_map(), box_mask(BOX, 10, 10)
    assert item_metrics(h, m.astype(int)) == pytest.approx(item_metrics(h, m))
    np.testing.assert_array_equal(dice_curve(h, m.astype(int)), dice_curve(h, m))
    big = np.random.default_rng(4).random((128, 96)).astype(np.float32)
    big_m = box_mask(np.array([[10, 20, 50, 70]]), 128, 96)
    small_h, small_m = on_pixel_grid(big, big_m, 64)
    got = pixel_ranking_metrics(big, big_m, max_side=64)
    assert got["pixel_auroc"] == pytest.approx(roc_auc_score(small_m.ravel(), small_h.ravel()))
    stripes = np.tile(np.array([1.0, 0.0, 0.0], np.float32), (1536, 512))
    assert on_pixel_grid(stripes, np.zeros(stripes.shape, bool))[0] == pytest.approx(np.full((512, 512), 1 / 3), abs=1e-6)
    wide = on_pixel_grid(np.ones((3, 2000), np.float32), np.ones((3, 2000), bool))
    assert wide[0].shape == (1, 512)


def test_energy_of_a_faint_map_is_its_share_in_the_box_and_equal_sized_masks_score_dice():
    faint = np.zeros((10, 10), np.float32)
    faint[3, 3] = 0.5  # all of its (little) energy is in the box
    m = box_mask(BOX, 10, 10)
    assert item_metrics(faint, m)["energy"] == 1.0
    shifted = np.zeros((10, 10), np.float32)
    shifted[3:7, 3:7] = 1.0  # 16 pixels like the box, 9 of them inside it: precision = recall = 9/16
    got = item_metrics(shifted, m, "value:0.5")
    assert (got["precision"], got["recall"], got["dice"], got["f1"]) == pytest.approx((9 / 16,) * 4)

