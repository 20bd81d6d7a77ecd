"""Review fix: `agreement` refuses to score a fine-tuned version on the images it trained or
early-stopped on, whatever --split asks for (refused before any model is loaded)."""

from __future__ import annotations

import polars as pl
import pytest

from embedstore.data.records import ImageRecord
from embedstore.errors import InputError


@pytest.fixture
def tuned(tmp_path):
    """A real store: six boxed images (two per split) and a version 'fine-tuned' on image a0 (train)
    and early-stopped on v0 (val); the boxes file."""
    from embedstore.store import Storage

    st = Storage(tmp_path / "s")
    names = {"a0": "train", "a1": "train", "v0": "val", "v1": "val", "t0": "test", "t1": "test"}
    ids = st.upsert_images([ImageRecord(n, str(tmp_path / f"{n}.png"), f"s{n}", f"p{n}", None, None, split, {"F": 1})
                            for n, split in names.items()])
    version = st.create_version(None, {"name": "tuned", "embed_dim": 4}, None, "float32", "finetune",
                                fit_ids={"train": [ids["a0"]], "val": [ids["v0"]]})
    st.complete_version(version)
    boxes = tmp_path / "boxes.csv"
    pl.DataFrame({"image_id": list(names), "finding": "F", "x_min": 1.0, "y_min": 1.0, "x_max": 5.0,
                  "y_max": 5.0}).write_csv(boxes)
    return st, version, str(boxes)


@pytest.mark.parametrize("split, trained, stopped", [("train", 1, 0), ("val", 0, 1), ("all", 1, 1)])
def test_agreement_refuses_a_tuned_versions_own_images(tuned, split, trained, stopped):
    from embedstore.explain.service import agreement

    st, version, boxes = tuned
    with pytest.raises(InputError, match=rf"agreement on split '{split}' would score version {version} on "
                                         rf"{trained} image\(s\) .* and {stopped} it was early-stopped on"):
        agreement(st, boxes=boxes, box_format="canonical", version=version, split=split)
