"""Data-set readers: the real files shipped inside torchxrayvision (read in place), small
hand-made files for the formats with no real file here, and bad input."""

from __future__ import annotations

import csv
import gzip
import html
import importlib.util
import io
import os
import re
import tarfile
import zipfile
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from txv_files import txv_file  # noqa: E402

from embedstore.data.datasets import read_dataset
from embedstore.data.inspect import inspect_dataset
from embedstore.errors import InputError




# ------------------------------------------------------------------ independent Open-i parse

# torchxrayvision's Openi rule, written out here: the pathology's lower-cased name or a synonym is
# a substring of the report's lower-cased automatic terms.
SUBSTRINGS = {
    "Atelectasis": ["atelectasis", "atelectases"], "Calcified Granuloma": ["calcified granuloma"],
    "Cardiomegaly": ["cardiomegaly"], "Edema": ["edema"], "Effusion": ["effusion"],
    "Emphysema": ["emphysema"], "Fibrosis": ["fibrosis"], "Fracture": ["fracture"],
    "Granuloma": ["granuloma"], "Hernia": ["hernia"], "Infiltration": ["infiltration", "infiltrate"],
    "Lung Lesion": ["lesion"], "Mass": ["mass"], "Nodule": ["nodule"], "Lung Opacity": ["opacity"],
    "Pleural_Thickening": ["pleural_thickening", "pleural thickening"], "Pneumonia": ["pneumonia"],
    "Pneumothorax": ["pneumothorax"],
}


def parse_openi_independently(tgz: str) -> dict:
    """Regular expressions over the raw XML text: no ElementTree, no embedstore code."""
    reports = {}
    with tarfile.open(tgz) as tf:
        for m in tf.getmembers():
            if not m.name.endswith(".xml"):
                continue
            text = tf.extractfile(m).read().decode("utf-8")
            uid = re.search(r'<uId id="([^"]+)"', text).group(1)
            images = re.findall(r'<parentImage id="([^"]+)"', text)
            terms = [html.unescape(t).lower() for t in re.findall(r"<automatic>(.*?)</automatic>", text, re.S)]
            reports[uid] = (images, terms)
    return reports


def openi_counts(reports: dict) -> tuple[dict, dict]:
    """Per finding: (reports with an image and the finding, images with the finding)."""
    rep, img = Counter(), Counter()
    for images, terms in reports.values():
        if not images:
            continue
        for f, subs in SUBSTRINGS.items():
            if any(s in t for s in subs for t in terms):
                rep[f] += 1
                img[f] += len(images)
    return rep, img


@pytest.fixture(scope="session")
def openi_tgz():
    return txv_file("NLMCXR_reports.tgz")


@pytest.fixture(scope="session")
def openi_ds(openi_tgz):
    return read_dataset(openi_tgz)  # parsed once for the session


@pytest.fixture(scope="session")
def openi_truth(openi_tgz):
    return parse_openi_independently(openi_tgz)


def test_openi_tarball_counts(openi_ds, openi_truth):
    assert openi_ds.n_reports == len(openi_truth) == 3955
    ids = [r.image_id for r in openi_ds.records]
    truth_ids = [i for images, _ in openi_truth.values() for i in images]
    assert len(ids) == len(set(ids)) == 7470
    assert set(ids) == set(truth_ids)
    assert sorted(openi_ds.reports_without_images) == sorted(u for u, (im, _) in openi_truth.items() if not im)
    assert len(openi_ds.reports_without_images) > 0
    assert all(r.path is None for r in openi_ds.records)  # the tarball alone has no images
    assert any("no image folder" in n for n in openi_ds.notes)


def test_openi_automatic_labels_equal_independent_parse(openi_ds, openi_truth):
    rep, img = openi_counts(openi_truth)
    summary = inspect_dataset(openi_ds)
    assert set(openi_ds.findings) == set(SUBSTRINGS)
    got = {row["finding"]: (row["reports"], row["images"]) for row in summary["per_finding"]}
    assert got == {f: (rep[f], img[f]) for f in SUBSTRINGS}
    # Image-level labels equal the report's, for every image.
    by_image = {}
    for images, terms in openi_truth.values():
        for i in images:
            by_image[i] = {f: int(any(s in t for s in subs for t in terms)) for f, subs in SUBSTRINGS.items()}
    assert all(r.labels == by_image[r.image_id] for r in openi_ds.records)


