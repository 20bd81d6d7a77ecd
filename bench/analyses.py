"""Analyses over stored vectors vs the seed's re-encoding, at IU-Xray's size; appends to RESULTS.md.

    OMP_NUM_THREADS=2 .venv/bin/python bench/analyses.py [--n 7470] [--findings 18] [--dim 512]

1. A store with n synthetic unit vectors (clustered by label, IU-Xray-like imbalance) and
   prompt vectors is written; then, in a fresh process that must not import torch, zero-shot
   (all four rules, calibrated on val), the logistic probe and separability run with
   force=True (nothing reused), timed end to end including reading the store.
2. The seed's approach re-encodes every image for each analysis setting. Its cost is
   estimated as settings x n x (seconds per image of a ViT-B/16 image tower at 224 px,
   random weights, measured here on a few images with torch), stated as an estimate.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SETTINGS = 6  # 4 zero-shot rules + probe + separability, each re-encoding the images in the seed


def child(path: str) -> None:
    """Time the analyses in this process; print JSON (and whether torch got imported)."""
    from embedstore.analyses.probe import probe
    from embedstore.analyses.separability import separability
    from embedstore.analyses.zeroshot import zeroshot
    from embedstore.store import Storage

    st = Storage(path)
    times = {}
    t0 = time.perf_counter()
    zs = zeroshot(st, rule="all", force=True)
    times["zeroshot_4_rules"] = time.perf_counter() - t0
    t = time.perf_counter()
    pr = probe(st, force=True)
    times["probe"] = time.perf_counter() - t
    t = time.perf_counter()
    sp = separability(st, force=True)
    times["separability"] = time.perf_counter() - t
    times["total"] = time.perf_counter() - t0
    out = {"times": times, "torch_imported": "torch" in sys.modules,
           "zeroshot_macro_auroc": {r.config["rule"]: r.overall().get("macro_auroc") for r in zs},
           "probe_macro_auroc": pr[0].overall().get("macro_auroc"),
           "single_finding_silhouette": sp[0].overall().get("silhouette")}
    print(json.dumps(out))


def encode_seconds_per_image(n_images: int = 4) -> float:
    """Seconds per image of a ViT-B/16 (224 px) open_clip image tower with random weights."""
    import open_clip
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    model = open_clip.create_model("ViT-B-16", pretrained=None).eval()
    x = torch.randn(n_images, 3, 224, 224)
    with torch.inference_mode():
        model.encode_image(x[:1])  # warm-up
        t = time.perf_counter()
        model.encode_image(x)
        return (time.perf_counter() - t) / n_images


def main() -> None:
    from _common import synthetic_store_child, vector_bench_args

    args = vector_bench_args(__doc__.splitlines()[0])
    if args.child:
        child(args.child)
        return
    res = synthetic_store_child(__file__, args.n, args.findings, args.dim)
    per_image = encode_seconds_per_image()
    seed_s = SETTINGS * args.n * per_image
    ours = res["times"]["total"]
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    lines = [
        f"Synthetic stored vectors: {args.n} images x {args.findings} findings x d={args.dim} (clustered by label); "
        f"OMP_NUM_THREADS={threads}; load average at start {os.getloadavg()[0]:.1f}.",
        "",
        "| step | seconds |",
        "|---|---|",
        *[f"| {k} | {v:.2f} |" for k, v in res["times"].items()],
        "",
        f"torch imported by the analyses: {res['torch_imported']}.",
        f"Seed approach (estimate): re-encode {args.n} images for each of {SETTINGS} settings with a ViT-B/16 "
        f"image tower (random weights, measured {per_image:.3f} s/image here) = {seed_s:.0f} s.",
        f"**Ratio: {seed_s / ours:.0f}x** faster from stored vectors ({ours:.2f} s vs {seed_s:.0f} s).",
        f"Probe macro AUROC {res['probe_macro_auroc']:.3f}; zero-shot macro AUROC by rule "
        + ", ".join(f"{k} {v:.3f}" for k, v in res["zeroshot_macro_auroc"].items()) + ".",
    ]
    if args.no_results:
        print("\n".join(lines))
    else:
        from _common import append_results

        append_results("Analyses over stored vectors (bench/analyses.py)", lines)


if __name__ == "__main__":
    main()
