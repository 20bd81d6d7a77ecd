"""Box files into one canonical table: image_id, finding, x_min, y_min, x_max, y_max, reader,
width, height (pixels of the original image; `reader` and the size may be null).

Formats: canonical (what `embedstore synth` writes), NIH `BBox_List_2017.csv` (xywh in the
1024 x 1024 images; its header `Bbox [x,y,w,h]` spans four columns), VinDr-CXR (xyxy, one row per
radiologist `rad_id`; "No finding" rows carry no box) and RSNA pneumonia (xywh plus `Target`;
Target 0 rows carry no box).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from embedstore.data.table_files import read_table, require_columns
from embedstore.errors import InputError

BOX_COLUMNS = ["image_id", "finding", "x_min", "y_min", "x_max", "y_max", "reader", "width", "height"]
BOX_FORMATS = ("auto", "canonical", "nih", "vindr", "rsna")
NIH_SIZE = 1024  # ChestX-ray14 images are distributed at 1024 x 1024
RSNA_SIZE = 1024  # RSNA pneumonia DICOMs are 1024 x 1024
NIH_RENAME = {"Infiltrate": "Infiltration"}  # the box file's name for the Data_Entry label
VINDR_NO_FINDING = "No finding"
RSNA_FINDING = "Pneumonia"


@dataclass
class BoxTable:
    """The canonical boxes plus what the file said about images without a box."""

    df: object  # polars.DataFrame with BOX_COLUMNS
    format: str
    rows_without_box: int = 0  # VinDr "No finding" / RSNA Target 0 rows
    images_without_box: int = 0  # images whose rows carry no box at all


def read_boxes(path: str, box_format: str = "auto"):
    """The canonical box table (polars DataFrame) of a box file."""
    return load_boxes(path, box_format).df


def load_boxes(path: str, box_format: str = "auto") -> BoxTable:
    if box_format not in BOX_FORMATS:
        raise InputError(f"--box-format {box_format!r}: choose one of {', '.join(BOX_FORMATS)}")
    df = read_table(path)
    fmt = detect_box_format(path, df) if box_format == "auto" else box_format
    reader = {"canonical": _canonical, "nih": _nih, "vindr": _vindr, "rsna": _rsna}[fmt]
    rows, no_box = reader(path, df)
    with_box = {r[0] for r in rows}
    return BoxTable(_frame(rows), fmt, len(no_box), len(set(no_box) - with_box))


def detect_box_format(path: str, df) -> str:
    cols = set(df.columns)
    if {"image_id", "finding", "x_min", "y_min", "x_max", "y_max"} <= cols:
        return "canonical"
    if {"Image Index", "Finding Label"} <= cols:
        return "nih"
    if {"image_id", "class_name", "rad_id"} <= cols:
        return "vindr"
    if {"patientId", "Target"} <= cols:
        return "rsna"
    raise InputError(f"{path}: not a known box file (columns: {', '.join(df.columns[:10])}); "
                     "pass --box-format canonical|nih|vindr|rsna")


def _frame(rows: list[tuple]):
    import polars as pl

    schema = {"image_id": pl.String, "finding": pl.String, "x_min": pl.Float64, "y_min": pl.Float64,
              "x_max": pl.Float64, "y_max": pl.Float64, "reader": pl.String, "width": pl.Int64, "height": pl.Int64}
    return pl.DataFrame(rows, schema=schema, orient="row")


def _num(cell, where: str) -> float:
    try:
        v = float(cell)
    except (TypeError, ValueError):
        raise InputError(f"{where}: {cell!r} is not a number; fix or remove the row") from None
    if not math.isfinite(v):
        raise InputError(f"{where}: {cell!r} is not a finite number; fix or remove the row")
    return v


def _size(cell, where: str) -> int | None:
    if cell is None or not str(cell).strip():
        return None
    v = _num(cell, where)
    if v <= 0 or v != int(v):
        raise InputError(f"{where}: image size {cell!r} is not a positive whole number")
    return int(v)


def _box(path, line, image_id, finding, x0, y0, x1, y1, reader=None, width=None, height=None) -> tuple:
    where = f"{path} line {line}"
    if not image_id:
        raise InputError(f"{where}: blank image id")
    if not finding:
        raise InputError(f"{where}: blank finding")
    if x1 < x0 or y1 < y0:
        raise InputError(f"{where}: box ({x0}, {y0}, {x1}, {y1}) has x_max < x_min or y_max < y_min")
    return (image_id, finding, x0, y0, x1, y1, reader, width, height)


def _strip(v) -> str:
    return (v or "").strip()


def _canonical(path, df):
    require_columns(df, path, BOX_COLUMNS[:6], "canonical boxes")
    rows = []
    for i, r in enumerate(df.iter_rows(named=True)):
        line = i + 2
        w = f"{path} line {line}"
        rows.append(_box(path, line, _strip(r["image_id"]), _strip(r["finding"]),
                         *(_num(r[c], f"{w} column {c}") for c in ("x_min", "y_min", "x_max", "y_max")),
                         _strip(r.get("reader")) or None, _size(r.get("width"), f"{w} column width"),
                         _size(r.get("height"), f"{w} column height")))
    return rows, []


def _nih(path, df):
    require_columns(df, path, ["Image Index", "Finding Label"], "NIH boxes")
    if len(df.columns) < 6:
        raise InputError(f"{path}: NIH boxes need Image Index, Finding Label and four Bbox [x,y,w,h] columns")
    xywh = df.columns[2:6]  # one header cell "Bbox [x,y,w,h]" over four columns
    rows = []
    for i, r in enumerate(df.iter_rows(named=True)):
        line = i + 2
        x, y, w, h = (_num(r[c], f"{path} line {line} Bbox") for c in xywh)
        finding = _strip(r["Finding Label"])
        rows.append(_box(path, line, _strip(r["Image Index"]), NIH_RENAME.get(finding, finding),
                         x, y, x + w, y + h, None, NIH_SIZE, NIH_SIZE))
    return rows, []


def _vindr(path, df):
    require_columns(df, path, ["image_id", "class_name", "rad_id", "x_min", "y_min", "x_max", "y_max"], "VinDr-CXR boxes")
    rows, no_box = [], []
    for i, r in enumerate(df.iter_rows(named=True)):
        line = i + 2
        image_id, finding = _strip(r["image_id"]), _strip(r["class_name"])
        if finding == VINDR_NO_FINDING:
            no_box.append(image_id)
            continue
        w = f"{path} line {line}"
        rows.append(_box(path, line, image_id, finding,
                         *(_num(r[c], f"{w} column {c}") for c in ("x_min", "y_min", "x_max", "y_max")),
                         _strip(r["rad_id"]) or None, _size(r.get("width"), f"{w} column width"),
                         _size(r.get("height"), f"{w} column height")))
    return rows, no_box


def _rsna(path, df):
    require_columns(df, path, ["patientId", "x", "y", "width", "height", "Target"], "RSNA pneumonia boxes")
    rows, no_box = [], []
    for i, r in enumerate(df.iter_rows(named=True)):
        line = i + 2
        image_id, target = _strip(r["patientId"]), _strip(r["Target"])
        if target not in ("0", "1"):
            raise InputError(f"{path} line {line}: Target {r['Target']!r} is not 0 or 1")
        if target == "0":
            no_box.append(image_id)
            continue
        x, y, w, h = (_num(r[c], f"{path} line {line} column {c}") for c in ("x", "y", "width", "height"))
        rows.append(_box(path, line, image_id, RSNA_FINDING, x, y, x + w, y + h, None, RSNA_SIZE, RSNA_SIZE))
    return rows, no_box
