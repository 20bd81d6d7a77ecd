"""Phantom generator: boxes hold the finding's pixels, labels follow IU-Xray, files are reproducible."""

from __future__ import annotations

import csv
import io
import os
import re
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from embedstore.errors import InputError
from embedstore.synth import FINDINGS, ImageRenderer, StudyLabels, make_study, sample_labels, synth
from embedstore.synth.findings import KINDS
from embedstore.synth.generate import to_uint8
from txv_files import txv_file

IMAGE_ID = re.compile(r"^CXR(\d+)_(?:\d+_)?IM-\d{4}(?:-\d+)+$")

# IU-Xray automatic-term scheme, images per finding over 7,470 images (shared/README.md table).
TARGET = {"Lung Opacity": 819, "Granuloma": 781, "Atelectasis": 711, "Cardiomegaly": 493,
          "Calcified Granuloma": 416, "Effusion": 346, "Fracture": 189, "Emphysema": 193,
          "Infiltration": 174, "Nodule": 157, "Pneumonia": 158, "Edema": 144, "Hernia": 97,
          "Pleural_Thickening": 68, "Fibrosis": 39, "Pneumothorax": 44, "Mass": 13, "Lung Lesion": 7}


def txrv_labels(automatic: list[str]) -> dict[str, int]:
    """torchxrayvision Openi_Dataset's rule, written out here independently of the code under test."""
    joined = "|".join(sorted({a.lower() for a in automatic}))
    syn = {"Pleural_Thickening": ["pleural thickening"], "Infiltration": ["infiltrate"], "Atelectasis": ["atelectases"]}
    raw = {"Lung Opacity": "opacity", "Lung Lesion": "lesion"}
    return {f: int(raw.get(f, f).lower() in joined or any(s in joined for s in syn.get(f, []))) for f in TARGET}


