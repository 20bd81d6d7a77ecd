"""Keys the store derives from content: config hashes, data fingerprints and text keys."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def stable_hash(obj: Any) -> str:
    """sha256 of a JSON-able object with sorted keys: equal configs give equal hashes."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def text_hash(text: str) -> str:
    """Key of a text in `text_embeddings`: whitespace-collapsed and case-folded."""
    norm = " ".join(text.split()).casefold()
    return hashlib.sha256(norm.encode()).hexdigest()[:24]


def fingerprint(*parts) -> str:
    """A short digest of arrays and text lists (ids, labels, splits, findings, ...): a run records
    the fingerprint of the data it read, so a changed label or split never reuses its results."""
    import numpy as np

    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray) and part.dtype != object:
            h.update(np.ascontiguousarray(part).tobytes())
        else:
            h.update("\x00".join(map(str, part)).encode())
        h.update(b"\x01")
    return h.hexdigest()[:16]