def test_openi_image_ids_and_views(openi_ds):
    rx = re.compile(r"^CXR(\d+)_(?:\d+_)?IM-\d{4}(?:-\d+)+$")
    assert all(rx.match(r.image_id) and r.image_id.startswith(r.study_id + "_") for r in openi_ds.records)
    plain = re.compile(r"^CXR\d+_(?:\d+_)?IM-\d{4}-\d{4}$")
    extra = [r.image_id for r in openi_ds.records if not plain.match(r.image_id)]
    assert len(extra) == 562  # the figure: e.g. CXR1021_IM-0017-1001-0001, CXR1063_IM-0044-84654001
    # Real captions describe the study ("PA and lateral"): views stay unknown unless one view is named.
    assert Counter(r.view for r in openi_ds.records)[None] > 7000


def test_openi_splits_by_study_seeded(openi_tgz, openi_ds):
    assert openi_ds.split_by == "study" and openi_ds.split_seed == 0
    splits = defaultdict(set)
    for r in openi_ds.records:
        splits[r.study_id].add(r.split)
    assert all(len(s) == 1 for s in splits.values())
    n = Counter(next(iter(s)) for s in splits.values())
    assert abs(n["train"] / len(splits) - 0.7) < 0.01 and abs(n["test"] / len(splits) - 0.2) < 0.01
    other = read_dataset(openi_tgz, seed=1)
    same = read_dataset(openi_tgz, seed=0)
    assert [r.split for r in same.records] == [r.split for r in openi_ds.records]
    assert [r.split for r in other.records] != [r.split for r in openi_ds.records]


def test_openi_mesh_scheme(openi_tgz, openi_truth):
    ds = read_dataset(openi_tgz, labels="mesh", top_k=5)
    assert len(ds.findings) == 6 and ds.findings[-1] == "normal"
    # Independent: first segment of each <major> term, counted once per report.
    counts, normal = Counter(), set()
    with tarfile.open(openi_tgz) as tf:
        for m in tf.getmembers():
            if m.name.endswith(".xml"):
                text = tf.extractfile(m).read().decode("utf-8")
                uid = re.search(r'<uId id="([^"]+)"', text).group(1)
                firsts = {html.unescape(t).split("/")[0].strip() for t in re.findall(r"<major>(.*?)</major>", text, re.S)}
                counts.update(firsts - {"normal", "No Indexing"})
                if "normal" in firsts:
                    normal.add(uid)
    top = [t for t, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:5]]
    assert ds.findings[:5] == top
    assert {r.study_id for r in ds.records if r.labels.get("normal") == 1} == {
        u for u in normal if openi_truth[u][0]}


def write_openi_folder(root: Path, reports: list[tuple[int, list[tuple[str, str]], list[str]]], pngs=True) -> None:
    """A tiny Open-i folder as `embedstore synth` lays it out: ecgen-radiology/<n>.xml, images/<id>.png."""
    from PIL import Image

    (root / "ecgen-radiology").mkdir(parents=True)
    (root / "images").mkdir()
    for n, images, automatic in reports:
        parents = "".join(f'<parentImage id="{i}"><caption>{c}</caption></parentImage>' for i, c in images)
        terms = "".join(f"<automatic>{t}</automatic>" for t in automatic)
        (root / "ecgen-radiology" / f"{n}.xml").write_text(
            f'<?xml version="1.0" encoding="utf-8"?><eCitation><uId id="CXR{n}"/>'
            f'<MedlineCitation><Article><Abstract><AbstractText Label="FINDINGS">Text {n}.</AbstractText>'
            f'<AbstractText Label="IMPRESSION">Impression {n}.</AbstractText></Abstract></Article></MedlineCitation>'
            f"<MeSH><major>normal</major>{terms}</MeSH>{parents}</eCitation>")
        if pngs:
            for i, _ in images:
                Image.new("L", (8, 8)).save(root / "images" / f"{i}.png")


