"""`embedstore synth`: phantom chest radiographs with known findings, in the Open-i layout."""

from __future__ import annotations

from typing import Optional

import typer

from embedstore.cli import app
from embedstore.cli.options import FORMAT, open_store
from embedstore.cli.output import Format, emit, emit_result


@app.command("synth")
def synth_command(
    out: str = typer.Argument(..., help="New (or empty) folder to write the phantom data set to."),
    studies: int = typer.Option(100, "--studies", "-n", help="Number of studies (two images each, some one)."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed gives byte-identical files."),
    size: int = typer.Option(256, "--size", help="Image side in pixels (default 256)."),
    dicom: bool = typer.Option(False, "--dicom", help="Also write DICOM copies (MONOCHROME1/2, 12-16 bits) to OUT/dicom."),
    labels_from: Optional[str] = typer.Option(None, "--labels-from", help="NLMCXR_reports.tgz: one phantom per real report, with its labels and text (ignores --studies)."),
    workers: int = typer.Option(2, "--workers", help="Worker processes."),
    shift: str = typer.Option("none", "--shift", help="Render as another site would: none | site-b (harder tone curve, edge enhancement; out of phantom-clip's distribution)."),
    repeat_patients: float = typer.Option(0.0, "--repeat-patients", help="Fraction of patients given a follow-up study (same anatomy and chronic findings, new acquisition and study id); the patient map goes to OUT/truth/patients.csv."),
    label_noise: float = typer.Option(0.0, "--label-noise", help="Flip each label with this probability in the written reports; the true labels go to OUT/truth/labels.csv."),
    fmt: Format = FORMAT,
) -> None:
    """Write phantom radiographs with known findings: Open-i XML reports, PNGs, boxes.csv, labels.csv (and truth/)."""
    from dataclasses import asdict

    summary = open_store(None).synth(out, studies=studies, seed=seed, size=size, dicom=dicom, labels_from=labels_from,
                                     workers=workers, shift=shift, repeat_patients=repeat_patients,
                                     label_noise=label_noise, progress=fmt is Format.table)
    if emit_result(summary, fmt):
        return
    row = asdict(summary)
    per = row.pop("images_per_finding")
    emit(row, fmt, title="synth")
    emit([{"finding": k, "images": v} for k, v in per.items()], fmt, title="images per finding")
