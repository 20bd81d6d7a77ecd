"""`embedstore finetune`: train a version's model on the store's train split and write a *new version*.

The parent version's model is loaded (`models.load_model(version)`), trained with the core in
`loop.py` (`bce`: image tower + linear head; `contrastive`: CLIP loss against report text and
label prompts), exported to `store/checkpoints/<version>/` in the open_clip `local-dir:` layout
(plus `head.safetensors` for `bce` and `finetune.json`, the training record), and every image of
the parent and every text of the parent is re-encoded into the new version, which gets its own
FAISS index. The parent's rows and index are never written.

Resume and reuse. The run is keyed by a hash of its arguments, the parent version and the data it
trains on (`key`); its checkpoints live in `store/checkpoints/.work-<key>/` until the new version
is complete, so a killed run started again with the same arguments continues from its last saved
epoch (or, if training had finished, from the re-encoding, which skips what is already stored).
A finished run with the same key is reused unless `force`. The version row is created only after
training ends, together with the ids it trained and early-stopped on (`fit_images`), so that no
analysis scores it on them; it counts as complete once its `finetune` run (metrics, head scores) is written.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from embedstore.errors import InputError, StoreError
from embedstore.results import Row

OBJECTIVES = ("bce", "contrastive")
HEAD_INITS = ("zeroshot", "random")
RUN_KIND = "finetune"  # the run written last: training history, head metrics on test, head logits
HEAD_FILE = "head.safetensors"
RECORD_FILE = "finetune.json"


@dataclass
class FinetuneResult(Row):
    """What one `finetune` call did (`.to_polars()`: one row of `as_dict`: version, parent,
    objective, train, epochs, best val AUROC, reuse, counts, seconds)."""

    version: str
    parent: str
    objective: str
    train: str
    key: str  # hash of the arguments, parent and data: names the work folder
    epochs_run: int = 0  # epochs trained in all (across resumed calls)
    trained_now: list[int] = field(default_factory=list)  # epochs trained by this call (1-based)
    best_epoch: int = 0
    best_val_auroc: float = float("nan")
    resumed_from: int = 0  # last finished epoch found when this call started (0 = fresh)
    stopped_early: bool = False
    reused: bool = False  # a finished run with the same key existed: nothing trained or written
    encoded: int = 0  # images encoded into the new version by this call
    texts: int = 0  # texts encoded into the new version by this call
    run_id: str | None = None
    checkpoint: str = ""
    seconds: float = 0.0
    history: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        out = asdict(self)
        out.pop("history")
        out["trained_now"] = ",".join(map(str, self.trained_now))
        out["best_val_auroc"] = round(self.best_val_auroc, 4) if self.best_val_auroc == self.best_val_auroc else None
        out["seconds"] = round(self.seconds, 1)
        return out


# ---- the command -----------------------------------------------------------------------------
def finetune(
    st,
    from_version: str | None = None,
    objective: str = "bce",
    train: str = "vision",
    epochs: int = 10,
    lr: float = 1e-4,
    batch_size: int = 32,
    accumulate: int = 1,
    device: str = "auto",
    precision: str = "fp32",
    seed: int = 0,
    patience: int = 3,
    weight_decay: float = 0.05,
    warmup: float = 0.1,
    head_init: str = "zeroshot",
    workers: int | None = None,
    force: bool = False,
    progress: bool = False,
    on_epoch: Callable[[dict], None] | None = None,
) -> FinetuneResult:
    """Fine-tune the model of `from_version` (latest when None) into a new version beside it.

    `objective`: "bce" or "contrastive"; `train`: "vision", "all" or "last-N-blocks";
    `precision`: "fp32" or "auto" (mixed precision on GPU). `head_init` (bce): "zeroshot" starts
    the head from the parent's pos-neg zero-shot classifier on unit vectors, so training starts
    at the parent's zero-shot scores; "random" from a random head on the raw tower output.
    Trains on the images whose split is "train", early-stops on "val". See the module docstring
    for resume and reuse.
    """
    from embedstore.finetune.loop import TrainConfig
    from embedstore.models.registry import resolve_device
    from embedstore.store import stable_hash
    from embedstore.store.lock import WriteLock

    started = time.perf_counter()
    if objective not in OBJECTIVES:
        raise InputError(f"--objective {objective!r}: use one of {', '.join(OBJECTIVES)}")
    if head_init not in HEAD_INITS:
        raise InputError(f"--head-init {head_init!r}: use one of {', '.join(HEAD_INITS)}")
    parent_version = st.version(from_version)
    parent = parent_version.id
    data = TrainingData.read(st, parent)
    settings = {"objective": objective, "train": train, "epochs": epochs, "lr": lr, "batch_size": batch_size,
                "accumulate": accumulate, "precision": precision, "seed": seed, "patience": patience,
                "weight_decay": weight_decay, "warmup": warmup}
    if objective == "bce" and head_init != "random":  # absent = random head, as before head_init existed
        settings["head_init"] = head_init
    key = stable_hash({"parent": parent, "record_hash": parent_version.record_hash, "data": data.fingerprint(), **settings})
    # the training settings, validated before anything is written
    config = TrainConfig(device=resolve_device(device),
                         **{k: v for k, v in settings.items() if k not in ("objective", "head_init")})

    done = None if force else find_finetuned(st, key, complete=True)
    if done:
        return _reused(st, done, parent, key, started)
    ckpt_root = st.path / "checkpoints"
    work = ckpt_root / f".work-{key}"
    # One fine-tune at a time per store (the store's own lock is held only while writing the version,
    # so queries and analyses keep running during training).
    lock = WriteLock(ckpt_root / ".finetune.lock")
    lock.acquire()
    try:
        pending = find_finetuned(st, key, complete=False)
        if force and pending is None:
            shutil.rmtree(work, ignore_errors=True)  # start over, ignoring a killed run's epochs
        result = FinetuneResult(version="", parent=parent, objective=objective, train=train, key=key)
        head = None
        if pending is None:
            from embedstore.models import load_model

            loaded = load_model(parent_version, device=config.device)
            trained, head = _train(loaded, data, config, objective, head_init, work / "train", result, on_epoch,
                                   progress)
            folder = _export(trained, loaded, head, data, work / "export", settings, result, parent, key)
        result.seconds = time.perf_counter() - started  # recorded as the run's duration (training)
        with st.writer():  # the writer lock; DuckDB is opened per commit, so readers get in between
            if pending is None:
                version = _create_version(st, folder, parent, key, settings, data, head is not None, config.device)
            else:
                version = pending
                _fill_result_from_record(st, version, result)
            _write_version(st, version, data, result, batch_size, workers, progress, config.device)
        shutil.rmtree(work, ignore_errors=True)
    finally:
        lock.release()
    result.seconds = time.perf_counter() - started
    return result


# ---- training data -------------------------------------------------------------------------------
@dataclass
class TrainingData:
    """The parent version's images with their split, labels (1 / 0 / -1 / NaN) and report text."""

    ids: np.ndarray  # int64, every image of the parent version, by id
    hashes: list[str]
    paths: list[str]
    split: np.ndarray  # object
    findings: list[str]
    labels: np.ndarray  # float32 [n, F]
    reports: list[str]
    groups: np.ndarray  # object [n]: each image's patient (else study) group, for the bootstrap

    @classmethod
    def read(cls, st, version: str) -> "TrainingData":
        from embedstore.finetune.data import report_text

        known = st.encoded_hashes(version)
        if not known:
            raise InputError(f"version {version} has no image vectors; encode a data set first")
        meta = st.images()
        meta = meta.filter(meta["id"].is_in(list(known)))
        ids = meta["id"].to_numpy().astype(np.int64)
        findings = st.findings()
        if not findings:
            raise InputError(f"store {st.path} has no labels; fine-tuning needs labelled images (encode a labelled data set)")
        split = np.array(meta["split"].to_list(), dtype=object)
        for name in ("train", "val"):
            if not (split == name).any():
                present = ", ".join(sorted({str(s) for s in split}))
                raise InputError(f"no image of version {version} is in split {name!r} (fine-tuning trains on train and "
                                 f"early-stops on val); splits present: {present}")
        reports = [report_text(f, i) for f, i in zip(meta["findings"].to_list(), meta["impression"].to_list())]
        group_of = dict(st.image_groups().select("id", "group_id").iter_rows())
        groups = np.array([group_of[int(i)] for i in ids], dtype=object)
        return cls(ids, [known[int(i)] for i in ids], meta["path"].to_list(), split, findings,
                   st.label_matrix(ids, findings), reports, groups)

    def fit_ids(self) -> dict[str, np.ndarray]:
        """role -> ids: the images trained on (train) and early-stopped on (val), stored with the
        version so that it is never scored on them (`analyses.runs.refuse_fitted`)."""
        return {role: self.ids[self.split == role] for role in ("train", "val")}

    def fingerprint(self) -> str:
        from embedstore.store import fingerprint

        return fingerprint(self.ids, np.nan_to_num(self.labels, nan=9), self.split, self.hashes, self.findings,
                           self.reports)

    def datasets(self, objective: str, image_size: int, mean, std, seed: int):
        """Train and validation `PairDataset`s (train gets augmentation and, for contrastive, texts)."""
        from embedstore.finetune.data import PairDataset, decode_images

        tr, va = np.flatnonzero(self.split == "train"), np.flatnonzero(self.split == "val")
        texts = self.candidate_texts(tr) if objective == "contrastive" else None
        train = PairDataset(decode_images([self.paths[i] for i in tr], image_size), self.labels[tr], texts,
                            mean, std, augment=True, seed=seed)
        val = PairDataset(decode_images([self.paths[i] for i in va], image_size), self.labels[va], None, mean, std)
        return train, val

    def prompts(self) -> dict:
        from embedstore.finetune.data import prompt_sets

        return prompt_sets(self.findings)

    def candidate_texts(self, rows: np.ndarray) -> list:
        """Per image: its report, its positive label prompts ("No Finding" when none) and negatives."""
        from embedstore.finetune.data import NORMAL, candidate_texts, prompt_sets

        prompts, normal = self.prompts(), prompt_sets([NORMAL])[NORMAL][0]
        # uncertain (-1) and missing labels constrain nothing when matching texts in a batch
        clean = np.where((self.labels == 0) | (self.labels == 1), self.labels, np.nan).astype(np.float32)
        return [candidate_texts(clean[i], self.reports[i], prompts, normal) for i in rows]