def test_openi_folder_with_images_views_and_text(tmp_path):
    write_openi_folder(tmp_path, [
        (1, [("CXR1_IM-0001-1001", "Frontal PA view"), ("CXR1_IM-0001-2001", "Lateral view")], ["Cardiomegaly"]),
        (2, [("CXR2_IM-0002-1001", "Frontal AP view")], ["calcified granuloma"]),
        (3, [], ["opacity"]),
    ])
    os.remove(tmp_path / "images" / "CXR2_IM-0002-1001.png")
    ds = read_dataset(str(tmp_path))
    by_id = {r.image_id: r for r in ds.records}
    assert (by_id["CXR1_IM-0001-1001"].view, by_id["CXR1_IM-0001-1001"].projection) == ("frontal", "PA")
    assert (by_id["CXR1_IM-0001-2001"].view, by_id["CXR1_IM-0001-2001"].projection) == ("lateral", None)
    assert by_id["CXR2_IM-0002-1001"].projection == "AP"
    assert by_id["CXR1_IM-0001-1001"].path == str(tmp_path / "images" / "CXR1_IM-0001-1001.png")
    assert by_id["CXR2_IM-0002-1001"].path is None
    assert by_id["CXR1_IM-0001-2001"].labels["Cardiomegaly"] == 1
    assert by_id["CXR2_IM-0002-1001"].labels["Granuloma"] == 1  # substring rule, as torchxrayvision
    assert by_id["CXR1_IM-0001-1001"].findings == "Text 1." and by_id["CXR1_IM-0001-1001"].impression == "Impression 1."
    assert ds.n_reports == 3 and ds.reports_without_images == ["CXR3"]
    assert any("1 of 3 images have no file" in n for n in ds.notes)
    with pytest.raises(InputError, match="CXR2_IM-0002-1001"):
        read_dataset(str(tmp_path), require_images=True)


def test_openi_labelled_csv_replaces_labels(tmp_path):
    write_openi_folder(tmp_path / "d", [(1, [("CXR1_IM-0001-1001", "x"), ("CXR1_IM-0001-2001", "x")], []),
                                       (2, [("CXR2_IM-0002-1001", "x")], [])])
    lab = tmp_path / "chexpert.csv"
    lab.write_text("study_id,Cardiomegaly,Edema\nCXR1,1.0,-1.0\n")
    ds = read_dataset(str(tmp_path / "d"), labels=str(lab), uncertain="ignore")
    assert ds.scheme == "chexpert" and ds.findings == ["Cardiomegaly", "Edema"]
    by_id = {r.image_id: r.labels for r in ds.records}
    assert by_id["CXR1_IM-0001-2001"] == {"Cardiomegaly": 1, "Edema": -1}
    assert by_id["CXR2_IM-0002-1001"] == {}  # no row: missing
    ds = read_dataset(str(tmp_path / "d"), labels=str(lab), uncertain="positive")
    assert ds.records[0].labels == {"Cardiomegaly": 1, "Edema": 1}


def test_phantom_folder_reads_like_openi(tmp_path):
    from embedstore.synth import synth

    out = tmp_path / "ph"
    synth(str(out), studies=6, seed=3, size=64, workers=1)
    ds = read_dataset(str(out))
    truth = list(csv.DictReader(open(out / "labels.csv")))
    assert sorted(r.image_id for r in ds.records) == sorted(t["image_id"] for t in truth)
    by_id = {r.image_id: r for r in ds.records}
    for t in truth:
        r = by_id[t["image_id"]]
        assert r.path and os.path.isfile(r.path) and r.source == "synth"
        assert r.view == t["view"] and r.study_id == t["study_id"]
        assert {f: v for f, v in r.labels.items()} == {f: int(t[f]) for f in ds.findings}


# ------------------------------------------------------------------ NIH ChestX-ray14

@pytest.fixture(scope="session")
def nih_entry():
    return txv_file("Data_Entry_2017_v2020.csv.gz")


def test_nih_data_entry(nih_entry):
    ds = read_dataset(nih_entry)
    with gzip.open(nih_entry, "rt") as fh:
        rows = list(csv.DictReader(fh))
    assert len(ds.records) == len(rows)
    truth = Counter(t for row in rows for t in row["Finding Labels"].split("|"))
    summary = {row["finding"]: row["images"] for row in inspect_dataset(ds)["per_finding"]}
    assert summary == {f: truth[f] for f in ds.findings}
    assert "No Finding" not in ds.findings and len(ds.findings) == 14
    assert sum(1 for r in ds.records if not any(r.labels.values())) == truth["No Finding"]
    assert ds.split_by == "patient"
    split_of = defaultdict(set)
    for r in ds.records:
        split_of[r.patient_id].add(r.split)
    assert len(split_of) == len({row["Patient ID"] for row in rows})
    assert all(len(s) == 1 for s in split_of.values())
    assert Counter(r.projection for r in ds.records) == Counter(row["View Position"] for row in rows)


