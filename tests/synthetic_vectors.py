"""Synthetic stored embeddings for tests and benchmarks (not shipped): clustered by label, with prompts.

Images and prompts share one common direction (as CLIP-style embeddings do, which is why
their cosines are almost all positive); each finding adds its own direction to the images
that have it and, more weakly and noisily, to its positive prompt. Nothing here is a model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import polars as pl

# IU-Xray-like prevalences (automatic-term scheme over 7,470 images), for realistic imbalance.
PREVALENCE = (0.11, 0.10, 0.095, 0.066, 0.056, 0.046, 0.025, 0.026, 0.023, 0.021, 0.021, 0.019,
              0.013, 0.009, 0.006, 0.006, 0.004, 0.003)
TEMPLATES = ("{f}", "a chest x-ray showing {f}", "findings consistent with {f}")
NEG_TEMPLATES = ("no {f}", "a chest x-ray with no {f}", "no evidence of {f}")


@dataclass
class SyntheticStore:
    findings: list[str]
    ids: np.ndarray  # int64 [n]
    X: np.ndarray  # float32 [n, d], unit rows
    Y: np.ndarray  # float32 [n, F]: 1 / 0 / -1 / NaN
    split: np.ndarray  # str [n]
    texts: pl.DataFrame  # text_hash, text, finding, polarity, template
    M: np.ndarray  # float32 [m, d], unit rows
    logit_scale: float
    images_per_patient: int = 1  # consecutive rows share a patient (and its split), e.g. frontal + lateral


def _unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def make(n: int = 2000, n_findings: int = 8, d: int = 64, seed: int = 0, signal: float = 1.0,
         prompt_signal: float = 0.35, uncertain_rate: float = 0.02, missing_rate: float = 0.02,
         logit_scale: float = 100.0, images_per_patient: int = 1) -> SyntheticStore:
    """n images with IU-Xray-like label imbalance (scaled up x3 so small tests have positives)."""
    rng = np.random.default_rng(seed)
    findings = [f"finding_{j:02d}" for j in range(n_findings)]
    prev = np.resize(np.minimum(np.asarray(PREVALENCE) * 3, 0.4), n_findings)
    Y = (rng.random((n, n_findings)) < prev).astype(np.float32)
    common = _unit(rng.normal(size=d))
    dirs = _unit(rng.normal(size=(n_findings, d)))
    X = 2.0 * common + signal * Y @ dirs + rng.normal(scale=1.0 / np.sqrt(d) * 6, size=(n, d))
    X = _unit(X).astype(np.float32)
    Y[rng.random(Y.shape) < uncertain_rate] = -1
    Y[rng.random(Y.shape) < missing_rate] = np.nan
    patients = -(-n // images_per_patient)
    split = np.repeat(rng.choice(np.array(["train", "val", "test"]), size=patients, p=[0.6, 0.15, 0.25]),
                      images_per_patient)[:n]
    rows, vecs = [], []
    neg_dirs = _unit(rng.normal(size=(n_findings, d)))
    for j, f in enumerate(findings):
        for polarity, templates, direction in (("positive", TEMPLATES, dirs[j]), ("negative", NEG_TEMPLATES, neg_dirs[j])):
            for t in templates:
                text = t.format(f=f)
                v = 2.0 * common + prompt_signal * direction + rng.normal(scale=0.25 / np.sqrt(d) * 6, size=d)
                rows.append({"text_hash": hashlib.sha1(text.encode()).hexdigest()[:16], "text": text, "finding": f,
                             "polarity": polarity, "template": t})
                vecs.append(v)
    M = _unit(np.asarray(vecs)).astype(np.float32)
    ids = np.arange(1, n + 1, dtype=np.int64) * 7  # ids are not row positions
    return SyntheticStore(findings, ids, X, Y, split, pl.DataFrame(rows), M, logit_scale, images_per_patient)


def to_store(syn: SyntheticStore, store, name: str = "synthetic") -> str:
    """Write a SyntheticStore into a real store (an `embedstore.open()` store or its `Storage`):
    images, labels, one version, prompts; the version id."""
    from embedstore.data.records import ImageRecord

    store = getattr(store, "_storage", store)

    recs = []
    for i, split in enumerate(syn.split):
        labels = {f: int(v) for f, v in zip(syn.findings, syn.Y[i]) if np.isfinite(v)}
        patient = i // syn.images_per_patient
        recs.append(ImageRecord(image_id=f"SYN{i:06d}", path=None, study_id=f"S{i}", patient_id=f"P{patient}",
                                view="frontal" if i % 4 else "lateral", projection=None, split=str(split),
                                labels=labels, source="synth"))
    id_of = store.upsert_images(recs)
    record = {"name": name, "embed_dim": int(syn.X.shape[1]), "logit_scale": syn.logit_scale}
    version = store.create_version(None, record, {}, "float32", "encode")
    ids = np.array([id_of[r.image_id] for r in recs], dtype=np.int64)
    store.add_image_vectors(version, ids, [f"h{i}" for i in range(len(ids))], syn.X)
    prompts = syn.texts.select("finding", "polarity", "template", "text")
    store.upsert_prompts(prompts)
    store.add_text_vectors(version, prompts.select("text"), syn.M)
    store.complete_version(version)
    syn.ids = ids  # the store's ids for the same rows
    return version
