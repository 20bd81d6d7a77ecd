"""One entry point for every data-set reader: `read_dataset`, and for box files `read_boxes`.

Formats: IU-Xray from Open-i (`NLMCXR_reports.tgz` or an `ecgen-radiology/` folder; phantoms too),
IU-Xray's Kaggle CSV pair, NIH ChestX-ray14 `Data_Entry_2017*.csv`, CheXpert / MIMIC-CXR label
CSVs and a generic CSV / Parquet manifest. Tables may be plain, .gz or .zip.
"""

from __future__ import annotations

import os
import tarfile

from embedstore.data.boxes import BOX_FORMATS, read_boxes  # noqa: F401  (re-exported)
from embedstore.data.labels import CHEXPERT_FINDINGS, DEFAULT_TOP_K, check_policy, row_labels
from embedstore.data.records import Dataset
from embedstore.data.splits import DEFAULT_FRACTIONS, assign_splits, check_fractions
from embedstore.data.table_files import is_table, read_table, table_name
from embedstore.errors import InputError

DATASETS = ("auto", "openi", "kaggle", "nih", "chexpert", "manifest")
# Label schemes each reader knows by name (besides a labelled CSV file for the IU-Xray readers).
SCHEMES = {"openi": ("automatic", "mesh"), "kaggle": ("mesh",), "nih": ("nih",), "chexpert": ("chexpert",),
           "manifest": ("manifest",)}


def read_dataset(source: str, dataset: str = "auto", labels: str | None = None, images: str | None = None,
                 uncertain: str = "ignore", top_k: int = DEFAULT_TOP_K, seed: int = 0,
                 fractions=DEFAULT_FRACTIONS, require_images: bool = False, strict: bool = False,
                 views: str | None = None) -> Dataset:
    """Read a data set as it is distributed into one `ImageRecord` per image, with seeded splits.

    `strict`: stop at the first report that cannot be read (else it is listed in `bad_reports`).
    `labels`: a scheme name (Open-i: `automatic` (default) or `mesh`; Kaggle: `mesh`) or the path
    of a labelled CSV (e.g. CheXpert-14 columns keyed by `image_id`, `study_id` or `uid`) whose
    labels replace the reader's own. `uncertain`: what -1 becomes (ignore keeps -1, negative,
    positive). `require_images`: raise on the first record without an image file. `views`: a CSV of
    image id to DICOM `View Position` (Open-i's nlmcxr_dicom_metadata.csv.gz) whose views replace
    the reader's where it names one (`data.views`).
    """
    source = os.fspath(source)
    if not os.path.exists(source):
        raise InputError(f"{source}: no such file or folder")
    if dataset not in DATASETS:
        raise InputError(f"--dataset {dataset!r}: choose one of {', '.join(DATASETS)}")
    check_policy(uncertain)
    fractions = check_fractions(fractions)
    label_file = labels if labels and (os.path.isfile(labels) or is_table(labels)) else None
    scheme = None if label_file else labels
    kind, df = detect(source) if dataset == "auto" else (dataset, None)
    if scheme is not None and scheme not in SCHEMES[kind]:
        raise InputError(f"--labels {scheme!r}: {kind} label schemes are {', '.join(SCHEMES[kind])}"
                         + (" or a labelled CSV file" if kind in ("openi", "kaggle") else ""))
    if label_file and kind not in ("openi", "kaggle"):
        raise InputError(f"--labels {label_file}: a labelled CSV applies to IU-Xray (openi, kaggle); {kind} has its own labels")
    ds = _read(kind, source, df, scheme, images, uncertain, top_k, strict)
    if label_file:
        apply_label_table(ds, label_file, uncertain)
    if views:
        from embedstore.data.views import apply_views

        given = apply_views(ds.records, views)
        ds.notes.append(f"{given} of {len(ds.records)} views given by {os.path.basename(views)} (View Position: "
                        "PA/AP frontal, LL/LATERAL/RL/LARGE LATERAL lateral)")
    ds.split_seed = seed
    ds.split_by = assign_splits(ds.records, seed, fractions)
    ds.split_method, ds.split_fractions = ("given", None) if ds.split_by == "given" else ("stratified", fractions)
    if require_images:
        lacking = next((r for r in ds.records if not r.path), None)
        if lacking is not None:
            where = f" under {images}" if images else " (give --images DIR)"
            raise InputError(f"{source}: no image file for {lacking.image_id}{where}; "
                             f"{sum(1 for r in ds.records if not r.path)} of {len(ds.records)} images lack one")
    return ds