# ---- training and export --------------------------------------------------------------------------
def _train(loaded, data: TrainingData, config, objective: str, head_init: str, out_dir: Path,
           result: FinetuneResult, on_epoch, progress: bool = False):
    """Train in `out_dir` (resuming there); fills `result`; returns (model with best weights, head or None)."""
    from embedstore.finetune.loop import seed_everything
    from embedstore.finetune.loop import train as run_training
    from embedstore.finetune.objectives import (BCEObjective, ContrastiveObjective, pos_weight_from_labels,
                                                zero_shot_head)

    rec = _record(loaded)
    model = loaded.model
    model.float()  # train in fp32 master weights whatever the parent's precision; autocast does the rest
    train_ds, val_ds = data.datasets(objective, int(rec["image_size"]), rec["preprocess"]["mean"],
                                     rec["preprocess"]["std"], config.seed)
    seed_everything(config.seed)  # a random head's initial weights depend on the seed only
    if objective == "bce":
        unit = head_init == "zeroshot"
        init = zero_shot_head(model, loaded.tokenizer, data.prompts(), device=config.device) if unit else None
        obj = BCEObjective(model.visual, int(rec["embed_dim"]), len(data.findings),
                           pos_weight_from_labels(train_ds.labels.numpy()), normalize=unit, init=init)
    else:
        obj = ContrastiveObjective(model, loaded.tokenizer, data.prompts())
    res = run_training(obj, train_ds, val_ds, config, out_dir, on_epoch=on_epoch, progress=progress)
    result.trained_now, result.best_epoch, result.best_val_auroc = res.epochs_run, res.best_epoch, res.best_auroc
    result.epochs_run = len(res.history)
    result.resumed_from, result.stopped_early, result.history = res.resumed_from, res.stopped_early, res.history
    model.eval()
    return model, (obj.module.head if objective == "bce" else None)


