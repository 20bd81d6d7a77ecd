"""IU-Xray as Open-i distributes it: `NLMCXR_reports.tgz` (read in place) or an `ecgen-radiology/`
folder of XML reports, plus a folder of `<parentImage id>.png`.

The phantom generator (`embedstore synth`) writes this same layout, so this reader reads phantoms.
"""

from __future__ import annotations

import os
import re
import tarfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from embedstore.data.labels import automatic_labels, mesh_findings, mesh_labels, mesh_terms, AUTOMATIC_FINDINGS
from embedstore.data.locate import ImageIndex, check_images_dir
from embedstore.data.records import Dataset, ImageRecord
from embedstore.errors import InputError

IMAGE_ID = re.compile(r"^CXR(\d+)_(?:\d+_)?IM-\d{4}(?:-\d+)+$")
STUDY_ID = re.compile(r"^CXR(\d+)$")
SCHEMES = ("automatic", "mesh")

# View from the image caption. Real Open-i captions describe the whole study ("PA and lateral
# chest"), so they name a view for one image only when they name one view and nothing more.
_MULTI = re.compile(r"\b(and|two|2|2v|views|series)\b|/|&|\+")
_FRONTAL = re.compile(r"\b(pa|ap|frontal|posteroanterior|anteroposterior)\b")
_LATERAL = re.compile(r"\b(lateral|lat|ll)\b")


@dataclass
class Report:
    """One XML report: its terms, text and images (id, caption)."""

    file: str
    study_id: str
    major: list[str]
    automatic: list[str]
    findings: str | None
    impression: str | None
    images: list[tuple[str, str]] = field(default_factory=list)
    synth: bool = False

    @property
    def number(self) -> int:
        m = STUDY_ID.match(self.study_id)
        return int(m.group(1)) if m else 0


def infer_view(caption: str | None) -> tuple[str | None, str | None]:
    """(view, projection) named by a one-view caption: "Frontal PA view" -> ("frontal", "PA").

    A caption naming several views, or none, gives (None, None). Real Open-i captions describe
    the whole study ("Xray Chest PA and lateral"), so nearly all real images stay unknown.
    """
    c = (caption or "").lower()
    if not c or _MULTI.search(c):
        return None, None
    frontal, lateral = bool(_FRONTAL.search(c)), bool(_LATERAL.search(c))
    if frontal == lateral:
        return None, None
    if frontal:
        if re.search(r"\b(pa|posteroanterior)\b", c):
            return "frontal", "PA"
        if re.search(r"\b(ap|anteroposterior)\b", c):
            return "frontal", "AP"
        return "frontal", None
    return "lateral", ("LL" if re.search(r"\b(ll|left lateral)\b", c) else None)