def read_csv(path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def final_pixels(r: ImageRenderer, omit=()) -> np.ndarray:
    return to_uint8(r.noisy(r.clean(omit=omit))).astype(int)


@pytest.mark.parametrize("kind", list(KINDS))
def test_finding_pixels_lie_inside_its_boxes(kind):
    labels = KINDS[kind].labels
    study = make_study(11, 5 + list(KINDS).index(kind), 96, StudyLabels(labels, False, ("cvc",)))
    for j, (_, view, _) in enumerate(study.images):
        r = ImageRenderer(study, j)
        diff = final_pixels(r) != final_pixels(r, omit=(kind,))
        rows = [b for b in r.boxes(r.clean()) if b["finding"] == labels[0]]
        if view == "lateral" and not KINDS[kind].lateral:
            assert not diff.any() and not rows  # not drawn, not boxed
            continue
        assert diff.any() and rows, f"{kind} invisible on the {view} view"
        inside = np.zeros_like(diff)
        m = 1  # detector blur margin
        for b in rows:
            inside[max(b["y_min"] - m, 0):b["y_max"] + m, max(b["x_min"] - m, 0):b["x_max"] + m] = True
        assert not (diff & ~inside).any(), f"{kind}: {int((diff & ~inside).sum())} changed pixels outside its boxes"
        assert all(set(b) >= {"x_min", "y_min", "x_max", "y_max", "reader", "width", "height"} for b in rows)


def test_calcified_granuloma_boxes_count_for_granuloma_too():
    study = make_study(3, 2, 64, StudyLabels(("Calcified Granuloma", "Granuloma"), False))
    r = ImageRenderer(study, 0)
    found = {b["finding"] for b in r.boxes(r.clean())}
    assert found == {"Calcified Granuloma", "Granuloma"}


def test_label_prevalence_follows_iu_xray():
    n = 20000
    counts = dict.fromkeys(TARGET, 0)
    images = normal = 0
    for i in range(1, n + 1):
        lab = sample_labels(7, i)
        k = len(lab.views)
        images += k
        normal += k * lab.normal
        for f in lab.findings:
            counts[f] += k
    for f, target in TARGET.items():
        assert abs(counts[f] / images - target / 7470) < 0.012, (f, counts[f] / images, target / 7470)
    assert 0.34 <= normal / images <= 0.40
    assert all(counts[f] > 0 for f in TARGET)


def test_automatic_terms_give_back_the_drawn_labels():
    for i in range(1, 400):
        s = make_study(5, i, 64)
        assert txrv_labels(s.automatic) == {f: int(f in s.labels.findings) for f in TARGET}
        assert s.labels.normal == (s.major == ["normal"])


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("p") / "set"
    summary = synth(str(out), studies=40, seed=1, size=64, dicom=True, workers=2)
    return out, summary


def test_layout_xml_and_labels(small_set):
    out, summary = small_set
    labels = read_csv(out / "labels.csv")
    assert list(labels[0]) == ["image_id", "study_id", "view", *FINDINGS]
    assert summary.studies == 40 and summary.images == len(labels)
    by_id = {row["image_id"]: row for row in labels}
    xmls = sorted(os.listdir(out / "ecgen-radiology"))
    assert len(xmls) == 40
    seen = []
    for name in xmls:
        root = ET.parse(out / "ecgen-radiology" / name).getroot()
        uid = root.find("uId").attrib["id"]
        assert uid == "CXR" + name[:-4]
        texts = {a.attrib["Label"]: a.text for a in root.iter("AbstractText")}
        assert texts["FINDINGS"] and texts["IMPRESSION"]
        expected = txrv_labels([a.text for a in root.findall(".//MeSH/automatic")])
        assert root.findall(".//MeSH/major")
        for im in root.findall("parentImage"):
            image_id = im.attrib["id"]
            assert IMAGE_ID.match(image_id) and IMAGE_ID.match(image_id).group(1) == name[:-4]
            row = by_id[image_id]
            assert row["study_id"] == uid
            assert ("Lateral" in im.findtext("caption")) == (row["view"] == "lateral")
            assert {f: int(row[f]) for f in TARGET} == expected
            with Image.open(out / "images" / f"{image_id}.png") as png:
                assert png.mode == "L" and png.size == (64, 64)
            seen.append(image_id)
    assert sorted(seen) == sorted(by_id)


def test_reports_mention_the_findings(small_set):
    out, _ = small_set
    words = {"Cardiomegaly": ["cardiomegaly", "enlarged"], "Effusion": ["effusion"], "Lung Opacity": ["opacity"],
             "Atelectasis": ["atelectasis"], "Granuloma": ["granulom"], "Fracture": ["fracture"]}
    for row in read_csv(out / "labels.csv"):
        root = ET.parse(out / "ecgen-radiology" / f"{row['study_id'][3:]}.xml").getroot()
        text = " ".join(a.text or "" for a in root.iter("AbstractText")).lower()
        for f, ws in words.items():
            if row[f] == "1":
                assert any(w in text for w in ws), (f, text)


def test_normal_studies_have_no_boxes_and_boxes_have_positive_labels(small_set):
    out, _ = small_set
    labels = {r["image_id"]: r for r in read_csv(out / "labels.csv")}
    boxes = read_csv(out / "boxes.csv")
    assert list(boxes[0]) == ["image_id", "finding", "x_min", "y_min", "x_max", "y_max", "reader", "width", "height"]
    boxed = {b["image_id"] for b in boxes}
    normal = [i for i, r in labels.items() if not any(r[f] == "1" for f in FINDINGS)]
    assert normal and not boxed & set(normal)
    for b in boxes:
        assert labels[b["image_id"]][b["finding"]] == "1"
        assert 0 <= int(b["x_min"]) < int(b["x_max"]) <= int(b["width"]) == 64
        assert 0 <= int(b["y_min"]) < int(b["y_max"]) <= int(b["height"]) == 64
    # Every positive frontal image has a box for each finding drawn there.
    frontal = [r for r in labels.values() if r["view"] == "frontal"]
    have = {(b["image_id"], b["finding"]) for b in boxes}
    for r in frontal:
        for f in FINDINGS:
            if r[f] == "1":
                assert (r["image_id"], f) in have


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_across_worker_counts(small_set, tmp_path):
    out, _ = small_set
    again = tmp_path / "again"
    synth(str(again), studies=40, seed=1, size=64, dicom=True, workers=1)
    a, b = _tree_bytes(out), _tree_bytes(again)
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)


def test_different_seed_differs(tmp_path):
    synth(str(tmp_path / "a"), studies=4, seed=1, size=64, workers=1)
    synth(str(tmp_path / "b"), studies=4, seed=2, size=64, workers=1)
    a, b = _tree_bytes(tmp_path / "a"), _tree_bytes(tmp_path / "b")
    pngs = [k for k in a if k.endswith(".png") and k in b]
    assert pngs and all(a[k] != b[k] for k in pngs)


