"""Grad-CAM heatmaps: layers, targets, batching, and the mapping back to the original image."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import open_clip
import polars as pl
import pytest
import torch
from PIL import Image

from embedstore.data.geometry import crop_geometry
from embedstore.errors import InputError
from embedstore.explain.agreement import agreement
from embedstore.explain.heatmaps import METHODS, compute_heatmaps, explain_images
from embedstore.explain.layers import TokensToGrid, default_layer_name, resolve_layer
from embedstore.explain.targets import (
    HeadTarget, ProbeTarget, ZeroShotTarget, probe_target, zeroshot_target, zeroshot_target_from_texts,
)

SIZE = 64


def _loaded(model, size=SIZE, resize_mode=None, tokenizer=None):
    def encode_texts(texts):
        with torch.no_grad():
            return torch.nn.functional.normalize(model.encode_text(tokenizer(texts)), dim=-1).numpy()

    return SimpleNamespace(model=model.eval(), preprocess=open_clip.image_transform(size, is_train=False, resize_mode=resize_mode),
                           tokenizer=tokenizer, record=SimpleNamespace(image_size=size), encode_texts=encode_texts)


@pytest.fixture(scope="module")
def tiny():
    """A tiny open_clip ViT: 64 px, patch 8 (grid 8x8), width 64, 2 layers; random weights."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(0)
    model = CLIP(embed_dim=32, vision_cfg=CLIPVisionCfg(layers=2, width=64, head_width=32, patch_size=8, image_size=SIZE),
                 text_cfg=CLIPTextCfg(context_length=16, vocab_size=49408, width=64, heads=2, layers=1))
    return _loaded(model, tokenizer=open_clip.tokenizer.SimpleTokenizer(context_length=16))


class BrightNet(torch.nn.Module):
    """A 'model' whose embedding is the pooled ReLU of a 1x1 conv with positive weights: its
    activation map is the image's brightness, so Grad-CAM must peak where the image is bright."""

    def __init__(self):
        super().__init__()
        conv = torch.nn.Conv2d(3, 4, kernel_size=1)
        with torch.no_grad():
            conv.weight.fill_(1.0)
            conv.bias.zero_()
        self.visual = torch.nn.Module()
        self.visual.features = torch.nn.Sequential(conv, torch.nn.ReLU())

    def encode_image(self, x):
        return self.visual.features(x).mean(dim=(2, 3))


def square_image(width=300, height=200, box=(200, 80, 240, 120)):
    a = np.zeros((height, width), np.uint8)
    x0, y0, x1, y1 = box
    a[y0:y1, x0:x1] = 255
    return Image.fromarray(a, "L")


# ---- geometry through the real transform ------------------------------------------------------

@pytest.mark.parametrize("width, height, box", [(300, 200, (200, 80, 240, 120)), (200, 300, (60, 190, 100, 230))])
def test_model_free_heatmap_maps_back_onto_the_bright_square(width, height, box):
    """The preprocessed tensor itself is the 'heatmap': after the non-square resize and centre
    crop, mapping it back must put its bright pixels on the square in original coordinates."""
    img = square_image(width, height, box)
    x = open_clip.image_transform(SIZE, is_train=False)(img)  # the real open_clip eval transform
    heat = x[0].numpy()
    heat = (heat - heat.min()) / (heat.max() - heat.min())
    back = crop_geometry(width, height, SIZE).heatmap_to_original(heat)
    assert back.shape == (height, width)
    x0, y0, x1, y1 = box
    py, px = np.unravel_index(np.argmax(back), back.shape)
    assert x0 <= px < x1 and y0 <= py < y1
    hot = back > 0.5
    inside = np.zeros_like(hot)
    inside[y0:y1, x0:x1] = True
    # the bright area maps back onto the square, up to the resampling at its edge (1 model px = 3.1 px)
    assert (hot & inside).sum() / hot.sum() > 0.9 and (hot & inside).sum() / inside.sum() > 0.8


