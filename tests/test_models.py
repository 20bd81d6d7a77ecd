"""Model registry: local-dir export round trips (tiny CLIP and the BiomedCLIP architecture),
shipped names, offline behaviour and the errors for names that cannot load."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch

from embedstore.errors import InputError, ModelUnavailable

TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
TEXTS = ["no pleural effusion", "cardiomegaly", "normal chest x ray"]


def _unit(x) -> np.ndarray:
    x = x.detach().double().numpy()
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _raw(model, images, tokens) -> tuple[np.ndarray, np.ndarray]:
    """Unnormalised tower outputs: a loaded copy must reproduce them bit for bit."""
    with torch.no_grad():
        return model.encode_image(images).numpy(), model.encode_text(tokens).numpy()


def assert_same_model(lm, images, tokens, texts, ref_raw, ref_img, ref_txt):
    raw_img, raw_txt = _raw(lm.model, images, tokens)
    np.testing.assert_array_equal(raw_img, ref_raw[0])  # identical weights, identical forward pass
    np.testing.assert_array_equal(raw_txt, ref_raw[1])
    img, txt = lm.encode_images(images), lm.encode_texts(texts)
    assert img.dtype == np.float32 and txt.dtype == np.float32
    np.testing.assert_allclose(img, ref_img, atol=1e-6)  # L2-normalised (reference in float64)
    np.testing.assert_allclose(txt, ref_txt, atol=1e-6)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A seeded tiny CLIP, its reference outputs computed directly, and its export folder."""
    from embedstore.models import export_model

    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY_CFG).eval()
    images = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    tok = open_clip.get_tokenizer("ViT-B-32", context_length=32)
    raw = _raw(model, images, tok(TEXTS))
    out = export_model(model, tmp_path_factory.mktemp("tiny") / "tiny-clip", TINY_CFG)
    return {"model": model, "images": images, "tokens": tok(TEXTS), "raw": raw,
            "img": _unit(torch.from_numpy(raw[0])), "txt": _unit(torch.from_numpy(raw[1])), "dir": out}


def test_tiny_local_dir_round_trip_is_identical(tiny):
    from embedstore.models import load_model

    d = tiny["dir"]
    assert sorted(p.name for p in d.iterdir()) == ["open_clip_config.json", "open_clip_model.safetensors"]
    lm = load_model(f"local-dir:{d}")
    assert_same_model(lm, tiny["images"], tiny["tokens"], TEXTS, tiny["raw"], tiny["img"], tiny["txt"])
    assert np.allclose(np.linalg.norm(lm.encode_images(tiny["images"]), axis=1), 1, atol=1e-5)
    rec = lm.record
    assert rec.name == f"local-dir:{d.resolve()}" and rec.source == rec.name
    assert (rec.embed_dim, rec.image_size, rec.context_length) == (32, 64, 32)
    assert rec.logit_scale == pytest.approx(float(tiny["model"].logit_scale.detach().exp()))
    assert rec.weights_sha256 == _sha256(d / "open_clip_model.safetensors")
    assert rec.preprocess["resize_mode"] == "shortest" and rec.preprocess["interpolation"] == "bicubic"
    assert rec.arch == TINY_CFG
    json.dumps(rec.to_dict())  # stored as JSON in the store
    from PIL import Image

    x = lm.preprocess(Image.new("L", (80, 70), 128).convert("RGB"))
    assert tuple(x.shape) == (3, 64, 64)
    assert lm.encode_texts([]).shape == (0, 32)


def test_fp16_export_halves_the_file_and_stays_close(tiny, tmp_path):
    from safetensors import safe_open

    from embedstore.models import export_model, load_model

    out = export_model(tiny["model"], tmp_path / "half", TINY_CFG, precision="fp16")
    with safe_open(str(out / "open_clip_model.safetensors"), "pt") as fh:
        assert {fh.get_slice(k).get_dtype() for k in fh.keys()} == {"F16"}
    full = (tiny["dir"] / "open_clip_model.safetensors").stat().st_size
    assert (out / "open_clip_model.safetensors").stat().st_size < 0.55 * full
    lm = load_model(f"local-dir:{out}")
    np.testing.assert_allclose(lm.encode_images(tiny["images"]), tiny["img"], atol=5e-3)
    assert json.loads((out / "open_clip_config.json").read_text())["embedstore"]["precision"] == "fp16"
    # and any folder runs at reduced precision when asked: float32 unit vectors out, fp16 inside
    lm16 = load_model(f"local-dir:{tiny['dir']}", precision="fp16")
    assert lm16.dtype == torch.float16
    got = lm16.encode_images(tiny["images"])
    assert got.dtype == np.float32 and np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(got, tiny["img"], atol=5e-3)
    np.testing.assert_allclose(lm16.encode_texts(TEXTS), tiny["txt"], atol=5e-3)


