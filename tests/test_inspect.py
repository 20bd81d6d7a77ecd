"""`embedstore inspect` end to end: the issue's acceptance figures on the real files, and errors."""

from __future__ import annotations

import csv
import gzip
import importlib.util
import json
import os
import re
import tarfile
from collections import Counter

import pytest

from txv_files import txv_file  # noqa: E402

from embedstore.cli import main
from embedstore.data.datasets import read_dataset
from embedstore.data.inspect import inspect_boxes, inspect_dataset
from embedstore.data.records import Dataset, ImageRecord




def run_cli(capsys, *args) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exit_:
        code = exit_.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def test_inspect_real_openi_archive(capsys):
    tgz = txv_file("NLMCXR_reports.tgz")
    code, out, _ = run_cli(capsys, "inspect", tgz, "--format", "json")
    assert code == 0
    got = json.loads(out)
    # Independent parse: regular expressions over the raw XML, the substring rule written out.
    subs = {"Atelectasis": ["atelectasis", "atelectases"], "Calcified Granuloma": ["calcified granuloma"],
            "Cardiomegaly": ["cardiomegaly"], "Edema": ["edema"], "Effusion": ["effusion"],
            "Emphysema": ["emphysema"], "Fibrosis": ["fibrosis"], "Fracture": ["fracture"],
            "Granuloma": ["granuloma"], "Hernia": ["hernia"], "Infiltration": ["infiltration", "infiltrate"],
            "Lung Lesion": ["lesion"], "Mass": ["mass"], "Nodule": ["nodule"], "Lung Opacity": ["opacity"],
            "Pleural_Thickening": ["pleural_thickening", "pleural thickening"], "Pneumonia": ["pneumonia"],
            "Pneumothorax": ["pneumothorax"]}
    n_reports, n_images, without, reports = 0, 0, [], Counter()
    with tarfile.open(tgz) as tf:
        for m in tf.getmembers():
            if not m.name.endswith(".xml"):
                continue
            text = tf.extractfile(m).read().decode()
            n_reports += 1
            images = re.findall(r"<parentImage id=", text)
            n_images += len(images)
            if not images:
                without.append(re.search(r'<uId id="([^"]+)"', text).group(1))
                continue
            terms = [t.lower() for t in re.findall(r"<automatic>(.*?)</automatic>", text)]
            reports.update(f for f, s in subs.items() if any(x in t for x in s for t in terms))
    assert got["reports"] == n_reports == 3955
    assert got["images"] == n_images == 7470
    assert sorted(got["reports_without_images_ids"]) == sorted(without)
    assert got["reports_without_images"] == len(without)
    assert {row["finding"]: row["reports"] for row in got["per_finding"]} == {f: reports[f] for f in subs}
    assert sum(got["splits"].values()) == 7470 and got["split_by"] == "study"


def test_inspect_real_nih_boxes(capsys):
    path = txv_file("BBox_List_2017.csv.gz")
    code, out, _ = run_cli(capsys, "inspect", "--boxes", path, "--format", "json")
    assert code == 0
    got = json.loads(out)
    with gzip.open(path, "rt") as fh:
        rows = list(csv.reader(fh))[1:]
    assert got["boxes"] == len(rows) == 984 and got["images"] == len({r[0] for r in rows}) == 880
    assert got["format"] == "nih"
    assert sum(r["boxes"] for r in got["per_finding"]) == 984


def test_inspect_table_output(capsys, tmp_path):
    (tmp_path / "m.csv").write_text("path,patient_id,Edema\na.png,p1,1\nb.png,p2,-1\n")
    code, out, _ = run_cli(capsys, "inspect", str(tmp_path / "m.csv"))
    assert code == 0 and "per finding" in out and "Edema" in out and "manifest" in out


def test_inspect_bad_input_is_one_line_and_exit_2(capsys, tmp_path):
    (tmp_path / "nih.csv").write_text("Image Index,Finding Labels,Patient ID\n1.png,Tumour,1\n")
    code, out, err = run_cli(capsys, "inspect", str(tmp_path / "nih.csv"))
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and "Tumour" in err and "nih.csv line 2" in err
    code, _, err = run_cli(capsys, "inspect")
    assert code == 2 and "--boxes" in err


def test_inspect_dataset_counts_by_hand():
    recs = [
        ImageRecord("a1", None, "s1", "p1", "frontal", "PA", None, {"Edema": 1, "Mass": -1}),
        ImageRecord("a2", "/x.png", "s1", "p1", "lateral", None, None, {"Edema": 1}),
        ImageRecord("b1", None, "s2", "p2", None, None, None, {"Edema": 0}),
    ]
    ds = Dataset("manifest", "m.csv", "manifest", ["Edema", "Mass"], recs, n_reports=3, reports_without_images=["s3"])
    s = inspect_dataset(ds)
    assert (s["reports"], s["reports_with_images"], s["images"], s["images_with_file"]) == (3, 2, 3, 1)
    assert s["views"] == {"frontal": 1, "lateral": 1, "unknown": 1}
    assert s["uncertain"] == 1 and s["missing"] == 2
    assert s["per_finding"] == [
        {"finding": "Edema", "reports": 1, "images": 2, "negative": 1, "uncertain": 0, "missing": 0},
        {"finding": "Mass", "reports": 0, "images": 0, "negative": 0, "uncertain": 1, "missing": 2},
    ]


def test_inspect_boxes_by_hand():
    import polars as pl

    df = pl.DataFrame({"image_id": ["a", "a", "b"], "finding": ["Mass", "Mass", "Nodule"],
                       "x_min": [0.0] * 3, "y_min": [0.0] * 3, "x_max": [1.0] * 3, "y_max": [1.0] * 3,
                       "reader": ["R1", "R2", None], "width": [None] * 3, "height": [None] * 3})
    s = inspect_boxes(df)
    assert (s["boxes"], s["images"], s["findings"], s["readers"]) == (3, 2, 2, 2)
    assert s["per_finding"] == [{"finding": "Mass", "boxes": 2, "images": 1}, {"finding": "Nodule", "boxes": 1, "images": 1}]


def test_inspect_splits_keep_patients_together(tmp_path):
    rows = "\n".join(f"{i}.png,p{i % 7}" for i in range(60))
    (tmp_path / "m.csv").write_text(f"path,patient_id\n{rows}\n")
    s = inspect_dataset(read_dataset(str(tmp_path / "m.csv"), seed=5))
    assert s["split_by"] == "patient" and s["split_seed"] == 5 and sum(s["splits"].values()) == 60