def _record(loaded) -> dict:
    rec = loaded.record
    rec = rec.to_dict() if hasattr(rec, "to_dict") else dict(rec)
    if not rec.get("arch"):
        raise InputError(f"the model record of {rec.get('name')!r} has no open_clip architecture (arch); "
                         "only versions encoded with a registry model can be fine-tuned")
    return rec


def _export(model, loaded, head, data: TrainingData, folder: Path, settings: dict, result: FinetuneResult,
            parent: str, key: str) -> Path:
    """The checkpoint folder, complete, in the work folder: local-dir layout + head + training record."""
    from safetensors.torch import save_file

    from embedstore.models import export_model

    rec = _record(loaded)
    shutil.rmtree(folder, ignore_errors=True)
    export_model(model, folder, rec["arch"], rec["preprocess"], tokenizer=loaded.tokenizer, precision="fp32",
                 source=f"finetune:{parent}", revision=key)
    if head is not None:
        save_file({k: v.detach().float().contiguous().cpu() for k, v in head.state_dict().items()},
                  str(folder / HEAD_FILE))
    record = {"parent": parent, "parent_model": rec.get("name"), "key": key, "settings": settings,
              "findings": data.findings, "head": HEAD_FILE if head is not None else None,
              "train_images": int((data.split == "train").sum()), "val_images": int((data.split == "val").sum()),
              "best_epoch": result.best_epoch, "best_val_auroc": result.best_val_auroc,
              "stopped_early": result.stopped_early, "history": result.history}
    (folder / RECORD_FILE).write_text(json.dumps(record, indent=2, default=float))
    return folder


