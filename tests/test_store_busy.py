"""Exit code 75 (store busy) for every command that writes, while another process holds the
store's write lock; the store is left as it was, and readers, and analyses storing their runs,
keep working meanwhile.

Each command runs through the real CLI (`embedstore.cli.main`) in this process on a copy of the
session's small phantom store (conftest.py: 16 studies, phantom-clip), against a lock held by a
separate process.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest
from store_helpers import locked_by_another_process

import embedstore
from embedstore.cli import main

WRITERS = {
    "encode": ["encode", "{phantoms}", "--model", "phantom-clip", "--device", "cpu", "--workers", "0"],
    "finetune": ["finetune", "--epochs", "1", "--device", "cpu", "--workers", "0"],
    "sql --write": ["sql", "DELETE FROM image_embeddings", "--write"],
}
# Analyses only append their run: they need the DuckDB file between a writer's commits, not the lock.
RUN_WRITERS = {
    "zeroshot": ["zeroshot", "--n-boot", "20", "--min-positives", "1"],
    "probe": ["probe", "--n-boot", "20", "--min-positives", "1"],
    "separability": ["separability"],
    "agreement": ["agreement", "--boxes", "{one_box}", "--box-format", "canonical", "--split", "all", "--n-boot", "20"],
}
READERS = {
    "sql": ["sql", "SELECT count(*) AS n FROM images"],
    "versions": ["versions"],
    "query": ["query", "cardiomegaly", "-k", "3"],
    "runs": ["runs"],
}


def contents(store: Path) -> tuple:
    """What a writer would change: rows of the tables the commands write, and the files."""
    counts = embedstore.open(store).sql(
        "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM versions), "
        "(SELECT count(*) FROM image_embeddings), (SELECT count(*) FROM text_embeddings), "
        "(SELECT count(*) FROM images), (SELECT count(*) FROM errors)").rows()[0]
    return counts, sorted(p.name for p in (store / "index").iterdir())


def cli(capsys, args: list[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def _args(table: dict, command: str, small_phantoms: Path, store: Path, tmp_path: Path) -> list[str]:
    one_box = tmp_path / "one-box.csv"  # agreement computes its heatmaps before it writes: one is enough
    pl.read_csv(small_phantoms / "phantoms" / "boxes.csv").head(1).write_csv(one_box)
    args = [a.format(phantoms=small_phantoms / "phantoms", one_box=one_box) for a in table[command]]
    return args + ["--store", str(store)]


@pytest.mark.parametrize("command", WRITERS)
def test_a_writer_exits_75_while_another_process_holds_the_store(small_phantoms, tmp_path, capsys, command):
    store = tmp_path / "store"
    shutil.copytree(small_phantoms / "store", store)
    before = contents(store)
    args = _args(WRITERS, command, small_phantoms, store, tmp_path)
    with locked_by_another_process(store) as holder:
        code, _, err = cli(capsys, args)
    assert code == 75, (code, err[-2000:])
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        f"error: store busy, held by PID {holder} ({store}); try again when it finishes"]
    assert "Traceback" not in err
    assert contents(store) == before  # nothing half-written


@pytest.mark.parametrize("command", RUN_WRITERS)
def test_an_analysis_stores_its_run_while_another_process_holds_the_writer_lock(small_phantoms, tmp_path, capsys,
                                                                                 command):
    store = tmp_path / "store"
    shutil.copytree(small_phantoms / "store", store)
    (runs, *rest), files = contents(store)
    args = _args(RUN_WRITERS, command, small_phantoms, store, tmp_path)
    with locked_by_another_process(store):
        code, _, err = cli(capsys, args)
    assert code == 0, err[-2000:]
    (runs_after, *rest_after), files_after = contents(store)
    assert runs_after > runs and (rest_after, files_after) == (rest, files)  # its runs, and nothing else


def test_a_run_of_a_version_dropped_meanwhile_is_refused(small_phantoms, tmp_path):
    from embedstore.errors import StoreError
    from embedstore.store import Storage

    store = tmp_path / "store"
    shutil.copytree(small_phantoms / "store", store)
    before = contents(store)
    with pytest.raises(StoreError, match="version 'v9' was dropped while the zeroshot run was computed"):
        Storage(store).write_run("zeroshot", "v9", {}, 0.0, 0.0, {})
    assert contents(store) == before


def test_the_same_command_succeeds_once_the_holder_is_gone(small_phantoms, tmp_path, capsys):
    store = tmp_path / "store"
    shutil.copytree(small_phantoms / "store", store)
    args = WRITERS["sql --write"] + ["--store", str(store)]
    with locked_by_another_process(store):
        assert cli(capsys, args)[0] == 75
    assert cli(capsys, args)[0] == 0
    assert contents(store)[0][2] == 0  # the statement ran this time


@pytest.mark.parametrize("command", READERS)
def test_readers_keep_working_while_a_writer_holds_the_store(small_phantoms, capsys, command):
    with locked_by_another_process(small_phantoms / "store"):
        code, out, err = cli(capsys, READERS[command] + ["--store", str(small_phantoms / "store")])
    assert code == 0 and out.strip(), err
