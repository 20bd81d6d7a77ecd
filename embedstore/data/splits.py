"""Train/val/test splits: stratified over every finding at once, by group, and frozen once stored.

A *group* is what one split must hold whole: the data set's `group` column where given, else the
patient, else the study (`group_of`). Readers call `assign_splits`, which stratifies the groups
with iterative multi-label stratification (iterstrat), so that rare findings get positives in val
and test too. The store then freezes those splits (`place`): an image keeps the split it was first
stored with, whatever is encoded later; this module decides where new images go and knows no store.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from embedstore.data.records import SPLITS, ImageRecord
from embedstore.errors import InputError

DEFAULT_FRACTIONS = (0.7, 0.1, 0.2)
GROUP_KINDS = ("group", "patient", "study")  # in order of precedence
# How an image got its split (the `splits.method` column).
STRATIFIED, GIVEN, HASH, GROUP, ADOPTED = "stratified", "given", "hash", "group", "adopted"
GROUP_OVER_GIVEN = "group-over-given"  # a given split that disagreed with the group's stored one


def check_fractions(fractions) -> tuple[float, float, float]:
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3 or min(fr) < 0 or abs(sum(fr) - 1.0) > 1e-6:
        raise InputError(f"split fractions {fractions}: give three non-negative numbers (train, val, test) summing to 1")
    return fr  # type: ignore[return-value]


def group_of(record: ImageRecord) -> str:
    """The record's group id, prefixed by its kind: `group:X`, else `patient:X`, else `study:X`."""
    if record.group_id:
        return f"group:{record.group_id}"
    if record.patient_id:
        return f"patient:{record.patient_id}"
    return f"study:{record.study_id}"


def assign_splits(records: list[ImageRecord], seed: int = 0, fractions=DEFAULT_FRACTIONS) -> str:
    """Set `split` on every record; return what the groups were ("patient", "study", "group",
    kinds joined by "+" where records differ, or "given").

    Splits already given for every record (a manifest's `split` column, MIMIC-CXR's official
    split) are kept; given for only some, they are refused (InputError). Otherwise the groups are stratified over all findings at once
    (`stratify_groups`), so the same seed and data give the same splits on any machine, and one
    group never spans two splits.
    """
    fr = check_fractions(fractions)
    given = sum(1 for r in records if r.split)
    if 0 < given < len(records):  # restratifying would silently drop the splits that were given
        lacking = next(r for r in records if not r.split)
        raise InputError(f"{given} of {len(records)} images have a split and the rest do not (e.g. {lacking.image_id}); "
                         "give every image a split (train, val or test) or none, to have them all stratified")
    if records and given == len(records):
        bad = next((r for r in records if r.split not in SPLITS), None)
        if bad is not None:
            raise InputError(f"image {bad.image_id}: split {bad.split!r} is not one of {', '.join(SPLITS)}")
        return GIVEN
    groups = [group_of(r) for r in records]
    names, row_of = np.unique(np.array(groups, dtype=object), return_inverse=True) if groups else ([], [])
    split_of_group = stratify_groups(group_positives(records, row_of, len(names)), seed, fr)
    for record, row in zip(records, row_of):
        record.split = str(split_of_group[row])
    kinds = {g.split(":", 1)[0] for g in groups}
    return "+".join(k for k in GROUP_KINDS if k in kinds) or "study"


def group_positives(records: list[ImageRecord], row_of, n_groups: int) -> np.ndarray:
    """bool [groups, findings]: a group is positive for a finding when any of its images is (value 1)."""
    findings = sorted({f for r in records for f, v in r.labels.items() if v == 1})
    col = {f: j for j, f in enumerate(findings)}
    Y = np.zeros((n_groups, len(findings)), dtype=bool)
    for record, row in zip(records, row_of):
        for f, v in record.labels.items():
            if v == 1:
                Y[row, col[f]] = True
    return Y


def stratify_groups(Y: np.ndarray, seed: int, fractions=DEFAULT_FRACTIONS) -> np.ndarray:
    """The split of each group (row of Y, its positive findings): round(fraction x groups) of them
    to test, drawn first, then as many to val from the rest, each draw by iterstrat's
    `MultilabelStratifiedShuffleSplit` (`random_state=seed`)."""
    fr = check_fractions(fractions)
    n = len(Y)
    out = np.full(n, "train", dtype=object)
    out[_draw(Y, np.arange(n), _count(fr[2], n), seed)] = "test"
    out[_draw(Y, np.flatnonzero(out == "train"), _count(fr[1], n), seed)] = "val"
    return out