def _create_version(st, folder: Path, parent: str, key: str, settings: dict, data: TrainingData, has_head: bool,
                    device: str) -> str:
    """Move the checkpoint to checkpoints/<version>/ and register the version (store lock held, so
    the id `next_version_id` gives is the one `create_version` takes)."""
    from embedstore.models import load_model

    version = st.next_version_id()
    target = st.path / "checkpoints" / version
    shutil.rmtree(target, ignore_errors=True)  # left by a run killed before its version row was written
    os.replace(folder, target)
    tuned = load_model(f"local-dir:{target}", device=device)
    record = tuned.record.to_dict()
    record["finetune"] = {"parent": parent, "key": key, "head": HEAD_FILE if has_head else None,
                          "findings": data.findings, **settings}
    made = st.create_version(parent, record, record["preprocess"], "fp32", "finetune", fit_ids=data.fit_ids(),
                             checkpoint=f"checkpoints/{version}")
    if made != version:
        raise StoreError(f"fine-tune expected to create version {version} but the store made {made}; "
                         "another writer changed the store: run `embedstore verify`")
    return version


def find_finetuned(st, key: str, complete: bool) -> str | None:
    """The latest fine-tuned version made with `key`: complete (its `finetune` run written) or not."""
    return next((v for v, done in st.finetuned_with_key(key, RUN_KIND) if done == complete), None)


def _fill_result_from_record(st, version: str, result: FinetuneResult) -> None:
    rec = json.loads((st.version(version).checkpoint / RECORD_FILE).read_text())
    result.best_epoch, result.best_val_auroc = rec["best_epoch"], rec["best_val_auroc"]
    result.stopped_early, result.history = rec["stopped_early"], rec["history"]
    result.epochs_run = len(rec["history"])
    result.resumed_from = result.epochs_run  # training had finished: nothing left to train


def _reused(st, version: str, parent: str, key: str, started: float) -> FinetuneResult:
    # Its run is written only after its vectors, texts and index: a run killed between that and the
    # status update left it `building`, and this call finishes it.
    st.complete_version(version)
    made = st.version(version)
    ft = made.finetune
    result = FinetuneResult(version=version, parent=parent, objective=ft["objective"], train=ft["train"], key=key,
                            reused=True, checkpoint=str(made.checkpoint))
    _fill_result_from_record(st, version, result)
    result.run_id = st.find_run(RUN_KIND, version, _run_config(st, version))
    result.seconds = time.perf_counter() - started
    return result


# ---- filling the new version ---------------------------------------------------------------------
class _HeadCapture:
    """Wraps a `LoadedModel` so one forward pass gives both the stored unit vectors and the head's
    logits (the head reads the image tower's output before normalisation)."""

    def __init__(self, loaded, head):
        self.loaded, self.head = loaded, head.to(loaded.device).eval()
        self.model, self.preprocess, self.tokenizer, self.record = loaded.model, loaded.preprocess, loaded.tokenizer, loaded.record
        self.logits: dict[int, np.ndarray] = {}
        self._last = None

    def encode_images(self, batch) -> np.ndarray:
        import torch

        with torch.inference_mode():
            raw = self.model.encode_image(batch.to(self.loaded.device, dtype=self.loaded.dtype)).float()
            self._last = self.head(raw).cpu().numpy()
            return torch.nn.functional.normalize(raw, dim=-1).cpu().numpy().astype(np.float32)

    def encode_texts(self, texts):
        return self.loaded.encode_texts(texts)

    def collect(self, ids) -> None:
        self.logits.update(zip(np.asarray(ids).tolist(), self._last))


