"""encode: every image once, skips by content hash, errors recorded, exactly-once after SIGKILL."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
from store_helpers import (  # noqa: E402
    FINDINGS, FastLoaded, TinyLoaded, ensure_images_module, make_dataset, save_tiny_weights, write_pngs)

ensure_images_module()

N_IMAGES = 14  # batch size 4 -> 4 batches


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    w = save_tiny_weights(tmp_path_factory.mktemp("tiny") / "tiny.safetensors")
    return w, TinyLoaded(w)


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
    from embedstore.api import Store

    weights, loaded = tiny
    paths = write_pngs(tmp_path / "img", 6)
    st = Store(tmp_path / "store")
    s1 = st.encode(make_dataset(paths), loaded=loaded, batch_size=4, workers=1).row(0, named=True)
    assert (s1["encoded"], s1["skipped"], s1["failed"]) == (6, 0, 0)
    ids, X = st.image_vectors("v1")
    by_id = dict(zip(st.images()["id"].to_list(), st.images()["path"].to_list()))
    np.testing.assert_allclose(X, _reference(loaded, [by_id[i] for i in ids]), atol=1e-5)
    info = st.version_info("v1")
    assert info["logit_scale"] == pytest.approx(loaded.record["logit_scale"]) and info["dim"] == 32
    # prompts: several positive and several negative phrasings for every finding, all embedded
    df, M = st.text_vectors("v1")
    for f in FINDINGS:
        pol = df.filter(df["finding"] == f)["polarity"].to_list()
        assert pol.count("positive") >= 3 and pol.count("negative") >= 3
    assert len(M) == df.height
    # rerun: nothing encoded; new and changed images are (re-)encoded into the same version
    s2 = st.encode(make_dataset(paths), loaded=loaded, batch_size=4, workers=0).row(0, named=True)
    assert (s2["version"], s2["encoded"], s2["skipped"]) == ("v1", 0, 6)
    more = write_pngs(tmp_path / "img", 8, seed=1)  # rewrites img000..img005 with new content, adds 2
    s3 = st.encode(make_dataset(more), loaded=loaded, batch_size=4, workers=1).row(0, named=True)
    assert (s3["version"], s3["encoded"], s3["skipped"]) == ("v1", 8, 0)
    ids, X = st.image_vectors("v1")
    assert len(ids) == 8
    by_id = dict(zip(st.images()["id"].to_list(), st.images()["path"].to_list()))
    np.testing.assert_allclose(X, _reference(loaded, [by_id[i] for i in ids]), atol=1e-5)
    assert st.verify()["ok"].all()


def test_other_model_makes_new_version(tiny, tmp_path):
    from embedstore.api import Store

    _, loaded = tiny
    paths = write_pngs(tmp_path / "img", 3)
    st = Store(tmp_path / "store")
    st.encode(make_dataset(paths), loaded=loaded, workers=0)
    loaded.record = {**loaded.record, "name": "tiny-other"}
    try:
        s = st.encode(make_dataset(paths), loaded=loaded, workers=0).row(0, named=True)
        assert (s["version"], s["encoded"]) == ("v2", 3)
        from embedstore.errors import InputError

        with pytest.raises(InputError, match="version v1 was made by model 'tiny-test'"):
            st.encode(make_dataset(paths), loaded=loaded, workers=0, version="v1")
    finally:
        loaded.record = {**loaded.record, "name": "tiny-test"}
    assert st.versions()["images"].to_list() == [3, 3]


def test_unreadable_images_are_recorded_and_the_rest_encoded(tiny, tmp_path):
    from embedstore.api import Store

    _, loaded = tiny
    paths = write_pngs(tmp_path / "img", 5)
    paths[1].write_bytes(b"not a png at all")  # corrupt
    paths[3].unlink()  # vanished
    st = Store(tmp_path / "store")
    st.encode(make_dataset(paths, extra_missing=1), loaded=loaded, batch_size=2, workers=1)
    summary = st.last_encode
    assert (summary.encoded, summary.failed, summary.exit_code) == (3, 3, 3)
    errs = st.sql("SELECT image_id, stage, reason FROM errors ORDER BY image_id")
    assert errs["image_id"].to_list() == ["IM001", "IM003", "NOFILE0"]
    assert all(errs["reason"].str.len_chars() > 5)
    assert sorted(st.images("id IN (SELECT id FROM image_embeddings)")["image_id"]) == ["IM000", "IM002", "IM004"]
    # fixing the file and re-running clears its error and encodes it
    write_pngs(tmp_path / "img", 5)
    st.encode(make_dataset(paths), loaded=loaded, workers=0)
    assert st.last_encode.encoded == 2 and st.last_encode.exit_code == 0
    assert st.sql("SELECT count(*) AS n FROM errors WHERE image_id LIKE 'IM%'")["n"][0] == 0


CHILD = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from store_helpers import FastLoaded, ensure_images_module, make_dataset
    ensure_images_module()
    mode, weights, imgdir, store = sys.argv[1:]
    from embedstore.store.store import Store
    from embedstore.store import index as idx
    count = [0]
    orig_add = Store.add_image_vectors
    def add(self, *a, **k):
        r = orig_add(self, *a, **k)
        count[0] += 1
        print(f"batch {{count[0]}}", flush=True)
        if mode == f"after{{count[0]}}":
            os.kill(os.getpid(), signal.SIGKILL)
        return r
    Store.add_image_vectors = add
    orig_err = Store.write_errors
    def werr(self, version, rows, con=None):
        if mode == "in-transaction" and con is not None and count[0] == 1:
            os.kill(os.getpid(), signal.SIGKILL)  # second batch inserted, not committed
        return orig_err(self, version, rows, con=con)
    Store.write_errors = werr
    if mode in ("index-write", "index-rename"):
        import faiss
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
    from embedstore.encode import encode
    paths = sorted(Path(imgdir).glob("*.png"))
    s = encode(make_dataset(paths), store=store, loaded=FastLoaded(), batch_size=4, workers=1,
               progress=False)
    print("done", s.encoded, s.skipped, s.failed, flush=True)
""").format(tests=str(TESTS))