def _count(fraction: float, n: int) -> int:
    return int(np.floor(fraction * n + 0.5))


def _draw(Y: np.ndarray, rows: np.ndarray, count: int, seed: int) -> np.ndarray:
    """`count` of `rows`, stratified over Y's columns."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    if count >= len(rows):
        return rows
    if count <= 0:
        return rows[:0]
    labels = Y[rows]
    if labels.shape[1] < 2:  # iterstrat wants a multi-label indicator: pad with never-positive columns
        labels = np.hstack([labels, np.zeros((len(rows), 2 - labels.shape[1]), dtype=bool)])
    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=count, random_state=seed)
    _, drawn = next(splitter.split(np.zeros((len(rows), 1)), labels))
    return rows[np.sort(drawn)]


def group_folds(groups, Y: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """The fold (0 .. k-1) of each row: whole groups per fold, stratified over Y's columns (a group
    is positive for a column when any of its rows is) by iterstrat's `MultilabelStratifiedKFold`,
    seeded. For cross-validation inside the train and val splits (label issues, view probes)."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    names, codes = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
    if k < 2 or k > len(names):
        raise InputError(f"--folds {k}: give between 2 and the number of groups ({len(names)})")
    G = np.zeros((len(names), max(Y.shape[1], 2)), dtype=bool)  # iterstrat wants two columns at least
    np.logical_or.at(G[:, :Y.shape[1]], codes.reshape(-1), np.asarray(Y, dtype=bool))
    fold_of = np.empty(len(names), dtype=np.int64)
    folds = MultilabelStratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for f, (_, held) in enumerate(folds.split(np.zeros((len(names), 1)), G)):
        fold_of[held] = f
    return fold_of[codes.reshape(-1)]


