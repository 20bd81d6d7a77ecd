"""`embedstore encode`: reader -> mapper (hash, decode, preprocess in worker processes) -> model -> store.

Exactly-once: the batches encoded since the last commit are committed to DuckDB together (vectors,
content hashes, errors) in one transaction, at most every `COMMIT_EVERY_S` seconds, and an image
whose content hash is already stored in the version is skipped before it is decoded. The writer
lock is held for the whole run, but the DuckDB file only while a commit is written, so readers
(query, sql, versions, report, ...) work during the run and see every commit so far. The FAISS index is derived from DuckDB at the end of the run (and
whenever its recorded checksum or count disagrees), written to a temporary file and renamed.
A run killed at any moment and started again therefore encodes every image exactly once.

Exit codes (CLI): 0 every image encoded or already stored; 3 partial success (some images
failed or had no file; they are in the `errors` table); 2 bad input; 75 store busy.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from embedstore.errors import InputError
from embedstore.progress import Progress

EXIT_OK = 0
EXIT_PARTIAL = 3
COMMIT_EVERY_S = 2.0  # group batches into one commit at most this often: opening the file costs ~25-60 ms
COMMIT_SHARE_MAX = 0.05  # and no sooner than 19x the last commit took, so commits stay under 5 % of the run
COMMIT_GAP_MAX_S = 10.0  # however slow a commit was (a reader held the file), commit at least this often


@dataclass
class EncodeResult:
    """What one `encode` run did."""

    version: str
    encoded: int = 0  # images newly encoded (or re-encoded because their content changed)
    skipped: int = 0  # already stored in this version with the same content hash
    failed: int = 0  # unreadable or missing files (see the `errors` table)
    texts: int = 0  # prompt embeddings added
    seconds: float = 0.0
    commits: int = 0  # transactions that wrote image vectors (batches are grouped by time)
    commit_seconds: float = 0.0  # time spent in those commits (open, write, commit, close), within `seconds`
    index_rebuilt: bool = False
    split_by_hash: int = 0  # new images of new groups in a store that already had splits (hash of the group)
    split_given_overridden: int = 0  # new images whose given split disagreed with their group's stored one
    engine: str = "local"  # local (DataLoader workers) or ray (Ray Data)
    recovered: int = 0  # images stored from the shards an interrupted `--engine ray` run left
    errors: list[dict] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)  # --engine ray: the address of each node of the cluster

    @property
    def images_per_s(self) -> float:
        return self.encoded / self.seconds if self.seconds > 0 else 0.0

    @property
    def exit_code(self) -> int:
        return EXIT_PARTIAL if self.failed else EXIT_OK

    def as_dict(self) -> dict:
        out = asdict(self)
        out.pop("errors")
        out.pop("nodes")
        out["images_per_s"] = round(self.images_per_s, 2)
        return out

    def to_polars(self):
        """One row: version, encoded, skipped, failed, texts, seconds, commits, commit_seconds,
        index_rebuilt, split_by_hash, split_given_overridden, engine, recovered, images_per_s."""
        import polars as pl

        return pl.DataFrame([self.as_dict()])


# ---- the mapper: runs in DataLoader worker processes -------------------------------------
class _ImageItems:
    """A torch-style map dataset: item i -> hash, then (only if new) decode + preprocess."""

    def __init__(self, items: list[tuple[int, str, str, str | None]], preprocess):
        self.items = items  # (store id, image_id, path, hash already stored or None)
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        from embedstore.data.images import prepare_image

        return prepare_image(*self.items[i], self.preprocess)


def _collate(items: list[dict]) -> dict:
    import torch

    ok = [it for it in items if it["status"] == "ok"]
    return {
        "ids": np.array([it["id"] for it in ok], dtype=np.int64),
        "hashes": [it["hash"] for it in ok],
        "sizes": [it["size"] for it in ok],
        "tensor": torch.stack([it["tensor"] for it in ok]) if ok else None,
        "skipped": sum(it["status"] == "skip" for it in items),
        "errors": [{k: it[k] for k in ("image_id", "path", "stage", "reason")} for it in items if it["status"] == "error"],
        "n": len(items),
    }


def _worker_init(lock_fd: int | None, _worker_id: int) -> None:
    """A decoding worker: one thread, dies with its parent, and lets go of the store's lock."""
    import torch

    torch.set_num_threads(1)  # decoding workers must not compete with the forward pass
    _die_with_parent()
    if lock_fd is not None:  # a forked worker shares the writer's flock: closing its copy means a
        os.close(lock_fd)    # killed writer's lock is released at once, whatever its workers do


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent dies (prctl PR_SET_PDEATHSIG)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: DataLoader's own watchdog still ends orphaned workers


