"""The training loop: one optimizer and one schedule for the whole run, checkpoints, resume.

`train(objective, train_data, val_data, config, out_dir)` trains `objective.module` and leaves
its best weights (by validation macro AUROC) loaded in it. In `out_dir`:

    state.json                  epoch done, best epoch / AUROC, history, settings, which folders hold what
    epoch-<k>/model.safetensors the module's weights after epoch k (the last one and the best are kept)
    epoch-<k>/optimizer.pt      optimizer, scheduler, grad-scaler and RNG state (loads with weights_only=True)

`state.json` is replaced atomically after the epoch's folder is complete, so a run killed at any
moment resumes from its last finished epoch: run it again with the same settings and `out_dir`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from embedstore.errors import InputError
from embedstore.files import atomic_path
from embedstore.progress import Progress

log = logging.getLogger("embedstore.finetune")

# Settings that may change between a killed run and its resume (the rest must match).
RESUMABLE_CHANGES = ("epochs", "patience", "threads", "device")


@dataclass
class TrainConfig:
    epochs: int = 10
    lr: float = 5e-4
    weight_decay: float = 0.05
    batch_size: int = 64
    accumulate: int = 1  # micro-batches per optimizer step
    warmup: float = 0.1  # share of all optimizer steps spent warming up linearly
    train: str = "all"  # "all" | "vision" | "text" | "last-N-blocks" (of the image tower)
    patience: int = 3  # epochs without a better validation macro AUROC before stopping
    seed: int = 0
    device: str = "cpu"
    precision: str = "auto"  # "auto": autocast (bf16, else fp16) on CUDA, fp32 on CPU; "fp32"
    max_grad_norm: float = 1.0
    threads: int | None = None  # torch CPU threads

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.accumulate < 1:
            raise InputError(f"epochs, batch size and accumulate must be >= 1 (got {self.epochs}, "
                             f"{self.batch_size}, {self.accumulate})")
        parse_train_mode(self.train)
        if self.precision not in ("auto", "fp32"):
            raise InputError(f"precision {self.precision!r}: use 'auto' or 'fp32'")

    def resume_key(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in RESUMABLE_CHANGES}


@dataclass
class TrainResult:
    best_epoch: int
    best_auroc: float
    epochs_run: list[int]  # epochs trained by this call (1-based)
    resumed_from: int  # last finished epoch found in out_dir (0 = fresh start)
    stopped_early: bool
    history: list[dict] = field(default_factory=list)  # one row per epoch: epoch, loss, val_auroc, lr


def parse_train_mode(mode: str) -> int | None:
    """None for "all" / "vision" / "text"; N for "last-N-blocks"."""
    if mode in ("all", "vision", "text"):
        return None
    m = re.fullmatch(r"last-(\d+)-blocks", mode)
    if not m or int(m.group(1)) < 1:
        raise InputError(f"--train {mode!r}: use 'vision', 'all' or 'last-N-blocks' (N >= 1, e.g. last-2-blocks)")
    return int(m.group(1))


def _vision_blocks(visual: nn.Module) -> tuple[str, int]:
    """The name prefix and count of the image tower's transformer blocks (open_clip or timm)."""
    if hasattr(visual, "transformer") and hasattr(visual.transformer, "resblocks"):
        return "visual.transformer.resblocks.", len(visual.transformer.resblocks)
    if hasattr(visual, "trunk") and hasattr(visual.trunk, "blocks"):
        return "visual.trunk.blocks.", len(visual.trunk.blocks)
    raise InputError(f"--train last-N-blocks: no transformer blocks found in {type(visual).__name__}; use vision or all")


# Image-tower parameters after the blocks (final norm, pooling, projection), trained with them.
_VISION_TAIL = ("visual.ln_post", "visual.proj", "visual.attn_pool", "visual.trunk.norm.", "visual.trunk.fc_norm",
                "visual.trunk.head", "visual.head")


