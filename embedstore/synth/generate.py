"""`synth`: write a phantom data set in the Open-i layout, plus boxes.csv and labels.csv.

OUT/ecgen-radiology/<n>.xml   one report per study (uId CXR<n>), Open-i's XML layout
OUT/images/<image id>.png     8-bit grayscale, <size> x <size>
OUT/boxes.csv                 canonical boxes: image_id, finding, x_min, y_min, x_max, y_max,
                              reader, width, height (pixel edges: the box covers columns
                              x_min .. x_max - 1 and rows y_min .. y_max - 1)
OUT/labels.csv                image_id, study_id, view, one 0/1 column per finding (FINDINGS)
OUT/dicom/<image id>.dcm      with --dicom
OUT/truth/patients.csv        with --repeat-patients or --label-noise: study_id, patient_id, visit
OUT/truth/labels.csv          the same: the true labels (labels.csv then holds the labels as written)
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import tarfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import numpy as np

from embedstore.errors import InputError
from embedstore.progress import Progress
from embedstore.synth import anatomy as an
from embedstore.synth.devices import device_layer, sample_devices
from embedstore.synth.findings import KIND_ORDER, KINDS, kinds_for
from embedstore.synth.labels import (FINDINGS, STREAM_ANATOMY, STREAM_DEVICE, STREAM_FINDING,
                                     STREAM_NOISE, STREAM_TEXT, StudyLabels, labels_from_automatic,
                                     sample_labels, study_rng)
from embedstore.synth.reports import describe, open_i_xml
from embedstore.synth.truth import (PATIENT_COLUMNS, TRUTH_DIR, check_fraction, follow_up_labels, noisy_terms,
                                    patient_rows, plan_patients, uses_first_study)

IMAGE_ID = re.compile(r"^CXR(\d+)_(?:\d+_)?IM-\d{4}(?:-\d+)+$")
BOX_COLUMNS = ["image_id", "finding", "x_min", "y_min", "x_max", "y_max", "reader", "width", "height"]
LABEL_COLUMNS = ["image_id", "study_id", "view", *FINDINGS]
DEFAULT_SIZE = 256
MAX_BOXES_PER_FINDING = 4  # more separate pieces (reticular patterns) become one box
# Named domain shifts: the same studies as another site's equipment would show them. Photometric
# only, so labels, reports and boxes are unchanged. "site-b": a harder tone curve and strong edge
# enhancement (unsharp masking, as some CR/DR vendors apply), which also amplifies the noise.
# phantom-clip never saw it: on such phantoms it is out of distribution, as BiomedCLIP is on IU-Xray.
SHIFTS = ("none", "site-b")


@dataclass
class SynthSummary:
    out: str
    studies: int
    images: int
    normal_studies: int
    boxes: int
    seconds: float
    workers: int
    shift: str = "none"
    images_per_finding: dict[str, int] = field(default_factory=dict)
    repeat_patients: float = 0.0
    patients: int | None = None  # known only with --repeat-patients / --label-noise (truth/patients.csv)
    label_noise: float = 0.0
    flipped_labels: int = 0  # study labels whose written value differs from the drawn one

    def to_polars(self):
        """One row (images_per_finding as JSON text)."""
        from dataclasses import asdict

        from embedstore.results import Summary

        return Summary(asdict(self)).to_polars()


@dataclass
class Study:
    """Everything needed to render and describe one study; built from (seed, index) alone."""

    n: int  # report number: file <n>.xml, uId CXR<n>
    seed: int
    size: int
    labels: StudyLabels
    geometry: an.Geometry
    kinds: dict[str, dict]  # kind name -> its parameters
    devices: dict
    images: list[tuple[str, str, str]]  # (image id, view, projection)
    major: list[str]
    automatic: list[str]
    sections: dict[str, str | None]
    anchor: int | None = None  # a follow-up: the number of the patient's first study

    @property
    def label_row(self) -> dict[str, int]:
        return {f: int(f in self.labels.findings) for f in FINDINGS}

    @property
    def written_row(self) -> dict[str, int]:
        """The labels the report's automatic terms give (they differ from `label_row` under label noise)."""
        return labels_from_automatic(self.automatic)


