"""Heatmap cache, and `explain` / `agreement` wired to a small hand-built store (tiny model)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import open_clip
import polars as pl
import pytest
import torch
from PIL import Image

from embedstore.data.records import ImageRecord
from embedstore.errors import EmbedstoreError, InputError
from embedstore.explain import service as commands
from embedstore.explain.cache import HeatmapCache, HeatmapKey, cached_heatmaps
from embedstore.explain.heatmaps import Heatmap
from embedstore.explain.targets import ProbeTarget
from embedstore.data.geometry import crop_geometry

SIZE = 64


@pytest.fixture(scope="module")
def tiny():
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(0)
    model = CLIP(embed_dim=32, vision_cfg=CLIPVisionCfg(layers=2, width=64, head_width=32, patch_size=8, image_size=SIZE),
                 text_cfg=CLIPTextCfg(context_length=16, vocab_size=49408, width=64, heads=2, layers=1)).eval()
    tok = open_clip.tokenizer.SimpleTokenizer(context_length=16)

    def encode_texts(texts):
        with torch.no_grad():
            return torch.nn.functional.normalize(model.encode_text(tok(texts)), dim=-1).numpy()

    return SimpleNamespace(model=model, preprocess=open_clip.image_transform(SIZE, is_train=False), tokenizer=tok,
                           record=SimpleNamespace(image_size=SIZE), encode_texts=encode_texts)


def _store(tmp_path, tiny, images: list[tuple], boxes: list[tuple]):
    """A store of random-noise PNGs: `images` (image_id, (width, height), patient, split), prompts
    for Cardiomegaly only, Cardiomegaly `boxes` (image_id, x_min, y_min, x_max, y_max)."""
    from store_helpers import open_store as Store

    rng = np.random.default_rng(0)
    records, size = [], {}
    for i, (image_id, (w, h), patient, split) in enumerate(images):
        path = tmp_path / f"{image_id}.png"
        Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8), "L").save(path)
        records.append(ImageRecord(image_id, str(path), f"s{i}", patient, "frontal", "PA", split,
                                   {"Cardiomegaly": 1}, source="synth"))
        size[image_id] = (w, h)
    st = Store(tmp_path / "store")
    st.upsert_images(records)
    version = st.create_version(None, {"name": "tiny", "embed_dim": 32, "logit_scale": 100.0}, {}, "fp32", "encode")
    prompts = pl.DataFrame({"finding": ["Cardiomegaly"] * 3, "polarity": ["positive", "positive", "negative"],
                            "template": [""] * 3, "text": ["cardiomegaly", "enlarged heart", "normal heart size"]})
    st.upsert_prompts(prompts)
    st.add_text_vectors(version, prompts, tiny.encode_texts(prompts["text"].to_list()))
    st.complete_version(version)
    st.write_boxes(pl.DataFrame([{"image_id": i, "finding": "Cardiomegaly", "x_min": float(x0), "y_min": float(y0),
                                  "x_max": float(x1), "y_max": float(y1), "reader": "r", "width": size[i][0],
                                  "height": size[i][1]} for i, x0, y0, x1, y1 in boxes]))
    return st


@pytest.fixture()
def store(tmp_path, tiny):
    """Three test images (non-square), one version, prompts for Cardiomegaly only, boxes for two images."""
    return _store(tmp_path, tiny, [("img0", (300, 200), "p0", "test"), ("img1", (200, 260), "p1", "test"),
                                   ("img2", (128, 128), "p2", "test")],
                  [("img0", 100, 50, 200, 150), ("img1", 20, 100, 150, 200)])


@pytest.fixture()
def split_store(tmp_path, tiny):
    """Boxed images in every split: train t0-t3, val v0-v1, test x0-x2 (x0 and x1 one patient)."""
    specs = [("t0", "pt0", "train"), ("t1", "pt1", "train"), ("t2", "pt2", "train"), ("t3", "pt3", "train"),
             ("v0", "pv0", "val"), ("v1", "pv1", "val"), ("x0", "px", "test"), ("x1", "px", "test"),
             ("x2", "px2", "test")]
    images = [(i, (96, 80), patient, split) for i, patient, split in specs]
    return _store(tmp_path, tiny, images, [(i, 10 + 5 * n, 10, 50 + 5 * n, 60) for n, (i, *_) in enumerate(specs)])


def test_cache_round_trip_and_key_separation(tmp_path):
    cache = HeatmapCache(tmp_path / "heatmaps")
    key = HeatmapKey("v1", "probe-abc", "gradcam", "visual.x", "Lung Opacity", "a/b c")
    m = np.random.default_rng(0).random((SIZE, SIZE)).astype(np.float32)
    assert cache.get(key) is None
    cache.put(key, Heatmap(m, crop_geometry(300, 200, SIZE)))
    got = cache.get(key)
    np.testing.assert_allclose(got.model, m, atol=1e-3)  # float16 on disk
    assert got.geometry == crop_geometry(300, 200, SIZE) and got.original().shape == (200, 300)
    for other in (HeatmapKey("v2", *list(vars(key).values())[1:]), HeatmapKey("v1", "probe-abd", "gradcam", "visual.x", "Lung Opacity", "a/b c")):
        assert cache.get(other) is None
    assert not list((tmp_path / "heatmaps").rglob("*.tmp*"))


def test_second_call_reads_the_cache_without_a_forward_pass(tmp_path, tiny, store):
    items = [(r["image_id"], r["path"]) for r in store.images().iter_rows(named=True)]
    cache = HeatmapCache(tmp_path / "hm")
    target = ProbeTarget("Cardiomegaly", np.ones(32), 0.0)
    first = cached_heatmaps(tiny, items, target, cache, "v1")
    calls = []
    hook = tiny.model.visual.register_forward_hook(lambda *a: calls.append(1))
    try:
        second = cached_heatmaps(tiny, items, target, cache, "v1")
    finally:
        hook.remove()
    assert calls == [] and set(second) == {"img0", "img1", "img2"}
    for k in first:
        np.testing.assert_array_equal(first[k].model, second[k].model)
        assert first[k].geometry == second[k].geometry


def test_explain_writes_an_overlay_on_the_original_image(tmp_path, tiny, store):
    out = tmp_path / "o.png"
    res = commands.explain(store, "img0", "Cardiomegaly", out=str(out), loaded=tiny)
    assert out.is_file() and res.boxes == 1 and res.cached is False
    with Image.open(out) as im:
        assert im.size == (300, 200) and im.mode == "RGB"
    assert 0 <= res.peak_x < 300 and 0 <= res.peak_y < 200
    again = commands.explain(store, "img0", "Cardiomegaly", out=str(out), loaded=tiny)
    assert again.cached is True and (again.peak_x, again.peak_y) == (res.peak_x, res.peak_y)


def test_explain_errors(tmp_path, tiny, store):
    with pytest.raises(InputError, match="'nope'.*not in store"):
        commands.explain(store, "nope", "Cardiomegaly", loaded=tiny)
    with pytest.raises(InputError, match="'Pneumothorax' has no positive prompt"):
        commands.explain(store, "img0", "Pneumothorax", loaded=tiny, out=str(tmp_path / "x.png"))
    with pytest.raises(InputError, match="no stored probe"):
        commands.explain(store, "img0", "Cardiomegaly", target="probe", loaded=tiny)
    with pytest.raises(InputError, match="no fine-tuned classifier head"):
        commands.explain(store, "img0", "Cardiomegaly", target="finetuned", loaded=tiny)
    assert not (tmp_path / "x.png").exists()


def test_agreement_run_is_stored_and_reused(tiny, store):
    run, per_item = commands.agreement(store, loaded=tiny, n_boot=50)
    assert not run.reused and per_item.height == 2 * 4  # two boxed items x (model, random, random_box, centre)
    metrics = run.metrics
    assert {"pointing", "pointing@random", "pointing@random_box", "pointing@centre", "energy", "iou@centre",
            "pixel_auroc", "pixel_auprc@random_box"} <= set(metrics["metric"])
    again, items2 = commands.agreement(store, loaded=tiny, n_boot=50)
    assert again.reused and again.run_id == run.run_id and items2 is None
    calls = []
    hook = tiny.model.visual.register_forward_hook(lambda *a: calls.append(1))
    try:  # another threshold: a new run, but the heatmaps come from the cache
        other, _ = commands.agreement(store, loaded=tiny, n_boot=50, threshold="otsu")
    finally:
        hook.remove()
    assert other.run_id != run.run_id and not other.reused and calls == []


def test_probe_target_reads_the_latest_stored_probe(tmp_path, tiny, store):
    import datetime as dt

    weights = pl.DataFrame({"finding": ["Cardiomegaly"], "intercept": [0.5], "coef": [[1.0] * 32]},
                           schema={"finding": pl.String, "intercept": pl.Float64, "coef": pl.List(pl.Float32)})
    store.write_run("probe", "v1", {"c": 1}, dt.datetime.now(), 0.1, {"probe_weights": weights})
    target = commands.build_target(store, "v1", "probe", "Cardiomegaly")
    assert target.intercept == 0.5 and target.coef.shape == (32,)
    res = commands.explain(store, "img1", "Cardiomegaly", target="probe", loaded=tiny, out=str(tmp_path / "p.png"))
    assert res.target == "probe" and (tmp_path / "p.png").is_file()


def test_agreement_rejects_boxes_outside_the_image(tiny, store):
    store.write_boxes(pl.DataFrame({"image_id": ["img2"], "finding": ["Cardiomegaly"], "x_min": [10.0], "y_min": [10.0],
                                    "x_max": [140.0], "y_max": [50.0], "reader": ["r"], "width": [128], "height": [128]}))
    with pytest.raises(InputError, match="outside the 128x128 image"):
        commands.agreement(store, loaded=tiny, n_boot=10)


def test_cli_reports_bad_input_in_one_line(store, capsys):
    from embedstore.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["explain", "nope", "--finding", "Cardiomegaly", "--store", str(store.path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: image id(s) 'nope' not in store") and "\n" not in err
    with pytest.raises(SystemExit) as exc:
        main(["agreement", "--threshold", "top:5", "--store", str(store.path)])
    assert exc.value.code == 2 and "bad threshold 'top:5'" in capsys.readouterr().err


# ---- which items agreement scores ----------------------------------------------------------------

def _model_rows(per_item):
    return per_item.filter(pl.col("heatmap") == "model")


def test_agreement_scores_the_test_split_and_counts_what_it_left_out(tiny, split_store):
    result = commands.agreement(split_store, loaded=tiny, n_boot=50)
    run, per_item = result  # still unpacks as before
    assert result.split == "test" and run.config["split"] == "test"
    assert sorted(_model_rows(per_item)["image_id"]) == ["x0", "x1", "x2"] and result.scored == 3
    assert result.left_out == {"train": 4, "val": 2} == run.config["left_out"]
    assert _model_rows(per_item)["val_threshold"].is_finite().all()  # fitted on v0, v1 (pooled: < 5 items)
    cut = run.metrics.filter((pl.col("metric") == "val_threshold") & pl.col("finding").is_null())
    assert cut.height == 1 and 0.0 <= cut["value"][0] <= 1.0
    assert {"dice@val_threshold", "dice@val_threshold@random_box"} <= set(run.metrics["metric"])
    everything = commands.agreement(split_store, loaded=tiny, n_boot=50, split="all")
    assert everything.scored == 9 and everything.left_out == {} and everything.run.run_id != run.run_id
    train = commands.agreement(split_store, loaded=tiny, n_boot=50, split="train")
    assert train.scored == 4 and train.left_out == {"val": 2, "test": 3}
    with pytest.raises(InputError, match="--split 'tests' is not one of train, val, test, all"):
        commands.agreement(split_store, loaded=tiny, split="tests")


def test_agreement_of_a_split_without_boxes_says_where_the_boxes_are(tiny, store):
    with pytest.raises(InputError, match=r"no boxed image is in split 'val' \(boxed items by split: test 2\)"):
        commands.agreement(store, loaded=tiny, split="val")


def test_agreement_bootstraps_patients(tiny, split_store, monkeypatch):
    from embedstore.explain import agreement as agr

    seen = {}
    real = agr.agreement

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(agr, "agreement", spy)
    commands.agreement(split_store, loaded=tiny, n_boot=50)
    groups = seen["groups"]
    assert groups["x0"] == groups["x1"] != groups["x2"]  # x0 and x1 are one patient: resampled together
    assert sorted(seen["val_boxes"]["image_id"].unique()) == ["v0", "v1"]


def test_cli_prints_the_split_and_the_left_out_items(split_store, tiny, monkeypatch, capsys):
    from embedstore.cli import main

    monkeypatch.setattr(commands, "_load_model", lambda st, version: tiny)
    with pytest.raises(SystemExit) as exc:
        main(["agreement", "--n-boot", "20", "--format", "csv", "--store", str(split_store.path)])
    assert exc.value.code == 0
    captured = capsys.readouterr()
    assert "test split: 3 boxed items scored; left out: 4 train, 2 val" in captured.err
    assert captured.out.startswith("finding,metric,value,lo,hi")


# ---- the zero-shot target is the score zero-shot evaluates -----------------------------------------

def test_zeroshot_target_scores_an_image_as_the_pos_neg_rule_does(tmp_path):
    """On stored vectors: the Grad-CAM target's score of an image's embedding equals the stored
    pos-neg zero-shot score of that image (the logit, negatives included)."""
    from store_helpers import build_store

    st, ds = build_store(tmp_path, n=24)
    version = st.resolve_version(None)
    st.zeroshot(version, rule="pos-neg")
    scores = st.sql("SELECT s.id, s.finding, s.score FROM image_scores s JOIN runs r USING (run_id) "
                    "WHERE r.kind = 'zeroshot'")
    ids, X = st.image_vectors(version)
    row_of = {int(i): n for n, i in enumerate(ids)}
    assert scores.height > 0
    for finding in ds.findings:
        target = commands.build_target(st, version, "zeroshot", finding)
        mine = scores.filter(pl.col("finding") == finding)
        emb = torch.from_numpy(X[[row_of[int(i)] for i in mine["id"]]])
        got = target(emb).numpy()
        np.testing.assert_allclose(got, mine["score"].to_numpy(), rtol=1e-4, atol=1e-3)
