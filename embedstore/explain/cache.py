"""Heatmaps cached on disk so agreement with other thresholds costs no forward pass.

One `.npz` per (version, target, method, layer, finding, image) under the store's `heatmaps/`
directory: the model-frame heatmap (size x size) as float16 plus the original width and height,
which is all `CropGeometry` needs to map it back. File names are a hash of the key (finding and
image ids may hold any character); the key itself is stored inside and checked on read.
Writes go to a temporary file then `os.replace`, so a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from embedstore.data.geometry import crop_geometry
from embedstore.files import atomic_path


@dataclass(frozen=True)
class HeatmapKey:
    version: str
    target: str  # the target's cache_id (kind + weights digest)
    method: str
    layer: str  # canonical layer name
    finding: str
    image_id: str

    def digest(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()


class HeatmapCache:
    """A directory of cached heatmaps (normally `<store>/heatmaps`)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, key: HeatmapKey) -> Path:
        d = key.digest()
        return self.root / _safe(key.version) / d[:2] / f"{d}.npz"

    def get(self, key: HeatmapKey):
        """The cached `Heatmap` (model frame, float32) or None."""
        from embedstore.explain.heatmaps import Heatmap

        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path) as z:
                if json.loads(str(z["key"])) != asdict(key):
                    return None  # a hash collision or a foreign file: recompute
                model = z["heatmap"].astype(np.float32)
                width, height = int(z["width"]), int(z["height"])
        except (OSError, ValueError, KeyError):
            return None  # unreadable cache entry: recompute rather than fail
        return Heatmap(model, crop_geometry(width, height, model.shape[0]))

    def put(self, key: HeatmapKey, heatmap) -> Path:
        """Store a `Heatmap` (its model-frame array and original size)."""
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            np.savez_compressed(tmp, heatmap=np.asarray(heatmap.model, dtype=np.float16),
                                width=heatmap.geometry.width, height=heatmap.geometry.height,
                                key=json.dumps(asdict(key), sort_keys=True))
        return path


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name)) or "_"


def cached_heatmaps(loaded, items: list[tuple[str, str]], target, cache: HeatmapCache | None, version: str,
                    method: str = "gradcam", layer: str | None = None, batch_size: int = 16,
                    on_batch=None) -> dict:
    """{image_id: Heatmap} for (image_id, path) items; cached ones are read, the rest computed
    in batches and written. `layer` None means the architecture's default. `on_batch(n)` hears
    of the cache hits at once and of each computed batch."""
    from embedstore.explain.heatmaps import compute_heatmaps
    from embedstore.explain.layers import resolve_layer

    layer_name = resolve_layer(loaded.model, layer).name
    keys = {iid: HeatmapKey(version, target.cache_id, method.lower(), layer_name, target.finding, iid)
            for iid, _ in items}
    out = {}
    todo = []
    for iid, path in items:
        hit = cache.get(keys[iid]) if cache is not None else None
        if hit is None:
            todo.append((iid, path))
        else:
            out[iid] = hit
    if on_batch is not None and out:
        on_batch(len(out))
    if todo:
        maps = compute_heatmaps(loaded, [p for _, p in todo], target, method, layer_name, batch_size, on_batch)
        for (iid, _), hm in zip(todo, maps):
            hm.model = hm.model.astype(np.float16).astype(np.float32)  # same values as a cache hit
            if cache is not None:
                cache.put(keys[iid], hm)
            out[iid] = hm
    return out