def test_nih_subset_plain_gz_zip_and_images(tmp_path, nih_entry):
    with gzip.open(nih_entry, "rt") as fh:
        lines = fh.read().splitlines()[:201]
    text = "\n".join(lines) + "\n"
    (tmp_path / "plain.csv").write_text(text)
    with gzip.open(tmp_path / "g.csv.gz", "wt") as fh:
        fh.write(text)
    with zipfile.ZipFile(tmp_path / "z.zip", "w") as zf:
        zf.writestr("Data_Entry_2017.csv", text)
    imgs = tmp_path / "images" / "images_001" / "images"  # NIH's own nesting
    imgs.mkdir(parents=True)
    first = lines[1].split(",")[0]
    (imgs / first).write_bytes(b"")
    reads = [read_dataset(str(tmp_path / n)) for n in ("plain.csv", "g.csv.gz", "z.zip")]
    assert all(len(d.records) == 200 for d in reads)
    assert [r.labels for r in reads[0].records] == [r.labels for r in reads[2].records]
    assert reads[0].records[0].path == str(imgs / first)  # images/ beside the table, walked
    assert reads[0].records[1].path is None


# ------------------------------------------------------------------ CheXpert / MIMIC

@pytest.fixture(scope="session")
def chexpert_ds():
    return read_dataset(txv_file("chexpert_train.csv.gz"))


def test_chexpert_labels_uncertain_and_missing(chexpert_ds):
    with gzip.open(txv_file("chexpert_train.csv.gz"), "rt") as fh:
        rows = list(csv.DictReader(fh))
    assert len(chexpert_ds.records) == len(rows)
    per = {row["finding"]: row for row in inspect_dataset(chexpert_ds)["per_finding"]}
    for f in ("Edema", "Pleural Effusion", "No Finding"):
        cells = Counter(row[f] for row in rows)
        assert per[f]["images"] == cells["1.0"]
        assert per[f]["negative"] == cells["0.0"]
        assert per[f]["uncertain"] == cells["-1.0"]
        assert per[f]["missing"] == cells[""]
    pats = defaultdict(set)
    for r in chexpert_ds.records:
        pats[r.patient_id].add(r.split)
    assert chexpert_ds.split_by == "patient" and all(len(s) == 1 for s in pats.values())
    assert Counter(r.view for r in chexpert_ds.records)["lateral"] == sum(row["Frontal/Lateral"] == "Lateral" for row in rows)


def test_chexpert_uncertain_policy_and_paths(tmp_path):
    src = txv_file("chexpert_train.csv.gz")
    with gzip.open(src, "rt") as fh:
        lines = fh.read().splitlines()[:301]
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    rows = list(csv.DictReader(io.StringIO("\n".join(lines))))
    first = tmp_path / rows[0]["Path"]
    first.parent.mkdir(parents=True)
    first.write_bytes(b"")
    neg = read_dataset(str(tmp_path / "train.csv"), uncertain="negative")
    pos = read_dataset(str(tmp_path / "train.csv"), uncertain="positive")
    cells = Counter(row["Edema"] for row in rows)
    assert sum(r.labels.get("Edema") == 0 for r in neg.records) == cells["0.0"] + cells["-1.0"]
    assert sum(r.labels.get("Edema") == 1 for r in pos.records) == cells["1.0"] + cells["-1.0"]
    assert not any(v == -1 for r in neg.records for v in r.labels.values())
    assert neg.records[0].path == str(first) and neg.records[1].path is None


def test_mimic_style_csv(tmp_path):
    from embedstore.data.labels import CHEXPERT_FINDINGS

    head = ",".join(["subject_id", "study_id", *CHEXPERT_FINDINGS])
    blank = "," * (len(CHEXPERT_FINDINGS) - 1)  # 14 cells: the first one filled in below
    (tmp_path / "mimic-cxr-2.0.0-chexpert.csv").write_text(
        f"{head}\n10,500,1.0{blank}\n10,501,{blank}-1.0\n11,502,0.0{blank}\n")
    ds = read_dataset(str(tmp_path / "mimic-cxr-2.0.0-chexpert.csv"))
    assert ds.name == "chexpert" and [r.image_id for r in ds.records] == ["s500", "s501", "s502"]
    assert ds.records[1].labels == {"Support Devices": -1}
    assert ds.records[0].split == ds.records[1].split  # one patient, one split


# ------------------------------------------------------------------ Kaggle CSV pair, manifest

