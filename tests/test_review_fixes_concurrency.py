"""Defects a review of the readers-during-writes, lock-free runs and server work found; each test
failed before its fix."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from store_helpers import locked_by_another_process

from embedstore.cli import main


def _runs(store) -> int:
    import duckdb

    con = duckdb.connect(str(store / "embedstore.duckdb"), read_only=True)
    try:
        return con.sql("SELECT count(*) FROM runs").fetchall()[0][0]
    finally:
        con.close()


@pytest.mark.parametrize("args", [["infer-views", "--folds", "2"], ["duplicates", "--regroup"]])
def test_a_command_that_exits_75_leaves_no_run(small_phantoms, tmp_path, capsys, args):
    """infer-views / duplicates --regroup store their run lock-free, then their second write (the
    inferred views, the merged groups) needs the writer lock: 75, but the run stays behind."""
    store = tmp_path / "store"
    shutil.copytree(small_phantoms / "store", store)
    before = _runs(store)
    with locked_by_another_process(store):
        with pytest.raises(SystemExit) as exc:
            main(args + ["--store", str(store)])
    capsys.readouterr()
    assert exc.value.code == 75
    assert _runs(store) == before  # nothing half-written: fails, the run was stored


def test_replaced_vectors_committed_before_a_kill_are_indexed_by_the_next_run(small_phantoms, tmp_path):
    """encode commits replaced vectors (changed pixels: same count) and is killed before
    refresh_index. The next encode finds every hash stored (encoded = 0) and the recorded count
    equal to the rows, so `refresh_index` returns early: the index keeps the old vectors."""
    from embedstore.api import Store

    store = tmp_path / "store"
    shutil.copytree(small_phantoms / "store", store)
    st = Store(store)
    storage = st._storage
    ids, X = storage.image_vectors("v1")
    hashes = dict(storage._rows("SELECT id, content_hash FROM image_embeddings WHERE version = 'v1'"))
    # what the killed run committed: a new vector for one image, with its (new) content hash
    Y = X[:1][:, ::-1].copy()
    storage.add_image_vectors("v1", ids[:1], [hashes[int(ids[0])]], Y)
    st.encode(str(small_phantoms / "phantoms"), model="phantom-clip", workers=0, device="cpu")
    report = st.verify("v1").to_polars() if hasattr(st.verify("v1"), "to_polars") else st.verify("v1")
    bad = report.filter(~report["ok"])
    assert bad.height == 0, bad.to_dicts()


def test_a_query_does_not_hold_the_store_while_it_loads_a_model(small_phantoms, monkeypatch):
    """A new text needs the model (seconds to load): the query's shared read connection is closed
    first, so a writer's commit (and, behind its `commit-waiting` marker, a server's other readers)
    does not wait for the load."""
    import embedstore.models as models
    from embedstore.api import Store

    st = Store(small_phantoms / "store", read_only=True)
    held = []
    real = models.load_model

    def spy(*args, **kwargs):
        held.append(getattr(st._storage._reads, "con", None) is not None)
        return real(*args, **kwargs)

    monkeypatch.setattr(models, "load_model", spy)
    hits = st.query("an entirely new sentence about the heart", k=3)
    assert held == [False] and hits.height == 3


def test_absent_means_label_0_or_missing_not_uncertain(tmp_path):
    import embedstore
    from synthetic_vectors import make, to_store

    syn = make(n=300, n_findings=3, d=16, seed=1, uncertain_rate=0.2, missing_rate=0.2)
    st = embedstore.open(tmp_path / "store")
    to_store(syn, st)
    finding = syn.findings[0]
    labels = st.sql(f'SELECT image_id, "{finding}" AS v FROM labels_wide')
    value = dict(zip(labels["image_id"].to_list(), labels["v"].to_list()))
    assert -1 in value.values() and None in value.values()  # the data has uncertain and missing labels
    hits = st.query(like=labels["image_id"][0], k=300, absent=[finding])
    got = {value[i] for i in hits["image_id"].to_list()}
    assert got == {0, None}
    assert hits.height == sum(v in (0, None) for v in value.values()) - (value[labels["image_id"][0]] in (0, None))
