"""Readers for the table-shaped data sets: IU-Xray's Kaggle CSV pair, NIH ChestX-ray14's
`Data_Entry_2017*.csv`, CheXpert / MIMIC-CXR label CSVs and a generic manifest.

Each takes the table already read (`tables.read_table`) and returns a `Dataset` without splits
unless the data set gives them (a manifest's `split` column, MIMIC-CXR's official split file);
`datasets.read_dataset` assigns the rest.
"""

from __future__ import annotations

import glob
import os
import re

from embedstore.data.labels import (CHEXPERT_FINDINGS, NIH_FINDINGS, NIH_NO_FINDING, mesh_findings, mesh_labels,
                                    mesh_terms, row_labels)
from embedstore.data.locate import ImageIndex, check_images_dir
from embedstore.data.records import Dataset, ImageRecord
from embedstore.data.table_files import read_table, require_columns, table_name
from embedstore.errors import InputError

# Columns of a manifest or label table that describe the image, not a finding.
META_COLUMNS = {
    "path", "image_id", "study_id", "patient_id", "group", "view", "projection", "split", "findings", "impression",
    "labels", "source", "uid", "filename", "width", "height", "Path", "Sex", "Age", "Frontal/Lateral",
    "AP/PA", "subject_id", "dicom_id", "ViewPosition", "Reports", "Report Impression",
}


def default_images(table_path: str, images: str | None) -> str | None:
    """`images` if given, else an `images/` folder beside the table, else none (no walk of unknown folders)."""
    if images is not None:
        return check_images_dir(images)
    sub = os.path.join(os.path.dirname(os.path.abspath(table_path)), "images")
    return sub if os.path.isdir(sub) else None


def _rows(df):
    """(CSV line number, row dict): line 1 is the header."""
    for i, row in enumerate(df.iter_rows(named=True)):
        yield i + 2, row


def _missing_note(records: list[ImageRecord], folder: str | None) -> list[str]:
    if folder is None:
        return ["no image folder given: records have no image path; give --images DIR to encode"]
    missing = sum(1 for r in records if not r.path)
    return [f"{missing} of {len(records)} images have no file under {folder}"] if missing else []


# ------------------------------------------------------------------ IU-Xray, Kaggle CSV pair

def kaggle_pair(source: str) -> tuple[str, str]:
    """(reports CSV, projections CSV) from either file or the folder holding both."""
    folder = source if os.path.isdir(source) else os.path.dirname(os.path.abspath(source))

    def find(stem: str) -> str:
        if not os.path.isdir(source) and table_name(source) == stem:
            return source
        hits = sorted(p for p in glob.glob(os.path.join(folder, stem + "*")) if table_name(p) == stem)
        if not hits:
            raise InputError(f"{folder}: no {stem}.csv beside {os.path.basename(source)}; "
                             "the Kaggle IU-Xray reader needs indiana_reports.csv and indiana_projections.csv")
        return hits[0]

    return find("indiana_reports"), find("indiana_projections")


