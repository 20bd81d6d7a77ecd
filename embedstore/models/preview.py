"""`embedstore preview`: the pixels a model sees, with the model's input size and resampling."""

from __future__ import annotations

from embedstore.errors import InputError
from embedstore.results import Summary


def preview(path: str, out: str | None = None, model: str | None = None, pretrained: str | None = None,
            size: int | None = None) -> Summary:
    """Write a PNG of what the model sees (shortest-side resize, centre crop); `model` takes the
    input size and resampling from that model's config (no weights needed), else `size` (224)."""
    from embedstore.data.images import preview as write_preview

    interpolation = "bicubic"
    if model is not None:
        if size is not None:
            raise InputError("give --model or --size, not both (the model fixes the input size)")
        from embedstore.models.registry import image_size_of, model_config

        cfg = model_config(model, pretrained)
        size = image_size_of(cfg)
        interpolation = cfg.get("preprocess_cfg", {}).get("interpolation", interpolation)
    return Summary(write_preview(path, image_size=224 if size is None else size, out=out, interpolation=interpolation))
