"""`embedstore encode`: reader -> mapper (hash, decode, preprocess in worker processes) -> model -> store.

Exactly-once: each batch's vectors, content hashes and errors are committed to DuckDB in one
transaction, and an image whose content hash is already stored in the version is skipped
before it is decoded. The FAISS index is derived from DuckDB at the end of the run (and
whenever its recorded checksum or count disagrees), written to a temporary file and renamed.
A run killed at any moment and started again therefore encodes every image exactly once.

Exit codes (CLI): 0 every image encoded or already stored; 3 partial success (some images
failed or had no file; they are in the `errors` table); 2 bad input; 75 store busy.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from embedstore.errors import InputError

EXIT_OK = 0
EXIT_PARTIAL = 3


@dataclass
class EncodeSummary:
    """What one `encode` run did."""

    version: str
    encoded: int = 0  # images newly encoded (or re-encoded because their content changed)
    skipped: int = 0  # already stored in this version with the same content hash
    failed: int = 0  # unreadable or missing files (see the `errors` table)
    texts: int = 0  # prompt embeddings added
    seconds: float = 0.0
    index_rebuilt: bool = False
    split_by_hash: int = 0  # new images of new groups in a store that already had splits (hash of the group)
    errors: list[dict] = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        return self.encoded / self.seconds if self.seconds > 0 else 0.0

    @property
    def exit_code(self) -> int:
        return EXIT_PARTIAL if self.failed else EXIT_OK

    def as_dict(self) -> dict:
        out = asdict(self)
        out.pop("errors")
        out["images_per_s"] = round(self.images_per_s, 2)
        return out


# ---- the mapper: runs in DataLoader worker processes -------------------------------------
class _ImageItems:
    """A torch-style map dataset: item i -> hash, then (only if new) decode + preprocess."""

    def __init__(self, items: list[tuple[int, str, str, str | None]], preprocess):
        self.items = items  # (store id, image_id, path, hash already stored or None)
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        from embedstore.data.images import content_hash, read_image

        sid, image_id, path, known = self.items[i]
        base = {"id": sid, "image_id": image_id, "path": path}
        try:
            digest = content_hash(path)
        except Exception as err:  # noqa: BLE001 - any unreadable file becomes an errors row
            return {**base, "status": "error", "stage": "read", "reason": _reason(err)}
        if digest == known:
            return {**base, "status": "skip"}
        try:
            img = read_image(path)
            tensor = self.preprocess(img.convert("RGB"))
        except Exception as err:  # noqa: BLE001
            return {**base, "status": "error", "stage": "decode", "reason": _reason(err)}
        return {**base, "status": "ok", "hash": digest, "tensor": tensor, "size": tuple(img.size)}


def _reason(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text}"[:500]


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


def _worker_init(_worker_id: int) -> None:
    import torch

    torch.set_num_threads(1)  # decoding workers must not compete with the forward pass


def default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# ---- the pipeline ------------------------------------------------------------------------
def encode(
    source: str,
    dataset: str = "auto",
    model: str = "biomedclip",
    labels: str | None = None,
    images: str | None = None,
    batch_size: int = 32,
    workers: int | None = None,
    device: str = "auto",
    precision: str = "fp32",
    version: str | None = None,
    store: Any = None,
    pretrained: str | None = None,
    progress: bool = True,
    loaded: Any = None,
    boxes: str | None = None,
    box_format: str = "auto",
) -> EncodeSummary:
    """Encode every image of a data set (and its label prompts) once into the store.

    `source` is a path read by `read_dataset`, or an already read `Dataset`.

    Splits are the store's, frozen the first time an image is stored (`Store.upsert_images`): the
    reader's stratified (or given) splits count only for a store without splits yet; new groups
    of a store with splits are placed by a hash of their id (`EncodeSummary.split_by_hash`).

    `boxes` is an annotation file loaded into the store's `boxes` table beside the images; when it
    is not given, a `boxes.csv` next to the data set (the layout `embedstore synth` writes) is used.

    `loaded` lets a caller pass an already built `LoadedModel` (tests, benchmarks); otherwise
    `embedstore.models.load_model(model, pretrained, device, precision)` builds it.
    """
    from embedstore.store import Store

    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch_size}")
    from embedstore.data.records import Dataset

    st = store if isinstance(store, Store) else Store(store)
    ds = source if isinstance(source, Dataset) else _read_dataset(source, dataset=dataset, labels=labels, images=images)
    box_df = _read_boxes(boxes, box_format, ds)  # bad box files fail before the store is touched
    with st.connect(write=True):  # the lock is held for the whole run
        hashed_before = st.images_placed_by("hash")
        ids = st.upsert_images(ds.records, _assignment(ds))
        split_by_hash = st.images_placed_by("hash") - hashed_before
        if box_df is not None:
            st.write_boxes(box_df)
        if loaded is None:
            from embedstore.models import load_model

            loaded = load_model(model, pretrained=pretrained, device=resolve_device(device), precision=precision)
        ver = _choose_version(st, loaded, precision, version)
        summary = EncodeSummary(version=ver, split_by_hash=split_by_hash)
        summary.texts = encode_prompts(st, ver, loaded, ds.findings)
        _clear_old_errors(st, ver, [r.image_id for r in ds.records])
        missing = [
            {"image_id": r.image_id, "path": r.path, "stage": "read", "reason": "no image file for this record"}
            for r in ds.records if not r.path
        ]
        known = st.encoded_hashes(ver)
        items = [(ids[r.image_id], r.image_id, r.path, known.get(ids[r.image_id])) for r in ds.records if r.path]
        start = time.perf_counter()
        before = st.index_state(ver)
        _run_batches(st, ver, loaded, items, batch_size, default_workers() if workers is None else workers,
                     summary, progress)
        if missing:
            st.write_errors(ver, missing)
            summary.failed += len(missing)
            summary.errors += missing
        summary.seconds = time.perf_counter() - start
        summary.index_rebuilt = refresh_index(st, ver, before, summary)
    return summary


def _assignment(ds):
    """How the reader drew the data set's splits, for the store to record when it freezes them."""
    from embedstore.data.splits import Assignment

    return Assignment(ds.split_method, ds.split_seed, ds.split_fractions)


