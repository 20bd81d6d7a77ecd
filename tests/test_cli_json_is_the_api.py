"""For every command, `--format json` prints what the API method of the same name returns: its
DataFrame, or its typed result's summary (`as_dict`), nested form (`to_dict`) or `.to_polars()`.
The CLI adds nothing and drops nothing.

Each pair meets the same stored state: where a command writes (a run, a version, files), the API
method is called once first, so its second call and the CLI's both find what the first stored.
Fields that differ between two calls by nature (wall-clock times, the output paths the test gives
each side) are left out of the comparison, nothing else.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from embedstore.cli import main
from store_helpers import open_store

VOLATILE = {"seconds", "duration_s", "images_per_s", "commit_seconds", "started", "created", "out", "path", "report"}


def _comparable(value):
    """`value` with VOLATILE keys dropped, at any depth, after a JSON round trip."""
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    return value


def api_json(result):
    """What the API gave, as the test reads it: independent of the CLI's output module."""
    if isinstance(result, pl.DataFrame):
        rows = result.with_columns(pl.col(pl.Float64).fill_nan(None)).to_dicts()
    elif hasattr(result, "as_dict"):
        rows = result.as_dict()
    elif hasattr(result, "to_dict"):
        rows = result.to_dict()
    else:
        rows = result.to_polars().with_columns(pl.col(pl.Float64).fill_nan(None)).to_dicts()
    return _comparable(json.loads(json.dumps(rows, default=str)))


def cli_json(capsys, args: list[str]):
    with pytest.raises(SystemExit) as exc:
        main([*args, "--format", "json"])
    out = capsys.readouterr()
    assert exc.value.code == 0, out.err
    return _comparable(json.loads(out.out))


def same(capsys, args: list[str], call, warm: bool = True):
    """The CLI's JSON equals the API's result; `warm`: call the API once before (it writes)."""
    if warm:
        call()
    expected = api_json(call())
    got = cli_json(capsys, args)
    assert got == expected, (args, got, expected)
    assert got, args  # something was compared
    return got


@pytest.fixture(scope="module")
def world(small_phantoms, tmp_path_factory):
    """A writable copy of the small phantom study's store (v1 by phantom-clip)."""
    root = tmp_path_factory.mktemp("cli-json")
    shutil.copytree(small_phantoms / "store", root / "store")
    return root, small_phantoms / "phantoms", open_store(root / "store")


def test_data_set_commands(world, capsys, tmp_path):
    _, phantoms, st = world
    image = sorted((phantoms / "images").glob("*.png"))[0]
    same(capsys, ["inspect", str(phantoms)], lambda: st.inspect(str(phantoms)), warm=False)
    same(capsys, ["preview", str(image), "--out", str(tmp_path / "a.png"), "--size", "64"],
         lambda: st.preview(str(image), out=str(tmp_path / "b.png"), size=64), warm=False)
    same(capsys, ["synth", str(tmp_path / "s1"), "--studies", "2", "--seed", "3", "--size", "64", "--workers", "1"],
         lambda: st.synth(str(tmp_path / "s2"), studies=2, seed=3, size=64, workers=1), warm=False)


def test_store_commands(world, capsys):
    root, phantoms, st = world
    store = ["--store", str(root / "store")]
    same(capsys, ["encode", str(phantoms), "--model", "phantom-clip", "--workers", "0", "--device", "cpu", *store],
         lambda: st.encode(str(phantoms), model="phantom-clip", workers=0, device="cpu"))
    same(capsys, ["query", "Cardiomegaly", "-k", "5", *store], lambda: st.query("Cardiomegaly", k=5), warm=False)
    select = "SELECT view, count(*) AS n FROM images GROUP BY view ORDER BY view"
    same(capsys, ["sql", select, *store], lambda: st.sql(select), warm=False)
    same(capsys, ["versions", *store], lambda: st.versions(), warm=False)
    same(capsys, ["verify", *store], lambda: st.verify(), warm=False)
    same(capsys, ["index", "--kind", "exact", *store], lambda: st.index(kind="exact"))
    same(capsys, ["splits", *store], lambda: st.splits(), warm=False)


