"""Stores for the report's tests, built by the real pipeline through the real schema.

`phantom_study(root)`: phantom radiographs (`embedstore.synth`, shifted to site-b so the model is
out of its training distribution), encoded with the bundled phantom-clip as v1; every zero-shot
rule, the probe and separability on v1; a one-epoch `bce` fine-tune as v2 (its head's scores are
the `finetune` run), the same analyses on v2; Grad-CAM agreement with the phantoms' boxes
(`explain.commands.agreement`, which names the baselines `pointing@random`, `iou@centre`, ...)
on the boxes of the first `AGREEMENT_IMAGES` annotated images, and its overlay gallery. Nothing is written by hand.

At this size a finding needs at least `MIN_POSITIVES` positive patients on the test split to be
evaluable, so the store holds both evaluable findings and findings that are not.

`iu_sized(root)`: IU-Xray's size (7,470 images x 18 findings) with synthetic vectors
(`analyses.synthetic`), every zero-shot rule, the probe and separability: the size check.
"""

from __future__ import annotations

from pathlib import Path

STUDIES = 300
SEED = 5
MIN_POSITIVES = 3
N_BOOT = 200
AGREEMENT_IMAGES = 60
N_IU = 7470


def phantom_study(root: Path):
    """The store (v1 and its fine-tuned child v2) and the agreement run; see the module docstring."""
    import embedstore
    from embedstore.explain.commands import agreement, write_gallery
    from embedstore.synth import synth

    phantoms = root / "phantoms"
    synth(str(phantoms), studies=STUDIES, seed=SEED, size=128, workers=1, shift="site-b")
    st = embedstore.open(root / "store")
    st.encode(str(phantoms), model="phantom-clip", workers=0)
    _analyses(st, "v1")
    tuned = st.finetune("v1", objective="bce", epochs=1, lr=3e-4, batch_size=32, seed=0, device="cpu", workers=0)
    _analyses(st, tuned.version)
    boxes = _first_boxes(phantoms / "boxes.csv", root / "boxes.csv", AGREEMENT_IMAGES)
    run, _ = agreement(boxes=str(boxes), box_format="canonical", target="probe", version="v1", store=st, n_boot=N_BOOT)
    write_gallery(st, run, limit=4)
    return st


def _first_boxes(source: Path, out: Path, images: int) -> Path:
    """The phantoms' box file cut to its first `images` images (Grad-CAM is the slow part)."""
    import polars as pl

    boxes = pl.read_csv(source)
    keep = boxes["image_id"].unique(maintain_order=True).head(images)
    boxes.filter(pl.col("image_id").is_in(keep.to_list())).write_csv(out)
    return out


def _analyses(st, version: str) -> None:
    st.zeroshot(version, n_boot=N_BOOT, min_positives=MIN_POSITIVES)
    st.probe(version, n_boot=N_BOOT, min_positives=MIN_POSITIVES)
    st.separability(version, tsne_max=100)


def iu_sized(root: Path):
    """7,470 images x 18 findings of synthetic vectors with the classifier and separability runs."""
    import embedstore
    from embedstore.analyses import synthetic

    st = embedstore.open(root / "store")
    synthetic.to_store(synthetic.make(n=N_IU, n_findings=18, d=64, seed=1), st, name="iu-sized")
    st.zeroshot("v1", n_boot=N_BOOT)
    st.probe("v1", n_boot=N_BOOT)
    st.separability("v1")
    return st


def labels_only(root: Path):
    """Images, labels and a version, and no analysis run at all."""
    import embedstore
    from embedstore.analyses import synthetic

    st = embedstore.open(root / "store")
    synthetic.to_store(synthetic.make(n=300, n_findings=4, d=16, seed=2), st, name="labels-only")
    return st
