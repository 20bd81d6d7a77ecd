"""Grad-CAM heatmaps per second on CPU: batched (one forward + backward per batch) against one
image at a time, for the shipped phantom-clip (ResNet tower, 128 px) and a ViT-B/16-sized model
(random weights, 224 px). Appends a section to bench/RESULTS.md.

    OMP_NUM_THREADS=2 .venv/bin/python bench/gradcam.py [--n-phantom 64] [--n-vit 16] [--batch 16]

Timed: `explain_images` on 512x400 PIL images in memory (preprocess, Grad-CAM, map back to the
original frame), zero-shot target, method gradcam, default layer; one warm-up call first.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import OpenClipLoaded, append_results  # noqa: E402


def images(n: int):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (400, 512), dtype=np.uint8), "L") for _ in range(n)]


def rate(loaded, imgs, target, batch: int) -> float:
    from embedstore.explain.heatmaps import explain_images

    explain_images(loaded, imgs[:batch], target, batch_size=batch)  # warm-up at the timed batch shape
    t = time.perf_counter()
    explain_images(loaded, imgs, target, batch_size=batch)
    return len(imgs) / (time.perf_counter() - t)


def bench(label: str, loaded, n: int, batch: int) -> str:
    from embedstore.explain.targets import zeroshot_target_from_texts

    target = zeroshot_target_from_texts(loaded, "Cardiomegaly", ["cardiomegaly", "enlarged heart"])
    imgs = images(n)
    batched = rate(loaded, imgs, target, min(batch, n))
    single = rate(loaded, imgs, target, 1)
    line = f"| {label} | {n} | {min(batch, n)} | {batched:.2f} | {single:.2f} | {batched / single:.2f} |"
    print(line, flush=True)
    return line


def main() -> None:
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--n-phantom", type=int, default=64)
    ap.add_argument("--n-vit", type=int, default=16)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    lines = ["| model | images | batch | batched heatmaps/s | one-by-one heatmaps/s | batched / one-by-one |",
             "|---|---|---|---|---|---|"]
    from embedstore.models import load_model

    lines.append(bench("phantom-clip (ResNet, 128 px, layer4 map 4x4)", load_model("phantom-clip"), args.n_phantom,
                       args.batch))
    lines.append(bench("ViT-B-16 (224 px, grid 14x14, random weights)", OpenClipLoaded("ViT-B-16"), args.n_vit,
                       args.batch))
    lines.append("")
    import os

    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    lines.append(f"torch threads: {torch.get_num_threads()}; load average at the end {load} (above 2, other "
                 "jobs shared the cores and absolute rates are low; the ratio is the figure to read). `explain_images` end to end on 512x400 images in memory "
                 "(preprocess, one forward + backward per batch, map back to the original frame); zero-shot "
                 "target, gradcam, default layer; parameters frozen so backward makes no weight gradients.")
    append_results("bench/gradcam.py", lines)


if __name__ == "__main__":
    main()
