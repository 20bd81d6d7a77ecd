"""Label schemes and label values shared by the readers.

Values: 1 positive, 0 negative, -1 uncertain; a finding absent from a record's labels is missing.
"""

from __future__ import annotations

from collections import Counter

from embedstore.errors import InputError

# IU-Xray automatic-term scheme, as torchxrayvision's `Openi_Dataset` builds it: its 18 names,
# sorted, then "Opacity" -> "Lung Opacity" and "Lesion" -> "Lung Lesion".
AUTOMATIC_FINDINGS: tuple[str, ...] = (
    "Atelectasis", "Calcified Granuloma", "Cardiomegaly", "Edema", "Effusion", "Emphysema",
    "Fibrosis", "Fracture", "Granuloma", "Hernia", "Infiltration", "Lung Lesion", "Mass",
    "Nodule", "Lung Opacity", "Pleural_Thickening", "Pneumonia", "Pneumothorax",
)
# Substrings searched in the lower-cased automatic terms (its name lower-cased plus its synonyms),
# so "calcified granuloma" also makes "Granuloma" positive and "mass lesion" makes "Lung Lesion".
AUTOMATIC_SUBSTRINGS: dict[str, tuple[str, ...]] = {
    "Atelectasis": ("atelectasis", "atelectases"),
    "Calcified Granuloma": ("calcified granuloma",),
    "Cardiomegaly": ("cardiomegaly",),
    "Edema": ("edema",),
    "Effusion": ("effusion",),
    "Emphysema": ("emphysema",),
    "Fibrosis": ("fibrosis",),
    "Fracture": ("fracture",),
    "Granuloma": ("granuloma",),
    "Hernia": ("hernia",),
    "Infiltration": ("infiltration", "infiltrate"),
    "Lung Lesion": ("lesion",),
    "Mass": ("mass",),
    "Nodule": ("nodule",),
    "Lung Opacity": ("opacity",),
    "Pleural_Thickening": ("pleural_thickening", "pleural thickening"),
    "Pneumonia": ("pneumonia",),
    "Pneumothorax": ("pneumothorax",),
}

CHEXPERT_FINDINGS: tuple[str, ...] = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
    "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
    "Pleural Other", "Fracture", "Support Devices",
)

NIH_FINDINGS: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)
NIH_NO_FINDING = "No Finding"

MESH_NORMAL = "normal"
MESH_NOT_INDEXED = "No Indexing"  # the report was never indexed: its MeSH labels are missing
DEFAULT_TOP_K = 14

UNCERTAIN_POLICIES = ("ignore", "negative", "positive")

_VALUES = {"1": 1, "1.0": 1, "0": 0, "0.0": 0, "-1": -1, "-1.0": -1}


def automatic_labels(terms: list[str]) -> dict[str, int]:
    """0/1 for each of the 18 findings: a substring of the `|`-joined lower-cased automatic terms."""
    joined = "|".join(sorted({t.lower() for t in terms}))
    return {f: int(any(s in joined for s in AUTOMATIC_SUBSTRINGS[f])) for f in AUTOMATIC_FINDINGS}


def mesh_terms(majors: list[str]) -> set[str]:
    """The first segment of each MeSH major term: `Opacity/lung/upper lobe` -> `Opacity`."""
    return {m.split("/")[0].strip() for m in majors if m and m.strip()}


def mesh_findings(term_sets: list[set[str]], top_k: int) -> list[str]:
    """The `top_k` first segments found in the most reports (ties by name), then `normal`."""
    if top_k < 1:
        raise InputError(f"--top-k {top_k}: give at least 1")
    counts = Counter(t for terms in term_sets for t in terms if t not in (MESH_NORMAL, MESH_NOT_INDEXED))
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [t for t, _ in ranked[:top_k]] + [MESH_NORMAL]


def mesh_labels(terms: set[str], findings: list[str]) -> dict[str, int]:
    """0/1 per finding; a report indexed only as `No Indexing` has every label missing."""
    if not terms or terms == {MESH_NOT_INDEXED}:
        return {}
    return {f: int(f in terms) for f in findings}


def check_policy(uncertain: str) -> str:
    if uncertain not in UNCERTAIN_POLICIES:
        raise InputError(f"--uncertain {uncertain!r}: choose one of {', '.join(UNCERTAIN_POLICIES)}")
    return uncertain


def row_labels(row: dict, findings, uncertain: str, path, line: int) -> dict[str, int]:
    """finding -> 1 / 0 / -1 of a table row's CheXpert-style cells (`label_value`); blank cells left out."""
    return {f: v for f in findings if (v := label_value(row[f], uncertain, (path, line, f))) is not None}


def label_value(cell: str | None, uncertain: str, where) -> int | None:
    """1 / 0 / -1 from a CheXpert-style cell (`1.0`, `0`, `-1.0`, blank = None), after the policy.

    `where` names the cell for the error message: a string, or (file, line, column), formatted
    only on error because this runs once per cell of tables with millions of cells.
    """
    if cell is None:
        return None
    value = _VALUES.get(cell)
    if value is None:
        text = cell.strip()
        if not text:
            return None
        value = _VALUES.get(text)
        if value is None:
            if isinstance(where, tuple):
                where = f"{where[0]} line {where[1]} column {where[2]!r}"
            raise InputError(f"{where}: label value {cell!r} is not one of 1, 0, -1 or blank; fix the cell")
    if value == -1 and uncertain != "ignore":
        return 0 if uncertain == "negative" else 1
    return value
