"""A busy reader process (a server's threads) neither starves a writer nor fails (issue 18 item 5).

Eight threads of this process query one `Store` without pause while a writer process commits 20
small transactions. Before: the threads always held the DuckDB file somewhere, so the writer's
commits waited (5 commits in 40 s), and DuckDB's Python client, opening and closing connections
from many threads at once, now and then failed a query ("python_arrow_scan does not exist").
The writer is stopped by its own PID.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from embedstore.api import Store

COMMITS = 20
WRITER = textwrap.dedent(f"""
    import sys, time
    from embedstore.store import Storage
    st = Storage(sys.argv[1])
    with st.writer():
        for i in range({COMMITS}):
            with st.transaction() as con:
                con.execute("CREATE OR REPLACE TABLE scratch AS SELECT {{i}} AS i".format(i=i))
            print(i, flush=True)
            time.sleep(0.05)
""")


@pytest.mark.slow  # about 20 s of eight querying threads on 2 cores
def test_a_writer_commits_while_eight_threads_query(small_phantoms, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(small_phantoms / "store", store)
    st = Store(store, read_only=True)  # as `serve` opens it
    errors: list[str] = []
    done = threading.Event()
    queries = [0]

    def read() -> None:
        while not done.is_set():
            try:
                assert st.query("cardiomegaly", k=5).height == 5
                queries[0] += 1
            except Exception as err:  # noqa: BLE001 - every failure is listed by the assertion
                errors.append(repr(err))

    threads = [threading.Thread(target=read, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(1.0)  # the readers are busy before the writer starts
    out = tmp_path / "writer.out"
    with open(out, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(store)], stdout=fh, stderr=subprocess.STDOUT,
                                env={**os.environ, "EMBEDSTORE_BUSY_TIMEOUT": "60"})
    try:
        proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, 9)
        proc.wait()
    finally:
        done.set()
        for t in threads:
            t.join(timeout=60)
    lines = out.read_text().split()
    assert proc.returncode == 0 and lines[-1:] == [str(COMMITS - 1)], out.read_text()[-2000:]
    assert errors == []
    assert queries[0] > 20
    assert not (store / "commit-waiting").exists()  # the writer's marker is gone


def test_a_loaded_index_is_reused_until_it_is_rebuilt(small_phantoms, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(small_phantoms / "store", store)
    storage = Store(store)._storage
    first = storage.load_index("v1")
    assert first is not None and storage.load_index("v1") is first  # read once, not per query
    storage.rebuild_index("v1")
    again = storage.load_index("v1")
    assert again is not first and again.ntotal == first.ntotal
