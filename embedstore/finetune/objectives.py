"""Losses and the two training objectives: `contrastive` (CLIP loss) and `bce` (image tower + head).

An objective owns what is specific to it: which module is trained (`module`), the loss of one
batch (`loss`) and the per-finding scores used for validation (`scores`), so the loop in
`loop.py` stays the same for both.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from embedstore.models.heads import UnitInputHead


def clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor | float,
    same: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of L2-normalised image and text features.

    `same` (B x B, bool) marks pairs that count as matching besides the diagonal, e.g. two
    images whose texts are identical; their targets are spread uniformly over the matches so
    in-batch duplicates are not pushed apart. Without it, the targets are the diagonal (CLIP).
    """
    logits = logit_scale * image_features @ text_features.T
    n = logits.shape[0]
    if same is None:
        target = torch.arange(n, device=logits.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    match = same.to(logits.dtype) + torch.eye(n, device=logits.device, dtype=logits.dtype)
    match = match.clamp(max=1)
    rows = match / match.sum(1, keepdim=True)
    cols = match.T / match.T.sum(1, keepdim=True)
    loss_i = -(rows * F.log_softmax(logits, dim=1)).sum(1).mean()
    loss_t = -(cols * F.log_softmax(logits.T, dim=1)).sum(1).mean()
    return (loss_i + loss_t) / 2


def pos_weight_from_labels(labels: np.ndarray | torch.Tensor, max_weight: float = 50.0) -> torch.Tensor:
    """Per-finding positive weight n_negative / n_positive against class imbalance.

    `labels` is (N, F) with 1 / 0 and -1 (uncertain) or NaN (missing), which are not counted.
    Clipped to [1, max_weight]; a finding without positives gets `max_weight`.
    """
    y = torch.as_tensor(np.asarray(labels, dtype=np.float32))
    pos = (y == 1).sum(0).float()
    neg = (y == 0).sum(0).float()
    w = torch.where(pos > 0, neg / pos.clamp(min=1), torch.full_like(pos, max_weight))
    return w.clamp(min=1.0, max=max_weight)


def bce_loss(logits: torch.Tensor, labels: torch.Tensor, pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean binary cross-entropy over known labels (1 / 0); -1 and NaN entries are ignored.

    Per element: -[w * y * log(sigmoid(x)) + (1 - y) * log(1 - sigmoid(x))], w = pos_weight[finding].
    """
    known = (labels == 0) | (labels == 1)
    target = torch.where(known, labels, torch.zeros_like(labels))
    per = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight, reduction="none")
    per = per * known
    return per.sum() / known.sum().clamp(min=1)


class ImageClassifier(nn.Module):
    """The image tower of a CLIP model plus a linear head: one logit per finding.

    With `normalize` the head reads the unit image embedding (as zero-shot scoring does), so it can
    start from the zero-shot classifier (`zero_shot_head`); otherwise the raw tower output.
    """

    def __init__(self, visual: nn.Module, embed_dim: int, n_findings: int, normalize: bool = False,
                 init: tuple[torch.Tensor, torch.Tensor] | None = None):
        super().__init__()
        self.visual = visual
        self.head = (UnitInputHead if normalize else nn.Linear)(embed_dim, n_findings)
        if init is not None:
            with torch.no_grad():
                self.head.weight.copy_(init[0])
                self.head.bias.copy_(init[1])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.visual(images))


@torch.no_grad()
def prompt_vectors(model: nn.Module, tokenizer, prompts: dict[str, tuple[Sequence[str], Sequence[str]]],
                   device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(positive [F, D], negative [F, D]): each finding's phrasings (finding -> (positives,
    negatives)) embedded by the model's own text tower, averaged by `analyses.zeroshot.ensemble`."""
    from embedstore.analyses.zeroshot import ensemble

    out = {"positive": [], "negative": []}
    for positives, negatives in prompts.values():
        for texts, polarity in ((positives, "positive"), (negatives, "negative")):
            emb = model.encode_text(tokenizer(list(texts)).to(device), normalize=True).float().cpu().numpy()
            out[polarity].append(ensemble(emb))
    return tuple(torch.from_numpy(np.stack(out[k])).to(device) for k in ("positive", "negative"))


@torch.no_grad()  # an initial value, not part of any graph
def zero_shot_head(model: nn.Module, tokenizer, prompts: dict, device: torch.device | str = "cpu"):
    """(weight [F, D], bias [F]) of the pos-neg zero-shot classifier as a linear head on unit vectors.

    softmax over (positive, negative) prompt logits = sigmoid(scale * x.(p - n)), so the head's
    logit equals the zero-shot logit: a fine-tune from it starts at the parent's zero-shot scores
    (zero-shot head initialisation, as in WiSE-FT / FLYP) instead of from a random head.
    """
    pos, neg = prompt_vectors(model, tokenizer, prompts, torch.device(device))
    scale = model.logit_scale.exp().float().cpu()  # unclamped, as the store's zero-shot scores use it
    weight = scale * (pos - neg).float().cpu()
    return weight, torch.zeros(weight.shape[0])


class ContrastiveObjective:
    """CLIP loss between images and their texts; validation scores are pos-neg zero-shot.

    `prompts` maps finding -> (positive phrasings, negative phrasings), in the order of the
    label columns; `tokenizer` turns a list of texts into token ids.
    """

    name = "contrastive"

    def __init__(self, model: nn.Module, tokenizer, prompts: dict[str, tuple[Sequence[str], Sequence[str]]]):
        self.model = model
        self.module = model  # what is trained and checkpointed
        self.tokenizer = tokenizer
        self.prompts = prompts

    def loss(self, batch: dict, device: torch.device) -> torch.Tensor:
        images = batch["images"].to(device, non_blocking=True)
        tokens = self.tokenizer(batch["texts"]).to(device, non_blocking=True)
        img = self.model.encode_image(images, normalize=True)
        txt = self.model.encode_text(tokens, normalize=True)
        same = batch.get("same")
        if same is None:  # without label conditions, identical texts count as matches
            texts = batch["texts"]
            same = torch.tensor([[a == b for b in texts] for a in texts])
        same = same.to(device)
        scale = self.model.logit_scale.exp().clamp(max=100)
        return clip_loss(img, txt, scale, same=same)

    @torch.no_grad()
    def scores(self, loader, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
        """(N, F) zero-shot pos-neg logits and the (N, F) labels of the loader's images."""
        from embedstore.models.zeroshot import pos_neg_logits

        pos, neg = prompt_vectors(self.model, self.tokenizer, self.prompts, device)
        scale = self.model.logit_scale.exp().float()
        out, labels = [], []
        for batch in loader:
            img = self.model.encode_image(batch["images"].to(device)).float()
            out.append(pos_neg_logits(img, pos, neg, scale).cpu())
            labels.append(batch["labels"])
        return torch.cat(out).numpy(), torch.cat(labels).numpy()


class BCEObjective:
    """Image tower + linear head, BCE with per-finding positive weights; scores are sigmoid(logits)."""

    name = "bce"

    def __init__(self, visual: nn.Module, embed_dim: int, n_findings: int, pos_weight: torch.Tensor,
                 normalize: bool = False, init: tuple[torch.Tensor, torch.Tensor] | None = None):
        self.module = ImageClassifier(visual, embed_dim, n_findings, normalize=normalize, init=init)
        self.pos_weight = pos_weight

    def loss(self, batch: dict, device: torch.device) -> torch.Tensor:
        logits = self.module(batch["images"].to(device, non_blocking=True))
        labels = batch["labels"].to(device, non_blocking=True)
        return bce_loss(logits.float(), labels, self.pos_weight.to(device))

    @torch.no_grad()
    def scores(self, loader, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
        out, labels = [], []
        for batch in loader:
            out.append(torch.sigmoid(self.module(batch["images"].to(device)).float()).cpu())
            labels.append(batch["labels"])
        return torch.cat(out).numpy(), torch.cat(labels).numpy()
