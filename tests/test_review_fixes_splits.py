"""Review fixes: a patient's stored split wins over a split the data set gives a new image of it
(counted), and a split column filled for only some images is refused. Real stores, no model."""

from __future__ import annotations

import pytest

from embedstore.data.records import ImageRecord
from embedstore.data.splits import GROUP_OVER_GIVEN, assign_splits
from embedstore.errors import InputError


def _record(i: int, patient: str, split: str | None) -> ImageRecord:
    return ImageRecord(f"im{i}", None, f"s{i}", patient, None, None, split, {"A": i % 2})


def test_a_new_image_of_a_patient_stored_in_train_stays_in_train_and_is_counted(tmp_path):
    from embedstore.store import Storage

    st = Storage(tmp_path / "s")
    st.upsert_images([_record(0, "p0", "train"), _record(1, "p1", "test")])
    # the data set now says p0's new image (and p1's) belong elsewhere; p2 is new and keeps its given split
    st.upsert_images([_record(2, "p0", "test"), _record(3, "p1", "test"), _record(4, "p2", "val")])
    with st.connect() as con:
        got = dict(con.sql("SELECT i.image_id, s.split || '/' || s.method FROM splits s JOIN images i USING (id)")
                   .fetchall())
    assert got["im2"] == f"train/{GROUP_OVER_GIVEN}"  # the group wins: p0 never spans train and test
    assert got["im3"] == "test/group" and got["im4"] == "val/given"  # agreeing or new: nothing to report
    assert st.images_placed_by(GROUP_OVER_GIVEN) == 1
    methods = dict(st.split_methods().select("method", "images").rows())
    assert methods[GROUP_OVER_GIVEN] == 1  # the split summary (`embedstore splits`) shows the conflict


def test_a_split_column_filled_for_only_some_images_is_refused():
    records = [_record(0, "p0", "train"), _record(1, "p1", None), _record(2, "p2", "test")]
    with pytest.raises(InputError, match=r"2 of 3 images have a split .* \(e\.g\. im1\)"):
        assign_splits(records)
    assert [r.split for r in records] == ["train", None, "test"]  # nothing restratified
