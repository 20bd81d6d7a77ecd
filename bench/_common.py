"""Helpers shared by the benchmarks: machine description, RESULTS.md, small models and images."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = ""
    try:
        import torch

        if torch.cuda.is_available():
            gpu = f", GPU {torch.cuda.get_device_name(0)}"
    except Exception:  # noqa: BLE001
        pass
    return f"{cpu}, {os.cpu_count()} cores{gpu}, Python {platform.python_version()}"


def append_results(title: str, lines: list[str]) -> None:
    head = f"\n## {title} ({_dt.date.today().isoformat()})\n\nMachine: {machine()}\n\n"
    with open(RESULTS, "a") as fh:
        if fh.tell() == 0:
            fh.write("# Benchmark results\n\nAppended by `bench/*.py`; each entry names its machine and date.\n")
        fh.write(head + "\n".join(lines) + "\n")
    print("\n".join(lines))


def ensure_images_module() -> None:
    """Until embedstore.data.images ships, fall back to the tests' PNG stand-in."""
    try:
        import embedstore.data.images  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(ROOT / "tests"))
        from store_helpers import ensure_images_module as fallback

        print("note: embedstore.data.images missing; using the tests' PNG stand-in")
        fallback()


def write_images(folder: Path, n: int, size: int = 512, seed: int = 0) -> list[Path]:
    """Smooth grey images (blurred noise), PNG, like a radiograph in size and entropy."""
    from PIL import Image, ImageFilter

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        arr = (rng.random((size // 8, size // 8)) * 255).astype(np.uint8)
        img = Image.fromarray(arr, "L").resize((size, size), Image.BICUBIC).filter(ImageFilter.GaussianBlur(2))
        p = folder / f"b{i:05d}.png"
        img.save(p)
        paths.append(p)
    return paths


class OpenClipLoaded:
    """An open_clip model with random weights, shaped like `LoadedModel`."""

    def __init__(self, name: str, cfg: dict | None = None, device: str = "cpu"):
        import open_clip
        import torch

        torch.manual_seed(0)
        if cfg is not None:
            self.model = open_clip.CLIP(**cfg)
            size = cfg["vision_cfg"]["image_size"]
        else:
            self.model = open_clip.create_model(name, pretrained=None)
            size = self.model.visual.image_size
            size = size[0] if isinstance(size, (tuple, list)) else size
        self.device = device
        self.model = self.model.eval().to(device)
        self.preprocess = open_clip.image_transform(size, is_train=False)
        self.tokenizer = open_clip.get_tokenizer("ViT-B-32")
        self.record = {"name": f"bench-{name}", "embed_dim": int(self.model.text_projection.shape[1]),
                       "image_size": size, "logit_scale": float(self.model.logit_scale.detach().exp())}

    def encode_images(self, batch):
        import torch

        with torch.inference_mode():
            return self.model.encode_image(batch.to(self.device), normalize=True).float().cpu().numpy()

    def encode_texts(self, texts):
        import torch

        with torch.inference_mode():
            tok = self.tokenizer(texts).to(self.device)
            return self.model.encode_text(tok, normalize=True).float().cpu().numpy()


TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