def make_study(seed: int, n: int, size: int = DEFAULT_SIZE, labels: StudyLabels | None = None,
               real: dict | None = None, anchor: int | None = None, label_noise: float = 0.0) -> Study:
    """Study number `n` (1-based). `real` carries a real Open-i report (text, terms, image ids).
    `anchor`: the patient's first study, whose anatomy and chronic findings a follow-up keeps;
    `label_noise`: each label flipped with this probability in the written automatic terms."""
    labels = labels or (sample_labels(seed, n) if anchor is None else follow_up_labels(seed, n, anchor))
    rng = study_rng(seed, n, STREAM_ANATOMY)
    g = an.sample_geometry(rng)
    frontal_proj = "AP" if rng.random() < 0.1 else "PA"
    if anchor is not None:
        g = an.sample_geometry(study_rng(seed, anchor, STREAM_ANATOMY))
    kinds = {k: KINDS[k].sample(study_rng(seed, anchor if anchor is not None and uses_first_study(KINDS[k].labels)
                                          else n, STREAM_FINDING, KIND_ORDER.index(k)), g)
             for k in kinds_for(labels.findings)}
    devices = sample_devices(study_rng(seed, n, STREAM_DEVICE), g, labels.devices, labels.sternotomy)
    if real is None:
        images = [(f"CXR{n}_IM-{n % 10000:04d}-{1001 + 1000 * j}", view, frontal_proj if view == "frontal" else "LL")
                  for j, view in enumerate(labels.views)]
        major, auto, ftext, itext = describe(study_rng(seed, n, STREAM_TEXT), kinds, devices,
                                             labels.incidental, labels.normal)
        sections = {"COMPARISON": "None.", "INDICATION": "Phantom study.", "FINDINGS": ftext, "IMPRESSION": itext}
    else:
        images = [(i, v, frontal_proj if v == "frontal" else "LL") for i, v in real["images"]]
        major, auto, sections = real["major"], real["automatic"], real["sections"]
    auto = noisy_terms(seed, n, auto, label_noise)
    return Study(n, seed, size, labels, g, kinds, devices, images, major, auto, sections, anchor)


def caption(view: str, projection: str) -> str:
    return f"Frontal {projection} view" if view == "frontal" else "Lateral view"


class ImageRenderer:
    """Renders one image of a study, with or without some findings, from the same pose and noise."""

    def __init__(self, study: Study, j: int):
        self.study, self.j = study, j
        self.image_id, self.view, self.projection = study.images[j]
        rng = study_rng(study.seed, study.n, STREAM_ANATOMY, 100 + j)
        exposure = an.sample_exposure(rng, study.geometry.soft_t)
        if study.anchor is not None:  # a follow-up: the first study's lung markings and protocol, re-exposed
            first = study_rng(study.seed, study.anchor, STREAM_ANATOMY, 100 + j)
            exposure = an.repeat_exposure(an.sample_exposure(first, study.geometry.soft_t), rng)
            rng = first
        self.frame = an.Frame(study.size, exposure)
        self.texture = an.texture(rng, study.size)
        self.visible = [k for k in study.kinds if self.view == "frontal" or KINDS[k].lateral]
        self._cache: dict = {}

    def clean(self, omit: tuple[str, ...] = ()) -> np.ndarray:
        """The image before noise, in [0, 1], with the kinds in `omit` left out."""
        base, layers = self._parts(tuple(k for k in omit if KINDS[k].modify))
        A = base
        for k, layer in layers:  # the same sum in the same order: bit-identical pixels elsewhere
            if k not in omit:
                A = A + layer
        return an.display(A.astype(np.float32), self.frame)

    def _parts(self, skip: tuple[str, ...]):
        """Anatomy (with the geometry changes not in `skip`) and each additive layer, cached."""
        if skip not in self._cache:
            g = an.modified(self.study.geometry)
            for k in self.visible:
                if KINDS[k].modify and k not in skip:
                    KINDS[k].modify(g, self.study.kinds[k])
            L = an.Layers(self.frame, g, self.view, self.texture)
            layers = [(k, KINDS[k].layer(L, self.study.kinds[k])) for k in self.visible if KINDS[k].layer]
            if self.study.devices:
                layers.append(("devices", device_layer(L, self.study.devices)))
            self._cache[skip] = (L.A, layers)
        return self._cache[skip]

    def noisy(self, clean: np.ndarray) -> np.ndarray:
        rng = study_rng(self.study.seed, self.study.n, STREAM_NOISE, self.j)
        return an.add_noise(clean, rng, self.frame.exp)

    def boxes(self, clean: np.ndarray) -> list[dict]:
        """One or more boxes per visible finding: where leaving it out changes any pixel."""
        rows = []
        for k in self.visible:
            diff = clean != self.clean(omit=(k,))
            for x0, y0, x1, y1 in mask_boxes(diff):
                for label in KINDS[k].labels:
                    rows.append(dict(image_id=self.image_id, finding=label, x_min=x0, y_min=y0, x_max=x1,
                                     y_max=y1, reader="synth", width=self.study.size, height=self.study.size))
        return rows


