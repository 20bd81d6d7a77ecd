"""Known truth for data-set quality checks: repeat patients and label noise.

`synth --repeat-patients FRACTION`: that fraction of patients gets a second study. The follow-up
has the same anatomy (geometry, lung-marking texture) and the same chronic findings (drawn from
the first study's parameters, so a granuloma stays where it was), while its acquisition (pose,
exposure, noise, devices), its acute findings, its views and its study id are its own. As in the
real Open-i archive, nothing in the written data set names the patient.

`synth --label-noise P`: each of a study's labels is flipped with probability P in the written
report's `<automatic>` terms (the terms the default label scheme reads); the image is drawn from
the true labels.

`truth/patients.csv` (study_id, patient_id, visit) and `truth/labels.csv` (the true labels, with
the labels as written beside them) are written beside the data set when either flag is on, for
tests only: no reader looks at `truth/`.
"""

from __future__ import annotations

import numpy as np

from embedstore.errors import InputError
from embedstore.synth.labels import (FINDINGS, STREAM_LABEL_NOISE, STREAM_PATIENTS, SUBSTRINGS, StudyLabels,
                                     labels_from_automatic, sample_labels)

# Findings a patient keeps from one study to the next (structural or old disease); the others
# (fluid, air, infection, collapse) are acute and belong to the study in which they were drawn.
CHRONIC = frozenset({"Calcified Granuloma", "Cardiomegaly", "Emphysema", "Fibrosis", "Fracture", "Granuloma",
                     "Hernia", "Lung Lesion", "Mass", "Nodule", "Pleural_Thickening"})
TRUTH_DIR = "truth"
PATIENT_COLUMNS = ["study_id", "patient_id", "visit"]


def check_fraction(value: float, option: str) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise InputError(f"{option} {value:g}: give a fraction between 0 and 1")
    return value


def plan_patients(seed: int, studies: int, fraction: float) -> dict[int, int]:
    """Follow-up study number -> the number of the patient's first study.

    Of P patients, round(fraction x P) get a second study, so P + that = `studies`; which study
    numbers are first and follow-up studies, and how they pair, is drawn with the seed (Open-i's
    numbers are not in time order either). Empty when `fraction` is 0.
    """
    if fraction <= 0 or studies < 2:
        return {}
    repeats = min(studies // 2, int(round(studies * fraction / (1.0 + fraction))))
    rng = np.random.default_rng([int(seed), 0, STREAM_PATIENTS])
    order = rng.permutation(np.arange(1, studies + 1))
    firsts, follow = order[:repeats], order[repeats:2 * repeats]
    return {int(f): int(a) for f, a in zip(follow, firsts)}


def patient_rows(studies: list[int], anchors: dict[int, int]) -> list[dict]:
    """truth/patients.csv: one row per study; patients numbered in the order of their first study."""
    first_of = {n: anchors.get(n, n) for n in studies}
    numbers = {a: i + 1 for i, a in enumerate(sorted(set(first_of.values())))}
    return [{"study_id": f"CXR{n}", "patient_id": f"P{numbers[first_of[n]]:05d}", "visit": 2 if n in anchors else 1}
            for n in studies]


def follow_up_labels(seed: int, n: int, anchor: int) -> StudyLabels:
    """A follow-up's labels: the first study's chronic findings (and sternotomy wires), its own
    acute findings, devices and views."""
    first, own = sample_labels(seed, anchor), sample_labels(seed, n)
    findings = tuple(f for f in FINDINGS if (f in CHRONIC and f in first.findings)
                     or (f not in CHRONIC and f in own.findings))
    if not findings and not own.findings:  # nothing drawn either way: the follow-up's own normal / incidental
        return StudyLabels((), own.normal and not first.sternotomy, own.devices, first.sternotomy, own.incidental,
                           own.views)
    return StudyLabels(findings, False, own.devices, first.sternotomy, None, own.views)


def uses_first_study(kind_labels: tuple[str, ...]) -> bool:
    """Whether a drawn kind is chronic (its parameters come from the patient's first study)."""
    return any(lab in CHRONIC for lab in kind_labels)


def noisy_terms(seed: int, n: int, automatic: list[str], p: float) -> list[str]:
    """The automatic terms with each of the 18 labels flipped with probability `p`: a term that
    makes a flipped-off finding positive is dropped, the finding's own name added for a flipped-on one."""
    if p <= 0:
        return list(automatic)
    given = labels_from_automatic(automatic)
    flip = np.random.default_rng([int(seed), int(n), STREAM_LABEL_NOISE]).random(len(FINDINGS)) < p
    off = [f for f, x in zip(FINDINGS, flip) if x and given[f]]
    on = [f for f, x in zip(FINDINGS, flip) if x and not given[f]]
    kept = [t for t in automatic if not any(s in t.lower() for f in off for s in SUBSTRINGS[f])]
    return kept + [SUBSTRINGS[f][0].replace("_", " ") for f in on]
