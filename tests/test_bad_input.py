"""Every command, driven through a table of bad inputs: each gets one line, `error: ...`, naming the
value and the fix, the documented exit code, no traceback, and leaves the store byte-identical.

The commands run in-process through `embedstore.cli.main`, the console script's own error
boundary, on a small real store (phantoms encoded by the bundled phantom-clip).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from embedstore.cli import main


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A phantom data set, its store (v1 by phantom-clip), and a few bad files beside them."""
    import embedstore

    root = tmp_path_factory.mktemp("bad-input")
    data = root / "openi"
    embedstore.open(root / "unused").synth(str(data), studies=12, seed=1, size=64, workers=1)
    store = root / "st"
    embedstore.open(store).encode(str(data), model="phantom-clip", workers=0)
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    (root / "afile").write_text("not a store\n")
    (root / "secret.txt").write_text("root:x:0:0\n")
    (root / "bad.csv").write_text("image_id,finding,x\n1,2\n")
    image_id = embedstore.open(store).sql("SELECT image_id FROM images ORDER BY id LIMIT 1")["image_id"][0]
    _import_files(root, image_id)
    return {"root": root, "data": data, "store": store, "image": image_id}


def _import_files(root: Path, image_id: str) -> None:
    """A model record of dimension 4 and Parquet files `import` must refuse."""
    import json

    import polars as pl

    (root / "model.json").write_text(json.dumps({"name": "elsewhere", "embed_dim": 4}))
    pl.DataFrame({"image_id": [image_id]}).write_parquet(root / "novector.parquet")
    pl.DataFrame({"image_id": [image_id], "vector": [[0.1, 0.2, 0.3]]}).write_parquet(root / "dim3.parquet")
    pl.DataFrame({"image_id": ["no-such-image"], "vector": [[0.1, 0.2, 0.3, 0.4]]}).write_parquet(root / "unknown.parquet")


SECRET = "(SELECT content FROM read_text('{root}/secret.txt')) LIKE 'root:%'"
STACKED = "1=1; COPY (SELECT * FROM images) TO '{root}/leak.csv'; SELECT 1"

