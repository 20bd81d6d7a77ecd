"""Shared by the fine-tune tests: snapshots of a parent version, and a fine-tune killed after epoch 1."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path

TESTS = Path(__file__).resolve().parent

KILLED = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {tests!r})
    import torch
    torch.set_num_threads({threads})
    from embedstore.api import Store

    def on_epoch(row):
        print("EPOCH", row["epoch"], flush=True)
        time.sleep(600)  # killed here, after epoch 1's checkpoint was saved

    Store({store!r}).finetune({parent!r}, on_epoch=on_epoch, **{args!r})
""")


@contextmanager
def torch_threads(n: int):
    """torch's CPU threads set to `n` inside, restored after (sums, hence results, depend on it)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def parent_snapshot(st, version: str = "v1"):
    """Everything of `version` a fine-tune must leave alone: ids, vectors, texts, index checksum and bytes."""
    ids, X = st.image_vectors(version)
    texts, M = st.text_vectors(version)
    info = st.version_row(version)
    return ids, X, texts["text_hash"].to_list(), M, info["index_checksum"], sha256(st.index_path(version))


def kill_after_first_epoch(store_path: Path, args: dict, parent: str = "v1") -> dict:
    """Run `finetune(parent, **args)` in a subprocess, SIGKILL it once epoch 1 is saved; returns
    the work folder's state.json. The subprocess gets this process's environment and torch thread
    count, so its sums (hence its weights) are those of a run in this process."""
    import torch

    script = KILLED.format(tests=str(TESTS), store=str(store_path), parent=parent, args=args,
                           threads=torch.get_num_threads())
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "EPOCH 1", proc.stderr.read()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    work = [p for p in (store_path / "checkpoints").iterdir() if p.name.startswith(".work-") and p.is_dir()]
    assert len(work) == 1
    return json.loads((work[0] / "train" / "state.json").read_text())


KILLED_WRITING = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    import torch
    torch.set_num_threads({threads})
    from embedstore.api import Store
    from embedstore.store import Storage

    add = Storage.add_image_vectors

    def add_then_die(self, *a, **k):  # the new version's first commit of vectors is done, then SIGKILL
        n = add(self, *a, **k)
        print("BATCH", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        return n

    Storage.add_image_vectors = add_then_die
    Store({store!r}).finetune({parent!r}, **{args!r})
""")


def kill_while_writing_version(store_path: Path, args: dict, parent: str = "v1") -> None:
    """Run `finetune(parent, **args)` in a subprocess that SIGKILLs itself right after the new
    version's first commit of vectors (training done; texts, index and run not written)."""
    import torch

    script = KILLED_WRITING.format(tests=str(TESTS), store=str(store_path), parent=parent, args=args,
                                   threads=torch.get_num_threads())
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL and proc.stdout.strip() == "BATCH", proc.stderr[-2000:]