def parse_report(data: bytes, where: str) -> Report:
    """One ecgen-radiology XML document; `where` names it in errors."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as err:
        raise InputError(f"{where}: malformed XML ({err}); fix or remove this report") from None
    uid = root.find("uId")
    if uid is None or not uid.attrib.get("id"):
        raise InputError(f"{where}: no <uId id=...> element; not an Open-i report")
    sections = {e.attrib.get("Label", "").upper(): (e.text or "").strip() or None
                for e in root.iter("AbstractText")}
    images = []
    for im in root.iter("parentImage"):
        image_id = im.attrib.get("id", "")
        if not IMAGE_ID.match(image_id):
            raise InputError(f"{where}: parentImage id {image_id!r} is not an Open-i image id (CXR<n>_IM-<nnnn>-<n>)")
        images.append((image_id, (im.findtext("caption") or "").strip()))
    return Report(
        file=where,
        study_id=uid.attrib["id"],
        major=[e.text or "" for e in root.iter("major")],
        automatic=[e.text or "" for e in root.iter("automatic")],
        findings=sections.get("FINDINGS"),
        impression=sections.get("IMPRESSION"),
        images=images,
        synth=(root.findtext("publisher") or "").strip() == "embedstore synth",
    )


def read_reports(source: str, strict: bool = False, bad: list | None = None) -> list[Report]:
    """Every report in a reports tarball, an XML folder (or its parent) or one XML file.

    A report that cannot be read (malformed XML, no uId, a bad image id) is appended to `bad` as
    {"file", "reason"} and skipped, unless `strict`: then the first one stops the read."""
    bad = [] if bad is None else bad

    def parse(data: bytes, where: str):
        try:
            return parse_report(data, where)
        except InputError as err:
            if strict:
                raise
            bad.append({"file": where, "reason": str(err)})
            return None

    if os.path.isdir(source):
        parsed = _from_folder(source, parse)
    elif tarfile.is_tarfile(source):
        parsed = _from_tar(source, parse)
    elif source.lower().endswith(".xml"):
        with open(source, "rb") as fh:
            parsed = [parse_report(fh.read(), source)]
    else:
        raise InputError(f"{source}: not an Open-i reports archive (.tgz), XML folder or XML file")
    reports = [r for r in parsed if r is not None]
    seen: dict[str, str] = {}
    for r in reports:
        if r.study_id in seen:
            raise InputError(f"{r.file}: report {r.study_id} also in {seen[r.study_id]}; remove one copy")
        seen[r.study_id] = r.file
    reports.sort(key=lambda r: (r.number, r.study_id))
    return reports


def _from_tar(path: str, parse) -> list[Report | None]:
    out = []
    try:
        with tarfile.open(path, "r:*") as tf:
            for m in tf:  # sequential: a gzip stream is slow to seek
                if m.isfile() and m.name.endswith(".xml") and not os.path.basename(m.name).startswith("._"):
                    out.append(parse(tf.extractfile(m).read(), f"{path}:{m.name}"))
    except (tarfile.TarError, EOFError, OSError) as err:
        raise InputError(f"{path}: cannot read the archive ({err}); download it again") from None
    if not out:
        raise InputError(f"{path}: no .xml reports inside; give NLMCXR_reports.tgz")
    return out


def _from_folder(folder: str, parse) -> list[Report | None]:
    xml_dir = os.path.join(folder, "ecgen-radiology")
    if not os.path.isdir(xml_dir):
        xml_dir = folder
    names = sorted(n for n in os.listdir(xml_dir) if n.endswith(".xml") and not n.startswith("._"))
    if not names:
        raise InputError(f"{folder}: no ecgen-radiology/*.xml reports; give the Open-i folder or NLMCXR_reports.tgz")
    out = []
    for n in names:
        path = os.path.join(xml_dir, n)
        with open(path, "rb") as fh:
            out.append(parse(fh.read(), path))
    return out


def image_folder(source: str, images: str | None) -> str | None:
    """`images` if given, else SOURCE/images/, else SOURCE itself for a folder; a tarball alone has none."""
    if images is not None:
        return check_images_dir(images)
    if os.path.isdir(source):
        sub = os.path.join(source, "images")
        return sub if os.path.isdir(sub) else source
    return None


def read_openi(source: str, scheme: str = "automatic", images: str | None = None, top_k: int = 14,
               strict: bool = False) -> Dataset:
    """Records for every image of every report; reports with no image are listed, not dropped;
    reports that cannot be read are listed in `bad_reports` (or, `strict`, stop the read)."""
    if scheme not in SCHEMES:
        raise InputError(f"--labels {scheme!r}: Open-i label schemes are {', '.join(SCHEMES)} or a labelled CSV file")
    bad: list[dict] = []
    reports = read_reports(source, strict, bad)
    if scheme == "automatic":
        findings = list(AUTOMATIC_FINDINGS)
        labels_of = lambda r: automatic_labels(r.automatic)  # noqa: E731
    else:
        terms = {r.study_id: mesh_terms(r.major) for r in reports}
        findings = mesh_findings(list(terms.values()), top_k)
        labels_of = lambda r: mesh_labels(terms[r.study_id], findings)  # noqa: E731
    folder = image_folder(source, images)
    index = ImageIndex(folder)
    records, owner = [], {}
    for r in reports:
        labels = labels_of(r)
        # Several images under one caption: it describes the study, not each image.
        shared = len(r.images) > 1 and len({c for _, c in r.images}) == 1
        for image_id, caption in r.images:
            if image_id in owner:
                raise InputError(f"{r.file}: image {image_id} also belongs to {owner[image_id]}; ids must be unique")
            owner[image_id] = r.file
            view, projection = (None, None) if shared else infer_view(caption)
            records.append(ImageRecord(
                image_id=image_id, path=index.find(image_id), study_id=r.study_id, patient_id=None,
                view=view, projection=projection, split=None, labels=dict(labels),
                findings=r.findings, impression=r.impression, source="synth" if r.synth else "openi",
            ))
    notes = []
    if folder is None:
        notes.append("no image folder (reports tarball alone): records have no image path; give --images DIR to encode")
    else:
        found = sum(1 for rec in records if rec.path)
        if found < len(records):
            notes.append(f"{len(records) - found} of {len(records)} images have no file under {folder}")
    notes.append("view inferred only from a caption that names one view and is the image's own "
                 "(e.g. 'Frontal PA view', 'Lateral view'); otherwise unknown")
    if bad:
        notes.append(f"{len(bad)} report(s) could not be read and were left out (first: {bad[0]['reason']})")
    return Dataset(
        name="openi", source=source, scheme=scheme, findings=findings, records=records,
        n_reports=len(reports), reports_without_images=[r.study_id for r in reports if not r.images],
        split_by="study", notes=notes, bad_reports=bad,
    )
