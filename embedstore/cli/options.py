"""Options many commands share, defined once; and the API store a command works on."""

from __future__ import annotations

from typing import Optional

import typer

from embedstore.cli.output import Format

STORE = typer.Option(None, "--store", help="Store directory (else $EMBEDSTORE_STORE, else ./.embedstore).")
VERSION = typer.Option(None, "--version", "-v", help="Version (default: the latest).")
FORMAT = typer.Option(Format.table, "--format", help="table | json | csv | parquet (json, csv and parquet: every column).")
N_BOOT = typer.Option(1000, "--n-boot", min=0, help="Bootstrap replicates (patients resampled) for the 95% intervals.")
WHERE = typer.Option(None, "--where", help="Only the images matching this predicate on images columns, e.g. \"view = 'frontal'\".")
UNCERTAIN = typer.Option("mask", "--uncertain", help="mask | negative | positive: how uncertain (-1) labels count.")
BLANK = typer.Option("mask", "--blank", help="mask | negative: how missing (blank) labels count.")
MIN_POSITIVES = typer.Option(10, "--min-positives", min=1,
                             help="Positive patients (else studies) a finding needs on the scored split to be evaluable.")
CALIBRATE_ON = typer.Option("val", "--calibrate-on",
                            help="Split on which to fit each finding's threshold (none: the default thresholds only).")
OPERATING_POINT = typer.Option("max-f1", "--operating-point", help="max-f1 | youden: the rule every method's thresholds are fitted by.")
VIEWS_FILE = typer.Option(None, "--views",
                          help="CSV of image id to DICOM 'View Position' (Open-i's nlmcxr_dicom_metadata.csv.gz): PA/AP frontal, LL/LATERAL/RL lateral.")
BOX_FORMAT = typer.Option("auto", "--box-format", help="auto|canonical|nih|vindr|rsna")
DEVICE = typer.Option("auto", "--device", help="auto|cpu|cuda")
FOLD_SEED = typer.Option(0, "--seed", help="Seed of the folds.")
FORCE = typer.Option(False, "--force", help="Recompute even if a run with these settings is stored.")
TARGET = typer.Option("zeroshot", "--target",
                      help="zeroshot (pos-neg logit of the finding's prompts) | probe (stored probe logit) | finetuned (head logit).")
METHOD = typer.Option("gradcam", "--method",
                      help="gradcam | gradcam++ | hirescam | xgradcam | layercam | eigencam | eigengradcam | gradcam-elementwise.")
LAYER = typer.Option(None, "--layer",
                     help="Target layer, dotted (negative indices allowed), e.g. visual.transformer.resblocks.-1.ln_1; default per architecture.")


def open_store(path: Optional[str]):
    """The API store a command works on."""
    from embedstore.api import Store

    return Store(path)


def split_or_none(value: Optional[str]) -> Optional[str]:
    """A split option where "none" turns the feature off."""
    return None if value is None or value.lower() == "none" else value
