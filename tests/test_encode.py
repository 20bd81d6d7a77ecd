"""encode: every image once, skips by content hash, errors recorded, exactly-once after SIGKILL.

Models come from the registry by name (store_helpers: phantom-clip, and the session's tiny
open_clip `local-dir:` model), as `embedstore encode --model NAME` loads them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
from store_helpers import FINDINGS, MODEL, make_dataset, write_pngs  # noqa: E402

N_IMAGES = 14  # batch size 4 -> 4 batches


@pytest.fixture(scope="module")
def tiny(tiny_model):
    """(registry name, LoadedModel) of the session's tiny open_clip model."""
    from embedstore.models import load_model

    return tiny_model, load_model(tiny_model)


def _reference(loaded, paths):
    """Vectors computed directly by the model, one image at a time: independent of encode."""
    import torch
    from PIL import Image

    out = []
    for p in paths:
        with torch.inference_mode():
            x = loaded.preprocess(Image.open(p).convert("L").convert("RGB")).unsqueeze(0)
        out.append(loaded.encode_images(x)[0])
    return np.stack(out)


def _table(store_path, version="v1"):
    import duckdb

    con = duckdb.connect(str(Path(store_path) / "embedstore.duckdb"), read_only=True)
    try:
        rows = con.sql("SELECT i.image_id, e.content_hash FROM image_embeddings e JOIN images i USING (id) "
                       "WHERE e.version = ? ORDER BY i.image_id", params=[version]).fetchall()
    finally:
        con.close()
    return rows


def test_encode_stores_each_image_once_and_skips_on_rerun(tiny, tmp_path):
    from store_helpers import open_store as Store

    name, loaded = tiny
    paths = write_pngs(tmp_path / "img", 6)
    st = Store(tmp_path / "store")
    s1 = st.encode(make_dataset(paths), model=name, batch_size=4, workers=1).as_dict()
    assert (s1["encoded"], s1["skipped"], s1["failed"]) == (6, 0, 0)
    ids, X = st.image_vectors("v1")
    by_id = dict(zip(st.images()["id"].to_list(), st.images()["path"].to_list()))
    np.testing.assert_allclose(X, _reference(loaded, [by_id[i] for i in ids]), atol=1e-5)
    info = st.version_row("v1")
    assert info["logit_scale"] == pytest.approx(loaded.record.logit_scale) and info["dim"] == 32
    # prompts: several positive and several negative phrasings for every finding, all embedded
    df, M = st.text_vectors("v1")
    for f in FINDINGS:
        pol = df.filter(df["finding"] == f)["polarity"].to_list()
        assert pol.count("positive") >= 3 and pol.count("negative") >= 3
    assert len(M) == df.height
    # rerun: nothing encoded; new and changed images are (re-)encoded into the same version
    s2 = st.encode(make_dataset(paths), model=name, batch_size=4, workers=0).as_dict()
    assert (s2["version"], s2["encoded"], s2["skipped"]) == ("v1", 0, 6)
    more = write_pngs(tmp_path / "img", 8, seed=1)  # rewrites img000..img005 with new content, adds 2
    s3 = st.encode(make_dataset(more), model=name, batch_size=4, workers=1).as_dict()
    assert (s3["version"], s3["encoded"], s3["skipped"]) == ("v1", 8, 0)
    ids, X = st.image_vectors("v1")
    assert len(ids) == 8
    by_id = dict(zip(st.images()["id"].to_list(), st.images()["path"].to_list()))
    np.testing.assert_allclose(X, _reference(loaded, [by_id[i] for i in ids]), atol=1e-5)
    assert st.verify()["ok"].all()
    # changed pixels alone (no image added): the index follows DuckDB's replaced vectors
    write_pngs(tmp_path / "img", 8, seed=2)
    s4 = st.encode(make_dataset(more), model=name, batch_size=4, workers=0).as_dict()
    assert (s4["encoded"], s4["index_rebuilt"]) == (8, True)
    ids, X = st.image_vectors("v1")
    index = st.load_index("v1")
    np.testing.assert_allclose(np.stack([index.reconstruct(int(i)) for i in ids]), X, atol=1e-6)


def test_other_model_makes_new_version(tiny, tmp_path):
    from store_helpers import open_store as Store
    from embedstore.errors import InputError

    name, _ = tiny
    paths = write_pngs(tmp_path / "img", 3)
    st = Store(tmp_path / "store")
    st.encode(make_dataset(paths), model=MODEL, workers=0)
    s = st.encode(make_dataset(paths), model=name, workers=0).as_dict()
    assert (s["version"], s["encoded"]) == ("v2", 3)
    with pytest.raises(InputError, match=f"version v1 was made by model '{MODEL}'"):
        st.encode(make_dataset(paths), model=name, workers=0, version="v1")
    assert st.versions()["images"].to_list() == [3, 3]


