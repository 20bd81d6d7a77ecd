"""`verify` catches each tampering it claims to, in the Python API and through the CLI.

A clean store (PNGs encoded with phantom-clip through the registry) is copied for each tampering;
each tampering changes one thing the way a crash, a bad tool or a hand edit would, and names the
check that must fail. Where a tampering also puts the index out of line with DuckDB as a side
effect, the index is rebuilt from DuckDB first, so the named check is the one that catches it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from store_helpers import build_store

from store_helpers import open_store as Store

FIRST_ROW = "(SELECT min(id) FROM image_embeddings WHERE version = 'v1')"
LAST_ROW = "(SELECT max(id) FROM image_embeddings WHERE version = 'v1')"
FIRST_TEXT = "(SELECT min(text_hash) FROM text_embeddings WHERE version = 'v1')"


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    st, _ = build_store(tmp_path_factory.mktemp("verify"), n=10)
    report = st.verify()
    assert report["ok"].all() and report.height >= 10, report  # the checks run and pass on a clean store
    return st.path


@pytest.fixture
def copy(clean, tmp_path) -> Store:
    shutil.copytree(clean, tmp_path / "store")
    return Store(tmp_path / "store")


def _write(st: Store, *statements: str) -> None:
    for statement in statements:
        st.sql(statement, write=True)


def missing_index_file(st):
    st.index_path("v1").unlink()


def wrong_row_count(st):
    _write(st, "UPDATE versions SET count = count + 1 WHERE version = 'v1'")


def wrong_index_count(st):
    _write(st, "UPDATE versions SET index_count = index_count - 1 WHERE version = 'v1'")


def edited_vector_in_duckdb(st):
    """Same norm, other direction: only the index can tell."""
    _write(st, f"UPDATE image_embeddings SET vector = list_reverse(vector) WHERE version = 'v1' AND id = {FIRST_ROW}")


def edited_vector_in_index(st):
    """An index written with one vector changed and its checksum recorded, as a buggy writer would."""
    from embedstore.store import index as idx

    ids, X = st.image_vectors("v1")
    X = X.copy()
    X[0] = X[0][::-1]
    checksum = idx.write_atomic(idx.build(ids, X), st.index_path("v1"))
    _write(st, f"UPDATE versions SET index_checksum = '{checksum}' WHERE version = 'v1'")


def nan_in_image_vector(st):
    _write(st, f"UPDATE image_embeddings SET vector = list_concat(['nan'::FLOAT], vector[2:]) "
               f"WHERE version = 'v1' AND id = {FIRST_ROW}")
    st.rebuild_index("v1")


def nan_in_text_vector(st):
    _write(st, f"UPDATE text_embeddings SET vector = list_concat(['nan'::FLOAT], vector[2:]) "
               f"WHERE version = 'v1' AND text_hash = {FIRST_TEXT}")


def nan_in_cached_query_vector(st):
    """A query text's cached vector (not a prompt's): the next `query` of that text would use it."""
    vector = ", ".join(["'nan'::FLOAT"] + ["0.0"] * (st.version_row("v1")["dim"] - 1))
    _write(st, f"INSERT INTO text_embeddings (version, text_hash, text, vector) "
               f"VALUES ('v1', 'cached-query', 'a cached query', [{vector}])")


def image_norm_off_one(st):
    _write(st, f"UPDATE image_embeddings SET vector = list_transform(vector, lambda x: x * 1.01) "
               f"WHERE version = 'v1' AND id = {FIRST_ROW}")
    st.rebuild_index("v1")


def text_norm_off_one(st):
    _write(st, f"UPDATE text_embeddings SET vector = list_transform(vector, lambda x: x * 1.01) "
               f"WHERE version = 'v1' AND text_hash = {FIRST_TEXT}")


def wrong_recorded_dimension(st):
    _write(st, "UPDATE versions SET dim = dim + 1 WHERE version = 'v1'")


def one_vector_too_long(st):
    _write(st, f"UPDATE image_embeddings SET vector = list_append(vector, 0.0) WHERE version = 'v1' AND id = {FIRST_ROW}")


def lengths_that_cancel_out(st):
    """One vector a value short and another a value long: as many values as n vectors of the right length."""
    _write(st, f"UPDATE image_embeddings SET vector = list_append(vector, 0.0) WHERE version = 'v1' AND id = {FIRST_ROW}",
           f"UPDATE image_embeddings SET vector = vector[2:] WHERE version = 'v1' AND id = {LAST_ROW}")


def text_vector_too_short(st):
    _write(st, f"UPDATE text_embeddings SET vector = vector[2:] WHERE version = 'v1' AND text_hash = {FIRST_TEXT}")


def index_id_without_a_row(st):
    """A row deleted (and the recorded count with it): its id is still in the index."""
    _write(st, f"DELETE FROM image_embeddings WHERE version = 'v1' AND id = {FIRST_ROW}",
           "UPDATE versions SET count = count - 1 WHERE version = 'v1'")


def row_without_an_index_id(st):
    """A new image's row added (and counted) behind the index's back."""
    from embedstore.data.records import ImageRecord

    new = st.upsert_images([ImageRecord("late", None, "s-late", "p-late", "frontal", "PA", "test", {})])["late"]
    _write(st, f"INSERT INTO image_embeddings SELECT version, {new}, 'sha256:late', vector FROM image_embeddings "
               f"WHERE version = 'v1' AND id = {FIRST_ROW}",
           "UPDATE versions SET count = count + 1 WHERE version = 'v1'")


def row_of_no_image(st):
    """A vector whose id is no image (the index rebuilt with it, so only the images table can tell)."""
    _write(st, f"INSERT INTO image_embeddings SELECT version, 999999, 'sha256:ghost', vector FROM image_embeddings "
               f"WHERE version = 'v1' AND id = {FIRST_ROW}")
    st.rebuild_index("v1")


TAMPERINGS = {
    missing_index_file: "index file",
    wrong_row_count: "rows",
    wrong_index_count: "index count",
    edited_vector_in_duckdb: "index vectors",
    edited_vector_in_index: "index vectors",
    nan_in_image_vector: "image finite",
    nan_in_text_vector: "text finite",
    nan_in_cached_query_vector: "text finite",
    image_norm_off_one: "image norms",
    text_norm_off_one: "text norms",
    wrong_recorded_dimension: "image dim",
    one_vector_too_long: "image dim",
    lengths_that_cancel_out: "image dim",
    text_vector_too_short: "text dim",
    index_id_without_a_row: "index ids",
    row_without_an_index_id: "index ids",
    row_of_no_image: "ids are images",
}


@pytest.mark.parametrize("tamper", TAMPERINGS, ids=[t.__name__ for t in TAMPERINGS])
def test_verify_catches_the_tampering(copy, tamper, capsys):
    """Through the CLI: exit 2, the first failed check named on stderr, and the tampering's check
    among the failed rows of its JSON output, which are the API's (`Store.verify`)."""
    from embedstore.cli import main

    tamper(copy)
    with pytest.raises(SystemExit) as exc:
        main(["verify", "--store", str(copy.path), "--format", "json"])
    out = capsys.readouterr()
    failed = [r["check"] for r in json.loads(out.out) if not r["ok"]]
    assert TAMPERINGS[tamper] in failed, out.out
    assert exc.value.code == 2 and out.err.startswith(f"error: verify failed: version v1: {failed[0]}: ")
    report = copy.verify()
    assert report.filter(~report["ok"])["check"].to_list() == failed


def test_verify_passes_a_clean_store_through_the_cli(copy, capsys):
    from embedstore.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["verify", "--store", str(copy.path), "--format", "json"])
    rows = json.loads(capsys.readouterr().out)
    assert exc.value.code == 0 and rows and all(r["ok"] for r in rows)
    assert set(TAMPERINGS.values()) <= {r["check"] for r in rows}  # every check named above runs
    assert np.isfinite(copy.image_vectors("v1")[1]).all()