def apply_shift(img: np.ndarray, shift: str) -> np.ndarray:
    """The final [0, 1] image as the named site's processing would show it (see SHIFTS)."""
    if shift == "none":
        return img
    from scipy.ndimage import gaussian_filter

    toned = np.clip((img - 0.1) / 0.8, 0, 1) ** 1.8
    sharpened = toned + 1.5 * (toned - gaussian_filter(toned, 2.0 * img.shape[0] / 128))
    return np.clip(0.1 + 0.8 * sharpened, 0, 1).astype(np.float32)


def mask_boxes(mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Boxes (pixel edges) around the separate pieces of a mask; many pieces give one box."""
    from scipy.ndimage import binary_dilation, find_objects, label

    if not mask.any():
        return []
    lab, n = label(binary_dilation(mask, iterations=3))
    objs = [o for o in find_objects(lab * mask) if o is not None]
    if len(objs) > MAX_BOXES_PER_FINDING:
        ys, xs = np.nonzero(mask)
        return [(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)]
    return [(o[1].start, o[0].start, o[1].stop, o[0].stop) for o in objs]


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.round(img * 255.0).astype(np.uint8)


def png_bytes(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr, mode="L").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _render_study(study: Study, root: str, dicom: bool, shift: str = "none",
                  written: bool = False) -> tuple[list[dict], list[dict]]:
    """Write a study's XML, PNGs (and DICOMs); return its box and label rows (`written`: the
    labels as the report's terms give them, else the drawn ones)."""
    boxes, labels = [], []
    row = study.written_row if written else study.label_row
    for j, (image_id, view, proj) in enumerate(study.images):
        r = ImageRenderer(study, j)
        clean = r.clean()
        noisy = apply_shift(r.noisy(clean), shift)
        with open(os.path.join(root, "images", image_id + ".png"), "wb") as fh:
            fh.write(png_bytes(to_uint8(noisy)))
        if dicom:
            from embedstore.synth.dicom import write_dicom

            rng = study_rng(study.seed, study.n, STREAM_NOISE, 1000 + j)
            write_dicom(os.path.join(root, "dicom", image_id + ".dcm"), noisy, image_id, f"CXR{study.n}",
                        view, proj, int(rng.choice([12, 14, 15, 16])), bool(rng.random() < 0.5), study.seed)
        boxes += r.boxes(clean)
        labels.append(dict(image_id=image_id, study_id=f"CXR{study.n}", view=view, **row))
    xml = open_i_xml(study.n, study.major, study.automatic, study.sections,
                     [(i, caption(v, p)) for i, v, p in study.images])
    with open(os.path.join(root, "ecgen-radiology", f"{study.n}.xml"), "w", encoding="utf-8") as fh:
        fh.write(xml)
    return boxes, labels


def _job(args) -> tuple[list[dict], list[dict], bool, list[dict]]:
    seed, n, size, root, dicom, real, shift, anchor, noise = args
    labels = _real_labels(real) if real else None
    study = make_study(seed, n, size, labels, real, anchor, noise)
    b, lab = _render_study(study, root, dicom, shift, written=noise > 0)
    truth = [dict(r, **study.label_row) for r in lab] if noise > 0 else lab
    return b, lab, study.labels.normal, truth


# ------------------------------------------------------------------ real Open-i reports

_DEVICE_WORDS = {"cvc": ("catheter", "picc", "central line", "port"), "ett": ("endotracheal", "et tube"),
                 "pacemaker": ("pacemaker", "pacer", "defibrillator")}


def read_open_i(path: str) -> list[dict]:
    """The reports of a real NLMCXR_reports.tgz, read in place, in report-number order."""
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file; give the Open-i NLMCXR_reports.tgz")
    try:
        tf = tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError) as err:
        raise InputError(f"{path}: not a readable tar archive ({err}); give NLMCXR_reports.tgz") from err
    views = _views_beside(path)
    reports = []
    with tf:
        for m in tf.getmembers():
            if not (m.isfile() and m.name.endswith(".xml")):
                continue
            try:
                root = ET.parse(tf.extractfile(m)).getroot()
                n = int(re.fullmatch(r"CXR(\d+)", root.find("uId").attrib["id"]).group(1))
            except (ET.ParseError, AttributeError, KeyError, TypeError) as err:
                raise InputError(f"{path}: {m.name} is not an Open-i report ({err})") from err
            ids = [im.attrib["id"] for im in root.findall(".//parentImage")]
            sections = {a.attrib.get("Label", ""): a.text for a in root.findall(".//AbstractText")}
            reports.append(dict(
                n=n, major=[e.text or "" for e in root.findall(".//MeSH/major")],
                automatic=[e.text or "" for e in root.findall(".//MeSH/automatic")], sections=sections,
                images=[(i, views.get(i) or ("frontal" if j == 0 else "lateral")) for j, i in enumerate(ids)]))
    if not reports:
        raise InputError(f"{path}: no ecgen-radiology/*.xml reports inside; give NLMCXR_reports.tgz")
    return sorted(reports, key=lambda r: r["n"])


