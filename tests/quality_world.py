"""A phantom data set with known quality problems, and its store, for the data-set quality tests.

`build(root, studies)`: `synth --repeat-patients 0.2 --label-noise 0.05` (the truth in truth/), then,
as in the real Open-i archive, a third of the studies get a caption that names no single view
("PA and lateral chest"), and a views CSV in Open-i's DICOM-metadata layout gives the views of a
third of those; encoded by the bundled phantom-clip. Nothing here is a fake: the store is built
by the real pipeline, and the test knows which views are known, given and unknown by construction.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

REPEAT, NOISE, SEED = 0.2, 0.05, 3
CAPTION = re.compile(r"<caption>[^<]*</caption>")


@dataclass
class World:
    root: Path
    data: Path
    store: object  # embedstore.api.Store
    views_csv: Path
    truth_view: dict  # image_id -> frontal / lateral (labels.csv, written by synth)
    source: dict  # image_id -> "known" / "given" / "unknown", by construction
    patients: dict  # study_id -> patient_id (truth/patients.csv)
    true_labels: dict  # (image_id, finding) -> 0/1 (truth/labels.csv)


def study_number(study_id: str) -> int:
    return int(study_id.removeprefix("CXR"))


def view_source(study: int) -> str:
    """Where a study's views come from in this world: its captions (known, 2 in 3 studies), the
    views CSV (given, 1 in 9) or nowhere (unknown: infer-views infers them)."""
    return "known" if study % 3 else "given" if study % 9 == 0 else "unknown"


def build(root: Path, studies: int, size: int = 64) -> World:
    import embedstore

    data = root / "openi"
    embedstore.open(root / "unused").synth(str(data), studies=studies, seed=SEED, size=size, workers=1,
                                           repeat_patients=REPEAT, label_noise=NOISE)
    labels = list(csv.DictReader(open(data / "labels.csv")))
    truth_view = {r["image_id"]: r["view"] for r in labels}
    source = {r["image_id"]: view_source(study_number(r["study_id"])) for r in labels}
    for n in {study_number(r["study_id"]) for r in labels if not study_number(r["study_id"]) % 3}:
        xml = data / "ecgen-radiology" / f"{n}.xml"
        xml.write_text(CAPTION.sub("<caption>Xray Chest PA and Lateral</caption>", xml.read_text()))
    views_csv = root / "nlmcxr_dicom_metadata.csv"
    with open(views_csv, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["imageid", "Modality", "View Position"])
        for image_id, view in truth_view.items():
            given = source[image_id] == "given"
            w.writerow([image_id, "CR", ("PA" if view == "frontal" else "LL") if given else ""])
    embedstore.open(root / "store").encode(str(data), model="phantom-clip", workers=0, views=str(views_csv))
    return load(root)


def load(root: Path) -> World:
    """The world `build` wrote under `root` (also for checking a test against a mutated code base
    without building it again)."""
    import embedstore

    data = root / "openi"
    labels = list(csv.DictReader(open(data / "labels.csv")))
    truth_view = {r["image_id"]: r["view"] for r in labels}
    source = {r["image_id"]: view_source(study_number(r["study_id"])) for r in labels}
    patients = {r["study_id"]: r["patient_id"] for r in csv.DictReader(open(data / "truth" / "patients.csv"))}
    true_labels = {(r["image_id"], f): int(v) for r in csv.DictReader(open(data / "truth" / "labels.csv"))
                   for f, v in r.items() if f not in ("image_id", "study_id", "view")}
    return World(root, data, embedstore.open(root / "store"), root / "nlmcxr_dicom_metadata.csv", truth_view, source,
                 patients, true_labels)


def study_pair_scores(pairs, patients: dict) -> tuple[float, float, int]:
    """(precision, recall, true pairs) of the study pairs that found image pairs join against the
    true cross-study same-patient study pairs (truth/patients.csv)."""
    from collections import defaultdict

    found = {tuple(sorted(p)) for p in zip(pairs["study_a"], pairs["study_b"])}
    studies = defaultdict(list)
    for study, patient in patients.items():
        studies[patient].append(study)
    true = {tuple(sorted((a, b))) for s in studies.values() for i, a in enumerate(s) for b in s[i + 1:]}
    hits = len(found & true)
    return hits / max(len(found), 1), hits / max(len(true), 1), len(true)


def precision_at(candidates, true_labels: dict, k: int) -> float:
    """Share of the top-k flagged (image, finding) labels whose written value differs from the truth."""
    top = candidates.head(k)
    return sum(true_labels[(i, f)] != g for i, f, g in zip(top["image_id"], top["finding"], top["given"])) / max(top.height, 1)
