"""Classifier heads on an image tower's embedding, and loading a fine-tuned version's head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from embedstore.errors import InputError


class UnitInputHead(nn.Linear):
    """A linear head that reads unit vectors: normalises its input first (same weights as nn.Linear)."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return super().forward(F.normalize(z, dim=-1))


def load_head(version) -> tuple[nn.Module, list[str]]:
    """(head module, findings) of a `bce` fine-tuned `Version`; its input is the image tower's
    output before normalisation (`model.encode_image(x)`); a head trained from the zero-shot
    initialisation normalises it first. InputError when the version has none."""
    from safetensors.torch import load_file

    ft = version.finetune or {}
    if not ft.get("head") or version.checkpoint is None:
        raise InputError(f"version {version.id} has no fine-tuned classifier head; "
                         "make one with `embedstore finetune --objective bce --from-version ...`")
    weights = load_file(str(version.checkpoint / ft["head"]))
    out_dim, in_dim = weights["weight"].shape
    unit = ft.get("head_init") == "zeroshot"  # such heads read the unit image vector
    head = (UnitInputHead if unit else nn.Linear)(in_dim, out_dim)
    head.load_state_dict(weights)
    return head.eval(), list(ft["findings"])