def test_kaggle_pair_splits_mesh_on_semicolons_only(tmp_path):
    (tmp_path / "indiana_reports.csv").write_text(
        "uid,MeSH,Problems,image,indication,comparison,findings,impression\n"
        '1,normal,normal,Xray,x,,"Clear lungs.",Normal.\n'
        '2,"Catheters, Indwelling/right;Cardiomegaly/mild","Catheters, Indwelling;Cardiomegaly",Xray,,,Big heart.,Cardiomegaly.\n'
        '3,Cardiomegaly,Cardiomegaly,Xray,,,,\n'
        "4,No Indexing,No Indexing,Xray,,,,\n")
    (tmp_path / "indiana_projections.csv").write_text(
        "uid,filename,projection\n1,1_IM-0001-4001.dcm.png,Frontal\n1,1_IM-0001-3001.dcm.png,Lateral\n"
        "2,2_IM-0652-1001.dcm.png,Frontal\n4,4_IM-2050-1001.dcm.png,Frontal\n")
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "1_IM-0001-4001.dcm.png").write_bytes(b"")
    ds = read_dataset(str(tmp_path / "indiana_projections.csv"))
    assert ds.name == "kaggle" and ds.scheme == "mesh"
    assert ds.findings == ["Cardiomegaly", "Catheters, Indwelling", "normal"]
    by_id = {r.image_id: r for r in ds.records}
    assert by_id["2_IM-0652-1001"].labels == {"Cardiomegaly": 1, "Catheters, Indwelling": 1, "normal": 0}
    assert by_id["1_IM-0001-3001"].view == "lateral" and by_id["1_IM-0001-3001"].labels["normal"] == 1
    assert by_id["4_IM-2050-1001"].labels == {}  # No Indexing: missing
    assert by_id["1_IM-0001-4001"].path == str(tmp_path / "images" / "1_IM-0001-4001.dcm.png")
    assert ds.n_reports == 4 and ds.reports_without_images == ["CXR3"]
    assert read_dataset(str(tmp_path)).n_reports == 4  # the folder works too


def test_manifest_label_columns_and_list(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "m.csv").write_text("path,patient_id,view,Edema,Mass\na.png,p1,PA,1,-1\nb.png,p1,lateral,0,\nc.png,p2,,,1.0\n")
    ds = read_dataset(str(tmp_path / "m.csv"), uncertain="negative")
    assert ds.name == "manifest" and ds.findings == ["Edema", "Mass"]
    assert [r.labels for r in ds.records] == [{"Edema": 1, "Mass": 0}, {"Edema": 0}, {"Mass": 1}]
    assert (ds.records[0].view, ds.records[0].projection) == ("frontal", "PA")
    assert ds.records[0].path == str(tmp_path / "a.png") and ds.records[1].path is None
    assert ds.records[0].split == ds.records[1].split and ds.split_by == "patient"
    import polars as pl

    pl.DataFrame({"path": ["a.png", "b.png"], "labels": ["Edema;Mass", ""], "split": ["train", "test"]}).write_parquet(tmp_path / "m.parquet")
    ds = read_dataset(str(tmp_path / "m.parquet"))
    assert ds.findings == ["Edema", "Mass"] and [r.labels for r in ds.records] == [{"Edema": 1, "Mass": 1}, {"Edema": 0, "Mass": 0}]
    assert ds.split_by == "given" and [r.split for r in ds.records] == ["train", "test"]


# ------------------------------------------------------------------ bad input: one line naming the problem

def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_malformed_xml_in_folder_and_tarball(tmp_path):
    write_openi_folder(tmp_path / "d", [(1, [("CXR1_IM-0001-1001", "x")], [])], pngs=False)
    bad = tmp_path / "d" / "ecgen-radiology" / "2.xml"
    bad.write_text('<eCitation><uId id="CXR2"/><MeSH></eCitation>')
    with pytest.raises(InputError) as err:
        read_dataset(str(tmp_path / "d"), strict=True)
    assert "2.xml" in _one_line(err) and "malformed XML" in str(err.value)
    ds = read_dataset(str(tmp_path / "d"))  # not strict: the bad report is listed, the rest read
    assert [r.image_id for r in ds.records] == ["CXR1_IM-0001-1001"]
    assert len(ds.bad_reports) == 1 and ds.bad_reports[0]["file"].endswith("2.xml")
    assert "malformed XML" in ds.bad_reports[0]["reason"]
    with tarfile.open(tmp_path / "r.tgz", "w:gz") as tf:
        tf.add(tmp_path / "d" / "ecgen-radiology", arcname="ecgen-radiology")
    with pytest.raises(InputError) as err:
        read_dataset(str(tmp_path / "r.tgz"), strict=True)
    assert "r.tgz:ecgen-radiology/2.xml" in _one_line(err)
    assert read_dataset(str(tmp_path / "r.tgz")).bad_reports[0]["file"].endswith("r.tgz:ecgen-radiology/2.xml")


