"""Splits that never move: stratified by group over every finding, frozen in the store, reported.

Stores are real (DuckDB + FAISS) and filled through `Store.encode` or the CLI from manifests over
small PNGs; the stratification is checked on 1,000 phantom studies read by the ordinary reader.
"""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import polars as pl
import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
from store_helpers import MODEL, build_store, write_pngs  # noqa: E402

FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}


def write_manifest(path: Path, pngs: list[Path], rows: range, split_of=None, group_of=None) -> Path:
    """A manifest over `pngs[rows]`: patient p<i // 2>, labels from the index, optional split / group."""
    frame = {
        "path": [str(pngs[i]) for i in rows],
        "image_id": [f"IM{i:03d}" for i in rows],
        "patient_id": [f"p{i // 2}" for i in rows],
        "Cardiomegaly": [str(int(i % 3 == 0)) for i in rows],
        "Effusion": [str(int(i % 4 == 1)) for i in rows],
        "Nodule": [str(int(i % 7 == 2)) for i in rows],
    }
    if split_of:
        frame["split"] = [split_of(i) for i in rows]
    if group_of:
        frame["group"] = [group_of(i) for i in rows]
    pl.DataFrame(frame).write_csv(path)
    return path


def stored_splits(st) -> dict[str, tuple[str, str, str, str]]:
    """image_id -> (images.split, splits.split, method, group_id), read by plain SQL."""
    rows = st.sql("SELECT i.image_id, i.split, s.split, s.method, s.group_id FROM images i LEFT JOIN splits s USING (id)")
    return {r[0]: r[1:] for r in rows.iter_rows()}


def test_encoding_a_subset_then_all_keeps_every_shared_images_split(tmp_path, tiny_model):
    from store_helpers import open_store as Store
    from embedstore.data.datasets import read_dataset

    pngs = write_pngs(tmp_path / "img", 80, size=24)
    subset = write_manifest(tmp_path / "subset.csv", pngs, range(0, 50))
    full = write_manifest(tmp_path / "full.csv", pngs, range(0, 80))
    # Read on their own, the two manifests are stratified differently: a store that took the
    # reader's splits each time would move these images.
    alone = {r.image_id: r.split for r in read_dataset(str(subset)).records}
    moved = [r.image_id for r in read_dataset(str(full)).records if r.image_id in alone and alone[r.image_id] != r.split]
    assert moved

    st = Store(tmp_path / "store")
    first = st.encode(str(subset), model=MODEL, workers=0)
    before = stored_splits(st)
    assert first.split_by_hash == 0
    assert {v[2] for v in before.values()} == {"stratified"} and before == {
        k: (alone[k], alone[k], "stratified", f"patient:p{int(k[2:]) // 2}") for k in alone}
    last_encode = st.encode(str(full), model=MODEL, workers=0)
    after = stored_splits(st)
    assert {k: after[k] for k in before} == before  # every shared image kept its split
    assert all(v[0] == v[1] for v in after.values())  # images.split mirrors splits.split
    new = {k: v for k, v in after.items() if k not in before}
    assert len(new) == 30 and {v[2] for v in new.values()} == {"hash"}
    assert last_encode.split_by_hash == 30
    # stored seed and fractions are those of the first (stratified) assignment
    methods = st.split_methods()
    assert methods.select("method", "seed", "fractions", "images").rows() == [
        ("stratified", 0, "[0.7, 0.1, 0.2]", 50), ("hash", 0, "[0.7, 0.1, 0.2]", 30)]
    # encoding again, or into another version (another model), moves nothing
    last_encode = st.encode(str(full), model=tiny_model, workers=0)
    assert last_encode.version == "v2" and stored_splits(st) == after and last_encode.split_by_hash == 0