def read_kaggle(source: str, scheme: str = "mesh", images: str | None = None, top_k: int = 14) -> Dataset:
    if scheme != "mesh":
        raise InputError(f"--labels {scheme!r}: the Kaggle IU-Xray CSVs carry MeSH terms only; "
                         "use --labels mesh or a labelled CSV file")
    rep_path, proj_path = kaggle_pair(source)
    rep, proj = read_table(rep_path), read_table(proj_path)
    require_columns(rep, rep_path, ["uid"], "IU-Xray reports")
    term_col = "MeSH" if "MeSH" in rep.columns else "Problems"
    require_columns(rep, rep_path, [term_col], "IU-Xray MeSH labels")
    require_columns(proj, proj_path, ["uid", "filename", "projection"], "IU-Xray projections")
    reports = {}
    for line, row in _rows(rep):
        uid = (row["uid"] or "").strip()
        if not uid:
            raise InputError(f"{rep_path} line {line}: blank uid")
        # ';' only: a MeSH heading such as "Catheters, Indwelling" holds a comma.
        terms = mesh_terms([t for t in (row[term_col] or "").split(";")])
        reports[uid] = (terms, row.get("findings"), row.get("impression"))
    findings = mesh_findings([t for t, _, _ in reports.values()], top_k)
    folder = default_images(proj_path, images)
    index = ImageIndex(folder)
    records, with_images = [], set()
    for line, row in _rows(proj):
        uid, filename = (row["uid"] or "").strip(), (row["filename"] or "").strip()
        if uid not in reports:
            raise InputError(f"{proj_path} line {line}: uid {uid!r} is not in {os.path.basename(rep_path)}")
        if not filename:
            raise InputError(f"{proj_path} line {line}: blank filename")
        terms, ftext, itext = reports[uid]
        with_images.add(uid)
        view = (row["projection"] or "").strip().lower()
        records.append(ImageRecord(
            image_id=re.sub(r"(\.dcm)?\.png$", "", filename), path=index.find(filename),
            study_id=f"CXR{uid}", patient_id=None, view=view if view in ("frontal", "lateral") else None,
            projection=None, split=None, labels=mesh_labels(terms, findings), findings=ftext,
            impression=itext, source="kaggle",
        ))
    return Dataset(name="kaggle", source=source, scheme="mesh", findings=findings, records=records,
                   n_reports=len(reports), split_by="study",
                   reports_without_images=[f"CXR{u}" for u in reports if u not in with_images],
                   notes=_missing_note(records, folder))


# ------------------------------------------------------------------ NIH ChestX-ray14

def read_nih(path: str, df=None, images: str | None = None) -> Dataset:
    df = read_table(path) if df is None else df
    require_columns(df, path, ["Image Index", "Finding Labels", "Patient ID"], "NIH ChestX-ray14 labels")
    known = set(NIH_FINDINGS)
    folder = default_images(path, images)
    index = ImageIndex(folder)
    has_view = "View Position" in df.columns
    records = []
    for line, row in _rows(df):
        image_id = (row["Image Index"] or "").strip()
        if not image_id:
            raise InputError(f"{path} line {line}: blank Image Index")
        found = {t.strip() for t in (row["Finding Labels"] or "").split("|") if t.strip()}
        bad = found - known - {NIH_NO_FINDING}
        if bad:
            raise InputError(f"{path} line {line}: finding {sorted(bad)[0]!r} is not a ChestX-ray14 label "
                             f"({', '.join(NIH_FINDINGS)}, {NIH_NO_FINDING})")
        if NIH_NO_FINDING in found and len(found) > 1:
            raise InputError(f"{path} line {line}: '{NIH_NO_FINDING}' together with {sorted(found - {NIH_NO_FINDING})}")
        proj = (row["View Position"] or "").strip().upper() if has_view else ""
        records.append(ImageRecord(
            image_id=image_id, path=index.find(image_id), study_id=os.path.splitext(image_id)[0],
            patient_id=(row["Patient ID"] or "").strip() or None,
            view="frontal" if proj in ("PA", "AP") else None, projection=proj or None, split=None,
            labels={f: int(f in found) for f in NIH_FINDINGS}, source="nih",
        ))
    return Dataset(name="nih", source=path, scheme="nih", findings=list(NIH_FINDINGS), records=records,
                   n_reports=len(records), notes=_missing_note(records, folder))


# ------------------------------------------------------------------ CheXpert / MIMIC-CXR

_CHEXPERT_DIR = re.compile(r"^CheXpert-v[^/]*/")
_PATIENT = re.compile(r"(patient\d+)")
_STUDY = re.compile(r"(study\d+)")


