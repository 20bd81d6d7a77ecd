"""What a reader found, before anything is encoded: counts a user checks against the data set's paper."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from embedstore.data.records import SPLITS, VIEWS, Dataset


@dataclass
class Inspection:
    """What `inspect` found: a data set's summary and / or a box file's. `.to_dict()` is what
    `--format json` prints; `.to_polars()` is the per-finding table (the data set's, else the boxes')."""

    dataset: dict | None = None
    boxes: dict | None = None

    def to_dict(self) -> dict:
        if self.dataset is not None and self.boxes is None:
            return self.dataset
        if self.boxes is not None and self.dataset is None:
            return self.boxes
        return {"dataset": self.dataset, "boxes": self.boxes}

    def to_polars(self):
        import polars as pl

        part = self.dataset if self.dataset is not None else self.boxes
        return pl.DataFrame(part["per_finding"]) if part and part.get("per_finding") else pl.DataFrame()


def inspect(source: str | None = None, dataset: str = "auto", labels: str | None = None, images: str | None = None,
            uncertain: str = "ignore", top_k: int = 14, seed: int = 0, boxes: str | None = None,
            box_format: str = "auto", views: str | None = None) -> Inspection:
    """Read a data set (and / or a box file) as its reader does and summarise it; nothing is stored."""
    from embedstore.errors import InputError

    if source is None and boxes is None:
        raise InputError("give a data set SOURCE, or --boxes FILE")
    found = Inspection()
    if source is not None:
        from embedstore.data.datasets import read_dataset

        ds = read_dataset(source, dataset=dataset, labels=labels, images=images, uncertain=uncertain, top_k=top_k,
                          seed=seed, views=views)
        found.dataset = inspect_dataset(ds)
    if boxes is not None:
        from embedstore.data.boxes import load_boxes

        table = load_boxes(boxes, box_format)
        found.boxes = {"file": boxes, "format": table.format,
                       **inspect_boxes(table.df, table.rows_without_box, table.images_without_box)}
    return found


def inspect_dataset(ds: Dataset) -> dict:
    """Studies, images, reports without images, views, splits and per-finding counts.

    `reports` counts reports (studies) read, with or without images. Per finding: `reports` = studies with at least one positive image, `images` = positive images,
    then negative, uncertain (-1) and missing (absent) images.
    """
    records = ds.records
    studies = {r.study_id for r in records}
    per_finding = []
    for f in ds.findings:
        values = Counter(r.labels.get(f) for r in records)
        per_finding.append({
            "finding": f,
            "reports": len({r.study_id for r in records if r.labels.get(f) == 1}),
            "images": values[1], "negative": values[0], "uncertain": values[-1], "missing": values[None],
        })
    splits = Counter(r.split for r in records)
    split_studies = {s: len({r.study_id for r in records if r.split == s}) for s in SPLITS}
    return {
        "dataset": ds.name,
        "source": ds.source,
        "scheme": ds.scheme,
        "reports": ds.n_reports,
        "reports_with_images": len(studies),
        "images": len(records),
        "images_with_file": sum(1 for r in records if r.path),
        "patients": len({r.patient_id for r in records if r.patient_id}),
        "reports_without_images": len(ds.reports_without_images),
        "reports_without_images_ids": list(ds.reports_without_images),
        "views": dict(sorted(Counter(r.view or "unknown" for r in records).items())),
        "views_known": _views_from(records, "dataset"),
        "views_given": _views_from(records, "file"),
        "views_inferred": "none here: `embedstore infer-views` infers them in a store (`embedstore splits` shows them)",
        "projections": dict(sorted(Counter(r.projection or "unknown" for r in records).items())),
        "splits": {s: splits.get(s, 0) for s in SPLITS},
        "split_studies": split_studies,
        "split_by": ds.split_by,
        "split_seed": ds.split_seed,
        "findings": len(ds.findings),
        "uncertain": sum(v == -1 for r in records for v in r.labels.values()),
        "missing": sum(len(ds.findings) - sum(f in r.labels for f in ds.findings) for r in records),
        "images_without_labels": sum(1 for r in records if not r.labels),
        "per_finding": per_finding,
        "notes": list(ds.notes),
    }


def _views_from(records, source: str) -> dict[str, int]:
    """frontal / lateral counts of the views from one source: the data set's own ("dataset") or a
    --views file ("file")."""
    found = Counter(r.view for r in records if r.view and (r.view_source or "dataset") == source)
    return {v: found.get(v, 0) for v in VIEWS}


def inspect_boxes(df, rows_without_box: int | None = None, images_without_box: int | None = None) -> dict:
    """Boxes, images with a box, readers and boxes / images per finding of a canonical box table."""
    import polars as pl

    per = (df.group_by("finding")
             .agg(pl.len().alias("boxes"), pl.col("image_id").n_unique().alias("images"))
             .sort(["boxes", "finding"], descending=[True, False]))
    out = {
        "boxes": df.height,
        "images": df["image_id"].n_unique(),
        "findings": per.height,
        "readers": df["reader"].drop_nulls().n_unique(),
        "per_finding": per.to_dicts(),
    }
    if rows_without_box is not None:
        out["rows_without_box"] = rows_without_box
    if images_without_box is not None:
        out["images_without_box"] = images_without_box
    return out