def _choose_version(st, loaded, precision: str, version: str | None) -> str:
    """Same model record and dtype -> the same version; a different model -> a new one."""
    record = _record_dict(loaded)
    if version is not None:
        info = st.version_info(version)
        from embedstore.store import stable_hash

        if info["record_hash"] != stable_hash({"record": record, "dtype": precision}):
            raise InputError(
                f"version {version} was made by model {info['model_name']!r} ({info['dtype']}); "
                "leave out --version to encode into the version of this model"
            )
        return version
    found = st.find_version(record, precision)
    if found:
        return found
    return st.create_version(None, record, record.get("preprocess"), precision, "encode")


def _record_dict(loaded) -> dict:
    rec = loaded.record
    return rec.to_dict() if hasattr(rec, "to_dict") else dict(rec)


def _clear_old_errors(st, version: str, image_ids: list[str]) -> None:
    """Errors describe the latest attempt: those of images in this run are re-recorded."""
    import polars as pl

    frame = pl.DataFrame({"image_id": image_ids}, schema={"image_id": pl.String})
    with st.transaction() as con:
        con.register("run_ids", frame)
        con.execute("DELETE FROM errors WHERE version = ? AND image_id IN (SELECT image_id FROM run_ids)", [version])
        con.unregister("run_ids")


def encode_prompts(st, version: str, loaded, findings: list[str], batch: int = 64) -> int:
    """Store the prompt rows of `findings` and embed those the version lacks."""
    from embedstore.data.prompts import prompt_table
    from embedstore.store import text_hash

    table = prompt_table(findings)
    if table.is_empty():
        return 0
    st.upsert_prompts(table)
    with st.connect() as con:
        have = {r[0] for r in con.sql("SELECT text_hash FROM text_embeddings WHERE version = ?", params=[version]).fetchall()}
    todo = table.unique("text", keep="first", maintain_order=True)
    todo = todo.filter([text_hash(t) not in have for t in todo["text"]])
    for start in range(0, todo.height, batch):
        chunk = todo.slice(start, batch)
        M = np.asarray(loaded.encode_texts(chunk["text"].to_list()), dtype=np.float32)
        st.add_text_vectors(version, chunk, M)
    return todo.height