def read_chexpert(path: str, df=None, images: str | None = None, uncertain: str = "ignore") -> Dataset:
    df = read_table(path) if df is None else df
    mimic = "Path" not in df.columns
    require_columns(df, path, (["subject_id", "study_id"] if mimic else ["Path"]) + list(CHEXPERT_FINDINGS),
                    "CheXpert-style labels")
    base = _chexpert_base(path, df, images) if not mimic else None
    index = ImageIndex(check_images_dir(images)) if mimic and images else None
    records = []
    for line, row in _rows(df):
        labels = row_labels(row, CHEXPERT_FINDINGS, uncertain, path, line)  # a bad cell fails before a bad path
        rec = _mimic_record(path, line, row, index) if mimic else _chexpert_record(path, line, row, base)
        rec.labels = labels
        records.append(rec)
    seen: set[str] = set()
    for rec in records:
        if rec.image_id in seen:
            raise InputError(f"{path}: image {rec.image_id} appears twice; one row per image")
        seen.add(rec.image_id)
    notes = [] if base or index else ["no image files found: records have no image path; give --images DIR to encode"]
    if mimic and "dicom_id" not in df.columns:
        notes.append("no dicom_id column: one record per study (image_id s<study_id>), without image paths")
    if mimic:
        notes += apply_mimic_split(path, records, by_dicom="dicom_id" in df.columns)
    return Dataset(name="chexpert", source=path, scheme="chexpert", findings=list(CHEXPERT_FINDINGS),
                   records=records, n_reports=len({r.study_id for r in records}), notes=notes)


def _chexpert_base(path: str, df, images: str | None) -> tuple[str, bool] | None:
    """(folder, strip top dir) under which the first row's Path exists, or None."""
    if df.height == 0:
        return None
    first = df["Path"][0] or ""
    here = os.path.dirname(os.path.abspath(path))
    bases = [check_images_dir(images)] if images else [here, os.path.dirname(here)]
    for b in bases:
        for strip in (False, True):
            if os.path.isfile(os.path.join(b, _CHEXPERT_DIR.sub("", first) if strip else first)):
                return b, strip
    return None


def _chexpert_record(path: str, line: int, row: dict, base) -> ImageRecord:
    rel = (row["Path"] or "").strip()
    if not rel:
        raise InputError(f"{path} line {line}: blank Path")
    patient = _PATIENT.search(rel)
    study = _STUDY.search(rel)
    file = None
    if base:
        cand = os.path.join(base[0], _CHEXPERT_DIR.sub("", rel) if base[1] else rel)
        file = cand if os.path.isfile(cand) else None
    fl = (row.get("Frontal/Lateral") or "").strip().lower()
    return ImageRecord(
        image_id=_CHEXPERT_DIR.sub("", rel), path=file,
        study_id=f"{patient.group(1)}/{study.group(1)}" if patient and study else os.path.dirname(rel),
        patient_id=patient.group(1) if patient else None,
        view=fl if fl in ("frontal", "lateral") else None,
        projection=(row.get("AP/PA") or "").strip() or None, split=None, source="chexpert",
    )


def _mimic_record(path: str, line: int, row: dict, index) -> ImageRecord:
    subject, study = (row["subject_id"] or "").strip(), (row["study_id"] or "").strip()
    if not subject or not study:
        raise InputError(f"{path} line {line}: blank subject_id or study_id")
    dicom = (row.get("dicom_id") or "").strip()
    vp = (row.get("ViewPosition") or "").strip().upper()
    return ImageRecord(
        image_id=dicom or f"s{study}", path=index.find(dicom) if index and dicom else None,
        study_id=f"s{study}", patient_id=f"p{subject}",
        view="frontal" if vp in ("PA", "AP") else "lateral" if vp in ("LATERAL", "LL") else None,
        projection=vp or None, split=None, source="chexpert",
    )


MIMIC_SPLIT_FILES = ("mimic-cxr-2.0.0-split.csv", "mimic-cxr-2.0.0-split.csv.gz")
MIMIC_SPLITS = {"train": "train", "validate": "val", "test": "test"}