def test_gradcam_on_a_brightness_model_peaks_in_the_square_in_original_pixels():
    loaded = _loaded(BrightNet())
    target = ProbeTarget("bright", np.ones(4, np.float32), 0.0, normalize=False)
    box = (200, 80, 240, 120)
    [heat] = explain_images(loaded, [square_image(box=box)], target, layer="visual.features")
    assert heat.shape == (200, 300)
    py, px = np.unravel_index(np.argmax(heat), heat.shape)
    assert 200 <= px < 240 and 80 <= py < 120
    df = pl.DataFrame({"image_id": ["s"], "finding": ["bright"], "x_min": [200.0], "y_min": [80.0],
                       "x_max": [240.0], "y_max": [120.0]})
    per_item, _ = agreement({("s", "bright"): heat}, df, threshold="value:0.5", n_boot=10)
    model = per_item.filter(pl.col("heatmap") == "model").row(0, named=True)
    assert model["pointing"] == 1.0 and model["energy"] > 0.8 and model["iou"] > 0.7
    others = per_item.filter(pl.col("heatmap") != "model")
    assert (others["energy"] < 0.2).all()


def test_cropped_away_region_is_empty_in_the_original_frame():
    """A square outside the centre crop (x 10..40 of 300; the model sees x 50..250) is never seen."""
    loaded = _loaded(BrightNet())
    target = ProbeTarget("bright", np.ones(4, np.float32), 0.0, normalize=False)
    [heat] = explain_images(loaded, [square_image(box=(10, 80, 40, 120))], target, layer="visual.features")
    x0, _, x1, _ = crop_geometry(300, 200, SIZE).visible_box()
    assert (x0, x1) == pytest.approx((50.0, 250.0))
    assert heat[:, :50].max() == 0.0 and heat[:, 250:].max() == 0.0


# ---- layers ------------------------------------------------------------------------------------

def test_tokens_to_grid_drops_prefix_tokens_row_major():
    grid = TokensToGrid((2, 3))
    x = torch.arange(2 * 7 * 1, dtype=torch.float32).reshape(2, 7, 1)  # 1 class token + 6 patches
    y = grid(x)
    assert y.shape == (2, 1, 2, 3)
    assert y[1, 0, 1, 2].item() == x[1, 6, 0].item() and y[0, 0, 0, 0].item() == x[0, 1, 0].item()
    seq_first = TokensToGrid((2, 3), seq_first=True)(x.transpose(0, 1))
    assert torch.equal(seq_first, y)
    with pytest.raises(ValueError):
        TokensToGrid((3, 3))(x)


def test_default_layer_and_grid_of_open_clip_vit(tiny):
    assert default_layer_name(tiny.model) == "visual.transformer.resblocks.1.ln_1"
    choice = resolve_layer(tiny.model, "visual.transformer.resblocks.-1.ln_1")
    assert choice.name == "visual.transformer.resblocks.1.ln_1" and choice.reshape.grid == (8, 8)
    with pytest.raises(InputError, match="not found"):
        resolve_layer(tiny.model, "visual.transformer.resblocks.7.ln_1")


