"""The canonical record every data-set reader yields: one per image."""

from __future__ import annotations

from dataclasses import dataclass, field

# Label values, the same in every reader and in the store's `labels` table.
POSITIVE, NEGATIVE, UNCERTAIN = 1, 0, -1
# A finding absent from `ImageRecord.labels` is *missing* (not annotated); the store keeps it as NULL.

VIEWS = ("frontal", "lateral")
VIEW_SOURCES = ("dataset", "file")  # a view the data set names / one a --views file gives
SPLITS = ("train", "val", "test")


@dataclass
class ImageRecord:
    image_id: str  # the data set's own id, e.g. "CXR1_1_IM-0001-3001"
    path: str | None  # absolute image path; None when the data set has no image file for it
    study_id: str
    patient_id: str | None  # None where the data set has none (splits then go by study)
    view: str | None  # "frontal" | "lateral" | None
    projection: str | None  # "PA" | "AP" | "LL" | ... where known
    split: str | None  # "train" | "val" | "test": given by the data set, else stratified by group
    labels: dict[str, int] = field(default_factory=dict)  # finding -> 1 / 0 / -1
    findings: str | None = None  # report text
    impression: str | None = None
    source: str = ""  # "openi" | "kaggle" | "nih" | "chexpert" | "manifest" | "synth"
    group_id: str | None = None  # what must stay in one split (a manifest's `group` column); else patient, else study
    view_source: str | None = None  # where `view` came from: "dataset" (its own metadata, captions) or "file" (--views)


@dataclass
class Dataset:
    """What a reader found: records plus what is needed to describe and reproduce it."""

    name: str  # reader name, e.g. "openi"
    source: str  # the path given by the user
    scheme: str  # label scheme, e.g. "automatic", "mesh", "chexpert"
    findings: list[str]  # the scheme's findings, in a stable order
    records: list[ImageRecord]
    n_reports: int = 0  # reports / studies read, with or without images
    reports_without_images: list[str] = field(default_factory=list)
    split_seed: int = 0
    split_by: str = "patient"  # the groups: "group", "patient" or "study" ("+"-joined when mixed), or "given"
    split_method: str = "given"  # "stratified" when `assign_splits` drew them, "given" when the data set did
    split_fractions: tuple[float, float, float] | None = None  # train, val, test of a stratified assignment
    notes: list[str] = field(default_factory=list)  # anything the user should know
    bad_reports: list[dict] = field(default_factory=list)  # {"file", "reason"} of reports that could not be read
