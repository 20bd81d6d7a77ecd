"""Where the model's pixels come from in the original image, and back.

open_clip's eval transform (resize_mode "shortest", the default and BiomedCLIP's) resizes the
shorter side to `image_size` (torchvision: the longer side becomes int(size * long / short)) and
then centre-crops `image_size` x `image_size` (offset int(round((new - size) / 2))). Grad-CAM
heatmaps live in the cropped frame; overlays and box agreement need them in the original frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CropGeometry:
    """Shortest-side resize of a (width, height) image to `size`, then a centre crop."""

    width: int  # original image
    height: int
    size: int  # model input side
    resized_width: int
    resized_height: int
    left: int  # crop offset in the resized image
    top: int

    @property
    def scale_x(self) -> float:
        return self.resized_width / self.width

    @property
    def scale_y(self) -> float:
        return self.resized_height / self.height

    def to_model(self, x: np.ndarray | float, y: np.ndarray | float):
        """Original-image pixel coordinates -> model-input pixel coordinates."""
        return np.asarray(x) * self.scale_x - self.left, np.asarray(y) * self.scale_y - self.top

    def to_original(self, x: np.ndarray | float, y: np.ndarray | float):
        """Model-input pixel coordinates -> original-image pixel coordinates."""
        return (np.asarray(x) + self.left) / self.scale_x, (np.asarray(y) + self.top) / self.scale_y

    def visible_box(self) -> tuple[float, float, float, float]:
        """The part of the original image the model sees: (x_min, y_min, x_max, y_max)."""
        x0, y0 = self.to_original(0.0, 0.0)
        x1, y1 = self.to_original(float(self.size), float(self.size))
        return float(x0), float(y0), float(x1), float(y1)

    def heatmap_to_original(self, heatmap: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """Resample a (size x size) heatmap into the original (height x width) frame.

        Pixels the model never saw (cropped away) get `fill`. Nearest-neighbour on pixel centres,
        so a peak stays on the pixels it covered.
        """
        h = np.asarray(heatmap, dtype=np.float32)
        if h.shape != (self.size, self.size):
            raise ValueError(f"heatmap shape {h.shape} != ({self.size}, {self.size})")
        xs, ys = self.to_model(np.arange(self.width) + 0.5, np.arange(self.height) + 0.5)
        cols, rows = np.floor(xs).astype(int), np.floor(ys).astype(int)
        out = np.full((self.height, self.width), fill, dtype=np.float32)
        col_ok = (cols >= 0) & (cols < self.size)
        row_ok = (rows >= 0) & (rows < self.size)
        out[np.ix_(row_ok, col_ok)] = h[np.ix_(rows[row_ok], cols[col_ok])]
        return out


def crop_geometry(width: int, height: int, size: int) -> CropGeometry:
    """The geometry of open_clip's eval transform for an image of `width` x `height`."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    left = int(round((new_w - size) / 2.0))
    top = int(round((new_h - size) / 2.0))
    return CropGeometry(width, height, size, new_w, new_h, left, top)