def default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 2) - 1))


# ---- the pipeline ------------------------------------------------------------------------
def encode(
    st,
    source,
    dataset: str = "auto",
    model: str = "biomedclip",
    pretrained: str | None = None,
    labels: str | None = None,
    images: str | None = None,
    boxes: str | None = None,
    box_format: str = "auto",
    batch_size: int = 32,
    workers: int | None = None,
    device: str = "auto",
    precision: str = "fp32",
    version: str | None = None,
    progress: bool = True,
    strict: bool = False,
    views: str | None = None,
    commit_every: float = COMMIT_EVERY_S,
    engine: str = "local",
    ray_address: str | None = None,
    ray_gpus_per_worker: float = 0.0,
    ray_actors: int = 1,
) -> EncodeResult:
    """Encode every image of a data set (and its label prompts) once into the store `st` (Storage).

    `source` is a path read by `read_dataset`, or an already read `Dataset`.

    Splits are the store's, frozen the first time an image is stored (`Store.upsert_images`): the
    reader's stratified (or given) splits count only for a store without splits yet; new groups
    of a store with splits are placed by a hash of their id (`EncodeResult.split_by_hash`).

    A report that cannot be read is recorded in `errors` (stage read) and the rest is encoded
    (exit 3, partial success), unless `strict`, which stops at the first. `views` gives the images'
    views from a CSV of image id to DICOM View Position (`data.views`).

    `boxes` is an annotation file loaded into the store's `boxes` table beside the images; when it
    is not given, a `boxes.csv` next to the data set (the layout `embedstore synth` writes) is used.

    The model is built by `embedstore.models.load_model(model, pretrained, device, precision)`.
    Batches are committed together at most every `commit_every` seconds (0: each batch alone), and
    no sooner than 19 times the last commit took (commits stay under 5 % of the run).

    `engine="ray"` runs the images through Ray Data (`encode_ray`): decoding in Ray tasks, the
    model in `ray_actors` actors with `ray_gpus_per_worker` GPUs each, on the cluster at
    `ray_address` (auto | HOST:PORT), else on a local one started for the run with `workers`
    CPUs for decoding plus one per actor. Shards an interrupted Ray run left are stored first
    (`recovered`), whichever the engine.
    """
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch_size}")
    from embedstore.encode_ray import check_options, cluster

    check_options(engine, ray_address, ray_gpus_per_worker, ray_actors)
    workers = default_workers() if workers is None else workers
    from embedstore.data.datasets import read_dataset
    from embedstore.data.records import Dataset
    from embedstore.data.splits import GROUP_OVER_GIVEN, Assignment

    # Everything that can fail on bad input fails before the first write: the store stays as it was.
    ds = source if isinstance(source, Dataset) else read_dataset(source, dataset=dataset, labels=labels, images=images,
                                                                 strict=strict, views=views)
    box_df = _read_boxes(boxes, box_format, ds)
    from embedstore.models import load_model

    loaded = load_model(model, pretrained=pretrained, device=device, precision=precision)
    if version is not None:
        _check_version(st, loaded, precision, version)
    with contextlib.ExitStack() as stack:  # a Ray cluster that cannot be reached fails before the first write
        nodes = (stack.enter_context(cluster(ray_address, max(1, workers) + ray_actors, progress))
                 if engine == "ray" else [])
        stack.enter_context(st.writer())  # the lock is held for the whole run, the DuckDB file only while committing
        with st.session():  # the store steps up to the prompts' model work open the file once, not eight times
            before = {m: st.images_placed_by(m) for m in ("hash", GROUP_OVER_GIVEN)}
            # the store records how the reader drew the data set's splits when it freezes them
            ids = st.upsert_images(ds.records, Assignment(ds.split_method, ds.split_seed, ds.split_fractions))
            placed = {m: st.images_placed_by(m) - n for m, n in before.items()}
            if box_df is not None:
                st.write_boxes(box_df)
            ver = _choose_version(st, loaded, precision, version)
        summary = EncodeResult(version=ver, split_by_hash=placed["hash"], split_given_overridden=placed[GROUP_OVER_GIVEN])
        summary.texts = encode_prompts(st, ver, loaded, ds.findings)
        missing = [
            {"image_id": r.image_id, "path": r.path, "stage": "read", "reason": "no image file for this record"}
            for r in ds.records if not r.path
        ] + [{"image_id": None, "path": b["file"], "stage": "read", "reason": b["reason"]} for b in ds.bad_reports]
        start = time.perf_counter()
        with st.session():
            st.clear_errors(ver, [r.image_id for r in ds.records], ds.source)  # errors describe the latest attempt
            before = st.index_state(ver)
        recovered = st.ingest_shards(ver)  # whole shards an interrupted Ray run left: stored, not encoded again
        summary.recovered, summary.failed, summary.errors = recovered.encoded, recovered.failed, recovered.errors
        known = st.encoded_hashes(ver)
        items = [(ids[r.image_id], r.image_id, r.path, known.get(ids[r.image_id])) for r in ds.records if r.path]
        if engine == "ray":
            summary.engine, summary.nodes = "ray", nodes
            _run_ray(st, ver, loaded, items, summary, model=model, pretrained=pretrained, device=device,
                     precision=precision, batch_size=batch_size, actors=ray_actors, gpus_per_worker=ray_gpus_per_worker)
        else:
            _run_batches(st, ver, loaded, items, batch_size, workers,
                         summary, progress, commit_every=commit_every)
        summary.skipped -= sum(item[0] in recovered.ids for item in items)  # counted in `recovered`
        if missing:
            st.write_errors(ver, missing)
            summary.failed += len(missing)
            summary.errors += missing
        summary.seconds = time.perf_counter() - start
        summary.index_rebuilt = st.refresh_index(ver, before, summary.encoded + summary.recovered)
        st.complete_version(ver)  # a killed run leaves it `building`: never the default until run again
    return summary


