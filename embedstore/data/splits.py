"""Seeded train/val/test splits by patient (by study where there is no patient id), never by image."""

from __future__ import annotations

import random

from embedstore.data.records import SPLITS, ImageRecord
from embedstore.errors import InputError

DEFAULT_FRACTIONS = (0.7, 0.1, 0.2)


def check_fractions(fractions) -> tuple[float, float, float]:
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3 or min(fr) < 0 or abs(sum(fr) - 1.0) > 1e-6:
        raise InputError(f"split fractions {fractions}: give three non-negative numbers (train, val, test) summing to 1")
    return fr  # type: ignore[return-value]


def assign_splits(records: list[ImageRecord], seed: int = 0, fractions=DEFAULT_FRACTIONS) -> str:
    """Set `split` on every record; return what the groups were ("patient", "study" or "given").

    Splits already given for every record (a manifest's `split` column) are kept. Otherwise the
    sorted group ids are shuffled with `random.Random(seed)` and cut at the fractions, so the same
    seed and groups give the same splits on any machine, and one group never spans two splits.
    """
    fr = check_fractions(fractions)
    if records and all(r.split for r in records):
        bad = next((r for r in records if r.split not in SPLITS), None)
        if bad is not None:
            raise InputError(f"image {bad.image_id}: split {bad.split!r} is not one of {', '.join(SPLITS)}")
        return "given"
    by = "patient" if records and all(r.patient_id for r in records) else "study"
    key = (lambda r: r.patient_id) if by == "patient" else (lambda r: r.study_id)
    groups = sorted({str(key(r)) for r in records})
    random.Random(seed).shuffle(groups)
    n = len(groups)
    n_train = round(fr[0] * n)
    n_val = min(round(fr[1] * n), n - n_train)
    split_of = {g: ("train" if i < n_train else "val" if i < n_train + n_val else "test") for i, g in enumerate(groups)}
    for r in records:
        r.split = split_of[str(key(r))]
    return by
