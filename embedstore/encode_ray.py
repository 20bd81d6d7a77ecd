"""`embedstore encode --engine ray`: the image stage of `encode` on Ray Data.

The rest of `encode` (reading the data set, splits, boxes, prompts, the version, the index) is
the same for both engines; only the images go through Ray:

1. the records to encode become a Ray Dataset (`from_items`, one block per `BLOCK_BATCHES` batches);
2. `map_batches(_decode)`: Ray tasks hash, decode and preprocess each image with the local
   engine's own mapper (`data.images.prepare_image`); an image whose content hash is already stored
   is dropped here, before it is decoded;
3. `map_batches(_Embedder, concurrency=actors, num_gpus=...)`: model actors, each loading the
   model once through `embedstore.models.load_model`;
4. `write_parquet`: one shard per block under `<store>/shards/<version>/` (on a cluster the write
   tasks run on any node: the store, like the images, must be on a shared file system).

The store then ingests the shards (`Storage.ingest_shards`: one transaction per shard, then the
file is deleted). A shard is committed once its file is whole; a killed job leaves the whole
shards, which the next run (same command) ingests first, so it encodes only what is missing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import warnings

import numpy as np

from embedstore.errors import InputError

RAY_REQUIREMENT = "ray[data]==2.60.0"
BLOCK_BATCHES = 8  # batches per Ray block, hence per shard (a shard is the unit of commit)
DECODED = ("id", "image_id", "path", "content_hash", "width", "height", "stage", "reason")


def check_options(engine: str, address: str | None, gpus_per_worker: float, actors: int) -> None:
    """Bad engine options fail before anything is read or written."""
    if engine not in ("local", "ray"):
        raise InputError(f"--engine {engine!r}: choose local or ray")
    if engine == "local":
        given = [name for name, value, default in (("--ray-address", address, None),
                                                   ("--ray-gpus-per-worker", gpus_per_worker, 0.0),
                                                   ("--ray-actors", actors, 1)) if value != default]
        if given:
            raise InputError(f"{', '.join(given)} only apply with --engine ray; add --engine ray or leave them out")
        return
    if gpus_per_worker < 0:
        raise InputError(f"--ray-gpus-per-worker {gpus_per_worker}: give 0 (CPU actors) or more, e.g. 1")
    if actors < 1:
        raise InputError(f"--ray-actors {actors}: give 1 or more model actors")
    if address is not None and address != "auto" and not re.fullmatch(r"[\w.\-\[\]:]+:\d{1,5}", address):
        raise InputError(f"--ray-address {address!r}: give auto or HOST:PORT (the head node's GCS port, e.g. 10.0.0.5:6379)")
    import importlib.util

    if importlib.util.find_spec("ray") is None:  # (not imported here: `cluster` sets its environment first)
        raise InputError(f"--engine ray needs Ray Data, which is not installed: pip install \"{RAY_REQUIREMENT}\"")
    if address not in (None, "auto"):
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
        except OSError as err:
            raise InputError(f"--ray-address {address}: no Ray head node answers there ({err.strerror or err}); "
                             "start one with `ray start --head` or check the address") from None


@contextlib.contextmanager
def cluster(address: str | None, cpus: int, progress: bool = False):
    """Connected to the Ray cluster at `address` (auto | HOST:PORT); without one, a local cluster
    with `cpus` CPUs, bound to the loopback interface, is started for the run and shut down after.
    Yields the address of every node. A cluster that cannot be reached is an InputError."""
    # On Linux Ray binds the host's interface unless this is 0 (read when ray is imported): a
    # run-local cluster stays on 127.0.0.1.
    env = {} if address else {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    quiet = logging.getLogger("ray.data")
    level = quiet.level
    try:
        import ray
        from ray._private import ray_constants
        from ray.data import DataContext

        quiet.setLevel(logging.ERROR)  # Ray Data's execution plan and timings at INFO, on every run
        try:
            if address:
                ray.init(address=address, logging_level="ERROR", log_to_driver=False)
            else:  # (ray imported before this run read the variable already: the same, said to ray)
                enabled, ray_constants.ENABLE_RAY_CLUSTER = ray_constants.ENABLE_RAY_CLUSTER, False
                try:
                    ray.init(num_cpus=cpus, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
                finally:
                    ray_constants.ENABLE_RAY_CLUSTER = enabled
        except ConnectionError as err:
            raise InputError(f"--ray-address {address}: {str(err).splitlines()[0]} "
                             "(start a head node with `ray start --head`, or leave out --ray-address "
                             "for a local cluster)") from None
        try:
            DataContext.get_current().enable_progress_bars = progress
            yield [n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")]
        finally:
            ray.shutdown()
    finally:
        quiet.setLevel(level)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run(st, version: str, items, *, model: str, pretrained: str | None, device: str, precision: str,
        preprocess, batch_size: int, actors: int, gpus_per_worker: float):
    """Encode `items` ((store id, image_id, path, stored hash or None)) into shards of `version`
    and ingest them; returns `Storage.ingest_shards`'s `Ingested` (skipped = the rest)."""
    import ray
    from PIL import Image
    from ray.data import ActorPoolStrategy

    shape = tuple(preprocess(Image.new("RGB", (8, 8))).shape)
    rows = [{"id": int(i), "image_id": image_id, "path": path, "known": known or ""}
            for i, image_id, path, known in items]
    blocks = max(1, -(-len(rows) // (batch_size * BLOCK_BATCHES)))
    ds = ray.data.from_items(rows, override_num_blocks=blocks)
    ds = ds.map_batches(_decode, fn_kwargs={"preprocess": preprocess, "shape": shape}, batch_size=batch_size,
                        batch_format="numpy", num_cpus=1)
    # max_restarts=0: an actor that dies fails the job (run it again: it resumes) rather than being
    # restarted by Ray. Given per actor (ray_remote_args_fn), it also keeps the decode tasks out of
    # the actors (Ray fuses a task map into an actor map only when neither has such a function),
    # so decoding runs in CPU tasks beside the model, as it must when the actors hold GPUs.
    # (Ray 2.60 warns that ray_remote_args_fn goes in 2.64; ray is pinned to 2.60.)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ray_remote_args_fn.*deprecated")
        ds = ds.map_batches(_Embedder, fn_constructor_kwargs={"model": model, "pretrained": pretrained,
                                                              "device": device, "precision": precision},
                            batch_size=batch_size, batch_format="numpy", compute=ActorPoolStrategy(size=actors),
                            num_cpus=1, num_gpus=gpus_per_worker or None, ray_remote_args_fn=_no_restarts)
    folder = st.shard_dir(version)
    folder.mkdir(parents=True, exist_ok=True)
    ds.write_parquet(str(folder))  # every node writes here: the store must be on a shared file system
    return st.ingest_shards(version)


def _no_restarts() -> dict:
    return {"max_restarts": 0}


def _decode(batch: dict, preprocess, shape: tuple) -> dict:
    """A Ray task: hash, decode and preprocess a batch with the local engine's mapper; already
    stored images are dropped, unreadable ones kept as error rows (zero pixels)."""
    import torch

    from embedstore.data.images import prepare_image

    torch.set_num_threads(1)  # decoding tasks must not compete with the forward pass
    out: dict[str, list] = {k: [] for k in (*DECODED, "pixels")}
    for sid, image_id, path, known in zip(batch["id"], batch["image_id"], batch["path"], batch["known"]):
        item = prepare_image(int(sid), str(image_id), str(path), str(known) or None, preprocess)
        if item["status"] == "skip":
            continue
        ok = item["status"] == "ok"
        out["id"].append(item["id"])
        out["image_id"].append(item["image_id"])
        out["path"].append(item["path"])
        out["content_hash"].append(item["hash"] if ok else "")
        out["width"].append(item["size"][0] if ok else 0)
        out["height"].append(item["size"][1] if ok else 0)
        out["stage"].append("" if ok else item["stage"])
        out["reason"].append("" if ok else item["reason"])
        out["pixels"].append(item["tensor"].numpy() if ok else np.zeros(shape, np.float32))
    return {
        "id": np.asarray(out["id"], dtype=np.int64),
        **{k: np.asarray(out[k], dtype=object) for k in ("image_id", "path", "content_hash", "stage", "reason")},
        "width": np.asarray(out["width"], dtype=np.int32), "height": np.asarray(out["height"], dtype=np.int32),
        "pixels": np.stack(out["pixels"]).astype(np.float32) if out["pixels"] else np.zeros((0, *shape), np.float32),
    }


class _Embedder:
    """A Ray actor: loads the model once, embeds each decoded batch; error rows pass with a null vector."""

    def __init__(self, model: str, pretrained: str | None, device: str, precision: str):
        from embedstore.models import load_model

        self.loaded = load_model(model, pretrained=pretrained, device=device, precision=precision)

    def __call__(self, batch: dict):
        import pyarrow as pa
        import torch

        ok = np.asarray(batch["stage"] == "", dtype=bool)
        vectors: list = [None] * len(ok)
        if ok.any():
            with torch.inference_mode():
                X = np.asarray(self.loaded.encode_images(torch.from_numpy(np.ascontiguousarray(batch["pixels"][ok]))),
                               dtype=np.float32)
            for row, vector in zip(np.flatnonzero(ok), X):
                vectors[row] = vector
        none_if_ok = lambda col: [None if good else str(v) for good, v in zip(ok, batch[col])]  # noqa: E731
        return pa.table({
            "id": pa.array(batch["id"], pa.int64()),
            "content_hash": pa.array([str(h) if good else None for good, h in zip(ok, batch["content_hash"])], pa.string()),
            "vector": pa.array(vectors, pa.list_(pa.float32())),
            "width": pa.array(np.asarray(batch["width"], np.int32), pa.int32()),
            "height": pa.array(np.asarray(batch["height"], np.int32), pa.int32()),
            "image_id": pa.array([str(v) for v in batch["image_id"]], pa.string()),
            "path": pa.array([str(v) for v in batch["path"]], pa.string()),
            "stage": pa.array(none_if_ok("stage"), pa.string()),
            "reason": pa.array(none_if_ok("reason"), pa.string()),
        })