def _write_version(st, version: str, data: TrainingData, result: FinetuneResult, batch_size: int,
                   workers: int | None, progress: bool, device: str) -> None:
    """Re-encode images and texts into `version` (skipping what is stored), index it, write its run."""
    from embedstore.encode import encode_into, encode_prompts
    from embedstore.models import load_model
    from embedstore.models.heads import load_head

    made = st.version(version)
    loaded = load_model(made, device=device)
    head = load_head(made)[0] if made.finetune.get("head") else None
    model = _HeadCapture(loaded, head) if head is not None else loaded
    on_batch = model.collect if head is not None else None
    summary = encode_into(st, version, model, ids=data.ids, batch_size=batch_size, workers=workers,
                          progress=progress, on_batch=on_batch)
    if head is not None:
        missing = [int(i) for i in data.ids if int(i) not in model.logits]  # encoded by a killed earlier call
        if missing:
            encode_into(st, version, model, ids=missing, batch_size=batch_size, workers=workers,
                        reencode=True, on_batch=on_batch)
    if summary.failed:
        err = summary.errors[0]
        raise InputError(f"{summary.failed} image(s) of the parent version could not be read again (first: "
                         f"{err['path']}: {err['reason']}); restore them and run the same finetune again")
    result.encoded = summary.encoded
    result.texts = _encode_texts(st, result.parent, version, loaded) + encode_prompts(st, version, loaded, data.findings)
    st.rebuild_index(version)
    result.version, result.checkpoint = version, str(made.checkpoint)
    result.run_id = _write_run(st, version, data, result, head, model)
    st.complete_version(version)


def _encode_texts(st, parent: str, version: str, loaded, batch: int = 64) -> int:
    """Every text the parent has (prompts and cached queries), embedded by the new text tower."""
    todo = st.texts_missing(parent, version)
    for start in range(0, todo.height, batch):
        chunk = todo.slice(start, batch)
        st.add_text_vectors(version, chunk, np.asarray(loaded.encode_texts(chunk["text"].to_list()), dtype=np.float32))
    return todo.height


def _run_config(st, version: str) -> dict:
    return {k: v for k, v in st.version(version).finetune.items() if k != "checkpoint"}


def _write_run(st, version: str, data: TrainingData, result: FinetuneResult, head, model) -> str:
    """The `finetune` run: training history and, for bce, the head's test metrics and every image's logits."""
    import datetime as _dt

    import polars as pl

    from embedstore.analyses.metrics import METRIC_COLUMNS
    from embedstore.analyses.scoring import score_method

    rows = [{"finding": None, "metric": "best_epoch", "value": float(result.best_epoch)},
            {"finding": None, "metric": "best_val_macro_auroc", "value": float(result.best_val_auroc)}]
    rows += [{"finding": None, "metric": f"{metric}@epoch{h['epoch']}", "value": float(h[key])}
             for metric, key in (("val_macro_auroc", "val_auroc"), ("train_loss", "loss"))
             for h in result.history]
    tables: dict[str, Any] = {"metrics": pl.DataFrame([{**r, "lo": None, "hi": None} for r in rows], schema=METRIC_COLUMNS)}
    if head is not None:
        L = np.stack([model.logits[int(i)] for i in data.ids]).astype(np.float64)
        if (data.split == "test").any():  # the head's threshold fitted on val like every method's
            scored, _ = score_method(data.ids, data.labels, data.split, data.groups, data.findings, L,
                                     (L > 0).astype(np.int8), 0.5 * (1.0 + np.tanh(0.5 * L)), version,
                                     every_image=True)
            scored["metrics"] = pl.concat([scored["metrics"], tables["metrics"]])
            tables.update(scored)
    return st.write_run(RUN_KIND, version, _run_config(st, version), _dt.datetime.now(), result.seconds, tables)
