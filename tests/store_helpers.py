"""Shared by the store / encode / query / sql / compare / splits tests: small PNGs, a Dataset over
them, stores encoded through the model registry, and a tiny open_clip model to export.

Models are loaded by name through `embedstore.models.load_model`, as `embedstore encode` loads
them: `phantom-clip` (shipped in the package) by default, and a tiny open_clip CLIP
(`TINY_CFG`, seeded weights) exported to a `local-dir:` folder where a second model is needed
(conftest.py's `tiny_model`). Both load the same weights in every process, so a subprocess
(the SIGKILL tests) and the test process get the same vectors.
"""

from __future__ import annotations

import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np

TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
MODEL = "phantom-clip"  # the registry name build_store encodes with


def export_tiny_model(folder: Path, seed: int = 0) -> str:
    """A tiny open_clip CLIP (`TINY_CFG`, weights drawn with torch seed `seed`) exported to
    `folder` by `embedstore.models.export_model`; returns its registry name `local-dir:<folder>`."""
    import open_clip
    import torch

    from embedstore.models import export_model

    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG state alone
        torch.manual_seed(seed)
        model = open_clip.CLIP(**TINY_CFG)
    export_model(model, folder, TINY_CFG)
    return f"local-dir:{folder}"


def write_pngs(folder: Path, n: int, seed: int = 0, size: int = 48) -> list[Path]:
    """n small grey PNGs with different content."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        arr = (rng.random((size, size + i % 5)) * 255).astype(np.uint8)
        p = folder / f"img{i:03d}.png"
        Image.fromarray(arr, mode="L").save(p)
        paths.append(p)
    return paths


FINDINGS = ["Cardiomegaly", "Effusion", "Nodule"]


def make_dataset(paths: list, extra_missing: int = 0):
    """A Dataset over the PNGs (labels deterministic from the index), views alternating."""
    from embedstore.data.records import Dataset, ImageRecord

    recs = []
    for i, p in enumerate(paths):
        labels = {"Cardiomegaly": int(i % 3 == 0), "Effusion": int(i % 4 == 1)}
        if i % 5 == 2:
            labels["Nodule"] = -1
        recs.append(ImageRecord(image_id=f"IM{i:03d}", path=str(p), study_id=f"S{i // 2}", patient_id=f"P{i // 2}",
                                view="frontal" if i % 2 == 0 else "lateral", projection="PA" if i % 2 == 0 else "LL",
                                split=("train", "val", "test")[i % 3], labels=labels, source="manifest"))
    for j in range(extra_missing):
        recs.append(ImageRecord(image_id=f"NOFILE{j}", path=None, study_id="S-x", patient_id="P-x", view="frontal",
                                projection="PA", split="test", labels={}, source="manifest"))
    return Dataset(name="manifest", source="test", scheme="test", findings=FINDINGS, records=recs)


def open_store(path):
    """`embedstore.api.Store(path)` with the internal `Storage`'s table reads and writes reachable
    as attributes too: for tests that look at, or tamper with, tables the API does not show. The
    API's own methods (encode, query, zeroshot, ...) win where both have a name."""
    from embedstore.api import Store

    class TableStore(Store):
        def __getattr__(self, name):
            return getattr(self.__dict__["_storage"], name)

    return TableStore(path)


def copy_store(store: Path, dest: Path):
    """A copy of the store folder `store` at `dest`, opened: how a test writes to a shared store."""
    import shutil

    shutil.copytree(store, dest)
    return open_store(dest)


def copy_tuned_on_test_images(path: Path, dest: Path, data, texts=None):
    """A copy of the store at `path` with a complete fine-tuned version (parent: `data`'s version)
    whose fit ids are 3 of its test images (train) and 2 more (val): the images a tuned version must
    never be scored on. `texts` is (text frame, vectors) when the analysis needs prompts. Returns
    (store, new version)."""
    tuned = copy_store(path, dest)
    storage = tuned._storage
    test_ids = data.ids[data.split == "test"]
    version = storage.create_version(data.version, {"name": "tuned", "embed_dim": 8, "logit_scale": 100.0}, {},
                                     "float32", "finetune", fit_ids={"train": test_ids[:3], "val": test_ids[3:5]})
    storage.add_image_vectors(version, data.ids, [f"t{i}" for i in range(len(data.ids))], data.X)
    if texts is not None:
        storage.add_text_vectors(version, *texts)
    storage.complete_version(version)
    return tuned, version


def build_store(root: Path, n: int = 40, seed: int = 0, model: str = MODEL):
    """A store of n PNGs encoded with `model` (a registry name) as v1: (Store, Dataset)."""
    paths = write_pngs(root / "img", n, seed=seed, size=24)
    ds = make_dataset(paths)
    st = open_store(root / "store")
    st.encode(ds, model=model, batch_size=16, workers=0, device="cpu")
    return st, ds


HOLD_LOCK = """
import sys, time
from pathlib import Path
from embedstore.store.lock import WriteLock
WriteLock(Path(sys.argv[1]) / "lock").acquire()
print("held", flush=True)
time.sleep(600)
"""


@contextmanager
def locked_by_another_process(store: Path):
    """Another process holds `store`'s write lock (the flock every writer takes) inside the
    block, as a running writer would; yields its PID."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(store)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()
