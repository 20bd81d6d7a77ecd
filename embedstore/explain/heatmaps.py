"""Batched Grad-CAM (pytorch-grad-cam) over many images, in the model and the original frame.

grad-cam runs ONE forward and ONE backward per batch: it sums the per-image target scores before
`backward`, and every image's score depends only on its own activations (ViTs and ResNets in eval
mode mix nothing across the batch), so each image's gradient is what it would be alone.

Parameter gradients are never needed, so parameters are frozen for the call and the input is
made to require grad instead: backward then skips every weight gradient. The flags are restored afterwards.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from embedstore.data.geometry import CropGeometry, crop_geometry
from embedstore.errors import InputError

# name -> pytorch_grad_cam class name. ScoreCAM / AblationCAM are left out: they run one forward
# pass per channel (768 for ViT-B), far too slow on a CPU for more than a handful of images.
METHODS = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "hirescam": "HiResCAM",
    "xgradcam": "XGradCAM",
    "layercam": "LayerCAM",
    "eigencam": "EigenCAM",  # class-agnostic: first principal component of the activations
    "eigengradcam": "EigenGradCAM",
    "gradcam-elementwise": "GradCAMElementWise",
}


@dataclass
class Heatmap:
    """One image's heatmap in the model's input frame (size x size, values in [0, 1])."""

    model: np.ndarray
    geometry: CropGeometry

    def original(self) -> np.ndarray:
        """The heatmap in the original image's (height, width) pixels; 0 where the crop cut."""
        return self.geometry.heatmap_to_original(self.model)


def method_class(method: str):
    """The pytorch_grad_cam class for a method name (InputError listing the names otherwise)."""
    key = method.strip().lower()
    if key not in METHODS:
        raise InputError(f"unknown Grad-CAM method {method!r}; choose one of {', '.join(METHODS)}")
    import pytorch_grad_cam

    return getattr(pytorch_grad_cam, METHODS[key])


def _read(image) -> Any:
    """A PIL image from a path (through `embedstore.data.images.read_image`) or a PIL image."""
    if not isinstance(image, (str, Path)):
        return image
    from embedstore.data.images import read_image

    path = Path(image)
    if not path.is_file():
        raise InputError(f"image file {path} does not exist")
    return read_image(path)


def check_preprocess(preprocess) -> None:
    """geometry.py describes open_clip's shortest-side resize + centre crop only; refuse others."""
    for t in getattr(preprocess, "transforms", []):
        name = type(t).__name__
        size = getattr(t, "size", None)
        squash = name == "Resize" and isinstance(size, (list, tuple)) and len(size) == 2
        if squash or name in ("ResizeKeepRatio", "CenterCropOrPad"):
            raise InputError(
                f"preprocess step {t!r} is not a shortest-side resize + centre crop; heatmaps cannot be "
                "mapped back to the original image (encode with resize_mode 'shortest')"
            )


def _embedder(clip):
    """An nn.Module whose forward is the image tower's raw embedding (what the targets read)."""
    import torch

    class Embedder(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            # parameters are frozen, so the input carries the graph (and no weight grads are made)
            if not x.requires_grad:
                x = x.detach().requires_grad_(True)
            if hasattr(self.inner, "encode_image"):  # open_clip CLIP / CustomTextCLIP
                return self.inner.encode_image(x)
            return self.inner.visual(x)  # e.g. fine-tune's ImageClassifier (visual + head)

    return Embedder(clip)


@contextlib.contextmanager
def _frozen(module):
    flags = [(p, p.requires_grad) for p in module.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def model_heatmaps(loaded, tensors, target, method: str = "gradcam", layer: str | None = None,
                   batch_size: int = 16) -> np.ndarray:
    """Heatmaps (N, size, size) float32 in [0, 1] for preprocessed tensors (N, 3, size, size)."""
    from embedstore.explain.layers import resolve_layer

    cam_class = method_class(method)
    clip = loaded.model
    choice = resolve_layer(clip, layer)
    wrapper = _embedder(clip)
    device = next(clip.parameters()).device
    out = []
    with _frozen(clip):
        cam = cam_class(model=wrapper, target_layers=[choice.module], reshape_transform=choice.reshape)
        try:
            for start in range(0, len(tensors), max(1, int(batch_size))):
                batch = tensors[start:start + batch_size].to(device)
                out.append(cam(input_tensor=batch, targets=[target] * len(batch)))
        finally:
            cam.activations_and_grads.release()  # not `with cam`: its __exit__ swallows IndexError
    size = tensors.shape[-1]
    return np.concatenate(out, axis=0) if out else np.zeros((0, size, size), np.float32)


def compute_heatmaps(loaded, images: Sequence, target, method: str = "gradcam", layer: str | None = None,
                     batch_size: int = 16, on_batch=None) -> list[Heatmap]:
    """Read and preprocess `images` (paths or PIL images) and explain them, batch by batch;
    `on_batch(n)` is told how many each finished batch held."""
    import torch

    check_preprocess(loaded.preprocess)
    method_class(method)  # fail on a bad name before reading any image
    results: list[Heatmap] = []
    step = max(1, int(batch_size))
    for start in range(0, len(images), step):
        pils = [_read(im) for im in images[start:start + step]]
        tensors = torch.stack([loaded.preprocess(im) for im in pils])
        maps = model_heatmaps(loaded, tensors, target, method, layer, batch_size=step)
        size = tensors.shape[-1]
        results += [Heatmap(m, crop_geometry(im.width, im.height, size)) for m, im in zip(maps, pils)]
        if on_batch is not None:
            on_batch(len(pils))
    return results


def explain_images(loaded, image_paths: Sequence, target, method: str = "gradcam", layer: str | None = None,
                   batch_size: int = 16) -> list[np.ndarray]:
    """One heatmap per image in the ORIGINAL image's (height, width) pixels, values in [0, 1]."""
    return [h.original() for h in compute_heatmaps(loaded, image_paths, target, method, layer, batch_size)]
