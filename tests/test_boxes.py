"""Box readers on the real NIH, VinDr-CXR and RSNA files (read in place) and the canonical format."""

from __future__ import annotations

import csv
import gzip
import importlib.util
import io
import os
import zipfile
from collections import Counter, defaultdict

import pytest

from txv_files import txv_file  # noqa: E402

from embedstore.data.boxes import BOX_COLUMNS, load_boxes
from embedstore.data.datasets import read_boxes
from embedstore.errors import InputError




def test_nih_boxes():
    path = txv_file("BBox_List_2017.csv.gz")
    with gzip.open(path, "rt") as fh:
        rows = list(csv.reader(fh))[1:]
    df = read_boxes(path)
    assert df.columns == BOX_COLUMNS
    assert df.height == len(rows) == 984
    assert df["image_id"].n_unique() == len({r[0] for r in rows}) == 880
    assert "Infiltrate" not in set(df["finding"]) and "Infiltration" in set(df["finding"])
    counts = Counter("Infiltration" if r[1] == "Infiltrate" else r[1] for r in rows)
    assert dict(Counter(df["finding"].to_list())) == dict(counts)
    # xywh -> xyxy, row by row, in the 1024 px images
    for got, r in zip(df.iter_rows(named=True), rows):
        x, y, w, h = map(float, r[2:6])
        assert (got["image_id"], got["x_min"], got["y_min"]) == (r[0], x, y)
        assert got["x_max"] == pytest.approx(x + w) and got["y_max"] == pytest.approx(y + h)
    assert set(df["width"]) == {1024} and set(df["height"]) == {1024}


def test_vindr_boxes_several_readers():
    path = txv_file("vinbigdata-train.csv.gz")
    with gzip.open(path, "rt") as fh:
        rows = list(csv.DictReader(fh))
    boxed = [r for r in rows if r["class_name"] != "No finding"]
    table = load_boxes(path)
    df = table.df
    assert table.format == "vindr" and df.height == len(boxed)
    assert df["image_id"].n_unique() == len({r["image_id"] for r in boxed})
    readers = defaultdict(set)
    for r in boxed:
        readers[r["image_id"]].add(r["rad_id"])
    got = defaultdict(set)
    for image_id, reader in zip(df["image_id"], df["reader"]):
        got[image_id].add(reader)
    assert got == readers
    assert max(len(v) for v in readers.values()) >= 3  # several radiologists on one image
    assert table.rows_without_box == len(rows) - len(boxed)
    assert table.images_without_box == len({r["image_id"] for r in rows} - set(readers))
    first = boxed[0]
    row = df.row(0, named=True)
    assert (row["image_id"], row["finding"], row["reader"], row["x_max"]) == (
        first["image_id"], first["class_name"], first["rad_id"], float(first["x_max"]))


def test_rsna_boxes_target():
    path = txv_file("kaggle_stage_2_train_labels.csv.zip")
    with zipfile.ZipFile(path) as zf:
        rows = list(csv.DictReader(io.StringIO(zf.read(zf.namelist()[0]).decode())))
    pos = [r for r in rows if r["Target"] == "1"]
    table = load_boxes(path)
    assert table.format == "rsna" and table.df.height == len(pos)
    assert table.df["image_id"].n_unique() == len({r["patientId"] for r in pos})
    assert set(table.df["finding"]) == {"Pneumonia"}
    r, got = pos[0], table.df.row(0, named=True)
    assert got["x_max"] == float(r["x"]) + float(r["width"]) and got["y_max"] == float(r["y"]) + float(r["height"])


def test_canonical_roundtrip_and_explicit_format(tmp_path):
    p = tmp_path / "boxes.csv"
    p.write_text("image_id,finding,x_min,y_min,x_max,y_max,reader,width,height\n"
                 "CXR1_IM-0001-1001,Nodule,10,20,30,40,,256,256\nCXR1_IM-0001-1001,Mass,1.5,2,3,4,R1,256,256\n")
    df = read_boxes(str(p), box_format="canonical")
    assert df.columns == BOX_COLUMNS and df.height == 2
    assert df.row(0) == ("CXR1_IM-0001-1001", "Nodule", 10.0, 20.0, 30.0, 40.0, None, 256, 256)
    assert df.row(1)[6] == "R1"
    with pytest.raises(InputError, match="rad_id"):
        read_boxes(str(p), box_format="vindr")


@pytest.mark.parametrize("body, needle", [
    ("image_id,finding,x_min,y_min,x_max,y_max\na,Mass,1,2,x,4\n", "line 2 column x_max: 'x'"),
    ("image_id,finding,x_min,y_min,x_max,y_max\na,Mass,5,2,1,4\n", "line 2: box"),
    ("image_id,finding,x_min,y_min,x_max,y_max\n,Mass,1,2,3,4\n", "line 2: blank image id"),
    ("patientId,x,y,width,height,Target\np,1,2,3,4,2\n", "Target '2'"),
    ("a,b,c\n1,2,3\n", "--box-format"),
])
def test_bad_box_files(tmp_path, body, needle):
    p = tmp_path / "b.csv"
    p.write_text(body)
    with pytest.raises(InputError) as err:
        read_boxes(str(p))
    assert needle in str(err.value) and "b.csv" in str(err.value) and "\n" not in str(err.value)


def test_box_file_missing_columns(tmp_path):
    p = tmp_path / "b.csv"
    p.write_text("image_id,class_name,rad_id,x_min\nz,Mass,R1,1\n")
    with pytest.raises(InputError, match="missing column"):
        read_boxes(str(p))
