"""Heatmap cache, and `explain` / `agreement` wired to a small hand-built store (tiny model)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")
from PIL import Image  # noqa: E402

from embedstore.data.records import ImageRecord  # noqa: E402
from embedstore.errors import EmbedstoreError, InputError  # noqa: E402
from embedstore.explain import commands  # noqa: E402
from embedstore.explain.cache import HeatmapCache, HeatmapKey, cached_heatmaps  # noqa: E402
from embedstore.explain.heatmaps import Heatmap  # noqa: E402
from embedstore.explain.targets import ProbeTarget  # noqa: E402
from embedstore.data.geometry import crop_geometry  # noqa: E402

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


@pytest.fixture()
def store(tmp_path, tiny):
    """Three images (non-square), one version, prompts for Cardiomegaly only, boxes for two images."""
    from embedstore.api import Store

    rng = np.random.default_rng(0)
    records = []
    for i, (w, h) in enumerate([(300, 200), (200, 260), (128, 128)]):
        path = tmp_path / f"im{i}.png"
        Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8), "L").save(path)
        records.append(ImageRecord(f"img{i}", str(path), f"s{i}", f"p{i}", "frontal", "PA", "test",
                                   {"Cardiomegaly": 1}, source="synth"))
    st = Store(tmp_path / "store")
    st.upsert_images(records)
    version = st.create_version(None, {"name": "tiny", "embed_dim": 32, "logit_scale": 100.0}, {}, "fp32", "encode")
    prompts = pl.DataFrame({"finding": ["Cardiomegaly"] * 3, "polarity": ["positive", "positive", "negative"],
                            "template": [""] * 3, "text": ["cardiomegaly", "enlarged heart", "normal heart size"]})
    st.upsert_prompts(prompts)
    st.add_text_vectors(version, prompts, tiny.encode_texts(prompts["text"].to_list()))
    st.write_boxes(pl.DataFrame({"image_id": ["img0", "img1"], "finding": ["Cardiomegaly"] * 2,
                                 "x_min": [100.0, 20.0], "y_min": [50.0, 100.0], "x_max": [200.0, 150.0],
                                 "y_max": [150.0, 200.0], "reader": ["r", "r"], "width": [300, 200], "height": [200, 260]}))
    return st


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
    res = commands.explain("img0", "Cardiomegaly", store=store, out=str(out), loaded=tiny)
    assert out.is_file() and res["boxes"] == 1 and res["cached"] is False
    with Image.open(out) as im:
        assert im.size == (300, 200) and im.mode == "RGB"
    assert 0 <= res["peak_x"] < 300 and 0 <= res["peak_y"] < 200
    again = commands.explain("img0", "Cardiomegaly", store=store, out=str(out), loaded=tiny)
    assert again["cached"] is True and (again["peak_x"], again["peak_y"]) == (res["peak_x"], res["peak_y"])


def test_explain_errors(tmp_path, tiny, store):
    with pytest.raises(InputError, match="'nope'.*not in store"):
        commands.explain("nope", "Cardiomegaly", store=store, loaded=tiny)
    with pytest.raises(InputError, match="'Pneumothorax' has no positive prompt"):
        commands.explain("img0", "Pneumothorax", store=store, loaded=tiny, out=str(tmp_path / "x.png"))
    with pytest.raises(InputError, match="no stored probe"):
        commands.explain("img0", "Cardiomegaly", target="probe", store=store, loaded=tiny)
    with pytest.raises(InputError, match="no fine-tuned classifier head"):
        commands.explain("img0", "Cardiomegaly", target="finetuned", store=store, loaded=tiny)
    assert not (tmp_path / "x.png").exists()


def test_agreement_run_is_stored_and_reused(tiny, store):
    run, per_item = commands.agreement(store=store, loaded=tiny, n_boot=50)
    assert not run.reused and per_item.height == 2 * 4  # two boxed items x (model, random, random_box, centre)
    metrics = run.metrics
    assert {"pointing", "pointing@random", "pointing@random_box", "pointing@centre", "energy", "iou@centre",
            "pixel_auroc", "pixel_auprc@random_box"} <= set(metrics["metric"])
    again, items2 = commands.agreement(store=store, loaded=tiny, n_boot=50)
    assert again.reused and again.run_id == run.run_id and items2 is None
    calls = []
    hook = tiny.model.visual.register_forward_hook(lambda *a: calls.append(1))
    try:  # another threshold: a new run, but the heatmaps come from the cache
        other, _ = commands.agreement(store=store, loaded=tiny, n_boot=50, threshold="otsu")
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
    res = commands.explain("img1", "Cardiomegaly", target="probe", store=store, loaded=tiny, out=str(tmp_path / "p.png"))
    assert res["target"] == "probe" and (tmp_path / "p.png").is_file()


def test_agreement_rejects_boxes_outside_the_image(tiny, store):
    store.write_boxes(pl.DataFrame({"image_id": ["img2"], "finding": ["Cardiomegaly"], "x_min": [10.0], "y_min": [10.0],
                                    "x_max": [140.0], "y_max": [50.0], "reader": ["r"], "width": [128], "height": [128]}))
    with pytest.raises(InputError, match="outside the 128x128 image"):
        commands.agreement(store=store, loaded=tiny, n_boot=10)


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