def test_manifest_split_is_kept_group_column_honoured_and_new_groups_hashed(tmp_path, capsys):
    from store_helpers import open_store as Store
    from embedstore.cli import main
    from embedstore.data.datasets import read_dataset

    pngs = write_pngs(tmp_path / "img", 42, size=24)
    group = lambda i: f"site{i // 6}"  # noqa: E731  sites of six images, three patients each
    given = write_manifest(tmp_path / "given.csv", pngs, range(0, 12), split_of=lambda i: ("test", "train")[i // 6],
                           group_of=group)
    st = Store(tmp_path / "store")
    last_encode = st.encode(str(given), model=MODEL, workers=0)
    kept = stored_splits(st)
    assert {k: v[:3] for k, v in kept.items()} == {
        f"IM{i:03d}": (("test", "train")[i // 6],) * 2 + ("given",) for i in range(12)}
    assert {v[3] for v in kept.values()} == {"group:site0", "group:site1"}

    # The reader stratifies whole groups when no split is given: a site never spans two splits.
    more = write_manifest(tmp_path / "more.csv", pngs, range(0, 30), group_of=group)
    ds = read_dataset(str(more))
    assert ds.split_by == "group" and ds.split_method == "stratified"
    assert all(len({r.split for r in ds.records if r.group_id == g}) == 1 for g in {r.group_id for r in ds.records})

    with pytest.raises(SystemExit) as exc:
        main(["encode", str(more), "--model", "phantom-clip", "--device", "cpu", "--workers", "0",
              "--store", str(st.path), "--format", "json"])
    assert exc.value.code == 0
    assert json.loads(capsys.readouterr().out)["split_by_hash"] == 18  # sites 2, 3 and 4 are new
    after = stored_splits(st)
    assert {k: after[k] for k in kept} == kept  # given splits kept, though the reader drew others
    new = {k: v for k, v in after.items() if k not in kept}
    assert {v[2] for v in new.values()} == {"hash"} and all(v[0] == v[1] for v in after.values())
    by_group = defaultdict(set)
    for v in after.values():
        by_group[v[3]].add(v[1])
    assert len(by_group) == 5 and all(len(s) == 1 for s in by_group.values())

    # A data set that gives splits again: its new images (site 5) take them, as given; the stored
    # images keep theirs although it says otherwise.
    last_encode = st.encode(str(write_manifest(tmp_path / "val.csv", pngs, range(0, 36), split_of=lambda i: "val", group_of=group)),
              model=MODEL, workers=0)
    again = stored_splits(st)
    assert {k: again[k] for k in after} == after and last_encode.split_by_hash == 0
    assert {again[f"IM{i:03d}"][1:3] for i in range(30, 36)} == {("val", "given")}

    # one more site without a split: the table output says how many were hashed, on stderr
    with pytest.raises(SystemExit) as exc:
        main(["encode", str(write_manifest(tmp_path / "last.csv", pngs, range(0, 42), group_of=group)),
              "--model", "phantom-clip", "--device", "cpu", "--workers", "0", "--store", str(st.path)])
    assert exc.value.code == 0
    assert "splits: 6 new image(s)" in capsys.readouterr().err
    assert {stored_splits(st)[f"IM{i:03d}"][2] for i in range(36, 42)} == {"hash"}


def test_a_new_image_of_a_stored_patient_joins_its_split(tmp_path):
    from store_helpers import open_store as Store

    pngs = write_pngs(tmp_path / "img", 21, size=24)
    st = Store(tmp_path / "store")
    last_encode = st.encode(str(write_manifest(tmp_path / "a.csv", pngs, range(0, 20, 2))), model=MODEL, workers=0)
    before = stored_splits(st)
    last_encode = st.encode(str(write_manifest(tmp_path / "b.csv", pngs, range(0, 21))), model=MODEL, workers=0)
    after = stored_splits(st)
    for i in range(1, 20, 2):  # image i of patient p<i // 2>, whose image i - 1 was stored first
        assert after[f"IM{i:03d}"][1:3] == (before[f"IM{i - 1:03d}"][1], "group")
    assert after["IM020"][2] == "hash" and last_encode.split_by_hash == 1


def test_stratified_splits_of_1000_phantom_studies(tmp_path):
    """Every finding with at least 30 positive groups has positives in train, val and test, each
    within 5 points of its target share; one study never spans two splits; the seed decides."""
    from embedstore.data.datasets import read_dataset
    from embedstore.data.splits import group_of, stratify_groups
    from embedstore.synth import synth

    synth(str(tmp_path / "p"), studies=1000, seed=11, size=48, workers=2)
    ds = read_dataset(str(tmp_path / "p"), seed=4)
    assert ds.split_by == "study" and ds.split_method == "stratified" and ds.split_fractions == (0.7, 0.1, 0.2)
    split_of = defaultdict(set)
    positives = defaultdict(lambda: defaultdict(set))
    for r in ds.records:
        split_of[group_of(r)].add(r.split)
        for f, v in r.labels.items():
            if v == 1:
                positives[f][r.split].add(group_of(r))
    assert len(split_of) == 1000 and all(len(s) == 1 for s in split_of.values())
    checked = 0
    for f, by_split in positives.items():
        total = sum(len(g) for g in by_split.values())
        if total < 30:
            continue
        checked += 1
        for split, target in FRACTIONS.items():
            share = len(by_split[split]) / total
            assert len(by_split[split]) > 0 and abs(share - target) <= 0.05, (f, split, share)
    assert checked >= 6
    Y = np.random.default_rng(0).random((300, 5)) < 0.1
    assert (stratify_groups(Y, 4) == stratify_groups(Y, 4)).all() and (stratify_groups(Y, 4) != stratify_groups(Y, 5)).any()


def test_stratify_groups_small_and_degenerate_inputs():
    from embedstore.data.splits import stratify_groups

    assert stratify_groups(np.zeros((1, 0), bool), 0).tolist() == ["train"]
    assert Counter(stratify_groups(np.zeros((10, 1), bool), 0).tolist()) == {"train": 7, "val": 1, "test": 2}
    assert set(stratify_groups(np.ones((5, 3), bool), 0, (0.0, 0.0, 1.0)).tolist()) == {"test"}
    assert set(stratify_groups(np.ones((5, 3), bool), 0, (0.0, 1.0, 0.0)).tolist()) == {"val"}


def test_hash_split_is_uniform_and_depends_on_seed_and_group():
    from embedstore.data.splits import hash_split

    got = Counter(hash_split(f"patient:{i}", 0) for i in range(20000))
    assert all(abs(got[s] / 20000 - f) < 0.01 for s, f in FRACTIONS.items())
    assert hash_split("patient:7", 0) == hash_split("patient:7", 0)
    assert [hash_split(f"patient:{i}", 0) for i in range(50)] != [hash_split(f"patient:{i}", 1) for i in range(50)]


def test_mimic_official_split_file_beside_the_labels(tmp_path):
    from embedstore.data.datasets import read_dataset
    from embedstore.data.labels import CHEXPERT_FINDINGS

    rows = [("10", "50", "d1"), ("10", "50", "d2"), ("11", "51", "d3"), ("12", "52", "d4")]
    labels = pl.DataFrame({"subject_id": [r[0] for r in rows], "study_id": [r[1] for r in rows],
                           "dicom_id": [r[2] for r in rows],
                           **{f: ["1.0", "", "0.0", "-1.0"] for f in CHEXPERT_FINDINGS}})
    labels.write_csv(tmp_path / "mimic-cxr-2.0.0-chexpert.csv")
    official = "dicom_id,study_id,subject_id,split\nd1,50,10,train\nd2,50,10,train\nd3,51,11,validate\nd4,52,12,test\n"
    import gzip

    with gzip.open(tmp_path / "mimic-cxr-2.0.0-split.csv.gz", "wt") as fh:
        fh.write(official)
    ds = read_dataset(str(tmp_path / "mimic-cxr-2.0.0-chexpert.csv"))
    assert ds.split_by == "given" and ds.split_method == "given"
    assert [(r.image_id, r.split) for r in ds.records] == [("d1", "train"), ("d2", "train"), ("d3", "val"), ("d4", "test")]
    assert any("official split" in n for n in ds.notes)
    # keyed by subject and study when the labels have no dicom_id (one record per study)
    labels.drop("dicom_id").unique(["subject_id", "study_id"], keep="first", maintain_order=True).write_csv(
        tmp_path / "mimic-cxr-2.0.0-chexpert.csv")
    ds = read_dataset(str(tmp_path / "mimic-cxr-2.0.0-chexpert.csv"))
    assert [(r.image_id, r.split) for r in ds.records] == [("s50", "train"), ("s51", "val"), ("s52", "test")]
    # a split file that misses an image is not used: the reader stratifies, and says why
    with gzip.open(tmp_path / "mimic-cxr-2.0.0-split.csv.gz", "wt") as fh:
        fh.write(official.replace("d4,52,12,test\n", ""))
    ds = read_dataset(str(tmp_path / "mimic-cxr-2.0.0-chexpert.csv"))
    assert ds.split_method == "stratified" and any("1 of 3 images have no row" in n for n in ds.notes)


def test_splits_command_counts_positives_and_warns_below_min(tmp_path, capsys, monkeypatch):
    from embedstore.cli import main

    monkeypatch.setenv("COLUMNS", "160")  # rich folds cells at the terminal's width
    st, ds = build_store(tmp_path, n=40)
    expected = {(f, s): len({r.patient_id for r in ds.records if r.split == s and r.labels.get(f) == 1})
                for f in ("Cardiomegaly", "Effusion") for s in FRACTIONS}
    images = {(f, s): sum(r.split == s and r.labels.get(f) == 1 for r in ds.records)
              for f in ("Cardiomegaly", "Effusion") for s in FRACTIONS}
    table = st.splits(min_positives=3).to_polars()
    assert table["finding"].to_list() == ["Cardiomegaly", "Effusion", "Nodule"]
    for row in table.iter_rows(named=True):
        for s in FRACTIONS:
            assert row[f"{s}_groups"] == expected.get((row["finding"], s), 0)
            assert row[f"{s}_images"] == images.get((row["finding"], s), 0)
    low = dict(zip(table["finding"], table["below_min"]))
    # the split is i % 3 and Cardiomegaly i % 3 == 0: train only; Nodule has no positive at all
    assert low == {"Cardiomegaly": "val,test", "Effusion": None, "Nodule": "val,test"}

    with pytest.raises(SystemExit) as exc:
        main(["splits", "--store", str(st.path), "--min-positives", "3", "--format", "json"])
    assert exc.value.code in (0, None)
    out = capsys.readouterr()
    doc = json.loads(out.out)
    assert doc["methods"][0]["method"] == "given" and doc["methods"][0]["images"] == 40
    assert [r["below_min"] for r in doc["findings"]] == ["val,test", None, "val,test"]
    assert out.err.count("\n") == 1 and out.err.startswith("warning: 2 finding(s) have fewer than 3 positive groups")
    assert "Cardiomegaly (val 0, test 0), Nodule (val 0, test 0)" in out.err
    with pytest.raises(SystemExit) as exc:
        main(["splits", "--store", str(st.path), "--min-positives", "0"])
    assert exc.value.code in (0, None)
    out = capsys.readouterr()
    assert "Cardiomegaly" in out.out and "given" in out.out and out.err == ""


def test_a_store_from_before_frozen_splits_keeps_its_images_splits(tmp_path):
    from store_helpers import open_store as Store
    from embedstore.data.records import ImageRecord

    def records(split):
        return [ImageRecord(f"im{i}", None, f"s{i}", f"p{i}", None, None, split(i), {"A": i % 2}) for i in range(6)]

    st = Store(tmp_path / "s")
    st.upsert_images(records(lambda i: ("train", "test")[i % 2]))
    st.sql("DELETE FROM splits", write=True)  # what a store written before the `splits` table was filled holds
    st.upsert_images(records(lambda i: "val"))
    got = stored_splits(st)
    assert got == {f"im{i}": (("train", "test")[i % 2],) * 2 + ("adopted", f"patient:p{i}") for i in range(6)}
