"""The label scheme phantoms are drawn under, and how a study's labels are sampled.

The scheme is IU-Xray's automatic-term scheme as torchxrayvision's `Openi_Dataset` reads it: a
finding is positive when its lower-cased name (or a synonym) is a *substring* of the report's
`<automatic>` MeSH terms, so "calcified granuloma" also makes "Granuloma" positive.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from embedstore.data.labels import AUTOMATIC_FINDINGS, AUTOMATIC_SUBSTRINGS
from embedstore.synth.label_table import COMBOS

# torchxrayvision's order and final names, and the substrings its rule searches in the "|"-joined
# lower-cased automatic terms: the same scheme the Open-i reader applies, so phantoms read back exactly.
FINDINGS: tuple[str, ...] = AUTOMATIC_FINDINGS
SUBSTRINGS: dict[str, tuple[str, ...]] = AUTOMATIC_SUBSTRINGS

# IU-Xray: about 36 % of images are "normal" (MeSH major), while 63 % carry none of the 18
# findings; the rest of those have incidental findings outside the scheme (devices, sternotomy,
# degenerative change, scarring). Phantoms follow that split.
NORMAL_SHARE_OF_UNLABELLED = 0.37 / 0.631
SINGLE_IMAGE_SHARE = 0.10  # studies with a frontal image only
DEVICE_SHARE_LABELLED = 0.06  # tubes/lines in studies with a finding
STERNOTOMY_SHARE_LABELLED = 0.05

_WEIGHTS = np.array([n for n, _ in COMBOS], dtype=np.float64)
_CUM = np.cumsum(_WEIGHTS / _WEIGHTS.sum())
_SETS = [tuple(s.split("|")) if s else () for _, s in COMBOS]


def labels_from_automatic(terms: list[str]) -> dict[str, int]:
    """The 18 labels (0/1) that torchxrayvision's substring rule gives for these automatic terms."""
    joined = "|".join(sorted({t.lower() for t in terms}))
    return {f: int(any(s in joined for s in SUBSTRINGS[f])) for f in FINDINGS}


@dataclass
class StudyLabels:
    """What a study shows: scheme labels plus the drawn objects outside the scheme."""

    findings: tuple[str, ...]  # scheme labels, in FINDINGS order
    normal: bool  # MeSH major "normal": nothing drawn at all
    devices: tuple[str, ...] = ()  # "ett", "cvc", "pacemaker" (drawn, text and MeSH only)
    sternotomy: bool = False  # wires drawn, text and MeSH only
    incidental: str | None = None  # text-only finding outside the scheme, not drawn
    views: tuple[str, ...] = ("frontal", "lateral")
    extra: dict = field(default_factory=dict)


def study_rng(seed: int, index: int, stream: int, *more: int) -> np.random.Generator:
    """An RNG that depends only on (seed, study index, stream, ...): workers give the same bytes."""
    return np.random.default_rng([int(seed), int(index), int(stream), *map(int, more)])


STREAM_LABELS, STREAM_ANATOMY, STREAM_FINDING, STREAM_NOISE, STREAM_TEXT, STREAM_DEVICE = range(6)
STREAM_PATIENTS, STREAM_LABEL_NOISE = 6, 7  # synth --repeat-patients, --label-noise (embedstore.synth.truth)


def sample_labels(seed: int, index: int) -> StudyLabels:
    """Labels of study `index`: a label set drawn from IU-Xray's table, plus normal/incidental."""
    rng = study_rng(seed, index, STREAM_LABELS)
    combo = _SETS[int(np.searchsorted(_CUM, rng.random(), side="right").clip(0, len(_SETS) - 1))]
    views = ("frontal",) if rng.random() < SINGLE_IMAGE_SHARE else ("frontal", "lateral")
    findings = tuple(f for f in FINDINGS if f in combo)
    if not findings:
        if rng.random() < NORMAL_SHARE_OF_UNLABELLED:
            return StudyLabels((), True, views=views)
        kind = rng.choice(["devices", "sternotomy", "incidental"], p=[0.3, 0.2, 0.5])
        devices = _devices(rng) if kind == "devices" else ()
        incidental = str(rng.choice(["degenerative", "scarring", "tortuous aorta"])) if kind == "incidental" else None
        return StudyLabels((), False, devices, kind == "sternotomy", incidental, views)
    devices = _devices(rng) if rng.random() < DEVICE_SHARE_LABELLED else ()
    sternotomy = bool(rng.random() < STERNOTOMY_SHARE_LABELLED)
    return StudyLabels(findings, False, devices, sternotomy, None, views)


def _devices(rng: np.random.Generator) -> tuple[str, ...]:
    pick = rng.choice(["cvc", "pacemaker", "ett", "cvc+ett"], p=[0.45, 0.3, 0.1, 0.15])
    return tuple(str(pick).split("+"))
