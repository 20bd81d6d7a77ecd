"""Encode throughput: `encode` (reader -> worker decode -> model -> DuckDB) against the model's own
batched forward on preloaded tensors (the ceiling) and a one-image-at-a-time loop (the seed
notebook). Goal: encode >= 90 % of the pure forward rate.

    .venv/bin/python bench/encode.py [--models tiny,vit-b-16] [--n-tiny 512] [--n-vit 48]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import TINY_CFG, OpenClipLoaded, append_results, ensure_images_module, write_images  # noqa: E402


def bench_model(label: str, loaded, paths: list[Path], batch_size: int, workers: int | None) -> list[str]:
    import torch
    from PIL import Image

    from embedstore.api import Store
    from embedstore.data.records import Dataset, ImageRecord

    n = len(paths)
    # ceiling: batched forward on tensors already decoded and preprocessed
    tensors = [loaded.preprocess(Image.open(p).convert("RGB")) for p in paths]
    loaded.encode_images(torch.stack(tensors[:batch_size]))  # warm-up
    t = time.perf_counter()
    for i in range(0, n, batch_size):
        loaded.encode_images(torch.stack(tensors[i:i + batch_size]))
    forward = n / (time.perf_counter() - t)
    # the seed notebook: read, preprocess and encode one image at a time
    m = min(n, max(8, n // 4))
    t = time.perf_counter()
    for p in paths[:m]:
        loaded.encode_images(loaded.preprocess(Image.open(p).convert("RGB")).unsqueeze(0))
    single = m / (time.perf_counter() - t)
    # encode: the whole pipeline into a fresh store (images only; prompts are encoded first and
    # not timed by summary.seconds)
    recs = [ImageRecord(f"B{i}", str(p), f"S{i}", f"P{i}", "frontal", "PA", "train", {}) for i, p in enumerate(paths)]
    ds = Dataset("bench", "bench", "none", [], recs)
    with tempfile.TemporaryDirectory() as tmp:
        st = Store(Path(tmp) / "store")
        st.encode(ds, loaded=loaded, batch_size=batch_size, workers=workers)
        s = st.last_encode
        rate = s.encoded / s.seconds
    return [
        f"| {label} | {n} | {batch_size} | {forward:.1f} | {rate:.1f} | {single:.1f} | "
        f"{rate / forward:.2f} | {rate / single:.1f} |"
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", default="tiny,vit-b-16")
    ap.add_argument("--n-tiny", type=int, default=512)
    ap.add_argument("--n-vit", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    ensure_images_module()
    rows = ["| model | images | batch | forward img/s (ceiling) | encode img/s | one-at-a-time img/s | "
            "encode / forward | encode / one-at-a-time |", "|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            if name == "tiny":
                loaded, n = OpenClipLoaded("tiny (phantom-clip stand-in)", TINY_CFG, args.device), args.n_tiny
            else:
                loaded, n = OpenClipLoaded("ViT-B-16", None, args.device), args.n_vit
            paths = write_images(Path(tmp) / name, n)
            rows += bench_model(loaded.record["name"], loaded, paths, args.batch_size, args.workers)
    rows.append("\nRandom weights; 512x512 PNG inputs; `encode` includes hashing, decoding, DuckDB commits "
                "and the index build.")
    append_results("bench/encode.py", rows)


if __name__ == "__main__":
    main()
