"""Model registry: one name (or a store `Version`) -> `LoadedModel(model, preprocess, tokenizer,
record)`; export; fine-tuned heads; the pos-neg zero-shot logit in torch.

Nothing heavy is imported here; torch and open_clip load inside `load_model` / `export_model`.

May import: data, errors, results (never the store, a trainer or another service).
"""

from __future__ import annotations

from embedstore.models.loaded import LoadedModel, ModelRecord
from embedstore.models.registry import (
    ALIASES,
    BIOMEDCLIP_CONFIG,
    SHIPPED,
    load_model,
    model_config,
    resolve,
)


def export_model(model, out_dir, model_cfg, preprocess_cfg=None, tokenizer=None, precision="fp32",
                 source=None, revision=None):
    """Write `model` as an open_clip local-dir folder (see `embedstore.models.export`)."""
    from embedstore.models.export import export_model as _export

    return _export(model, out_dir, model_cfg, preprocess_cfg, tokenizer=tokenizer, precision=precision,
                   source=source, revision=revision)


__all__ = ["ALIASES", "BIOMEDCLIP_CONFIG", "SHIPPED", "LoadedModel", "ModelRecord", "export_model",
           "load_model", "model_config", "resolve"]
