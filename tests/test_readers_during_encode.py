"""Readers, and analyses storing their runs, never wait for a writer (issue 16, item 1).

A writer holds the store's lock for its whole command but the DuckDB file only while it commits;
a reader that meets a commit retries (EMBEDSTORE_BUSY_TIMEOUT, default 10 s) instead of failing.
The holder and the encoder are separate processes, stopped by their own PID.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import pytest

import embedstore
from embedstore.errors import StoreBusy

HOLD_FILE = textwrap.dedent("""
    import sys, time
    from embedstore.store import Storage
    st = Storage(sys.argv[1])
    with st.writer():
        with st.connect(write=True):  # the DuckDB file, held as a commit holds it
            print("held", flush=True)
            sys.stdin.readline()
        print("released", flush=True)  # the writer lock is still held, the file is not
        sys.stdin.readline()
""")


@pytest.fixture
def holder(tmp_path):
    """(store, process) where the process holds the store's DuckDB file open for writing until a
    line arrives on its stdin, then only the writer lock until a second line."""
    store = tmp_path / "store"
    embedstore.open(store).sql("CREATE TABLE t AS SELECT 1 AS one", write=True)
    proc = subprocess.Popen([sys.executable, "-c", HOLD_FILE, str(store)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield store, proc
    finally:
        proc.kill()
        proc.wait()


def test_a_reader_that_meets_a_commit_waits_for_it_instead_of_failing(holder, monkeypatch):
    store, proc = holder
    monkeypatch.setenv("EMBEDSTORE_BUSY_TIMEOUT", "0")  # no retry: the held file is "store busy" at once
    with pytest.raises(StoreBusy, match=f"store busy, held by PID {proc.pid}"):
        embedstore.open(store).versions()
    monkeypatch.delenv("EMBEDSTORE_BUSY_TIMEOUT")  # the default: retry for 10 s
    got: dict = {}

    def read():
        try:
            got["rows"] = embedstore.open(store).sql("SELECT one FROM t")["one"].to_list()
        except Exception as err:  # noqa: BLE001 - reported by the assertion below
            got["error"] = repr(err)

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(0.3)  # the reader starts while the file is held (it cannot finish before the line below)
    proc.stdin.write("commit done\n")
    proc.stdin.flush()
    reader.join(timeout=60)
    assert not reader.is_alive()
    assert got == {"rows": [1]}
    assert proc.stdout.readline().strip() == "released"
    assert embedstore.open(store).versions().height == 0  # readers need the file only, never the lock


def test_a_second_writer_is_refused_between_the_first_ones_commits(holder):
    store, proc = holder
    proc.stdin.write("commit done\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "released"
    with pytest.raises(StoreBusy, match=f"held by PID {proc.pid}"):
        embedstore.open(store).sql("DROP TABLE t", write=True)
    assert embedstore.open(store).sql("SELECT one FROM t")["one"].to_list() == [1]


def _tick(st, seen: dict[str, list[int]]) -> None:
    """One round of reads: versions, sql, and (once v1 has its prompts) a query over every vector."""
    versions = st.versions()
    v1 = versions.filter(versions["version"] == "v1")
    seen["versions"].append(int(v1["images"][0]) if v1.height else 0)
    seen["sql"].append(int(st.sql("SELECT count(*) AS n FROM image_embeddings")["n"][0]))
    if v1.height and v1["texts"][0] > 0:  # "cardiomegaly" is a stored finding: no model, no torch
        seen["query"].append(st.query("cardiomegaly", k=10_000, version="v1").height)
    if not seen["analysis"] and 300 <= seen["versions"][-1]:  # once, on what is committed so far
        st.separability(version="v1")  # an analysis stores its run between the encode's commits
        seen["analysis"].append(int(st.sql("SELECT count(*) AS n FROM runs WHERE kind = 'separability'")["n"][0]))


@pytest.mark.slow  # synth of 1,000 studies and an encode of ~2,000 images in a subprocess: about a minute
def test_queries_during_a_background_encode_never_fail_and_never_go_back(tmp_path, capsys):
    phantoms, store = tmp_path / "phantoms", tmp_path / "store"
    made = embedstore.open(tmp_path / "unused").synth(str(phantoms), studies=1000, seed=5, size=64, workers=2)
    out, err = tmp_path / "encode.json", tmp_path / "encode.err"
    with open(out, "w") as fo, open(err, "w") as fe:
        proc = subprocess.Popen(
            [sys.executable, "-m", "embedstore", "encode", str(phantoms), "--model", "phantom-clip", "--device", "cpu",
             "--workers", "1", "--store", str(store), "--format", "json"],
            stdout=fo, stderr=fe, env={**os.environ, "OMP_NUM_THREADS": "1"})
    st = embedstore.open(store)
    seen: dict[str, list[int]] = {"versions": [], "sql": [], "query": [], "analysis": []}
    failures: list[str] = []
    try:
        deadline = time.monotonic() + 900
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "v1 is still being built": it is, on purpose
            while True:
                finished = proc.poll() is not None
                if (store / "embedstore.duckdb").exists():
                    try:
                        _tick(st, seen)
                    except Exception as exc:  # noqa: BLE001 - every failure is listed by the assertion
                        failures.append(repr(exc))
                if finished:
                    break
                assert time.monotonic() < deadline, "the encode did not finish"
                time.sleep(0.2)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, 9)
        proc.wait()
    assert proc.returncode == 0, err.read_text()[-2000:]
    result = json.loads(out.read_text())
    result = result[0] if isinstance(result, list) else result
    assert result["encoded"] == made.images > 1800
    assert failures == []
    assert seen.pop("analysis") == [1]  # stored while the encode ran
    for name, counts in seen.items():
        assert counts == sorted(counts), (name, counts)  # a count of stored vectors never decreases
        assert counts[-1] == result["encoded"], (name, counts[-5:])  # the last read sees every commit
    partial = {n for n in seen["versions"] if 0 < n < result["encoded"]}
    assert len(partial) >= 2, seen["versions"]  # readers got in between commits, more than once
    assert len(seen["query"]) >= 3
    share = result["commit_seconds"] / result["seconds"]
    with capsys.disabled():
        print(f"\nencode of {result['encoded']} images: {result['seconds']:.1f} s, {result['commits']} commits, "
              f"{result['commit_seconds']:.2f} s committing = {100 * share:.1f} % of encode time; "
              f"{len(seen['versions'])} read rounds, {len(partial)} partial counts seen; "
              f"load {os.getloadavg()[0]:.2f}")