def test_site_b_shift_changes_pixels_only(tmp_path):
    import numpy as np
    from PIL import Image

    synth(str(tmp_path / "a"), studies=6, seed=1, size=64, workers=1)
    synth(str(tmp_path / "b"), studies=6, seed=1, size=64, workers=1, shift="site-b")
    a, b = _tree_bytes(tmp_path / "a"), _tree_bytes(tmp_path / "b")
    assert a.keys() == b.keys()
    same = [k for k in a if not k.endswith(".png")]
    assert same and all(a[k] == b[k] for k in same)  # reports, labels.csv and boxes.csv unchanged
    for k in [k for k in a if k.endswith(".png")]:
        x = np.asarray(Image.open(tmp_path / "a" / k), dtype=np.float32)
        y = np.asarray(Image.open(tmp_path / "b" / k), dtype=np.float32)
        assert np.abs(x - y).mean() > 5  # another look ...
        assert np.corrcoef(x.ravel(), y.ravel())[0, 1] > 0.8  # ... of the same anatomy


def test_dicom_reads_back_through_the_luts(small_set):
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    out, _ = small_set
    files = sorted((out / "dicom").iterdir())
    assert len(files) == len(os.listdir(out / "images"))
    kinds = set()
    for path in files:
        ds = pydicom.dcmread(path)
        kinds.add((ds.PhotometricInterpretation, int(ds.BitsStored)))
        assert 12 <= ds.BitsStored <= 16 and ds.BitsAllocated == 16
        arr = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds).astype(float)
        arr = (arr - arr.min()) / (np.ptp(arr) or 1)
        if ds.PhotometricInterpretation == "MONOCHROME1":
            arr = 1 - arr
        png = np.asarray(Image.open(out / "images" / f"{path.stem}.png"), dtype=float)
        assert np.corrcoef(arr.ravel(), png.ravel())[0, 1] > 0.99
    assert {k[0] for k in kinds} == {"MONOCHROME1", "MONOCHROME2"}


def test_labels_from_real_reports(tmp_path):
    src = txv_file("NLMCXR_reports.tgz")
    small = tmp_path / "few.tgz"
    want = {}
    with tarfile.open(src) as tin, tarfile.open(small, "w:gz") as tout:
        for m in tin.getmembers():
            if m.isfile() and m.name.endswith(".xml") and len(want) < 12:
                data = tin.extractfile(m).read()
                root = ET.fromstring(data)
                want[root.find("uId").attrib["id"]] = (
                    txrv_labels([a.text for a in root.findall(".//MeSH/automatic")]),
                    [im.attrib["id"] for im in root.findall("parentImage")],
                    {a.attrib["Label"]: a.text for a in root.iter("AbstractText")}.get("FINDINGS"))
                m.size = len(data)
                tout.addfile(m, io.BytesIO(data))
    out = tmp_path / "real"
    synth(str(out), seed=0, size=64, labels_from=str(small), workers=1)
    labels = read_csv(out / "labels.csv")
    for uid, (lab, ids, findings) in want.items():
        root = ET.parse(out / "ecgen-radiology" / f"{uid[3:]}.xml").getroot()
        assert [im.attrib["id"] for im in root.findall("parentImage")] == ids
        assert {a.attrib["Label"]: a.text for a in root.iter("AbstractText")}.get("FINDINGS") == findings
        rows = [r for r in labels if r["study_id"] == uid]
        assert [r["image_id"] for r in rows] == ids
        assert all({f: int(r[f]) for f in TARGET} == lab for r in rows)


def test_bad_inputs_are_one_line_errors(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(InputError, match="not an empty folder"):
        synth(str(tmp_path / "full"), studies=1)
    with pytest.raises(InputError, match="no such file"):
        synth(str(tmp_path / "o"), labels_from=str(tmp_path / "missing.tgz"))
    (tmp_path / "bad.tgz").write_text("not a tarball")
    with pytest.raises(InputError, match="tar"):
        synth(str(tmp_path / "o2"), labels_from=str(tmp_path / "bad.tgz"))
    with pytest.raises(InputError, match="--shift 'site-c': use one of none, site-b"):
        synth(str(tmp_path / "o3"), studies=1, shift="site-c")
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob("o*.partial-*"))


def test_cli_synth(tmp_path):
    from typer.testing import CliRunner

    from embedstore.cli import app

    res = CliRunner().invoke(app, ["synth", str(tmp_path / "c"), "--studies", "3", "--seed", "4", "--size", "48",
                                   "--workers", "1", "--format", "json"])
    assert res.exit_code == 0, res.output
    assert len(read_csv(tmp_path / "c" / "labels.csv")) >= 3