def _views_beside(path: str) -> dict[str, str]:
    """Image views from nlmcxr_dicom_metadata.csv.gz next to the archive, when it is there."""
    from embedstore.data.views import read_views

    meta = os.path.join(os.path.dirname(os.path.abspath(path)), "nlmcxr_dicom_metadata.csv.gz")
    if not os.path.isfile(meta):
        return {}
    return {image_id: view for image_id, (view, _) in read_views(meta).items()}


def _real_labels(real: dict) -> StudyLabels:
    lab = labels_from_automatic(real["automatic"])
    findings = tuple(f for f in FINDINGS if lab[f])
    text = " ".join(t or "" for t in real["sections"].values()).lower() + " " + " ".join(real["automatic"]).lower()
    devices = tuple(d for d, words in _DEVICE_WORDS.items() if any(w in text for w in words))
    normal = any(m.lower() == "normal" for m in real["major"]) and not findings
    return StudyLabels(findings, normal, () if normal else devices, "sternotomy" in text and not normal,
                       None, tuple(v for _, v in real["images"]))


# ------------------------------------------------------------------ the command


def synth(out: str, studies: int = 100, seed: int = 0, size: int = DEFAULT_SIZE, dicom: bool = False,
          labels_from: str | None = None, workers: int = 2, shift: str = "none", repeat_patients: float = 0.0,
          label_noise: float = 0.0, progress: bool = False) -> SynthSummary:
    """Write `studies` phantom studies (or one per real report with `labels_from`) to `out`.

    `shift` renders them as another site would (SHIFTS); labels, reports and boxes are the same.
    `repeat_patients`: that fraction of patients gets a follow-up study (same anatomy and chronic
    findings, a new acquisition and study id); `label_noise`: each label flipped with this
    probability in the written reports. Either writes the truth to OUT/truth/ (`synth.truth`).
    """
    repeat_patients = check_fraction(repeat_patients, "--repeat-patients")
    label_noise = check_fraction(label_noise, "--label-noise")
    if repeat_patients and labels_from:
        raise InputError("--repeat-patients draws phantom patients; it cannot be combined with --labels-from")
    if shift not in SHIFTS:
        raise InputError(f"--shift {shift!r}: use one of {', '.join(SHIFTS)}")
    if size < 32 or size > 4096:
        raise InputError(f"--size {size}: give a side between 32 and 4096 pixels")
    if labels_from is None and studies < 1:
        raise InputError(f"--studies {studies}: give at least 1")
    out = os.path.abspath(out)
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise InputError(f"{out}: already exists and is not an empty folder; pick a new OUT or delete it")
    reals = read_open_i(labels_from) if labels_from else None
    t0 = time.perf_counter()
    tmp = f"{out}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    for sub in ("ecgen-radiology", "images") + (("dicom",) if dicom else ()):
        os.makedirs(os.path.join(tmp, sub))
    anchors = plan_patients(seed, studies, repeat_patients) if not reals else {}
    jobs = ([(seed, r["n"], size, tmp, dicom, r, shift, None, label_noise) for r in reals] if reals
            else [(seed, n, size, tmp, dicom, None, shift, anchors.get(n), label_noise) for n in range(1, studies + 1)])
    with_truth = bool(repeat_patients or label_noise)
    try:
        with Progress("synthesising", len(jobs), unit="studies", enabled=progress) as bar:
            results = _run(jobs, workers, bar)
        box_rows = [b for r in results for b in r[0]]
        label_rows = [lab for r in results for lab in r[1]]
        _write_csv(os.path.join(tmp, "boxes.csv"), BOX_COLUMNS, box_rows)
        _write_csv(os.path.join(tmp, "labels.csv"), LABEL_COLUMNS, label_rows)
        if with_truth:
            os.makedirs(os.path.join(tmp, TRUTH_DIR))
            patients = patient_rows([j[1] for j in jobs], anchors)
            _write_csv(os.path.join(tmp, TRUTH_DIR, "patients.csv"), PATIENT_COLUMNS, patients)
            _write_csv(os.path.join(tmp, TRUTH_DIR, "labels.csv"), LABEL_COLUMNS, [t for r in results for t in r[3]])
        if os.path.isdir(out):
            os.rmdir(out)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    counts = {f: sum(row[f] for row in label_rows) for f in FINDINGS}
    flipped = sum(r[1][0][f] != r[3][0][f] for r in results if r[1] for f in FINDINGS)
    return SynthSummary(out, len(jobs), len(label_rows), sum(r[2] for r in results), len(box_rows),
                        round(time.perf_counter() - t0, 2), workers, shift, counts, repeat_patients,
                        len({p["patient_id"] for p in patients}) if with_truth else None, label_noise, flipped)


def _run(jobs: list, workers: int, bar: Progress) -> list:
    if workers <= 1 or len(jobs) < 8:
        return [_advanced(bar, _job(j)) for j in jobs]
    import multiprocessing as mp

    # Threads inside numpy/scipy would fight the pool for the same 2 cores.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with mp.get_context("fork").Pool(workers) as pool:
        return [_advanced(bar, r) for r in pool.imap(_job, jobs, chunksize=4)]


def _advanced(bar: Progress, result):
    bar.advance()
    return result


def _write_csv(path: str, columns: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
