"""What the registry hands out: a built model with its preprocess, tokenizer and record."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np


@dataclass
class ModelRecord:
    """Everything needed to say which model made a vector, and to load it again.

    `name` (with `pretrained`) is what `load_model` accepts; `weights_sha256` identifies the
    weights whatever the name; the store hashes this record (with the dtype) into a version.
    """

    name: str  # as load_model accepts it: "biomedclip", "ViT-B-32", "hf-hub:org/repo", "local-dir:/abs", "phantom-clip"
    source: str  # "hf-hub:org/repo" | "open_clip:ARCH/TAG" | "local-dir:/abs" | "package:embedstore/models/x"
    revision: str | None  # HF commit, open_clip tag, or the revision recorded by export_model
    weights_sha256: str | None  # of the weight file loaded (None for seeded random weights)
    embed_dim: int
    image_size: int
    preprocess: dict  # mean, std, interpolation, resize_mode
    logit_scale: float  # exp of the learned value
    context_length: int
    arch: dict = field(default_factory=dict)  # open_clip model_cfg (hf names as published)
    pretrained: str | None = None  # the open_clip tag for ARCH names, else None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class LoadedModel:
    """A model ready to encode: `encode_*` return L2-normalised float32 numpy arrays."""

    model: Any  # open_clip CLIP / CustomTextCLIP, in eval mode
    preprocess: Callable  # PIL image -> (3, size, size) tensor
    tokenizer: Callable  # list[str] -> (n, context_length) token tensor
    record: ModelRecord
    device: str = "cpu"

    @property
    def dtype(self):
        """The dtype of the image tower's first conv / linear weight (inputs are cast to it).

        Not simply its first parameter: open_clip's fp16 keeps embeddings and norms in fp32."""
        import torch

        for m in self.model.visual.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                return m.weight.dtype
        return next(self.model.visual.parameters()).dtype

    def encode_images(self, batch) -> np.ndarray:
        """(N, 3, size, size) tensor -> (N, embed_dim) unit vectors."""
        import torch

        with torch.inference_mode():
            x = self.model.encode_image(batch.to(self.device, dtype=self.dtype))
            return _unit(x)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Texts -> (N, embed_dim) unit vectors."""
        import torch

        texts = list(texts)
        if not texts:
            return np.zeros((0, self.record.embed_dim), dtype=np.float32)
        with torch.inference_mode():
            return _unit(self.model.encode_text(self.tokenizer(texts).to(self.device)))


def _unit(x) -> np.ndarray:
    # normalise in float32 whatever the model's precision, so fp16 models give unit vectors too
    import torch

    x = x.float()
    return torch.nn.functional.normalize(x, dim=-1).cpu().numpy().astype(np.float32, copy=False)