def set_trainable(module: nn.Module, mode: str) -> list[str]:
    """Freeze `module` per `mode`; returns the names of the parameters left trainable.

    "all": everything; "vision": the image tower (`visual.*`) and a classifier `head.*`;
    "text": everything but the image tower (locked-image tuning, LiT; logit scale included);
    "last-N-blocks": the image tower's last N blocks, its final norm and projection, and `head.*`.
    """
    n = parse_train_mode(mode)
    names = []
    if n is not None:
        prefix, count = _vision_blocks(module.visual)
        if n > count:
            raise InputError(f"--train {mode}: the image tower has only {count} blocks")
        blocks = tuple(f"{prefix}{i}." for i in range(count - n, count))
    for name, p in module.named_parameters():
        if mode == "all":
            keep = True
        elif mode == "vision":
            keep = name.startswith(("visual.", "head."))
        elif mode == "text":
            keep = not name.startswith("visual.")
        else:
            keep = name.startswith(blocks + _VISION_TAIL + ("head.",))
        p.requires_grad_(keep)
        if keep:
            names.append(name)
    if not names:
        raise InputError(f"--train {mode}: leaves no parameter to train")
    return names


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """LR factor: linear from 1/warmup up to 1 over `warmup_steps`, then cosine down to 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _optimizer(module: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over trainable parameters; no weight decay on gains, biases and the logit scale."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "logit_scale" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr, betas=(0.9, 0.98), eps=1e-6)


def _autocast(device: torch.device, config: TrainConfig):
    """Mixed precision on GPU only: bf16 where supported, else fp16 (with a grad scaler)."""
    import contextlib

    if device.type != "cuda" or config.precision == "fp32":
        return contextlib.nullcontext(), None
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return torch.autocast("cuda", dtype=dtype), scaler


class Checkpoints:
    """The run folder: one sub-folder per kept epoch, and `state.json` naming them."""

    def __init__(self, out_dir: str | Path):
        self.dir = Path(out_dir)

    @property
    def state_path(self) -> Path:
        return self.dir / "state.json"

    def state(self) -> dict | None:
        if not self.state_path.exists():
            return None
        try:
            return json.loads(self.state_path.read_text())
        except json.JSONDecodeError as err:
            raise InputError(f"{self.state_path}: unreadable ({err}); delete the folder to start over") from err

    def save(self, epoch: int, module: nn.Module, extra: dict, state: dict) -> None:
        from safetensors.torch import save_file

        folder = self.dir / f"epoch-{epoch}"
        tmp = self.dir / f".epoch-{epoch}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()},
                  str(tmp / "model.safetensors"))
        torch.save(extra, tmp / "optimizer.pt")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
        with atomic_path(self.state_path) as tmp:
            tmp.write_text(json.dumps(state, indent=2))
        keep = {f"epoch-{state['epoch']}", f"epoch-{state['best_epoch']}"}
        for old in self.dir.glob("epoch-*"):
            if old.name not in keep:
                shutil.rmtree(old, ignore_errors=True)

    def load_weights(self, module: nn.Module, epoch: int) -> None:
        from safetensors.torch import load_file

        module.load_state_dict(load_file(str(self.dir / f"epoch-{epoch}" / "model.safetensors")))

    def load_extra(self, epoch: int) -> dict:
        return torch.load(self.dir / f"epoch-{epoch}" / "optimizer.pt", weights_only=True, map_location="cpu")


def train(
    objective,
    train_data,
    val_data,
    config: TrainConfig,
    out_dir: str | Path,
    on_epoch: Callable[[dict], None] | None = None,
    progress: bool = False,
) -> TrainResult:
    """Train `objective.module` on `train_data`, early-stopping on `val_data`'s macro AUROC.

    `train_data` / `val_data` are `PairDataset`s. Resumes from `out_dir` when it holds a run
    with the same settings (only epochs, patience, threads and device may differ).
    `on_epoch` is called with each finished epoch's history row; `progress` shows a bar per epoch.
    """
    if config.threads:
        torch.set_num_threads(config.threads)
    device = torch.device(config.device)
    module = objective.module.to(device)
    ckpt = Checkpoints(out_dir)
    state = ckpt.state()
    if state is not None and state["config"] != config.resume_key():
        changed = sorted(k for k in config.resume_key() if state["config"].get(k) != config.resume_key()[k])
        raise InputError(f"{out_dir} holds a run with other settings ({', '.join(changed)}); "
                         "use the same settings to resume, or a new output folder")

    seed_everything(config.seed)
    set_trainable(module, config.train)
    optimizer = _optimizer(module, config)
    steps_per_epoch = math.ceil(len(train_data.loader(config.batch_size, shuffle=True)) / config.accumulate)
    total = steps_per_epoch * config.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total, max(1, round(config.warmup * total))))
    amp, scaler = _autocast(device, config)

    history: list[dict] = []
    start, best_epoch, best_auroc, bad = 1, 0, -math.inf, 0
    if state is not None:
        start = state["epoch"] + 1
        best_epoch, best_auroc, bad, history = state["best_epoch"], state["best_auroc"], state["bad_epochs"], state["history"]
        ckpt.load_weights(module, state["epoch"])
        extra = ckpt.load_extra(state["epoch"])
        optimizer.load_state_dict(extra["optimizer"])
        scheduler.load_state_dict(extra["scheduler"])
        if scaler is not None and "scaler" in extra:
            scaler.load_state_dict(extra["scaler"])
        torch.set_rng_state(extra["torch_rng"])
        log.info("resuming %s after epoch %d", out_dir, state["epoch"])
    resumed_from = start - 1
    stopped = bool(state and state.get("stopped_early"))

    ran: list[int] = []
    for epoch in range(start, config.epochs + 1):
        if stopped:
            break
        loss = _train_epoch(objective, train_data, config, epoch, optimizer, scheduler, amp, scaler, device, progress)
        auroc = _validate(objective, val_data, config, device)
        row = {"epoch": epoch, "loss": loss, "val_auroc": auroc, "lr": optimizer.param_groups[0]["lr"]}
        history.append(row)
        ran.append(epoch)
        # NaN AUROC (no finding scorable) never improves: the best is then the first epoch.
        if best_epoch == 0 or (not math.isnan(auroc) and auroc > best_auroc + 1e-6):
            best_epoch, best_auroc, bad = epoch, auroc, 0
        else:
            bad += 1
        stopped = bad >= config.patience
        extra = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state()}
        if scaler is not None:
            extra["scaler"] = scaler.state_dict()
        ckpt.save(epoch, module, extra, {
            "epoch": epoch, "best_epoch": best_epoch, "best_auroc": best_auroc, "bad_epochs": bad,
            "stopped_early": stopped, "history": history, "config": config.resume_key(),
        })
        log.info("epoch %d: loss %.4f, val macro AUROC %.4f", epoch, loss, auroc)
        if on_epoch is not None:
            on_epoch(row)

    if best_epoch:
        ckpt.load_weights(module, best_epoch)
    module.eval()
    return TrainResult(best_epoch, best_auroc, ran, resumed_from, stopped, history)


def _train_epoch(objective, data, config, epoch, optimizer, scheduler, amp, scaler, device, progress=False) -> float:
    """One pass over the training data; returns the mean loss."""
    module = objective.module
    module.train()
    data.set_epoch(epoch)
    # The shuffle depends only on seed and epoch, so a resumed run sees the same order.
    gen = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
    loader = data.loader(config.batch_size, shuffle=True, generator=gen)
    params = [p for p in module.parameters() if p.requires_grad]
    total, count = 0.0, 0
    optimizer.zero_grad(set_to_none=True)
    n = len(loader)
    with Progress(f"epoch {epoch}", n, unit="batches", enabled=progress) as bar:
        for i, batch in enumerate(loader):
            with amp:
                loss = objective.loss(batch, device)
            scaled = loss / config.accumulate
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
            total, count = total + float(loss.detach()), count + 1
            if (i + 1) % config.accumulate == 0 or i + 1 == n:
                _step(params, optimizer, scheduler, scaler, config.max_grad_norm)
            bar.advance()
    return total / max(1, count)


def _step(params, optimizer, scheduler, scaler, max_grad_norm: float) -> None:
    """One optimiser step on the accumulated gradients (unscaled first under fp16)."""
    if scaler is not None:
        scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()


def _validate(objective, data, config, device) -> float:
    from embedstore.analyses.metrics import macro_auroc

    objective.module.eval()
    scores, labels = objective.scores(data.loader(config.batch_size * 2, shuffle=False), device)
    return macro_auroc(scores, labels)[0]
