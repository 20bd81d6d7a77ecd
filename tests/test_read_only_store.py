"""A store on a read-only file system (or without write permission) still answers every reading
command; `query` with text it has never seen encodes it and answers without caching it."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def store(small_phantoms, tmp_path_factory):
    """A copy of the session's small phantom store (conftest.py: 16 studies, phantom-clip), which
    these tests take write permission from."""
    root = tmp_path_factory.mktemp("read-only")
    shutil.copytree(small_phantoms / "store", root / "st")
    return root / "st"


def _run_read_only(store: Path, args: list[str]) -> subprocess.CompletedProcess:
    """`embedstore ARGS --store STORE` with the store read-only: without write permission for an
    ordinary user; for root (whom permissions do not stop) on a read-only bind mount."""
    cmd = [sys.executable, "-m", "embedstore", *args, "--store", str(store), "--format", "csv"]
    if os.geteuid() != 0:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if shutil.which("unshare") is None:
        pytest.skip("running as root without unshare(1): no way to make a read-only file system here")
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
    done = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", str(store), *cmd],
                          capture_output=True, text=True, timeout=300)
    if "mount:" in done.stderr or "unshare:" in done.stderr:
        pytest.skip(f"root without mount namespaces here: {done.stderr.strip().splitlines()[0]}")
    return done


@pytest.fixture
def read_only(store):
    """Take write permission away (it matters for non-root runs), and give it back afterwards."""
    files = [store, *store.rglob("*")]
    modes = {p: p.stat().st_mode for p in files}
    for p in files:
        p.chmod(modes[p] & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    yield store
    for p in reversed(files):
        p.chmod(modes[p])


def _fingerprint(folder: Path) -> dict:
    import hashlib

    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_query_with_new_text_answers_on_a_read_only_store_and_caches_nothing(read_only):
    before = _fingerprint(read_only)
    text = "a never seen before phrase about the heart"
    done = _run_read_only(read_only, ["query", text, "-k", "3"])
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    rows = done.stdout.strip().splitlines()
    assert len(rows) == 4 and "score" in rows[0]  # a header and k = 3 hits
    assert _fingerprint(read_only) == before
    import embedstore

    cached = embedstore.open(read_only).sql(f"SELECT count(*) AS n FROM text_embeddings WHERE text = '{text}'")
    assert cached["n"][0] == 0


@pytest.mark.parametrize("args", [["versions"], ["verify"], ["sql", "SELECT count(*) FROM images"],
                                  ["query", "Cardiomegaly", "-k", "2"]])
def test_reading_commands_work_on_a_read_only_store(read_only, args):
    done = _run_read_only(read_only, args)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr


def test_query_without_its_index_answers_by_exact_search_on_a_read_only_store(store, tmp_path, capsys):
    """The index file is gone (a copy without it): a read-only store cannot rebuild it, so `query`
    searches exactly, the same hits as the writable store's rebuilt index gives."""
    copy = tmp_path / "st"
    shutil.copytree(store, copy)
    for index in (copy / "index").glob("*.faiss"):
        index.unlink()
    files = [copy, *copy.rglob("*")]
    for p in files:
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        done = _run_read_only(copy, ["query", "Cardiomegaly", "-k", "4"])
    finally:
        for p in reversed(files):
            p.chmod(p.stat().st_mode | stat.S_IWUSR)
    assert done.returncode == 0, done.stderr
    assert not list((copy / "index").glob("*.faiss"))  # nothing written
    from embedstore.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:  # the writable store, in this process
        main(["query", "Cardiomegaly", "-k", "4", "--store", str(store), "--format", "csv"])
    want = capsys.readouterr().out
    assert exc.value.code == 0
    ids = lambda out: [line.split(",")[2] for line in out.strip().splitlines()[1:]]  # noqa: E731
    assert ids(done.stdout) == ids(want) and len(ids(want)) == 4
