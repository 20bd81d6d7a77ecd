"""Training data: images decoded once into a uint8 tensor, paired with candidate texts and labels.

Decoding goes through `embedstore.data.images.read_image` and the same shortest-side bicubic
resize + centre crop as open_clip's eval transform (`crop_geometry`), so a trained model sees
the pixels it will see at encode time. Keeping one grey channel as uint8 (16 KB an image at
128 px) lets a whole phantom set live in memory; normalisation happens per batch.

Each image has a list of candidate texts, each with a *condition*: the label values a matching
image must have (a vector over findings, NaN = no constraint). In a batch, image i and text j
count as a match when image i's labels satisfy text j's condition, so two normal images are not
pushed away from each other's "no acute abnormality" (see `objectives.clip_loss(same=...)`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from embedstore.errors import InputError


def decode_images(paths: Sequence[str], size: int) -> torch.Tensor:
    """(N, size, size) uint8 grey pixels: read, resize the shorter side to `size`, centre-crop."""
    from PIL import Image

    from embedstore.data.geometry import crop_geometry
    from embedstore.data.images import read_image

    out = torch.empty((len(paths), size, size), dtype=torch.uint8)
    for i, path in enumerate(paths):
        try:
            img = read_image(path).convert("L")
        except OSError as err:
            raise InputError(f"{path}: cannot decode image ({err}); fix or remove it from the set") from err
        g = crop_geometry(img.width, img.height, size)
        img = img.resize((g.resized_width, g.resized_height), Image.BICUBIC)
        img = img.crop((g.left, g.top, g.left + size, g.top + size))
        out[i] = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())
    return out


@dataclass
class Text:
    """A candidate text for an image and the label values an image must have to match it."""

    text: str
    condition: np.ndarray  # (F,) float: 1 / 0 required, NaN = any
    weight: float = 1.0  # relative chance of being drawn among the image's candidates


def report_text(findings: str | None, impression: str | None) -> str:
    """The report as one string: findings then impression (either may be missing)."""
    parts = [p.strip() for p in (findings, impression) if p and p.strip()]
    return " ".join(parts)


class PairDataset(torch.utils.data.Dataset):
    """Pre-decoded images with labels and, for contrastive training, candidate texts.

    `pixels`: (N, H, W) uint8; `labels`: (N, F) float with 1 / 0 and -1 or NaN for unknown;
    `texts`: per image a list of `Text` (one is drawn per epoch by weight, deterministically
    from seed, epoch and index); `mean` / `std`: the model's normalisation (3 values).
    `augment` adds a small random shift, scale and exposure change (training only).
    """

    def __init__(
        self,
        pixels: torch.Tensor,
        labels: np.ndarray,
        texts: list[list[Text]] | None = None,
        mean: Sequence[float] = (0.48145466, 0.4578275, 0.40821073),
        std: Sequence[float] = (0.26862954, 0.26130258, 0.27577711),
        augment: bool = False,
        seed: int = 0,
    ):
        if pixels.dtype != torch.uint8 or pixels.ndim != 3:
            raise ValueError(f"pixels must be (N, H, W) uint8, got {tuple(pixels.shape)} {pixels.dtype}")
        labels = np.asarray(labels, dtype=np.float32)
        if len(labels) != len(pixels) or (texts is not None and len(texts) != len(pixels)):
            raise ValueError(f"{len(pixels)} images but {len(labels)} label rows / texts")
        if texts is not None and any(not t for t in texts):
            bad = next(i for i, t in enumerate(texts) if not t)
            raise InputError(f"image {bad} has no text to pair with; give it a report or labels")
        self.pixels = pixels
        self.labels = torch.from_numpy(labels)
        self.texts = texts
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.pixels)

    def set_epoch(self, epoch: int) -> None:
        """Which text each image draws depends on the epoch (and nothing else), for exact resume."""
        self.epoch = epoch

    def __getitem__(self, i: int) -> dict:
        item = {"index": i}
        if self.texts is not None:
            choices = self.texts[i]
            w = np.array([t.weight for t in choices], dtype=np.float64)
            k = np.random.default_rng([self.seed, self.epoch, i]).choice(len(choices), p=w / w.sum())
            item["text"] = choices[k]
        return item

    def collate(self, items: list[dict]) -> dict:
        """A batch: normalised (B, 3, H, W) float images, labels, texts and their match matrix."""
        idx = torch.tensor([it["index"] for it in items])
        images = self.pixels[idx].float().div_(255).unsqueeze(1)
        if self.augment:
            images = _augment(images)
        images = (images.expand(-1, 3, -1, -1) - self.mean) / self.std
        batch = {"images": images, "labels": self.labels[idx]}
        if self.texts is not None:
            texts = [it["text"] for it in items]
            batch["texts"] = [t.text for t in texts]
            batch["same"] = match_matrix(self.labels[idx].numpy(), np.stack([t.condition for t in texts]))
        return batch

    def loader(self, batch_size: int, shuffle: bool, generator: torch.Generator | None = None):
        return torch.utils.data.DataLoader(
            self, batch_size=batch_size, shuffle=shuffle, generator=generator,
            collate_fn=self.collate, num_workers=0, drop_last=shuffle and len(self) > batch_size,
        )


def match_matrix(labels: np.ndarray, conditions: np.ndarray) -> torch.Tensor:
    """(B, B) bool: image i's labels satisfy text j's condition on every constrained finding."""
    required = ~np.isnan(conditions)  # (B_text, F)
    equal = labels[:, None, :] == conditions[None, :, :]  # (B_img, B_text, F)
    return torch.from_numpy(np.all(equal | ~required[None], axis=-1))


def _augment(images: torch.Tensor) -> torch.Tensor:
    """Small random affine (shift +-6 %, scale +-8 %, rotation +-5 deg) and exposure jitter.

    Uses torch's global RNG, which the loop seeds and checkpoints.
    """
    import torch.nn.functional as F

    b = images.shape[0]
    angle = (torch.rand(b) - 0.5) * (2 * 5 * torch.pi / 180)
    scale = 1 + (torch.rand(b) - 0.5) * 0.16
    shift = (torch.rand(b, 2) - 0.5) * 0.12
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    gain = 1 + (torch.rand(b, 1, 1, 1) - 0.5) * 0.2
    bias = (torch.rand(b, 1, 1, 1) - 0.5) * 0.1
    return (out * gain + bias).clamp_(0, 1)


# ---- texts an image may be paired with (contrastive training) ----------------------------
NORMAL = "No Finding"  # prompts.toml's entry for normal studies


def prompt_sets(findings: list[str]) -> dict[str, tuple[list[str], list[str]]]:
    """finding -> (positive phrasings, negative phrasings) from prompts.toml."""
    from embedstore.data.prompts import prompts_for

    out = {}
    for f in findings:
        rows = prompts_for(f)
        out[f] = ([r["text"] for r in rows if r["polarity"] == "positive"],
                  [r["text"] for r in rows if r["polarity"] == "negative"])
    return out


def candidate_texts(labels: np.ndarray, report: str, prompts: dict, normal: list[str]) -> list:
    """An image's texts: its report (weight 1), positive prompts (1 in all), negative prompts (0.6 in all)."""
    names = list(prompts)
    nan = np.full(len(names), np.nan, dtype=np.float32)

    def cond(k: int, v: float) -> np.ndarray:
        c = nan.copy()
        c[k] = v
        return c

    out = [Text(report, labels.astype(np.float32), 1.0)] if report else []
    pos = [k for k in range(len(names)) if labels[k] == 1]
    if pos:
        texts = [(t, cond(k, 1.0)) for k in pos for t in prompts[names[k]][0]]
    else:
        texts = [(t, np.zeros(len(names), dtype=np.float32)) for t in normal]
    out += [Text(t, c, 1.0 / len(texts)) for t, c in texts]
    neg = [(t, cond(k, 0.0)) for k in range(len(names)) if labels[k] == 0 for t in prompts[names[k]][1]]
    out += [Text(t, c, 0.6 / len(neg)) for t, c in neg]
    return out