def encode_into(st, version: str, loaded, ids=None, batch_size: int = 32, workers: int | None = None,
                progress: bool = False, reencode: bool = False, on_batch=None) -> EncodeSummary:
    """Encode store images (`ids`, default every image with a file) into an existing `version`
    with `loaded`, through the same batches and workers as `encode`; the index is not touched.

    Images already stored in the version with the same content hash are skipped unless
    `reencode`. `on_batch(ids)` is called after each batch is committed (e.g. to collect
    per-image outputs a wrapper around `loaded` computed in the same forward pass).
    Used by `embedstore finetune` to fill a new version.
    """
    meta = st.images().select("id", "image_id", "path")
    if ids is not None:
        want = {int(i) for i in ids}
        meta = meta.filter(meta["id"].is_in(list(want)))
    known = {} if reencode else st.encoded_hashes(version)
    items = [(int(i), image_id, path, known.get(int(i))) for i, image_id, path in meta.iter_rows() if path]
    summary = EncodeSummary(version=version)
    start = time.perf_counter()
    _run_batches(st, version, loaded, items, batch_size, default_workers() if workers is None else workers,
                 summary, progress, on_batch=on_batch)
    summary.seconds = time.perf_counter() - start
    return summary


def _run_batches(st, version, loaded, items, batch_size, workers, summary, progress, on_batch=None) -> None:
    import torch
    from torch.utils.data import DataLoader

    if not items:
        return
    loader = DataLoader(
        _ImageItems(items, loaded.preprocess),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_collate,
        worker_init_fn=_worker_init if workers else None,
        prefetch_factor=4 if workers else None,
        multiprocessing_context="fork" if workers else None,
    )
    bar = _Progress(len(items), enabled=progress)
    t0 = time.perf_counter()
    with bar, torch.inference_mode():
        for batch in loader:
            X = loaded.encode_images(batch["tensor"]) if batch["tensor"] is not None else np.zeros((0, 0), np.float32)
            st.add_image_vectors(version, batch["ids"], batch["hashes"], np.asarray(X, dtype=np.float32),
                                 sizes=batch["sizes"], errors=batch["errors"])
            if on_batch is not None and len(batch["ids"]):
                on_batch(batch["ids"])
            summary.encoded += len(batch["ids"])
            summary.skipped += batch["skipped"]
            summary.failed += len(batch["errors"])
            summary.errors += batch["errors"]
            bar.advance(batch["n"], summary.encoded / max(time.perf_counter() - t0, 1e-9))


def refresh_index(st, version: str, before: dict, summary: EncodeSummary) -> bool:
    """Bring the version's index in line with DuckDB; return True if it was written.

    When the index was current before the run and the run only appended, the new vectors are
    added to it (HNSW builds are slow); otherwise it is rebuilt from DuckDB.
    """
    from embedstore.store import index as idx

    if st.index_is_current(version):
        return False
    after = st.index_state(version)
    appended = after["rows"] - (before["rows"] or 0)
    if (
        before["exists"] and before["index_count"] == before["rows"] and appended > 0
        and appended == summary.encoded and before["checksum"] is not None
        and idx.file_checksum(st.index_path(version)) == before["checksum"]
    ):
        index = idx.load(st.index_path(version))
        have = set(idx.index_ids(index).tolist())
        all_ids, _ = st.image_vectors(version)
        new = np.array([i for i in all_ids.tolist() if i not in have], dtype=np.int64)
        if len(new) == appended and idx.kind_of(index) == "hnsw":
            nid, X = st.image_vectors_for(version, new)
            index.add_with_ids(X, nid)
            checksum = idx.write_atomic(index, st.index_path(version))
            with st.transaction() as con:
                con.execute("UPDATE versions SET index_checksum = ?, index_count = ? WHERE version = ?",
                            [checksum, index.ntotal, version])
            return True
    st.rebuild_index(version)
    return True


class _Progress:
    """A rich progress bar on stderr with images/s; silent when disabled."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self._p = total, enabled, None

    def __enter__(self):
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._p = Progress(TextColumn("encoding"), BarColumn(), MofNCompleteColumn(),
                               TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                               console=Console(stderr=True), transient=False)
            self._p.__enter__()
            self._task = self._p.add_task("encode", total=self.total, rate="")
        return self

    def advance(self, n: int, rate: float) -> None:
        if self._p is not None:
            self._p.update(self._task, advance=n, rate=f"{rate:.1f} images/s")

    def __exit__(self, *exc):
        if self._p is not None:
            self._p.__exit__(*exc)
        return False


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


def _read_dataset(source, **kw):
    from embedstore.data.datasets import read_dataset

    return read_dataset(source, **kw)