def test_default_layer_and_grid_of_timm_tower():
    """A timm ViT tower (how BiomedCLIP is built), tiny width; the trunk keeps its 224 px grid."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    model = CLIP(embed_dim=16, vision_cfg=CLIPVisionCfg(timm_model_name="vit_tiny_patch16_224", timm_model_pretrained=False,
                                                         timm_pool="", timm_proj="linear", image_size=224),
                 text_cfg=CLIPTextCfg(context_length=8, vocab_size=100, width=32, heads=2, layers=1))
    assert default_layer_name(model) == "visual.trunk.blocks.11.norm1"
    assert resolve_layer(model).reshape.grid == (14, 14)  # BiomedCLIP's grid: ViT-B/16 at 224 px
    loaded = _loaded(model, size=224)
    heat = compute_heatmaps(loaded, [square_image()], ProbeTarget("x", np.ones(16), 0.0), batch_size=2)
    assert heat[0].model.shape == (224, 224) and heat[0].original().shape == (200, 300)


# ---- the tiny ViT: batching, methods, targets, errors ---------------------------------------------

def test_batched_equals_one_by_one_and_params_are_left_trainable(tiny):
    rng = np.random.default_rng(0)
    imgs = [Image.fromarray(rng.integers(0, 255, (120 + 10 * i, 90), dtype=np.uint8), "L") for i in range(5)]
    target = zeroshot_target_from_texts(tiny, "Cardiomegaly", ["cardiomegaly", "enlarged heart"])
    batched = explain_images(tiny, imgs, target, batch_size=4)
    single = explain_images(tiny, imgs, target, batch_size=1)
    assert [h.shape for h in batched] == [(120 + 10 * i, 90) for i in range(5)]
    for a, b in zip(batched, single):
        np.testing.assert_allclose(a, b, atol=1e-4)
    assert all(p.requires_grad for p in tiny.model.parameters())
    assert all(p.grad is None for p in tiny.model.parameters())  # no weight gradients were made


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_gives_a_heatmap_in_unit_range(tiny, method):
    heat = explain_images(tiny, [square_image()], ProbeTarget("x", np.ones(32), 0.0), method=method)[0]
    assert heat.shape == (200, 300) and heat.min() >= 0.0 and heat.max() <= 1.0 + 1e-5


def test_targets_compute_what_they_say(tiny):
    z = torch.randn(3, 32)
    zn = torch.nn.functional.normalize(z, dim=-1)
    p, n = np.random.default_rng(1).normal(size=(2, 32)).astype(np.float32)
    pos, neg = p / np.linalg.norm(p), n / np.linalg.norm(n)
    zs = ZeroShotTarget("F", p, n, logit_scale=20.0)(z).numpy()
    np.testing.assert_allclose(zs, 20.0 * (zn.numpy() @ pos - zn.numpy() @ neg), rtol=1e-5, atol=1e-5)
    assert ZeroShotTarget("F", p, n, 20.0).cache_id != ZeroShotTarget("F", p, n, 10.0).cache_id != \
        ZeroShotTarget("F", p, None, 10.0).cache_id
    w = np.arange(32, dtype=np.float32)
    np.testing.assert_allclose(ProbeTarget("F", w, 0.5)(z).numpy(), zn.numpy() @ w + 0.5, rtol=1e-5)
    head = torch.nn.Linear(32, 3)
    np.testing.assert_allclose(HeadTarget("F", head, 2)(z).detach().numpy(), head(z)[:, 2].detach().numpy(), rtol=1e-6)
    # a per-image call (what grad-cam does) gives that image's scalar
    assert ProbeTarget("F", w, 0.5)(z[1]).shape == ()
    assert ProbeTarget("F", w, 0.5).cache_id != ProbeTarget("F", w, 0.6).cache_id


def test_finetuned_head_target_through_gradcam():
    """An ImageClassifier-like module (visual + head, no encode_image) works with HeadTarget."""
    from open_clip.model import CLIPVisionCfg, _build_vision_tower

    torch.manual_seed(0)

    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.visual = _build_vision_tower(16, CLIPVisionCfg(layers=1, width=32, head_width=16, patch_size=8, image_size=SIZE))
            self.head = torch.nn.Linear(16, 2)

    model = Classifier()
    loaded = SimpleNamespace(model=model.eval(), preprocess=open_clip.image_transform(SIZE, is_train=False))
    [heat] = explain_images(loaded, [square_image()], HeadTarget("F", model.head, 1))
    assert heat.shape == (200, 300)


def test_zeroshot_from_stored_prompts_and_missing_finding(tiny):
    prompts = pl.DataFrame({"finding": ["A", "A", "B"], "polarity": ["positive", "negative", "positive"],
                            "text": ["a", "no a", "b"]})
    M = np.eye(3, 32, dtype=np.float32)
    t = zeroshot_target(prompts["finding"][0], prompts, M, logit_scale=50.0)
    np.testing.assert_allclose(t.positive, M[0])
    np.testing.assert_allclose(t.negative, M[1])
    assert t.logit_scale == 50.0
    with pytest.raises(InputError, match="'C' has no positive prompt embeddings in version v1; known: A, B"):
        zeroshot_target("C", prompts, M, 50.0, version="v1")
    with pytest.raises(InputError, match="'B' has no negative prompt embeddings in version v1; the zero-shot target is the pos-neg"):
        zeroshot_target("B", prompts, M, 50.0, version="v1")
    weights = pl.DataFrame({"finding": ["A"], "intercept": [0.1], "coef": [[0.0] * 32]})
    assert probe_target("A", weights).intercept == pytest.approx(0.1)
    with pytest.raises(InputError, match="no stored probe for finding 'B'"):
        probe_target("B", weights)


def test_bad_inputs_are_input_errors(tiny, tmp_path):
    t = ProbeTarget("x", np.ones(32), 0.0)
    with pytest.raises(InputError, match="unknown Grad-CAM method 'gradcamz'"):
        explain_images(tiny, [square_image()], t, method="gradcamz")
    with pytest.raises(InputError, match="does not exist"):
        explain_images(tiny, [tmp_path / "nope.png"], t)
    with pytest.raises(InputError, match="layer 'visual.nothing' not found"):
        explain_images(tiny, [square_image()], t, layer="visual.nothing")
    squash = SimpleNamespace(**{**vars(tiny), "preprocess": open_clip.image_transform(SIZE, is_train=False, resize_mode="squash")})
    with pytest.raises(InputError, match="shortest-side"):
        explain_images(squash, [square_image()], t)


def test_reads_image_files(tiny, tmp_path):
    path = tmp_path / "sq.png"
    square_image().save(path)
    [heat] = explain_images(tiny, [str(path)], ProbeTarget("x", np.ones(32), 0.0))
    assert heat.shape == (200, 300)


def test_overlay_is_drawn_on_the_original_image_with_boxes(tmp_path):
    from embedstore.explain.overlay import write_overlay

    img = square_image()
    heat = np.zeros((200, 300), np.float32)
    heat[80:120, 200:240] = 1.0
    out = write_overlay(tmp_path / "o.png", img, heat, boxes=[(20, 30, 60, 70)], visible=(50, 0, 250, 200))
    with Image.open(out) as im:
        a = np.asarray(im.convert("RGB"))
    assert a.shape == (200, 300, 3)
    assert tuple(a[30, 40]) == (0, 255, 0) and tuple(a[50, 20]) == (0, 255, 0)  # box edges, green
    assert tuple(a[100, 50]) == (255, 255, 255)  # the model's visible region, outlined
    assert a[100, 220, 0] > a[100, 150, 0]  # hot (red end of jet) where the heatmap is 1
    with pytest.raises(ValueError):
        write_overlay(tmp_path / "bad.png", img, heat[:10], boxes=[])
    assert not (tmp_path / "bad.png").exists()


# ---- where the heat is: the bundled model on phantoms with a finding of known place ---------------

@pytest.fixture(scope="module")
def phantom_clip():
    from embedstore.models import load_model

    return load_model("phantom-clip")


def effusion_phantom(n: int, side: int):
    """Phantom study `n` (frontal view) with one large pleural effusion forced to `side` (-1 or 1),
    rendered by `embedstore.synth` as `synth` renders it: (image, the effusion's boxes)."""
    from embedstore.synth.generate import ImageRenderer, make_study, to_uint8
    from embedstore.synth.labels import StudyLabels

    study = make_study(3, n, 128, StudyLabels(findings=("Effusion",), normal=False, views=("frontal",)))
    study.kinds["effusion"].update(side=side, h=0.34, d=0.38)
    renderer = ImageRenderer(study, 0)
    clean = renderer.clean()
    boxes = [b for b in renderer.boxes(clean) if b["finding"] == "Effusion"]
    return Image.fromarray(to_uint8(renderer.noisy(clean)), "L"), boxes


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_zero_shot_heat_follows_an_effusion_to_its_side(phantom_clip, n):
    """The zero-shot pos-neg target (built as the store builds it) on phantom-clip: with the same
    anatomy and the effusion on one side then the other, the heatmap's peak falls in the box's
    quadrant and most of the heat lies on the box's half. An all-zero or centred map fails."""
    from embedstore.data.prompts import prompt_table

    prompts = prompt_table(["Effusion"])
    M = phantom_clip.encode_texts(prompts["text"].to_list())
    target = zeroshot_target("Effusion", prompts, M, phantom_clip.record.logit_scale)
    halves = set()
    for side in (-1, 1):
        image, [box] = effusion_phantom(n, side)
        [heat] = explain_images(phantom_clip, [image], target)
        height, width = heat.shape
        cx, cy = (box["x_min"] + box["x_max"]) / 2, (box["y_min"] + box["y_max"]) / 2
        py, px = np.unravel_index(np.argmax(heat), heat.shape)
        assert (px < width / 2, py < height / 2) == (cx < width / 2, cy < height / 2), (side, (px, py), box)
        box_half = heat[:, : width // 2] if cx < width / 2 else heat[:, width // 2:]
        assert box_half.sum() > 0.5 * heat.sum(), (side, box_half.sum() / heat.sum())
        halves.add(cx < width / 2)
    assert halves == {True, False}  # the two effusions sit in different halves