def _read(kind, source, df, scheme, images, uncertain, top_k, strict=False) -> Dataset:
    from embedstore.data import openi, tabular_readers

    if kind == "openi":
        return openi.read_openi(source, scheme or "automatic", images, top_k, strict)
    if kind == "kaggle":
        return tabular_readers.read_kaggle(source, scheme or "mesh", images, top_k)
    if os.path.isdir(source):
        raise InputError(f"{source}: a folder; --dataset {kind} reads a CSV or Parquet file")
    if kind == "nih":
        return tabular_readers.read_nih(source, df, images)
    if kind == "chexpert":
        return tabular_readers.read_chexpert(source, df, images, uncertain)
    return tabular_readers.read_manifest(source, df, images, uncertain)


def detect(source: str):
    """(reader name, the table when one was read to tell) from the file name and columns."""
    if os.path.isdir(source):
        names = set(os.listdir(source))
        if "ecgen-radiology" in names or any(n.endswith(".xml") for n in names):
            return "openi", None
        if any(table_name(n) == "indiana_reports" for n in names):
            return "kaggle", None
        raise InputError(f"{source}: no ecgen-radiology/ reports or indiana_reports.csv inside; "
                         "give a data-set file or pass --dataset")
    lower = source.lower()
    if lower.endswith((".tgz", ".tar.gz", ".tar", ".xml")) or (not is_table(source) and tarfile.is_tarfile(source)):
        return "openi", None
    if table_name(source) in ("indiana_reports", "indiana_projections"):
        return "kaggle", None
    df = read_table(source)
    cols = set(df.columns)
    if {"Image Index", "Finding Labels"} <= cols:
        return "nih", df
    if {"Image Index", "Finding Label"} <= cols or {"patientId", "Target"} <= cols or "rad_id" in cols \
            or {"image_id", "finding", "x_min"} <= cols:
        raise InputError(f"{source}: a box file, not a data set; use `embedstore inspect --boxes {source}`")
    if set(CHEXPERT_FINDINGS) <= cols and ("Path" in cols or {"subject_id", "study_id"} <= cols):
        return "chexpert", df
    if "path" in cols:
        return "manifest", df
    shown = ", ".join(df.columns[:10])
    raise InputError(f"{source}: cannot tell which data set this is (columns: {shown}); pass --dataset "
                     "(a manifest needs a `path` column)")


def apply_label_table(ds: Dataset, path: str, uncertain: str = "ignore") -> None:
    """Replace the records' labels with those of a labelled CSV keyed by image_id, study_id or uid."""
    from embedstore.data.tabular_readers import META_COLUMNS

    df = read_table(path)
    key = next((k for k in ("image_id", "study_id", "uid") if k in df.columns), None)
    if key is None:
        raise InputError(f"{path}: a labelled CSV needs an image_id, study_id or uid column (columns: "
                         f"{', '.join(df.columns[:10])})")
    findings = [c for c in df.columns if c not in META_COLUMNS]
    if not findings:
        raise InputError(f"{path}: no label columns besides {', '.join(df.columns)}")
    table: dict[str, dict[str, int]] = {}
    for i, row in enumerate(df.iter_rows(named=True)):
        k = (row[key] or "").strip()
        if key == "uid" and k.isdigit():
            k = f"CXR{k}"  # Kaggle / Open-i report number -> Open-i uId
        table[k] = row_labels(row, findings, uncertain, path, i + 2)
    by_image = key == "image_id"
    matched = 0
    for r in ds.records:
        labels = table.get(r.image_id if by_image else r.study_id)
        matched += labels is not None
        r.labels = dict(labels) if labels is not None else {}
    if ds.records and not matched:
        raise InputError(f"{path}: none of its {len(table)} {key} values match the data set's "
                         f"{'image' if by_image else 'study'} ids (e.g. {ds.records[0].image_id if by_image else ds.records[0].study_id})")
    ds.scheme = "chexpert" if set(findings) <= set(CHEXPERT_FINDINGS) else f"csv:{os.path.basename(path)}"
    ds.findings = findings
    if matched < len(ds.records):
        ds.notes.append(f"{len(ds.records) - matched} of {len(ds.records)} images have no row in {path}: labels missing")