def _check_version(st, loaded, precision: str, version: str) -> None:
    """--version names a version of the store made by this very model."""
    from embedstore.store import stable_hash

    if not st.db_path.exists():
        raise InputError(f"--version {version}: store {st.path} has no versions yet; leave out --version")
    made = st.version(version)
    if made.record_hash != stable_hash({"record": _record_dict(loaded), "dtype": precision}):
        raise InputError(f"version {version} was made by model {made.model_name!r} ({made.dtype}); "
                         "leave out --version to encode into the version of this model")


def _choose_version(st, loaded, precision: str, version: str | None) -> str:
    """Same model record and dtype -> the same version; a different model -> a new one."""
    if version is not None:
        return version
    record = _record_dict(loaded)
    found = st.find_version(record, precision)
    if found:
        return found
    return st.create_version(None, record, record.get("preprocess"), precision, "encode")


def _record_dict(loaded) -> dict:
    rec = loaded.record
    return rec.to_dict() if hasattr(rec, "to_dict") else dict(rec)


def encode_prompts(st, version: str, loaded, findings: list[str], batch: int = 64) -> int:
    """Store the prompt rows of `findings` and embed those the version lacks."""
    from embedstore.data.prompts import prompt_table
    from embedstore.store import text_hash

    table = prompt_table(findings)
    if table.is_empty():
        return 0
    with st.session():
        st.upsert_prompts(table)
        have = st.text_hashes(version)
    todo = table.unique("text", keep="first", maintain_order=True)
    todo = todo.filter([text_hash(t) not in have for t in todo["text"]])
    chunks = [todo.slice(start, batch) for start in range(0, todo.height, batch)]
    vectors = [_prompt_vectors(loaded, c["text"].to_list()) for c in chunks]  # the file closed meanwhile
    if chunks:
        with st.session():  # each chunk still its own transaction
            for chunk, M in zip(chunks, vectors):
                st.add_text_vectors(version, chunk, M)
    return todo.height


