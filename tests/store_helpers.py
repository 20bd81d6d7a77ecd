"""Shared fixtures for the store / encode / query tests: a tiny open_clip model, small PNGs.

The tiny model (ViT width 64, 2 layers, 64 px, embed dim 32) has fixed weights saved once to
a safetensors file so that every process (the SIGKILL tests run real subprocesses) builds
the same model and gets bit-identical vectors.
"""

from __future__ import annotations

import hashlib
import sys
import types
from pathlib import Path

import numpy as np

TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def ensure_images_module() -> None:
    """Use embedstore.data.images when it exists; until then, a minimal stand-in (PNG only)."""
    try:
        import embedstore.data.images  # noqa: F401
        return
    except ImportError:
        pass
    from PIL import Image

    mod = types.ModuleType("embedstore.data.images")

    def content_hash(path):
        with open(path, "rb") as fh:
            return "sha256:" + hashlib.file_digest(fh, "sha256").hexdigest()

    def read_image(path):
        img = Image.open(path)
        img.load()
        return img.convert("L")

    mod.content_hash, mod.read_image = content_hash, read_image
    sys.modules["embedstore.data.images"] = mod


class TinyLoaded:
    """Quacks like `embedstore.models.LoadedModel` for a tiny open_clip CLIP."""

    def __init__(self, weights: Path):
        import open_clip
        import torch
        from safetensors.torch import load_file

        torch.manual_seed(0)
        self.model = open_clip.CLIP(**TINY_CFG).eval()
        self.model.load_state_dict(load_file(str(weights)))
        self.preprocess = open_clip.image_transform(64, is_train=False)
        self.tokenizer = open_clip.get_tokenizer("ViT-B-32")
        self.record = {"name": "tiny-test", "embed_dim": 32, "image_size": 64,
                       "logit_scale": float(self.model.logit_scale.detach().exp()), "weights": str(weights.name)}
        self.calls = 0

    def encode_images(self, batch):
        import torch

        self.calls += len(batch)
        with torch.inference_mode():
            x = self.model.encode_image(batch, normalize=True)
        return x.float().numpy()

    def encode_texts(self, texts):
        import torch

        with torch.inference_mode():
            x = self.model.encode_text(self.tokenizer(texts, context_length=32), normalize=True)
        return x.float().numpy()


def save_tiny_weights(path: Path) -> Path:
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY_CFG)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def write_pngs(folder: Path, n: int, seed: int = 0, size: int = 48) -> list[Path]:
    """n small grey PNGs with different content."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        arr = (rng.random((size, size + i % 5)) * 255).astype(np.uint8)
        p = folder / f"img{i:03d}.png"
        Image.fromarray(arr, mode="L").save(p)
        paths.append(p)
    return paths


FINDINGS = ["Cardiomegaly", "Effusion", "Nodule"]


def make_dataset(paths: list, extra_missing: int = 0):
    """A Dataset over the PNGs (labels deterministic from the index), views alternating."""
    from embedstore.data.records import Dataset, ImageRecord

    recs = []
    for i, p in enumerate(paths):
        labels = {"Cardiomegaly": int(i % 3 == 0), "Effusion": int(i % 4 == 1)}
        if i % 5 == 2:
            labels["Nodule"] = -1
        recs.append(ImageRecord(image_id=f"IM{i:03d}", path=str(p), study_id=f"S{i // 2}", patient_id=f"P{i // 2}",
                                view="frontal" if i % 2 == 0 else "lateral", projection="PA" if i % 2 == 0 else "LL",
                                split=("train", "val", "test")[i % 3], labels=labels, source="manifest"))
    for j in range(extra_missing):
        recs.append(ImageRecord(image_id=f"NOFILE{j}", path=None, study_id="S-x", patient_id="P-x", view="frontal",
                                projection="PA", split="test", labels={}, source="manifest"))
    return Dataset(name="manifest", source="test", scheme="test", findings=FINDINGS, records=recs)


class FastLoaded:
    """A tiny deterministic torch model without open_clip (fast to import in subprocesses):
    32x32 grey pixels -> linear -> 16-d unit vectors; texts get seeded random unit vectors."""

    def __init__(self, seed: int = 0):
        import torch

        g = torch.Generator().manual_seed(seed)
        self.W = torch.randn(32 * 32 * 3, 16, generator=g)
        self.record = {"name": "fast-test", "embed_dim": 16, "image_size": 32, "logit_scale": 100.0}
        self.model = None
        self.tokenizer = None

    def preprocess(self, img):
        import torch

        arr = np.asarray(img.resize((32, 32)), dtype=np.float32) / 255.0
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous()

    def encode_images(self, batch):
        x = (batch.reshape(len(batch), -1) - 0.5) @ self.W
        return (x / x.norm(dim=1, keepdim=True)).numpy().astype(np.float32)

    def encode_texts(self, texts):
        out = []
        for t in texts:
            v = np.random.default_rng(int(hashlib.sha256(t.encode()).hexdigest()[:8], 16)).standard_normal(16)
            out.append(v / np.linalg.norm(v))
        return np.asarray(out, dtype=np.float32)


def build_store(root: Path, n: int = 40, seed: int = 0):
    """An encoded store of n PNGs (FastLoaded model, no open_clip): (Store, Dataset)."""
    ensure_images_module()
    from embedstore.api import Store

    paths = write_pngs(root / "img", n, seed=seed, size=24)
    ds = make_dataset(paths)
    st = Store(root / "store")
    st.encode(ds, loaded=FastLoaded(), batch_size=16, workers=0)
    return st, ds
