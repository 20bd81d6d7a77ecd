"""Fine-tuning throughput: training images/s of `embedstore finetune` for phantom-clip on the CPU.

Runs the real command (`embedstore.finetune.commands.finetune`) on a store of phantoms
(`embedstore synth`, 128 px) encoded with `phantom-clip`.

Training images/s = train-split images / seconds per epoch, over the epochs after the first
(warm-up); an epoch here includes its validation pass and its checkpoint. The whole command's
time (decode, train, export, re-encode every image, index, head run) is given beside it.

    OMP_NUM_THREADS=2 .venv/bin/python bench/finetune.py [--studies 150] [--epochs 3] [--batch-size 32]

The ViT-B/16 GPU figure needs a GPU machine: `--model ViT-B-16 --device cuda` (random weights)
runs the whole command there. Where the store's dependencies (duckdb, polars, faiss) are not
installed, `--core` times the training loop alone (`embedstore.finetune.loop.train`, the code the
command runs between decoding and export: batching, augmentation, forward, backward, optimizer,
validation, checkpoints) on random 8-bit images at the model's size; it needs torch and open_clip.
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


def core(name: str, n_train: int, epochs: int, batch_size: int, device: str, train: str, precision: str,
         head_init: str = "zeroshot") -> list[str]:
    """Training images/s of the loop alone, bce objective (zero-shot head start), random images and
    labels, random weights."""
    import open_clip
    import torch

    from embedstore.finetune.data import PairDataset
    from embedstore.finetune.loop import TrainConfig
    from embedstore.finetune.loop import train as train_loop
    from embedstore.finetune.data import prompt_sets
    from embedstore.finetune.objectives import BCEObjective, pos_weight_from_labels, zero_shot_head
    from embedstore.synth.labels import FINDINGS

    torch.manual_seed(0)
    model = open_clip.create_model(name, pretrained=None)
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    embed = open_clip.get_model_config(name)["embed_dim"]
    gen = torch.Generator().manual_seed(0)
    n_val = min(256, n_train)
    labels = (torch.rand(n_train + n_val, 18, generator=gen) < 0.15).float().numpy()  # 18 = len(FINDINGS)
    pixels = torch.randint(0, 256, (n_train + n_val, size, size), dtype=torch.uint8, generator=gen)
    tr = PairDataset(pixels[:n_train], labels[:n_train], augment=True)
    va = PairDataset(pixels[n_train:], labels[n_train:])
    marks: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-finetune-core-") as tmp:
        init = None
        if head_init == "zeroshot":  # as `finetune` does by default
            model = model.to(device)
            init = zero_shot_head(model, open_clip.get_tokenizer(name), prompt_sets(list(FINDINGS)), device=device)
        objective = BCEObjective(model.visual, embed, len(FINDINGS), pos_weight_from_labels(labels[:n_train]),
                                 normalize=init is not None, init=init)
        start = time.perf_counter()
        train_loop(objective, tr, va, TrainConfig(epochs=epochs, lr=1e-4, batch_size=batch_size, train=train,
                                                  patience=epochs + 1, device=device, precision=precision),
                   tmp, on_epoch=lambda row: marks.append(time.perf_counter()))
    steady = [b - a for a, b in zip(marks, marks[1:])] or [marks[0] - start]
    per_epoch = sum(steady) / len(steady)
    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") else "none"
    return [f"Training loop alone (`--core`): {name}, random weights, {size} px, device {device} ({gpu}), "
            f"precision {precision}, --train {train}, head {head_init}, batch {batch_size}, {n_train} random train images "
            f"+ {n_val} val, {epochs} epochs (the first is warm-up).", "",
            "| model | s / epoch | training images/s |", "|---|---|---|",
            f"| {name} | {per_epoch:.2f} | {n_train / per_epoch:.1f} |"]


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
    ap.add_argument("--core", action="store_true", help="time the training loop alone (torch + open_clip only)")
    ap.add_argument("--core-images", type=int, default=2048, help="--core: random train images")
    ap.add_argument("--precision", default="auto", help="--core: auto (mixed on GPU) or fp32")
    ap.add_argument("--head-init", default="zeroshot", help="--core: zeroshot | random, as finetune's")
    args = ap.parse_args(argv)
    if args.core:
        lines = core(args.model, args.core_images, args.epochs, args.batch_size, args.device, args.train,
                     args.precision, args.head_init)
        print("\n".join(lines)) if args.no_append else append_results("bench/finetune.py --core", lines)
        return

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
        lines += ["", "ViT-B/16 on a GPU: `bench/finetune.py --core --model ViT-B-16 --device cuda` on a GPU "
                      "machine (see its own entry)."]
    if args.no_append:
        print("\n".join(lines))
    else:
        append_results("bench/finetune.py", lines)


if __name__ == "__main__":
    main()