# Prompt vectors this process embedded, per model (its record with the weights' hash, dtype and
# device): every encode of a data set embeds the same label prompts, so a process that fills
# several stores with one model (tests, a notebook) embeds them once. Cleared when it grows large.
_PROMPT_VECTORS: dict[str, dict[str, np.ndarray]] = {}
PROMPT_CACHE_MAX = 100_000  # vectors, all models together


def _prompt_vectors(loaded, texts: list[str]) -> np.ndarray:
    """`loaded.encode_texts(texts)` as float32, the texts this process already embedded with the
    same model taken from `_PROMPT_VECTORS` (only for models whose record names their weights)."""
    key = _model_key(loaded)
    if key is None:
        return np.asarray(loaded.encode_texts(texts), dtype=np.float32)
    known = _PROMPT_VECTORS.setdefault(key, {})
    todo = list(dict.fromkeys(t for t in texts if t not in known))
    if todo:
        if sum(map(len, _PROMPT_VECTORS.values())) + len(todo) > PROMPT_CACHE_MAX:
            _PROMPT_VECTORS.clear()
            known = _PROMPT_VECTORS.setdefault(key, {})
        known.update(zip(todo, np.asarray(loaded.encode_texts(todo), dtype=np.float32)))
    return np.stack([known[t] for t in texts]).astype(np.float32, copy=False)


def _model_key(loaded) -> str | None:
    """The weights, dtype and device a model embeds with; None when its record does not name its weights."""
    from embedstore.store import stable_hash

    record = _record_dict(loaded)
    dtype, device = getattr(loaded, "dtype", None), getattr(loaded, "device", None)
    if not record.get("weights_sha256") or dtype is None or device is None:
        return None
    return stable_hash({"record": record, "dtype": str(dtype), "device": str(device)})


def encode_into(st, version: str, loaded, ids=None, batch_size: int = 32, workers: int | None = None,
                progress: bool = False, reencode: bool = False, on_batch=None,
                commit_every: float = COMMIT_EVERY_S) -> EncodeResult:
    """Encode store images (`ids`, default every image with a file) into an existing `version`
    with `loaded`, through the same batches and workers as `encode`; the index is not touched.

    Images already stored in the version with the same content hash are skipped unless
    `reencode`. `on_batch(ids)` is called right after each batch's forward pass (e.g. to collect
    per-image outputs a wrapper around `loaded` computed in it); the batch is committed with the
    next group commit, and a run that fails before then raises, so nothing collected outlives it.
    Used by `embedstore finetune` to fill a new version.
    """
    meta = st.images().select("id", "image_id", "path")
    if ids is not None:
        want = {int(i) for i in ids}
        meta = meta.filter(meta["id"].is_in(list(want)))
    known = {} if reencode else st.encoded_hashes(version)
    items = [(int(i), image_id, path, known.get(int(i))) for i, image_id, path in meta.iter_rows() if path]
    summary = EncodeResult(version=version)
    start = time.perf_counter()
    _run_batches(st, version, loaded, items, batch_size, default_workers() if workers is None else workers,
                 summary, progress, on_batch=on_batch, commit_every=commit_every)
    summary.seconds = time.perf_counter() - start
    return summary


