"""A read-only store (a server's) remembers its reads while the DuckDB file is unchanged: a
repeated query opens no connection, yet every commit, from another object or another process,
is seen by the next read (store/memo.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from polars.testing import assert_frame_equal

import embedstore
from embedstore.api import Store
from embedstore.data.records import ImageRecord
from embedstore.store import Storage
from embedstore.store.memo import ReadMemo


@pytest.fixture
def store(small_phantoms, tmp_path):
    """A fresh copy of the session's small phantom store (16 studies, v1 by phantom-clip)."""
    shutil.copytree(small_phantoms / "store", tmp_path / "st")
    return tmp_path / "st"


@pytest.fixture
def opens(monkeypatch):
    """How many times any Storage has opened the DuckDB file since the fixture started."""
    count = [0]
    real = Storage._open

    def spy(self, *args, **kwargs):
        count[0] += 1
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Storage, "_open", spy)
    return count


def _record(image_id: str) -> ImageRecord:
    return ImageRecord(image_id=image_id, path=None, study_id=f"S-{image_id}", patient_id=f"P-{image_id}",
                       view="frontal", projection=None, split="test", labels={}, source="memo-test")


COUNT = "SELECT count(*) FROM images"


def test_a_repeated_query_opens_no_connection_and_answers_as_a_writable_store(store, opens):
    st = Store(store, read_only=True)  # what `embedstore serve` serves
    first = st.query("cardiomegaly", k=5)
    before = opens[0]
    for _ in range(3):
        again = st.query("cardiomegaly", k=5)
        assert_frame_equal(again, first)
    assert opens[0] == before, "a repeated identical query opened the DuckDB file"
    assert_frame_equal(first, embedstore.open(store).query("cardiomegaly", k=5))  # the writable store: SQL
    # the structured filters and the labels of hits too
    kw = {"present": ["Cardiomegaly"], "split": "test"}
    assert_frame_equal(st.query("effusion", k=8, **kw), embedstore.open(store).query("effusion", k=8, **kw))
    assert st._storage._memo is not None and embedstore.open(store)._storage._memo is None


def test_a_commit_from_another_object_is_seen_by_the_next_read(store, opens):
    reader = Storage(store, read_only=True)
    n = reader._scalar(COUNT)
    assert reader._scalar(COUNT) == n
    opened = opens[0]
    assert reader._scalar(COUNT) == n and opens[0] == opened  # remembered
    Storage(store).upsert_images([_record("MEMO-1")])
    assert reader._scalar(COUNT) == n + 1  # the commit changed the file's snapshot
    assert reader._column("SELECT image_id FROM images WHERE source = 'memo-test'") == ["MEMO-1"]


def test_a_commit_from_another_process_is_seen_by_the_next_read(store):
    reader = Storage(store, read_only=True)
    versions = reader.versions()["version"].to_list()
    n = reader._scalar(COUNT)
    for _ in range(2):  # remembered now
        assert reader._scalar(COUNT) == n
    code = textwrap.dedent(f"""
        from embedstore.data.records import ImageRecord
        from embedstore.store import Storage
        Storage({str(store)!r}).upsert_images([ImageRecord(image_id="MEMO-2", path=None, study_id="S", patient_id="P",
            view="frontal", projection=None, split="test", labels={{}}, source="memo-test")])
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert reader._scalar(COUNT) == n + 1
    assert reader.versions()["version"].to_list() == versions


def test_the_memo_is_bounded_and_keeps_no_big_answer(store, opens):
    memo = ReadMemo(entries=3, entry_bytes=1000, total_bytes=2000)
    for i in range(5):
        memo.put(("k", i), "snap", [(i,)])
    assert len(memo) == 3
    memo.put(("big",), "snap", [(0,)] * 100)  # 6,400 bytes by the estimate: not kept
    assert len(memo) == 3
    memo.put(("k", 9), "other", [(9,)])  # a new snapshot drops every older answer
    assert len(memo) == 1
    reader = Storage(store, read_only=True)
    ids, X = reader.image_vectors("v1")
    opened = opens[0]
    ids2, X2 = reader.image_vectors("v1")  # a version's vectors are read each time
    assert opens[0] > opened and np.array_equal(ids, ids2) and np.array_equal(X, X2)


def test_a_caller_cannot_change_a_remembered_answer(store):
    reader = Storage(store, read_only=True)
    rows = reader._rows("SELECT version FROM versions")
    rows.append(("nope",))
    assert reader._rows("SELECT version FROM versions") == rows[:-1]
    ids = reader.matching_ids("v1", None)
    with pytest.raises(ValueError):
        ids[0] = -1


def test_threads_that_miss_at_once_read_once(store):
    """Right after a commit every request misses: the first reads, the others wait for its answer."""
    import threading
    import time

    reader = Storage(store, read_only=True)
    calls = []

    def slow():
        calls.append(1)
        time.sleep(0.3)
        return [(42,)]

    got = []
    threads = [threading.Thread(target=lambda: got.append(reader.memoised(("slow",), slow))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert got == [[(42,)]] * 4 and len(calls) == 1


def test_a_repeated_query_is_answered_from_memory_until_a_commit(store, opens):
    st = Store(store, read_only=True)
    first = st.query("effusion", k=4, split="test")
    opened = opens[0]
    for _ in range(2):
        assert_frame_equal(st.query("effusion", k=4, split="test"), first)
    assert opens[0] == opened and st.query("effusion", k=3, split="test").height == 3  # another k: another answer
    Storage(store).upsert_images([_record("MEMO-3")])  # a commit (no vector: the same hits)
    assert_frame_equal(st.query("effusion", k=4, split="test"), first)
    assert opens[0] > opened


def test_the_served_index_is_checked_by_the_snapshot_and_follows_a_rebuild(store, opens):
    from embedstore.store import index as idx

    reader = Storage(store, read_only=True)
    first = reader.load_index("v1")
    opened = opens[0]
    assert reader.load_index("v1") is first and opens[0] == opened  # no DuckDB read while unchanged
    Storage(store).rebuild_index("v1", kind="hnsw")
    again = reader.load_index("v1")
    assert again is not first and idx.kind_of(again) == "hnsw"