@pytest.fixture(scope="module")
def killed_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill")
    paths = write_pngs(root / "img", N_IMAGES)
    script = root / "child.py"
    script.write_text(CHILD)
    ref = _reference(FastLoaded(), paths)
    return None, root, paths, script, ref


def _run(script, mode, weights, imgdir, store, kill_on_line=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(script), mode, str(weights), str(imgdir), str(store)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines = []
    for line in proc.stdout:
        lines.append(line.strip())
        if kill_on_line and line.strip() == kill_on_line:
            proc.kill()  # a real external SIGKILL while encode runs
            break
    proc.wait()
    return proc.returncode, lines, proc.stderr.read()


@pytest.mark.parametrize("mode", ["after1", "after3", "in-transaction", "index-write", "index-rename", "external"])
def test_exactly_once_after_sigkill(killed_setup, tmp_path, mode):
    from embedstore.api import Store

    weights, root, paths, script, ref = killed_setup
    store = tmp_path / "store"
    rc, lines, err = _run(script, mode if mode != "external" else "none", weights, root / "img", store,
                          kill_on_line="batch 2" if mode == "external" else None)
    assert rc == -9, (rc, lines, err[-2000:])
    committed = len(_table(store))
    expected_committed = {"after1": 4, "after3": 12, "in-transaction": 4, "index-write": N_IMAGES,
                          "index-rename": N_IMAGES}.get(mode)
    if expected_committed is not None:
        assert committed == expected_committed
    rc, lines, err = _run(script, "none", weights, root / "img", store)
    assert rc == 0, err[-2000:]
    encoded, skipped, failed = map(int, lines[-1].split()[1:])
    assert (encoded, skipped, failed) == (N_IMAGES - committed, committed, 0)
    rows = _table(store)
    assert [r[0] for r in rows] == [f"IM{i:03d}" for i in range(N_IMAGES)]  # every image exactly once
    st = Store(store)
    report = st.verify()
    assert report["ok"].all(), report.filter(~report["ok"])
    ids, X = st.image_vectors("v1")
    by_id = dict(zip(st.images()["id"].to_list(), st.images()["image_id"].to_list()))
    order = [int(by_id[i][2:]) for i in ids]
    np.testing.assert_allclose(X, ref[order], atol=1e-5)
    assert not list((store / "index").glob("*.tmp*"))