def apply_mimic_split(path: str, records: list[ImageRecord], by_dicom: bool) -> list[str]:
    """MIMIC-CXR's official split, when its split file lies beside the label CSV: each record's
    split from it (train / validate / test -> train / val / test), keyed by dicom_id, else by
    subject and study. Applied only when it covers every record (a split is given for all or
    none); returns notes for the user."""
    folder = os.path.dirname(os.path.abspath(path))
    split_path = next((os.path.join(folder, n) for n in MIMIC_SPLIT_FILES if os.path.isfile(os.path.join(folder, n))), None)
    if split_path is None:
        return []
    df = read_table(split_path)
    require_columns(df, split_path, ["dicom_id", "study_id", "subject_id", "split"], "MIMIC-CXR's official split")
    split_of = {}
    for line, row in _rows(df):
        split = MIMIC_SPLITS.get((row["split"] or "").strip().lower())
        if split is None:
            raise InputError(f"{split_path} line {line}: split {row['split']!r} is not train, validate or test")
        key = (row["dicom_id"] or "").strip() if by_dicom else (f"p{(row['subject_id'] or '').strip()}",
                                                              f"s{(row['study_id'] or '').strip()}")
        split_of[key] = split
    keys = [r.image_id if by_dicom else (r.patient_id, r.study_id) for r in records]
    missing = sum(k not in split_of for k in keys)
    name = os.path.basename(split_path)
    if missing:
        return [f"{missing} of {len(records)} images have no row in {name}: its official split is not used"]
    for record, key in zip(records, keys):
        record.split = split_of[key]
    return [f"splits as given by {name} (MIMIC-CXR's official split)"]


# ------------------------------------------------------------------ generic manifest

_VIEW_WORDS = {"frontal": ("frontal", None), "lateral": ("lateral", None), "pa": ("frontal", "PA"),
               "ap": ("frontal", "AP"), "ll": ("lateral", "LL"), "lat": ("lateral", None)}


def read_manifest(path: str, df=None, images: str | None = None, uncertain: str = "ignore") -> Dataset:
    """`path` plus label columns (1 / 0 / -1 / blank) or a `;`-separated `labels` column of positives.

    Optional: `group` (images that must share a split, e.g. a site's scanner or a family) and
    `split` (kept as given when every row has one)."""
    df = read_table(path) if df is None else df
    require_columns(df, path, ["path"], "a manifest")
    base = check_images_dir(images) if images else os.path.dirname(os.path.abspath(path))
    listed = "labels" in df.columns
    if listed:
        findings = sorted({t.strip() for v in df["labels"].drop_nulls() for t in v.split(";") if t.strip()})
    else:
        findings = [c for c in df.columns if c not in META_COLUMNS]
    records, seen = [], {}
    for line, row in _rows(df):
        rel = (row["path"] or "").strip()
        if not rel:
            raise InputError(f"{path} line {line}: blank path; every manifest row needs its image file")
        file = rel if os.path.isabs(rel) else os.path.join(base, rel)
        image_id = (row.get("image_id") or "").strip() or rel
        if image_id in seen:
            raise InputError(f"{path} line {line}: image_id {image_id!r} already on line {seen[image_id]}")
        seen[image_id] = line
        if listed:
            pos = {t.strip() for t in (row["labels"] or "").split(";") if t.strip()}
            labels = {f: int(f in pos) for f in findings}
        else:
            labels = row_labels(row, findings, uncertain, path, line)
        view, projection = _manifest_view(path, line, row)
        records.append(ImageRecord(
            image_id=image_id, path=os.path.abspath(file) if os.path.isfile(file) else None,
            study_id=(row.get("study_id") or "").strip() or image_id,
            patient_id=(row.get("patient_id") or "").strip() or None, view=view, projection=projection,
            split=(row.get("split") or "").strip().lower() or None, labels=labels,
            findings=row.get("findings"), impression=row.get("impression"),
            source=(row.get("source") or "").strip() or "manifest", group_id=(row.get("group") or "").strip() or None,
        ))
    notes = [] if findings else ["no label columns: records carry no labels"]
    missing = sum(1 for r in records if not r.path)
    if missing:
        notes.append(f"{missing} of {len(records)} image paths do not exist (relative paths are read from {base})")
    return Dataset(name="manifest", source=path, scheme="manifest", findings=findings, records=records,
                   n_reports=len({r.study_id for r in records}), notes=notes)


def _manifest_view(path: str, line: int, row: dict) -> tuple[str | None, str | None]:
    v = (row.get("view") or "").strip()
    proj = (row.get("projection") or "").strip() or None
    if not v:
        return None, proj
    if v.lower() not in _VIEW_WORDS:
        raise InputError(f"{path} line {line}: view {v!r} is not frontal, lateral, PA, AP or LL")
    view, p = _VIEW_WORDS[v.lower()]
    return view, proj or p
