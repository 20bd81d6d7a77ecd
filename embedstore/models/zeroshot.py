"""The pos-neg zero-shot logit as a torch operation on a model's image features.

`analyses.zeroshot` is the one place prompts are averaged (`ensemble`) and the zero-shot rules are
defined, on stored vectors; training (the fine-tune's validation scores and head start) and
Grad-CAM need the pos-neg rule's logit differentiably, on a model's own features: this is that
rule in torch, nothing more (the prompt vectors come averaged by `analyses.zeroshot.ensemble`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pos_neg_logits(image_features: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                   logit_scale: torch.Tensor | float) -> torch.Tensor:
    """`logit_scale * (cos(x, p) - cos(x, n))` per image and finding, `analyses.zeroshot.scores`'s
    pos-neg rule (sigmoid of it is the softmax over the positive and negative prompt)."""
    z = F.normalize(image_features, dim=-1)
    positive, negative = (v.to(z.device, z.dtype) for v in (positive, negative))
    return logit_scale * (z @ positive.T - z @ negative.T)
