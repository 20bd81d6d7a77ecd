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


def vector_bench_args(description: str):
    """The options of a benchmark over a synthetic store, run in a child process (`--child PATH`)."""
    import argparse

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--n", type=int, default=7470)
    ap.add_argument("--findings", type=int, default=18)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--no-results", action="store_true", help="Print only; do not append to RESULTS.md.")
    return ap.parse_args()


def synthetic_store_child(script: str, n: int, findings: int, dim: int) -> dict:
    """Write a store of n synthetic unit vectors (tests/synthetic_vectors: clustered by label,
    IU-Xray-like imbalance, two images per patient) to a temporary folder, run `script --child
    PATH` in a fresh process (so torch is imported only if the timed code imports it), and return
    the JSON of its last stdout line."""
    import json
    import subprocess
    import tempfile

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "tests"))  # synthetic_vectors: a test helper, not shipped
    import synthetic_vectors as synthetic

    from embedstore.store import Storage

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "store")
        syn = synthetic.make(n=n, n_findings=findings, d=dim, seed=0, signal=0.5, images_per_patient=2)
        synthetic.to_store(syn, Storage(path))
        proc = subprocess.run([sys.executable, script, "--child", path], capture_output=True, text=True)
        if proc.returncode:
            sys.exit(proc.stderr)
        return json.loads(proc.stdout.strip().splitlines()[-1])


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