def test_export_replaces_a_folder_atomically(tiny, tmp_path):
    from embedstore.models import export_model

    out = tmp_path / "m"
    out.mkdir()
    (out / "stale.bin").write_bytes(b"old")
    export_model(tiny["model"], out, TINY_CFG)
    assert not (out / "stale.bin").exists()  # the old folder was replaced, not merged into
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary folders left behind


def test_shipped_name_loads_from_its_package_folder(tiny, monkeypatch):
    from embedstore.models import load_model, registry

    monkeypatch.setitem(registry.SHIPPED, "tiny-shipped", "tiny_shipped")
    monkeypatch.setattr(registry, "shipped_dir", lambda name: tiny["dir"])
    lm = load_model("tiny-shipped")
    assert lm.record.name == "tiny-shipped" and lm.record.source == "package:embedstore/models/tiny_shipped"
    np.testing.assert_allclose(lm.encode_texts(TEXTS), tiny["txt"], atol=1e-6)


def test_shipped_name_without_its_folder_is_unavailable(monkeypatch, tmp_path):
    from embedstore.models import load_model, registry

    monkeypatch.setitem(registry.SHIPPED, "ghost-clip", "ghost_clip")
    monkeypatch.setattr(registry, "shipped_dir", lambda name: tmp_path / "ghost_clip")
    with pytest.raises(ModelUnavailable, match="ghost-clip.*not installed"):
        load_model("ghost-clip")


def test_phantom_clip_is_a_shipped_name():
    from embedstore.models import SHIPPED, registry

    assert SHIPPED["phantom-clip"] == "phantom_clip"
    assert registry.shipped_dir("phantom-clip") == Path(registry.__file__).parent / "phantom_clip"


def test_unknown_and_malformed_names(tmp_path):
    from embedstore.models import load_model

    with pytest.raises(ModelUnavailable) as err:
        load_model("biomedclp")
    msg = str(err.value)
    assert "biomedclp" in msg and "local-dir:PATH" in msg and "hf-hub:" in msg and "did you mean biomedclip" in msg
    with pytest.raises(ModelUnavailable, match="needs --pretrained"):
        load_model("ViT-B-32")
    with pytest.raises(ModelUnavailable, match="not-a-tag"):
        load_model("ViT-B-32", pretrained="not-a-tag")
    with pytest.raises(InputError, match="--pretrained"):
        load_model("biomedclip", pretrained="openai")
    with pytest.raises(InputError, match="precision"):
        load_model("biomedclip", precision="int8")
    with pytest.raises(ModelUnavailable, match="no folder"):
        load_model(f"local-dir:{tmp_path / 'absent'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelUnavailable, match="open_clip_config.json is missing"):
        load_model(f"local-dir:{tmp_path / 'empty'}")
    (tmp_path / "empty" / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CFG}))
    with pytest.raises(ModelUnavailable, match="no weights"):
        load_model(f"local-dir:{tmp_path / 'empty'}")


def test_model_config_needs_no_weights(tiny):
    from embedstore.models import model_config
    from embedstore.models.registry import image_size_of

    assert image_size_of(model_config(f"local-dir:{tiny['dir']}")) == 64
    assert image_size_of(model_config("biomedclip")) == 224
    assert image_size_of(model_config("ViT-B-32", "openai")) == 224


def test_local_dir_load_restores_the_offline_setting(tiny, monkeypatch):
    import huggingface_hub.constants as hc

    from embedstore.models import load_model

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    before = hc.HF_HUB_OFFLINE
    load_model(f"local-dir:{tiny['dir']}")
    assert "HF_HUB_OFFLINE" not in os.environ and hc.HF_HUB_OFFLINE == before


