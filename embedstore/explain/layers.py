"""Which layer Grad-CAM reads, and how that layer's tokens become a (B, C, H, W) map.

Defaults, per image tower:
- open_clip VisionTransformer: `visual.transformer.resblocks[-1].ln_1`, grid `visual.grid_size`;
- timm ViT inside open_clip (BiomedCLIP): `visual.trunk.blocks[-1].norm1`, grid
  `visual.trunk.patch_embed.grid_size`;
- open_clip ModifiedResNet: `visual.layer4[-1]` (already spatial, no reshape);
- timm CNN inside open_clip (phantom-clip's ResNet): `visual.trunk.layer4[-1]` (spatial).

A token map keeps its last H*W tokens: the class token and any register tokens come first in
both open_clip and timm, so dropping the prefix works whatever their number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from embedstore.errors import InputError


@dataclass(frozen=True)
class TokensToGrid:
    """Reshape transform for grad-cam: (B, P+H*W, C) -> (B, C, H, W); 4-D input passes through."""

    grid: tuple[int, int] | None
    seq_first: bool = False  # open_clip towers built with batch_first=False give (L, B, C)

    def __call__(self, x):
        if x.ndim == 4:
            return x
        if x.ndim != 3 or self.grid is None:
            raise ValueError(f"cannot turn a layer output of shape {tuple(x.shape)} into a 2-D map")
        if self.seq_first:
            x = x.transpose(0, 1)
        h, w = self.grid
        if x.shape[1] < h * w:
            raise ValueError(f"layer has {x.shape[1]} tokens, fewer than the {h}x{w} grid")
        tokens = x[:, x.shape[1] - h * w:, :]
        return tokens.reshape(x.shape[0], h, w, x.shape[2]).permute(0, 3, 1, 2)


@dataclass
class LayerChoice:
    """The module grad-cam hooks, its canonical dotted name, and its reshape transform."""

    name: str
    module: Any
    reshape: TokensToGrid


def token_grid(model) -> tuple[tuple[int, int] | None, bool]:
    """(grid (H, W) of the image tower's patch tokens or None, seq_first) for a CLIP-like model."""
    visual = getattr(model, "visual", model)
    trunk = getattr(visual, "trunk", None)
    if trunk is not None and hasattr(getattr(trunk, "patch_embed", None), "grid_size"):
        return tuple(int(v) for v in trunk.patch_embed.grid_size), False
    if hasattr(visual, "grid_size"):
        seq_first = not getattr(getattr(visual, "transformer", None), "batch_first", True)
        return tuple(int(v) for v in visual.grid_size), seq_first
    return None, False


def default_layer_name(model) -> str:
    """The dotted name of the default target layer (positive indices)."""
    visual = getattr(model, "visual", None)
    if visual is None:
        raise InputError(f"{type(model).__name__} has no image tower `visual`; pass --layer NAME")
    trunk = getattr(visual, "trunk", None)
    if trunk is not None and hasattr(trunk, "blocks"):
        return f"visual.trunk.blocks.{len(trunk.blocks) - 1}.norm1"
    transformer = getattr(visual, "transformer", None)
    if transformer is not None and hasattr(transformer, "resblocks"):
        return f"visual.transformer.resblocks.{len(transformer.resblocks) - 1}.ln_1"
    if hasattr(visual, "layer4"):
        return f"visual.layer4.{len(visual.layer4) - 1}"
    if trunk is not None and hasattr(trunk, "layer4"):
        return f"visual.trunk.layer4.{len(trunk.layer4) - 1}"
    raise InputError(f"no default Grad-CAM layer for image tower {type(visual).__name__}; pass --layer NAME")


def resolve_layer(model, name: str | None = None) -> LayerChoice:
    """The layer called `name` (dotted; negative indices allowed, e.g. `visual.trunk.blocks.-1.norm1`),
    or the architecture's default when None."""
    name = name or default_layer_name(model)
    module = model
    for part in name.split("."):
        try:
            module = module[int(part)] if _is_int(part) else getattr(module, part)
        except (AttributeError, IndexError, TypeError, KeyError):
            raise InputError(
                f"layer {name!r} not found in {type(model).__name__} (at {part!r}); "
                f"default is {_safe_default(model)!r}"
            ) from None
    canonical = next((n for n, m in model.named_modules() if m is module), name)
    grid, seq_first = token_grid(model)
    return LayerChoice(canonical, module, TokensToGrid(grid, seq_first))


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


def _safe_default(model) -> str:
    try:
        return default_layer_name(model)
    except InputError:
        return "none"