def test_bad_image_id_and_unknown_scheme(tmp_path):
    write_openi_folder(tmp_path / "d", [(1, [("IMG_0001", "x")], [])], pngs=False)
    with pytest.raises(InputError) as err:
        read_dataset(str(tmp_path / "d"), strict=True)
    assert "IMG_0001" in _one_line(err)
    bad = read_dataset(str(tmp_path / "d")).bad_reports  # not strict: listed, not raised
    assert len(bad) == 1 and "IMG_0001" in bad[0]["reason"]
    write_openi_folder(tmp_path / "e", [(1, [("CXR1_IM-0001-1001", "x")], [])], pngs=False)
    with pytest.raises(InputError, match="automatic, mesh"):
        read_dataset(str(tmp_path / "e"), labels="chexpert14")


def test_csv_missing_required_column(tmp_path):
    (tmp_path / "Data_Entry.csv").write_text("Image Index,Finding Labels\n1.png,Mass\n")
    with pytest.raises(InputError) as err:
        read_dataset(str(tmp_path / "Data_Entry.csv"), dataset="nih")
    assert "Data_Entry.csv" in _one_line(err) and "Patient ID" in str(err.value)


def test_label_values_outside_the_scheme(tmp_path):
    (tmp_path / "nih.csv").write_text("Image Index,Finding Labels,Patient ID\n1.png,Mass|Tumour,1\n")
    with pytest.raises(InputError) as err:
        read_dataset(str(tmp_path / "nih.csv"))
    assert "line 2" in _one_line(err) and "'Tumour'" in str(err.value)
    (tmp_path / "m.csv").write_text("path,Edema\na.png,1\nb.png,yes\n")
    with pytest.raises(InputError) as err:
        read_dataset(str(tmp_path / "m.csv"))
    assert "line 3" in _one_line(err) and "'Edema'" in str(err.value) and "'yes'" in str(err.value)


def test_missing_image_when_required_and_blank_manifest_path(tmp_path):
    (tmp_path / "m.csv").write_text("path,Edema\na.png,1\n")
    with pytest.raises(InputError) as err:
        read_dataset(str(tmp_path / "m.csv"), require_images=True)
    assert "a.png" in _one_line(err)
    (tmp_path / "n.csv").write_text("path,Edema\n,1\n")
    with pytest.raises(InputError) as err:
        read_dataset(str(tmp_path / "n.csv"))
    assert "n.csv line 2" in _one_line(err)
    with pytest.raises(InputError, match="--images"):
        read_dataset(str(tmp_path / "m.csv"), images=str(tmp_path / "nowhere"))


def test_unknown_table_and_options(tmp_path):
    (tmp_path / "t.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="--dataset"):
        read_dataset(str(tmp_path / "t.csv"))
    with pytest.raises(InputError, match="no such file"):
        read_dataset(str(tmp_path / "none.csv"))
    with pytest.raises(InputError, match="--uncertain"):
        read_dataset(str(tmp_path / "t.csv"), uncertain="maybe")
    with pytest.raises(InputError, match="fractions"):
        read_dataset(str(tmp_path / "t.csv"), fractions=(0.5, 0.5, 0.5))


def test_openi_tarball_with_image_folder(tmp_path):
    write_openi_folder(tmp_path / "d", [(1, [("CXR1_IM-0001-1001", "Frontal PA view")], ["edema"])])
    with tarfile.open(tmp_path / "NLMCXR_reports.tgz", "w:gz") as tf:
        tf.add(tmp_path / "d" / "ecgen-radiology", arcname="ecgen-radiology")
    ds = read_dataset(str(tmp_path / "NLMCXR_reports.tgz"), images=str(tmp_path / "d" / "images"))
    assert ds.records[0].path == str(tmp_path / "d" / "images" / "CXR1_IM-0001-1001.png")
    assert ds.records[0].labels["Edema"] == 1 and ds.records[0].view == "frontal"
    assert read_dataset(str(tmp_path / "NLMCXR_reports.tgz")).records[0].path is None