def _run_batches(st, version, loaded, items, batch_size, workers, summary, progress, on_batch=None,
                 commit_every: float = COMMIT_EVERY_S) -> None:
    import torch
    from torch.utils.data import DataLoader

    if not items:
        return
    loader = DataLoader(
        _ImageItems(items, loaded.preprocess),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_collate,
        worker_init_fn=functools.partial(_worker_init, st.lock_fd) if workers else None,
        prefetch_factor=4 if workers else None,
        multiprocessing_context="fork" if workers else None,
    )
    pending: list[dict] = []  # encoded batches not committed yet
    last, gap = time.monotonic(), commit_every  # the last commit's end; the time to the next one
    bar = Progress("encoding", len(items), enabled=progress)
    with bar, torch.inference_mode():
        for batch in loader:
            X = loaded.encode_images(batch["tensor"]) if batch["tensor"] is not None else np.zeros((0, 0), np.float32)
            # keep what the commit writes, not the batch's pixels: pending batches stay in memory until it
            pending.append({k: v for k, v in batch.items() if k != "tensor"} | {"X": np.asarray(X, dtype=np.float32)})
            if on_batch is not None and len(batch["ids"]):
                on_batch(batch["ids"])  # right after its forward pass: a wrapper's outputs are this batch's
            if time.monotonic() - last >= gap:
                took = _commit(st, version, pending, summary)
                last = time.monotonic()
                if commit_every > 0:  # a slow commit (a big file, a loaded machine) spaces the next ones out
                    gap = min(max(commit_every, took * (1 - COMMIT_SHARE_MAX) / COMMIT_SHARE_MAX), COMMIT_GAP_MAX_S)
            bar.advance(batch["n"])
        _commit(st, version, pending, summary)


def _commit(st, version, pending: list[dict], summary) -> float:
    """Write the pending batches in one transaction (`add_image_vectors`), count them; the seconds it took."""
    if not pending:
        return 0.0
    started = time.perf_counter()
    vectors = [b["X"] for b in pending if len(b["ids"])]
    st.add_image_vectors(version, np.concatenate([b["ids"] for b in pending]),
                         [h for b in pending for h in b["hashes"]],
                         np.concatenate(vectors) if vectors else np.zeros((0, 0), np.float32),
                         sizes=[s for b in pending for s in b["sizes"]], errors=[e for b in pending for e in b["errors"]])
    took = time.perf_counter() - started
    summary.commits += 1
    summary.commit_seconds += took
    for b in pending:
        summary.encoded += len(b["ids"])
        summary.skipped += b["skipped"]
        summary.failed += len(b["errors"])
        summary.errors += b["errors"]
    pending.clear()
    return took


def _run_ray(st, version, loaded, items, summary, **options) -> None:
    """The images of `items` through Ray Data (`encode_ray.run`); those it did not return were
    already stored with the same content hash."""
    from embedstore.encode_ray import run

    if not items:
        return
    done = run(st, version, items, preprocess=loaded.preprocess, **options)
    summary.encoded += done.encoded
    summary.failed += done.failed
    summary.errors += done.errors
    summary.skipped += len(items) - done.encoded - done.failed


def _read_boxes(boxes: str | None, box_format: str, ds):
    """The box file to store with this data set: the given one, else `boxes.csv` beside it.
    `box_format` is checked even when no file is given, so a mistyped one is never ignored."""
    from pathlib import Path

    from embedstore.data.boxes import BOX_FORMATS

    if box_format not in BOX_FORMATS:
        raise InputError(f"--box-format {box_format!r}: choose one of {', '.join(BOX_FORMATS)}")
    if boxes is None:
        beside = Path(ds.source) / "boxes.csv" if ds.source else None
        if beside is None or not beside.is_file():
            return None
        boxes, box_format = str(beside), "canonical"
    from embedstore.data.datasets import read_boxes

    return read_boxes(boxes, box_format=box_format)