def test_unreadable_images_are_recorded_and_the_rest_encoded(tiny, tmp_path):
    from store_helpers import open_store as Store

    name, _ = tiny
    paths = write_pngs(tmp_path / "img", 5)
    paths[1].write_bytes(b"not a png at all")  # corrupt
    paths[3].unlink()  # vanished
    st = Store(tmp_path / "store")
    last_encode = st.encode(make_dataset(paths, extra_missing=1), model=name, batch_size=2, workers=1)
    summary = last_encode
    assert (summary.encoded, summary.failed, summary.exit_code) == (3, 3, 3)
    errs = st.sql("SELECT image_id, stage, reason FROM errors ORDER BY image_id")
    assert errs["image_id"].to_list() == ["IM001", "IM003", "NOFILE0"]
    assert all(errs["reason"].str.len_chars() > 5)
    encoded = st.sql("SELECT image_id FROM images WHERE id IN (SELECT id FROM image_embeddings)")["image_id"]
    assert sorted(encoded) == ["IM000", "IM002", "IM004"]
    # fixing the file and re-running clears its error and encodes it
    write_pngs(tmp_path / "img", 5)
    last_encode = st.encode(make_dataset(paths), model=name, workers=0)
    assert last_encode.encoded == 2 and last_encode.exit_code == 0
    assert st.sql("SELECT count(*) AS n FROM errors WHERE image_id LIKE 'IM%'")["n"][0] == 0


# A fork server: one process imports torch, open_clip and embedstore once (seconds), then forks a
# fresh encoder per request: "MODE IMGDIR STORE LOG" on stdin -> the encoder's PID, then its exit
# status (negative: killed by that signal). Each encoder is a separate process, started with
# nothing run yet (no torch thread pool to inherit), that SIGKILLs itself at MODE's moment.
FORK_SERVER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    import faiss, open_clip, torch
    from store_helpers import MODEL, make_dataset
    from embedstore.encode import encode
    from embedstore.store import index as idx
    from embedstore.store import Storage

    def run_encoder(mode, imgdir, store):
        count = [0]
        orig_add = Storage.add_image_vectors
        def add(self, *a, **k):
            r = orig_add(self, *a, **k)
            count[0] += 1
            print(f"batch {{count[0]}}", flush=True)
            if mode in (f"after{{count[0]}}", f"grouped-after{{count[0]}}"):
                os.kill(os.getpid(), signal.SIGKILL)
            return r
        Storage.add_image_vectors = add
        orig_err = Storage.write_errors
        def werr(self, version, rows, con=None):
            if mode == "in-transaction" and con is not None and count[0] == 1:
                os.kill(os.getpid(), signal.SIGKILL)  # second batch inserted, not committed
            return orig_err(self, version, rows, con=con)
        Storage.write_errors = werr
        orig_write, orig_replace = faiss.write_index, os.replace
        def write(index, path):
            orig_write(index, path)
            if mode == "index-write":
                os.kill(os.getpid(), signal.SIGKILL)  # temp file written, not renamed
        def replace(a, b):
            orig_replace(a, b)
            if mode == "index-rename":
                os.kill(os.getpid(), signal.SIGKILL)  # renamed, DuckDB not updated
        faiss.write_index = write
        idx.os.replace = replace
        paths = sorted(Path(imgdir).glob("*.png"))
        # a commit per batch, so each kill point below falls between two of them; "grouped-" modes
        # keep encode's own grouping of batches into fewer commits (0.3 s apart here: a short run)
        encode(Storage(store), make_dataset(paths), model=MODEL, batch_size=4, workers=1, device="cpu", progress=False,
               commit_every=0.3 if mode.startswith("grouped-") else 0)
        print("done", flush=True)

    print("ready", flush=True)
    for line in sys.stdin:
        mode, imgdir, store, log = line.split()
        pid = os.fork()
        if pid == 0:
            os.setsid()  # a process group of its own: its decoding worker is killed with it
            out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(out, 1)
            os.dup2(out, 2)
            try:
                run_encoder(mode, imgdir, store)
            finally:
                sys.stdout.flush()
                os._exit(0)
        print(pid, flush=True)
        _, status = os.waitpid(pid, 0)
        print(-os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status), flush=True)