# (argv, exit code, a piece of the message). {store}, {root}, {data}, {image} are filled in.
BAD_INPUTS = [
    ("inspect {root}/missing", 2, "missing"),
    ("inspect --boxes {root}/bad.csv --box-format bogus", 2, "bogus"),
    ("preview {root}/missing.png", 2, "missing.png"),
    ("preview {root}/corrupt.png --out {root}/p.png --size 64", 2, "corrupt.png"),
    ("synth {data}", 2, "already exists"),
    ("synth {root}/s2 --size 8", 2, "--size"),
    ("encode {root}/missing --model phantom-clip --store {store}", 2, "missing"),
    ("encode {data} --model no-such-model --store {store}", 2, "no-such-model"),
    ("encode {data} --model phantom-clip --labels no-such-scheme --store {store}", 2, "no-such-scheme"),
    ("encode {data} --model phantom-clip --version v9 --store {store}", 2, "v9"),
    ("query cardiomegaly --store {root}/nostore", 2, "nostore"),
    ("query cardiomegaly --store {root}/afile", 2, "afile"),
    ("query cardiomegaly --version v9 --store {store}", 2, "v9"),
    ("query cardiomegaly --where \"" + SECRET + "\" --store {store}", 2, "where"),
    ("query cardiomegaly --where \"split='test') UNION ALL SELECT 999999 --\" --store {store}", 2, "where"),
    ("query cardiomegaly --where \"no_such_column = 1\" --store {store}", 2, "no_such_column"),
    ("query --like no-such-image --store {store}", 2, "no-such-image"),
    ("query cardiomegaly --foo --store {store}", 2, "--foo"),
    ("sql \"SELEC 1\" --store {store}", 2, "SELEC"),
    ("sql \"SELECT * FROM read_text('{root}/secret.txt')\" --store {store}", 2, "--external"),
    ("sql \"COPY images TO '{root}/leak.csv'\" --store {store}", 2, "--external"),
    ("sql \"SET threads = 1\" --store {store}", 2, "--external"),
    ("sql \"DROP TABLE images\" --store {store}", 2, "--write"),
    ("versions --drop v9 --store {store}", 2, "v9"),
    ("verify --version v9 --store {store}", 2, "v9"),
    ("splits --store {root}/nostore", 2, "nostore"),
    ("zeroshot --rule no-such-rule --store {store}", 2, "no-such-rule"),
    ("zeroshot --where \"" + STACKED + "\" --store {store}", 2, "where"),
    ("zeroshot --calibrate-on test --store {store}", 2, "test"),
    ("probe --where \"" + SECRET + "\" --store {store}", 2, "where"),
    ("probe --uncertain maybe --store {store}", 2, "maybe"),
    ("separability --version v9 --store {store}", 2, "v9"),
    ("separability --where \"" + STACKED + "\" --store {store}", 2, "where"),
    ("runs --store {root}/nostore", 2, "nostore"),
    ("stability --repeats 1 --store {store}", 2, "--repeats"),
    ("stability --where \"" + SECRET + "\" --store {store}", 2, "where"),
    ("seed-table --version v9 --store {store}", 2, "v9"),
    ("compare v1 v9 --store {store}", 2, "v9"),
    ("finetune --objective no-such-objective --store {store}", 2, "no-such-objective"),
    ("finetune --from-version v9 --store {store}", 2, "v9"),
    ("explain no-such-image --finding Cardiomegaly --store {store}", 2, "no-such-image"),
    ("explain {image} --finding No-Such-Finding --store {store}", 2, "No-Such-Finding"),
    ("agreement --threshold bogus --store {store}", 2, "bogus"),
    ("agreement --boxes {root}/missing.csv --store {store}", 2, "missing.csv"),
    ("agreement --boxes {root}/bad.csv --store {store}", 2, "bad.csv"),
    ("report --out {root}/no/such/folder/r.html --store {store}", 2, "folder"),
    ("report --version v9 --out {root}/r.html --store {store}", 2, "v9"),
    ("demo --studies 5 --out {root}/demo", 2, "--studies"),
    ("synth {root}/s3 --label-noise 2", 2, "--label-noise"),
    ("synth {root}/s3 --repeat-patients -0.5", 2, "--repeat-patients"),
    ("inspect {data} --views {root}/bad.csv", 2, "bad.csv"),
    ("encode {data} --model phantom-clip --views {root}/bad.csv --store {store}", 2, "View Position"),
    ("duplicates --version v9 --store {store}", 2, "v9"),
    ("duplicates --threshold bogus --store {store}", 2, "bogus"),
    ("duplicates --threshold 1.5 --store {store}", 2, "1.5"),
    ("label-issues --version v9 --store {store}", 2, "v9"),
    ("label-issues --store {store}", 2, "no finding can be cross-validated"),
    ("label-issues --folds 2 --store {store}", 2, "--folds 2: give at least 3"),
    ("infer-views --version v9 --store {store}", 2, "v9"),
    ("infer-views --folds 1 --store {store}", 2, "--folds"),
    ("export --version v9 --out {root}/exported --store {store}", 2, "v9"),
    ("export --out {root}/afile --store {store}", 2, "afile"),
    ("import {root}/novector.parquet --model-record {root}/model.json --store {store}", 2, "missing column(s) vector"),
    ("import {root}/dim3.parquet --model-record {root}/model.json --store {store}", 2, "embed_dim is 4"),
    ("import {root}/unknown.parquet --model-record {root}/model.json --store {store}", 2, "'no-such-image'"),
    ("import {root}/unknown.parquet --model-record {root}/missing.json --store {store}", 2, "missing.json"),
    ("import {root}/missing.parquet --model-record {root}/model.json --store {store}", 2, "missing.parquet"),
    ("index --kind bogus --store {store}", 2, "bogus"),
    ("index --params M=0 --store {store}", 2, "M=0"),
    ("index --version v9 --store {store}", 2, "v9"),
    ("nosuchcommand", 2, "nosuchcommand"),
]


def _argv(line: str, world: dict) -> list[str]:
    import shlex

    return shlex.split(line.format(**{k: str(v) for k, v in world.items()}))


def _fingerprint(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("line,code,named", BAD_INPUTS, ids=[row[0].split(" --store")[0][:60] for row in BAD_INPUTS])
def test_bad_input_is_one_line_with_its_exit_code(world, capsys, line, code, named):
    before = _fingerprint(world["store"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(_argv(line, world))
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("warning: ")]
    assert exited.value.code == code, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert named.format(**{k: str(v) for k, v in world.items()}) in lines[0], lines[0]
    assert "Traceback" not in err and "root:x" not in err  # nothing read from outside the store is echoed
    assert _fingerprint(world["store"]) == before, "a bad input changed the store"
    assert not (world["root"] / "leak.csv").exists()
    assert not (world["root"] / "nostore").exists(), "a reading command created a store"