def hash_split(group_id: str, seed: int, fractions=DEFAULT_FRACTIONS) -> str:
    """The split of a group added to a store that already has splits: sha256 of seed and group id
    read as a number in [0, 1), cut at the fractions. Independent of anything else in the store,
    so adding groups never moves another group."""
    fr = check_fractions(fractions)
    digest = hashlib.sha256(f"{seed}:{group_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    return "train" if u < fr[0] else "val" if u < fr[0] + fr[1] else "test"


# ---- freezing: where each image of an upsert goes -------------------------------------------
@dataclass(frozen=True)
class Assignment:
    """How a reader assigned its records' splits: `stratified` (with seed and fractions) or `given`."""

    method: str = GIVEN
    seed: int | None = None
    fractions: tuple[float, float, float] | None = None


@dataclass
class Stored:
    """What the store already holds: image_id -> split, group_id -> split, and the seed and
    fractions new groups are hashed with (those of the store's first stratified assignment)."""

    by_image: dict[str, str] = field(default_factory=dict)
    by_group: dict[str, str] = field(default_factory=dict)
    seed: int | None = None
    fractions: tuple[float, float, float] | None = None


@dataclass(frozen=True)
class Placement:
    """Where one record goes: its split, group and, for an image new to `splits`, how it got there."""

    group_id: str
    split: str
    method: str
    new: bool
    seed: int | None = None
    fractions: str | None = None  # JSON, as stored


def place(records: list[ImageRecord], assigned: Assignment, stored: Stored) -> list[Placement]:
    """One placement per record. An image already stored keeps its split; a new image of a group
    already stored joins that group's split (group), even where the data set gives it another
    (method `group-over-given`, counted for a warning): one patient never spans two splits, or
    its train images would leak into test. Else a new image takes its given split (given); else,
    in a store without splits, the reader's split (the reader's method); else a hash of its group.
    """
    seed = stored.seed if stored.seed is not None else (assigned.seed or 0)
    fractions = check_fractions(stored.fractions or assigned.fractions or DEFAULT_FRACTIONS)
    return [_place_one(r, assigned, stored, seed, fractions, fresh_store=not stored.by_image) for r in records]


def _place_one(r: ImageRecord, assigned: Assignment, stored: Stored, seed: int, fractions, fresh_store: bool) -> Placement:
    group = group_of(r)
    if r.image_id in stored.by_image:
        return Placement(group, stored.by_image[r.image_id], "kept", new=False)
    given = _valid(r) if r.split and assigned.method == GIVEN else None
    if group in stored.by_group:
        joined = stored.by_group[group]
        return Placement(group, joined, GROUP_OVER_GIVEN if given not in (None, joined) else GROUP, new=True)
    if given:
        return Placement(group, given, GIVEN, new=True)
    if r.split and fresh_store:
        return Placement(group, _valid(r), assigned.method, new=True, seed=assigned.seed,
                         fractions=_json(assigned.fractions))
    return Placement(group, hash_split(group, seed, fractions), HASH, new=True, seed=seed, fractions=_json(fractions))


def _valid(record: ImageRecord) -> str:
    if record.split not in SPLITS:
        raise InputError(f"image {record.image_id}: split {record.split!r} is not one of {', '.join(SPLITS)}")
    return record.split


def _json(fractions) -> str | None:
    return None if fractions is None else json.dumps([float(f) for f in fractions])


def parse_fractions(text: str | None) -> tuple[float, float, float] | None:
    """Fractions as stored (JSON text) back to a tuple."""
    return None if not text else tuple(json.loads(text))  # type: ignore[return-value]


# ---- the report: positives per finding and split ----------------------------------------------
@dataclass
class SplitsReport:
    """`embedstore splits`: positives per finding and split (`findings`, what `.to_polars()` gives)
    and how the splits were assigned (`methods`: method, seed, fractions, images placed)."""

    findings: object  # polars.DataFrame (positives_table)
    methods: object  # polars.DataFrame
    min_positives: int = 10
    views: object = None  # polars.DataFrame (view_table): views known, given and inferred per split

    def to_polars(self):
        return self.findings

    def to_dict(self) -> dict:
        """Both tables, as `--format json` prints them."""
        return {"findings": self.findings.to_dicts(), "methods": self.methods.to_dicts()}

    @property
    def warning(self) -> str | None:
        """One line naming the findings with too few positive groups to evaluate, or None."""
        low = self.findings.filter(self.findings["below_min"].is_not_null())
        if not low.height:
            return None
        named = ", ".join(f"{r['finding']} (val {r['val_groups']}, test {r['test_groups']})"
                          for r in low.iter_rows(named=True))
        return (f"{low.height} finding(s) have fewer than {self.min_positives} positive groups in val or test, so "
                f"their metrics there are unreliable: {named}")


def positives_table(positives, findings: list[str], min_positives: int = 10):
    """One row per finding: positive groups and images in train, val and test (from the long
    finding, split, positive_groups, positive_images), and `below_min`: the evaluation splits
    (val, test) with fewer than `min_positives` positive groups, comma-joined (null when none)."""
    import polars as pl

    wide = pl.DataFrame({"finding": findings}, schema={"finding": pl.String})
    for what in ("groups", "images"):
        for split in SPLITS:
            part = positives.filter(pl.col("split") == split).select(
                "finding", pl.col(f"positive_{what}").cast(pl.Int64).alias(f"{split}_{what}"))
            wide = wide.join(part, on="finding", how="left").with_columns(pl.col(f"{split}_{what}").fill_null(0))
    short = [pl.when(pl.col(f"{s}_groups") < min_positives).then(pl.lit(s)) for s in ("val", "test")]
    below = pl.concat_str(short, separator=",", ignore_nulls=True)
    return wide.with_columns(pl.when(below != "").then(below).alias("below_min"))


VIEW_SOURCES = ("known", "given", "inferred")


def view_table(coverage):
    """One row per split: images whose view the data set names (known_*), a --views file gave
    (given_*) or `infer-views` inferred (inferred_*), frontal and lateral, and those still unknown;
    from the long split, source, view, images of `Storage.view_coverage`."""
    import polars as pl

    splits = [s for s in (*SPLITS, "none") if s in set(coverage["split"].to_list())]
    rows = []
    for split in splits:
        part = coverage.filter(pl.col("split") == split)
        count = {(r["source"], r["view"]): r["images"] for r in part.iter_rows(named=True)}
        row = {"split": split} | {f"{source}_{view}": int(count.get((source, view), 0))
                                  for source in VIEW_SOURCES for view in ("frontal", "lateral")}
        row["unknown"] = int(sum(n for (src, _), n in count.items() if src == "unknown"))
        rows.append(row)
    return pl.DataFrame(rows) if rows else pl.DataFrame(schema={"split": pl.String})