def test_biomedclip_offline_with_empty_cache_says_how_to_get_it(tmp_path):
    # a fresh process: huggingface_hub reads HF_HOME / HF_HUB_OFFLINE when first imported
    code = (
        "from embedstore.errors import ModelUnavailable\n"
        "from embedstore.models import load_model\n"
        "try:\n"
        "    load_model('biomedclip')\n"
        "except ModelUnavailable as err:\n"
        "    import sys\n"
        "    print(str(err))\n"
        "    print('torch' in sys.modules, 'open_clip' in sys.modules)\n"
        "else:\n"
        "    raise SystemExit('loaded?')\n"
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    msg, imported = res.stdout.strip().split("\n")
    assert imported == "False False"  # it fails fast: before torch or open_clip is even imported (~2.5 s)
    for needle in ("biomedclip", "HF_HUB_OFFLINE=1", "local-dir:", "BiomedBERT config.json", "hf_model_pretrained false",
                   "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224", str(tmp_path / "hf")):
        assert needle in msg, (needle, msg)


# ---- the BiomedCLIP architecture, offline ---------------------------------------------------
def _bert_folder(folder: Path) -> Path:
    """BERT-base config (vocab 30522) and a BertTokenizer from a synthesised 30,522-line vocab.txt,
    in the files the BiomedBERT repo ships (config.json, vocab.txt, tokenizer_config.json)."""
    from transformers import BertConfig

    folder.mkdir(parents=True)
    words = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words += list("abcdefghijklmnopqrstuvwxyz0123456789.,-")
    words += ["chest", "ray", "heart", "effusion", "no", "pleural", "cardiomegaly", "normal", "lung"]
    words += [f"##w{i}" for i in range(30522 - len(words))]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 512}))
    BertConfig(vocab_size=30522).save_pretrained(str(folder))
    return folder


@pytest.mark.slow
def test_biomedclip_architecture_round_trips_through_local_dir(tmp_path, monkeypatch):
    """~2.5 GB peak RSS and ~15 s on 2 CPU threads: done once."""
    import socket

    from transformers import AutoTokenizer

    from embedstore.models import BIOMEDCLIP_CONFIG, export_model, load_model

    torch.set_num_threads(2)
    bert = _bert_folder(tmp_path / "bert")
    cfg = copy.deepcopy(BIOMEDCLIP_CONFIG["model_cfg"])
    cfg["text_cfg"].update(hf_model_name=str(bert), hf_tokenizer_name=str(bert), hf_model_pretrained=False)
    torch.manual_seed(0)
    model = open_clip.CustomTextCLIP(**cfg).eval()
    assert model.text.config.vocab_size == 30522
    from open_clip.tokenizer import HFTokenizer

    tokenizer = HFTokenizer(str(bert), context_length=256)
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    tokens = tokenizer(TEXTS)
    raw = _raw(model, images, tokens)
    out = export_model(model, tmp_path / "biomedclip-random", BIOMEDCLIP_CONFIG["model_cfg"],
                       BIOMEDCLIP_CONFIG["preprocess_cfg"], tokenizer=tokenizer)
    ref_scale = float(model.logit_scale.detach().exp())
    del model  # keep one copy of the 784 MB in memory
    names = {p.name for p in out.iterdir()}
    assert {"open_clip_config.json", "open_clip_model.safetensors", "config.json", "tokenizer_config.json"} <= names
    saved = json.loads((out / "open_clip_config.json").read_text())["model_cfg"]
    assert saved["text_cfg"]["hf_model_pretrained"] is False and saved["embed_dim"] == 512

    def no_network(*args, **kwargs):
        raise AssertionError(f"network access while loading a local-dir model: {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    lm = load_model(f"local-dir:{out}")
    rec = lm.record
    assert (rec.embed_dim, rec.image_size, rec.context_length) == (512, 224, 256)
    assert rec.arch["vision_cfg"]["timm_model_name"] == "vit_base_patch16_224"
    assert rec.logit_scale == pytest.approx(ref_scale)
    assert rec.preprocess["mean"] == BIOMEDCLIP_CONFIG["preprocess_cfg"]["mean"]
    # the tokenizer came from the folder: same ids as the BERT tokenizer the folder was made from
    want = AutoTokenizer.from_pretrained(str(bert))(TEXTS[0])["input_ids"]
    got = lm.tokenizer([TEXTS[0]])[0].tolist()
    assert got[:len(want)] == want and want[0] == 101 and want[-1] == 102 and len(got) == 256
    assert torch.equal(lm.tokenizer(TEXTS), tokens)
    assert_same_model(lm, images, tokens, TEXTS, raw, _unit(torch.from_numpy(raw[0])), _unit(torch.from_numpy(raw[1])))


def test_export_command_re_exports_a_loadable_model(tiny, tmp_path, capsys):
    """`python -m embedstore.models.export NAME DIR` (what the offline message tells users to run)."""
    from embedstore.models import load_model
    from embedstore.models.export import main

    main([f"local-dir:{tiny['dir']}", str(tmp_path / "again")])
    assert "local-dir:" in capsys.readouterr().out
    lm = load_model(f"local-dir:{tmp_path / 'again'}")
    assert_same_model(lm, tiny["images"], tiny["tokens"], TEXTS, tiny["raw"], tiny["img"], tiny["txt"])
    meta = json.loads((tmp_path / "again" / "open_clip_config.json").read_text())["embedstore"]
    assert meta["source"] == f"local-dir:{tiny['dir'].resolve()}"
    assert meta["revision"] == _sha256(tiny["dir"] / "open_clip_model.safetensors")