""").format(tests=str(TESTS))


@pytest.fixture(scope="module")
def fork_server(tmp_path_factory):
    """The running fork server (see FORK_SERVER); stopped at the end of the module."""
    script = tmp_path_factory.mktemp("kill") / "fork_server.py"
    script.write_text(FORK_SERVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=env)
    assert proc.stdout.readline().strip() == "ready"
    yield proc
    proc.stdin.close()
    proc.wait(timeout=60)


@pytest.fixture(scope="module")
def killed_setup(tmp_path_factory):
    """The images and reference vectors from the registry's model, one image at a time."""
    from embedstore.models import load_model

    root = tmp_path_factory.mktemp("kill-images")
    paths = write_pngs(root / "img", N_IMAGES)
    return root, paths, _reference(load_model(MODEL), paths)


def _run_killed(server, mode, imgdir, store, log: Path, kill_on_line=None):
    """An encoder forked by the server that SIGKILLs itself at `mode`'s moment (or is SIGKILLed
    from here once it prints `kill_on_line`); returns (exit status, printed lines) once the
    store's lock is free again."""
    server.stdin.write(f"{mode} {imgdir} {store} {log}\n")
    server.stdin.flush()
    pid = int(server.stdout.readline())
    try:
        if kill_on_line:
            deadline = time.monotonic() + 120
            while not (log.exists() and kill_on_line in log.read_text().splitlines()):
                assert time.monotonic() < deadline, log.read_text() if log.exists() else "no output"
                time.sleep(0.02)
            os.kill(pid, signal.SIGKILL)  # a real external SIGKILL while encode runs
        status = int(server.stdout.readline())
    finally:
        _release_group(pid, store, kill_group=not mode.startswith("grouped-"))
    return status, log.read_text().splitlines()


def _release_group(pgid: int, store: Path, kill_group: bool = True) -> None:
    """SIGKILL what is left of the killed encoder's process group (`kill_group`): its decoding
    worker, which shares the store's lock and would hold it until it noticed its parent was gone
    (up to 5 s); then wait until the lock is free. Without `kill_group` the worker must go by
    itself (it dies with its parent and closes its copy of the lock)."""
    from embedstore.errors import StoreBusy
    from embedstore.store.lock import WriteLock

    try:
        if kill_group:
            os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    lock, deadline = WriteLock(store / "lock"), time.monotonic() + 60
    while True:
        try:
            lock.acquire()
        except StoreBusy:
            assert time.monotonic() < deadline, "the killed encoder's lock was never released"
            time.sleep(0.02)
        else:
            lock.release()
            return


@pytest.mark.slow  # the fork server's start (~4 s) and six encoders, killed and resumed: ~15 s together
@pytest.mark.parametrize("mode", ["after1", "after3", "in-transaction", "index-write", "index-rename", "external",
                                  "grouped-after1"])
def test_exactly_once_after_sigkill(fork_server, killed_setup, tmp_path, mode):
    """A process killed at `mode`'s moment, then encode run again on its store (here, in this
    process): every image is stored exactly once, with the model's vectors, and verify passes."""
    from store_helpers import open_store as Store

    root, paths, ref = killed_setup
    store = tmp_path / "store"
    rc, lines = _run_killed(fork_server, mode if mode != "external" else "none", root / "img", store,
                            tmp_path / "killed.log", kill_on_line="batch 2" if mode == "external" else None)
    assert rc == -9, (rc, lines[-30:])
    committed = len(_table(store))
    expected_committed = {"after1": 4, "after3": 12, "in-transaction": 4, "index-write": N_IMAGES,
                          "index-rename": N_IMAGES}.get(mode)
    if expected_committed is not None:
        assert committed == expected_committed
    st = Store(store)
    again = st.encode(make_dataset(paths), model=MODEL, batch_size=4, workers=0, device="cpu").as_dict()
    assert (again["encoded"], again["skipped"], again["failed"]) == (N_IMAGES - committed, committed, 0)
    rows = _table(store)
    assert [r[0] for r in rows] == [f"IM{i:03d}" for i in range(N_IMAGES)]  # every image exactly once
    report = st.verify()
    assert report["ok"].all(), report.filter(~report["ok"])
    ids, X = st.image_vectors("v1")
    by_id = dict(zip(st.images()["id"].to_list(), st.images()["image_id"].to_list()))
    order = [int(by_id[i][2:]) for i in ids]
    np.testing.assert_allclose(X, ref[order], atol=1e-5)
    assert not list((store / "index").glob("*.tmp*"))