def test_export_and_import(small_phantoms, capsys, tmp_path):
    shutil.copytree(small_phantoms / "store", tmp_path / "store")  # import adds a version: not the shared world
    st, out = open_store(tmp_path / "store"), tmp_path / "exported"
    store = ["--store", str(tmp_path / "store")]
    same(capsys, ["export", "--out", str(out), "--version", "v1", *store], lambda: st.export(out, version="v1"))
    same(capsys, ["import", str(out), *store], lambda: st.import_(out))


def test_analysis_commands(world, capsys):
    root, _, st = world
    store = ["--store", str(root / "store")]
    few = ["--n-boot", "10", "--min-positives", "1"]
    same(capsys, ["zeroshot", "--rule", "pos-neg", *few, *store],
         lambda: st.zeroshot(rule="pos-neg", n_boot=10, min_positives=1))
    same(capsys, ["probe", *few, *store], lambda: st.probe(n_boot=10, min_positives=1))
    same(capsys, ["separability", *store], lambda: st.separability())
    same(capsys, ["stability", "--repeats", "2", *store], lambda: st.stability(repeats=2), warm=False)
    same(capsys, ["seed-table", *store], lambda: st.seed_table(), warm=False)
    same(capsys, ["runs", *store], lambda: st.runs(), warm=False)


def test_compare(small_two_versions, capsys, tmp_path):
    shutil.copytree(small_two_versions.path, tmp_path / "store")
    st = open_store(tmp_path / "store")
    same(capsys, ["compare", "v1", "v2", "--n-boot", "10", "--store", str(st.path)],
         lambda: st.compare("v1", "v2", n_boot=10))


@pytest.mark.slow  # a fine-tune, Grad-CAM over the boxed test images and a report: ~40 s
def test_model_and_output_commands(world, capsys, tmp_path):
    root, _, st = world
    store = ["--store", str(root / "store")]
    tune = {"epochs": 1, "batch_size": 8, "device": "cpu", "workers": 0}
    same(capsys, ["finetune", "--from-version", "v1", "--epochs", "1", "--batch-size", "8", "--device", "cpu",
                  "--workers", "0", *store], lambda: st.finetune("v1", **tune))
    image_id = st.sql("SELECT image_id FROM boxes ORDER BY 1 LIMIT 1")["image_id"][0]
    finding = st.sql(f"SELECT finding FROM boxes WHERE image_id = '{image_id}' LIMIT 1")["finding"][0]
    same(capsys, ["explain", image_id, "--finding", finding, "--version", "v1", "--out", str(tmp_path / "a.png"), *store],
         lambda: st.explain(image_id, finding, version="v1", out=str(tmp_path / "b.png")))
    same(capsys, ["agreement", "--version", "v1", "--split", "all", "--n-boot", "10", *store],
         lambda: st.agreement(version="v1", split="all", n_boot=10))  # few boxed test images in 16 studies
    same(capsys, ["report", "--out", str(tmp_path / "a.html"), *store], lambda: st.report(out=tmp_path / "b.html"))
    assert Path(tmp_path / "a.html").read_text() and Path(tmp_path / "b.html").read_text()


@pytest.mark.slow  # the whole study at 40 studies, three times: ~60 s
def test_demo(capsys, tmp_path):
    import embedstore

    st = embedstore.open(tmp_path / "unused")
    args = ["demo", "--out", str(tmp_path / "d"), "--studies", "40", "--epochs", "1"]
    got = same(capsys, args, lambda: st.demo(out=tmp_path / "d", studies=40, epochs=1, echo=lambda *_: None))
    assert [row["stage"] for row in got][:2] == ["synth", "encode"]
