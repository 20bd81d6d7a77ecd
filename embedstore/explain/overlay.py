"""A heatmap drawn over the ORIGINAL image (not the model's crop), with the annotated boxes.

The part of the image the model never saw (cut by the centre crop) is outlined so a cold
region there is not mistaken for the model looking away.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np


def overlay_image(image, heatmap: np.ndarray, boxes: Iterable = (), visible: tuple | None = None,
                  colormap: str = "jet", alpha: float = 0.45, box_color=(0, 255, 0)):
    """An RGB PIL image: `image` (PIL, any mode) blended with `heatmap` (same height x width,
    values in [0, 1]) through a matplotlib colormap, boxes (x_min, y_min, x_max, y_max) drawn
    on top, and the model's `visible` box (from `CropGeometry.visible_box()`) outlined."""
    import matplotlib
    from PIL import Image, ImageDraw

    base = image.convert("RGB")
    h = np.clip(np.asarray(heatmap, dtype=np.float32), 0.0, 1.0)
    if h.shape != (base.height, base.width):
        raise ValueError(f"heatmap shape {h.shape} != image size ({base.height}, {base.width})")
    rgb = (matplotlib.colormaps[colormap](h)[..., :3] * 255).astype(np.uint8)
    out = Image.blend(base, Image.fromarray(rgb), alpha)
    draw = ImageDraw.Draw(out)
    line = max(1, round(min(base.size) / 300))
    for x0, y0, x1, y1 in boxes:
        draw.rectangle([float(x0), float(y0), float(x1) - 1, float(y1) - 1], outline=box_color, width=line)
    if visible is not None:
        x0, y0, x1, y1 = visible
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=(255, 255, 255), width=line)
    return out


def write_overlay(path: str | Path, image, heatmap: np.ndarray, boxes: Iterable = (), visible: tuple | None = None,
                  colormap: str = "jet", alpha: float = 0.45) -> Path:
    """Write the overlay as PNG (through a temporary file, so no half-written PNG is left)."""
    from embedstore.files import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        overlay_image(image, heatmap, boxes, visible, colormap, alpha).save(tmp, format="PNG")
    return path
