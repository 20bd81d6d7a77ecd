"""Fine-tuning throughput: training images/s of `embedstore finetune` for phantom-clip on the CPU.

Runs the real command (`embedstore.finetune.commands.finetune`) on a store of phantoms
(`embedstore synth`, 128 px) encoded with `phantom-clip`. Until phantom-clip's weights ship, a
stand-in with the same architecture (`train_phantom_clip.ARCH`: ViT width 192, 4 layers, 128 px;
text width 128, 3 layers) and random weights is exported to a `local-dir:` folder and used
instead; the per-step cost depends on the architecture only, so the rate is the same.

Training images/s = train-split images / seconds per epoch, over the epochs after the first
(warm-up); an epoch here includes its validation pass and its checkpoint. The whole command's
time (decode, train, export, re-encode every image, index, head run) is given beside it.

    OMP_NUM_THREADS=2 .venv/bin/python bench/finetune.py [--studies 150] [--epochs 3] [--batch-size 32]

The ViT-B/16 GPU figure needs a GPU machine: `--model ViT-B-16 --device cuda` (random weights).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import append_results  # noqa: E402


def model_name(tmp: Path, name: str) -> tuple[str, str]:
    """(registry name to encode with, label for the table)."""
    from embedstore.models import SHIPPED, export_model
    from embedstore.models.registry import shipped_dir

    if name == "phantom-clip":
        if name in SHIPPED and (shipped_dir(name) / "open_clip_config.json").is_file():
            return name, "phantom-clip"
        import open_clip
        import torch

        from embedstore.models.train_phantom_clip import ARCH

        torch.manual_seed(0)
        folder = export_model(open_clip.CLIP(**ARCH), tmp / "phantom-clip-standin", ARCH)
        return f"local-dir:{folder}", "phantom-clip stand-in (its architecture, random weights; weights not shipped yet)"
    import open_clip
    import torch

    from embedstore.models import export_model as export

    torch.manual_seed(0)
    model = open_clip.create_model(name, pretrained=None)
    folder = export(model, tmp / name, open_clip.get_model_config(name))
    return f"local-dir:{folder}", f"{name} (random weights)"


def bench(objective: str, store, base: str, epochs: int, batch_size: int, device: str, train: str) -> dict:
    marks: list[float] = []
    start = time.perf_counter()
    r = store.finetune(base, objective=objective, train=train, epochs=epochs, lr=1e-4, batch_size=batch_size,
                       patience=epochs + 1, device=device, workers=1, force=True,
                       on_epoch=lambda row: marks.append(time.perf_counter()))
    total = time.perf_counter() - start
    n_train = int((store.images()["split"] == "train").sum())
    steady = [b - a for a, b in zip(marks, marks[1:])] or [marks[0] - start]
    per_epoch = sum(steady) / len(steady)
    return {"objective": objective, "train_images": n_train, "epoch_s": per_epoch,
            "train_images_per_s": n_train / per_epoch, "total_s": total, "version": r.version,
            "val_auroc": r.best_val_auroc}


def main(argv: list[str] | None = None) -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="phantom-clip")
    ap.add_argument("--studies", type=int, default=150)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--train", default="all")
    ap.add_argument("--objectives", default="bce,contrastive")
    ap.add_argument("--no-append", action="store_true")
    args = ap.parse_args(argv)

    import embedstore
    from embedstore.synth import synth

    with tempfile.TemporaryDirectory(prefix="bench-finetune-") as tmp:
        tmp = Path(tmp)
        synth(str(tmp / "phantoms"), studies=args.studies, seed=1001, size=128)
        name, label = model_name(tmp, args.model)
        st = embedstore.open(tmp / "store")
        st.encode(str(tmp / "phantoms"), model=name, device=args.device, progress=False, workers=1)
        base = st.resolve_version(None)
        rows = [bench(o, st, base, args.epochs, args.batch_size, args.device, args.train)
                for o in args.objectives.split(",")]
    lines = [f"Model: {label}; device {args.device}; torch threads {torch.get_num_threads()}; "
             f"{args.studies} phantom studies at 128 px; --train {args.train}, batch {args.batch_size}, "
             f"{args.epochs} epochs.", "",
             "| objective | train images | s / epoch | training images/s | whole command s | best val macro AUROC |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['objective']} | {r['train_images']} | {r['epoch_s']:.2f} | {r['train_images_per_s']:.1f} "
                     f"| {r['total_s']:.1f} | {r['val_auroc']:.3f} |")
    if args.device == "cpu":
        lines += ["", "ViT-B/16 on a GPU: not measured; no GPU machine was lent to this task "
                      "(run `bench/finetune.py --model ViT-B-16 --device cuda` on one)."]
    if args.no_append:
        print("\n".join(lines))
    else:
        append_results("bench/finetune.py", lines)


if __name__ == "__main__":
    main()
