"""Held-out zero-shot AUROC of the bundled `phantom-clip` at full size; writes its section of bench/RESULTS.md.

    .venv/bin/python bench/phantom_clip.py [--studies 1000] [--seed 1001]

Phantoms from a synth seed the model never saw (training used seed 7), at the model's image
size; pos-neg zero-shot per finding (softmax over the ensemble-averaged positive vs negative
prompt embeddings), AUROC by scikit-learn; findings with fewer than 5 positives are excluded.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BEGIN, END = "<!-- phantom-clip:begin -->", "<!-- phantom-clip:end -->"


def measure(studies: int, seed: int) -> dict:
    import torch

    from embedstore.models import load_model
    from embedstore.models.train_phantom_clip import BENCH_SEED, SYNTH_SIZE, synthesize, zero_shot_auroc

    torch.set_num_threads(2)
    lm = load_model("phantom-clip")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        synthesize(Path(tmp) / "held-out", studies, seed if seed is not None else BENCH_SEED, SYNTH_SIZE)
        res = zero_shot_auroc(lm, Path(tmp) / "held-out")
        res["seconds"] = round(time.time() - t0, 1)
    return res


def section(res: dict, studies: int, seed: int) -> str:
    lines = [
        BEGIN,
        "## phantom-clip: held-out zero-shot AUROC",
        "",
        f"`python bench/phantom_clip.py --studies {studies} --seed {seed}`: {res['studies']} studies / "
        f"{res['images']} images (frontal and lateral) from synth seed {seed}, never seen in training (seed 7). "
        "Pos-neg zero-shot: per finding, softmax over the ensemble-averaged positive vs negative prompt "
        "embeddings; AUROC by scikit-learn.",
        "",
        f"**Mean AUROC {res['mean_auroc']:.3f}** over {len(res['per_finding'])} findings (target [0.75, 0.95]).",
        "",
        "| finding | positives | AUROC |",
        "|---|---:|---:|",
    ]
    for f, v in sorted(res["per_finding"].items(), key=lambda kv: -kv[1]["auroc"]):
        lines.append(f"| {f} | {v['positives']} | {v['auroc']:.3f} |")
    if res["excluded"]:
        excl = ", ".join(f"{f} ({n})" for f, n in res["excluded"].items())
        lines += ["", f"Not scored (fewer than 5 positives among the held-out images): {excl}."]
    lines += ["", f"Synth + encode + scoring took {res['seconds']} s on 2 CPU threads.", END]
    return "\n".join(lines) + "\n"


def write(text: str, path: Path) -> None:
    """Replace this bench's section in RESULTS.md, or append it (the file belongs to everyone)."""
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END) + "\n?", re.S)
    new = pattern.sub(lambda _: text, old) if pattern.search(old) else old.rstrip("\n") + "\n\n" + text
    path.write_text(new)


def main() -> None:
    from embedstore.models.train_phantom_clip import BENCH_SEED

    ap = argparse.ArgumentParser()
    ap.add_argument("--studies", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=BENCH_SEED)
    ap.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"))
    args = ap.parse_args()
    res = measure(args.studies, args.seed)
    text = section(res, args.studies, args.seed)
    print(text)
    write(text, Path(args.results))


if __name__ == "__main__":
    main()
