"""Image views from a file: a CSV of image id to DICOM `View Position`, as Open-i distributes it
(`nlmcxr_dicom_metadata.csv.gz`, also in torchxrayvision's package data), applied to any reader's
records by image id (`--views FILE`).

PA and AP are frontal views, LL, LATERAL, RL and LARGE LATERAL lateral ones; a blank or any other
position leaves the view as the reader found it. A view from the file is recorded with
`view_source = "file"`, a view the data set itself names with "dataset".
"""

from __future__ import annotations

import re

from embedstore.data.records import ImageRecord
from embedstore.errors import InputError

FRONTAL_POSITIONS = ("PA", "AP")
LATERAL_POSITIONS = ("LL", "LATERAL", "RL", "LARGE LATERAL")
ID_COLUMNS = ("imageid", "image_id", "ImageID", "Image Index")
POSITION_COLUMN = "View Position"
# Open-i's report XML names the first study's images "CXR1_1_IM-...", its DICOM metadata "CXR1_IM-...".
_SUBNUMBER = re.compile(r"^(CXR\d+)_\d+_(IM-)")


def view_of_position(position: str | None) -> str | None:
    """frontal / lateral for a DICOM View Position, None for a blank or unknown one."""
    vp = " ".join((position or "").upper().split())
    return "frontal" if vp in FRONTAL_POSITIONS else "lateral" if vp in LATERAL_POSITIONS else None


def read_views(path: str) -> dict[str, tuple[str, str]]:
    """image id -> (view, projection) for every row whose `View Position` names a view."""
    from embedstore.data.table_files import read_table

    df = read_table(path)
    key = next((c for c in ID_COLUMNS if c in df.columns), None)
    if key is None or POSITION_COLUMN not in df.columns:
        lacking = " and ".join(x for x, ok in (("an image id column (imageid)", key), (f"'{POSITION_COLUMN}'",
                               POSITION_COLUMN in df.columns)) if not ok)
        raise InputError(f"--views {path}: no {lacking} column (columns: {', '.join(df.columns[:8])}); give a CSV "
                         f"of image id to {POSITION_COLUMN}, as Open-i's nlmcxr_dicom_metadata.csv.gz")
    out = {}
    for image_id, position in zip(df[key].to_list(), df[POSITION_COLUMN].to_list()):
        view = view_of_position(position)
        if image_id and view:
            out[image_id.strip()] = (view, " ".join(position.upper().split()))
    return out


def apply_views(records: list[ImageRecord], path: str) -> int:
    """Set view, projection and view_source = "file" on the records the file names a view for
    (matched by image id, Open-i's two spellings of the first study's ids alike); the number of
    views given. InputError when none of the file's ids matches a record."""
    views = read_views(path)
    given = 0
    for r in records:
        found = views.get(r.image_id) or views.get(_SUBNUMBER.sub(r"\1_\2", r.image_id))
        if found is not None:
            r.view, r.projection = found
            r.view_source = "file"
            given += 1
    if records and views and not given:
        raise InputError(f"--views {path}: none of its {len(views)} image ids with a view match the data set's "
                         f"(e.g. {records[0].image_id}); give the views file of this data set")
    return given
