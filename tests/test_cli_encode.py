"""`embedstore encode` through the real CLI (`embedstore.cli.main`, in this process): its exit codes
0, 2 and 3 (75 is in test_store_busy.py, with every other writing command), and every option
reaching the code, each shown by what the run stored or printed (not by a mock of the encoder).

Data: 4 phantom studies (8 images) in the Open-i layout `embedstore synth` writes, and a manifest
over the same PNGs with one finding (few prompts, for the slower open_clip architecture).
Models load through the registry by name.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from embedstore.cli import main
from store_helpers import open_store

MODEL = ["--model", "phantom-clip", "--device", "cpu", "--workers", "0"]


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    from embedstore.synth import synth

    out = tmp_path_factory.mktemp("encode-cli") / "phantoms"
    synth(str(out), studies=4, seed=2, size=64, workers=1)
    return out


@pytest.fixture(scope="module")
def manifest(phantoms) -> Path:
    """The phantoms' PNGs as a manifest with a single finding (Cardiomegaly from labels.csv)."""
    labels = pl.read_csv(phantoms / "labels.csv")
    path = phantoms.parent / "manifest.csv"
    labels.select(pl.concat_str(pl.lit(f"{phantoms / 'images'}/"), "image_id", pl.lit(".png")).alias("path"), "image_id",
                  pl.col("study_id").alias("patient_id"), "Cardiomegaly").write_csv(path)
    return path


def images_of(phantoms: Path) -> list[str]:
    return sorted(p.stem for p in (phantoms / "images").glob("*.png"))


def encode(capsys, *args: str) -> tuple[int, str, str]:
    """`embedstore encode ARGS` in this process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exc:
        main(["encode", *args])
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def one_line_error(code: int, err: str, *fragments: str) -> bool:
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    return code == 2 and len(lines) == 1 and all(f in lines[0] for f in fragments) and "Traceback" not in err


# ---- exit codes ------------------------------------------------------------------------------------
def test_exit_0_when_every_image_is_encoded_or_already_stored(phantoms, tmp_path, capsys):
    """Also: without --boxes, the boxes.csv beside the source is stored."""
    store = str(tmp_path / "store")
    code, out, _ = encode(capsys, str(phantoms), *MODEL, "--store", store, "--format", "json")
    assert code == 0 and json.loads(out)["encoded"] == len(images_of(phantoms))
    assert open_store(store).boxes().height == pl.read_csv(phantoms / "boxes.csv").height
    code, out, _ = encode(capsys, str(phantoms), *MODEL, "--store", store, "--format", "json")
    assert code == 0 and (json.loads(out)["encoded"], json.loads(out)["skipped"]) == (0, len(images_of(phantoms)))


def test_a_malformed_report_is_recorded_the_rest_encoded_exit_3_and_strict_stops(phantoms, tmp_path, capsys):
    """A report that is not XML: exit 3, one `errors` row (stage read, the file) that a re-run
    replaces rather than repeats and a fixed report clears; `--strict` stops at it, storing nothing."""
    data = tmp_path / "data"
    shutil.copytree(phantoms, data)
    report = sorted((data / "ecgen-radiology").glob("*.xml"))[0]
    good = report.read_text()
    report.write_text("<eCitation><MeSH></eCitation>")
    store = ["--store", str(tmp_path / "store")]
    code, _, err = encode(capsys, str(data), *MODEL, *store, "--strict")
    assert one_line_error(code, err, report.name) and not (tmp_path / "store").exists()
    errors = "SELECT stage, path FROM errors WHERE image_id IS NULL"
    for _ in range(2):
        code, _, err = encode(capsys, str(data), *MODEL, *store)
        assert code == 3 and f"failed: report ({report}" in err, err
        assert open_store(tmp_path / "store").sql(errors).rows() == [("read", str(report))]
    report.write_text(good)
    code, _, _ = encode(capsys, str(data), *MODEL, *store)
    assert code == 0 and open_store(tmp_path / "store").sql(errors).is_empty()


@pytest.mark.parametrize("args,fragments", [
    (["--dataset", "nope"], ["--dataset 'nope'", "openi"]),
    (["--labels", "nope"], ["--labels 'nope'", "automatic"]),
    (["--box-format", "nope"], ["--box-format 'nope'", "canonical"]),  # no --boxes: checked all the same
    (["--model", "no-such-model"], ["no-such-model"]),
    (["--precision", "fp8"], ["--precision 'fp8'"]),
], ids=["dataset", "labels", "box-format", "model", "precision"])
def test_exit_2_for_a_bad_option_and_nothing_stored(phantoms, tmp_path, capsys, args, fragments):
    code, _, err = encode(capsys, str(phantoms), *MODEL, *args, "--store", str(tmp_path / "store"))
    assert one_line_error(code, err, *fragments), (code, err)
    assert not (tmp_path / "store").exists()  # checked before anything is written: no store at all


def test_exit_2_for_a_missing_source(tmp_path, capsys):
    code, _, err = encode(capsys, str(tmp_path / "nowhere"), *MODEL, "--store", str(tmp_path / "store"))
    assert one_line_error(code, err, str(tmp_path / "nowhere"), "no such file or folder"), err
    assert not (tmp_path / "store").exists()


def test_exit_3_for_a_corrupt_image_among_good_ones(phantoms, tmp_path, capsys):
    src = tmp_path / "phantoms"
    shutil.copytree(phantoms, src)
    bad = images_of(phantoms)[3]
    (src / "images" / f"{bad}.png").write_bytes(b"\x89PNG\r\n\x1a\n but not an image")
    store = tmp_path / "store"
    code, out, err = encode(capsys, str(src), *MODEL, "--store", str(store), "--format", "json")
    assert code == 3 and (json.loads(out)["encoded"], json.loads(out)["failed"]) == (len(images_of(phantoms)) - 1, 1)
    st = open_store(store)
    errors = st.sql("SELECT image_id, stage FROM errors")
    assert errors.rows() == [(bad, "decode")]
    encoded = st.sql("SELECT image_id FROM images JOIN image_embeddings USING (id) ORDER BY image_id")["image_id"]
    assert encoded.to_list() == [i for i in images_of(phantoms) if i != bad]
    code, _, err = encode(capsys, str(src), *MODEL, "--store", str(store))  # table output names the failure
    assert code == 3 and f"failed: {bad}" in err


# ---- every option reaches the code ------------------------------------------------------------------
def test_dataset_option_picks_the_reader(phantoms, tmp_path, capsys):
    code, _, _ = encode(capsys, str(phantoms), *MODEL, "--dataset", "openi", "--store", str(tmp_path / "a"))
    assert code == 0 and len(open_store(tmp_path / "a").images()) == len(images_of(phantoms))
    code, _, err = encode(capsys, str(phantoms), *MODEL, "--dataset", "nih", "--store", str(tmp_path / "b"))
    assert one_line_error(code, err, "--dataset nih reads a CSV or Parquet file"), err


def test_labels_option_picks_the_label_scheme(phantoms, tmp_path, capsys):
    from embedstore.data.datasets import read_dataset

    mesh = read_dataset(str(phantoms), labels="mesh").findings
    assert mesh != read_dataset(str(phantoms)).findings  # the two schemes differ on these reports
    code, _, _ = encode(capsys, str(phantoms), *MODEL, "--labels", "mesh", "--store", str(tmp_path / "s"))
    st = open_store(tmp_path / "s")
    assert code == 0 and st.findings() == sorted(mesh)
    assert set(st.sql("SELECT DISTINCT finding FROM prompts")["finding"]) == set(mesh)


def test_images_option_finds_images_kept_elsewhere(phantoms, tmp_path, capsys):
    reports = tmp_path / "reports"
    shutil.copytree(phantoms, reports, ignore=shutil.ignore_patterns("images"))
    code, out, _ = encode(capsys, str(reports), *MODEL, "--store", str(tmp_path / "without"), "--format", "json")
    assert code == 3 and json.loads(out)["failed"] == len(images_of(phantoms))  # no image found beside the reports
    code, out, _ = encode(capsys, str(reports), *MODEL, "--images", str(phantoms / "images"),
                          "--store", str(tmp_path / "with"), "--format", "json")
    assert code == 0 and json.loads(out)["encoded"] == len(images_of(phantoms))
    paths = open_store(tmp_path / "with").images()["path"].to_list()
    assert all(Path(p).parent == phantoms / "images" for p in paths)


def test_boxes_and_box_format_options_store_the_given_file(phantoms, tmp_path, capsys):
    """An NIH-format box file (x, y, w, h under one `Bbox [x,y,w,h]` header) replaces the phantoms'
    own boxes.csv; read as another format it is refused."""
    first, second = images_of(phantoms)[:2]
    nih = tmp_path / "BBox_List.csv"
    nih.write_text("Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
                   f"{first},Cardiomegaly,10,12,30,20\n{second},Infiltrate,5,6,7,8\n")
    code, _, _ = encode(capsys, str(phantoms), *MODEL, "--boxes", str(nih), "--box-format", "nih",
                        "--store", str(tmp_path / "s"))
    boxes = open_store(tmp_path / "s").boxes().sort("image_id")
    assert code == 0
    assert boxes.select("image_id", "finding", "x_min", "y_min", "x_max", "y_max").rows() == [
        (first, "Cardiomegaly", 10.0, 12.0, 40.0, 32.0), (second, "Infiltration", 5.0, 6.0, 12.0, 14.0)]
    code, _, err = encode(capsys, str(phantoms), *MODEL, "--boxes", str(nih), "--box-format", "vindr",
                          "--store", str(tmp_path / "t"))
    assert one_line_error(code, err, str(nih)), err


def test_batch_size_option_sets_the_images_per_forward_pass(manifest, tmp_path, capsys, monkeypatch):
    """--batch-size is the model's batch (commits group several batches by time, see test_encode)."""
    from embedstore.models.loaded import LoadedModel

    batches, encode_images = [], LoadedModel.encode_images  # the real method, counted

    def counted(self, images):
        batches.append(len(images))
        return encode_images(self, images)

    monkeypatch.setattr(LoadedModel, "encode_images", counted)
    code, _, _ = encode(capsys, str(manifest), *MODEL, "--batch-size", "3", "--store", str(tmp_path / "s"))
    assert code == 0 and batches == [3, 3, 2]
    assert len(open_store(tmp_path / "s").image_vectors("v1")[0]) == 8


def test_workers_option_decodes_in_worker_processes(manifest, tmp_path, capsys, monkeypatch):
    import embedstore.data.images as images

    pids = tmp_path / "decoded-by.txt"
    read = images.read_image  # the real decoder, noting which process ran it

    def noted(path):
        with open(pids, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        return read(path)

    monkeypatch.setattr(images, "read_image", noted)
    model_only = MODEL[:4]
    code, _, _ = encode(capsys, str(manifest), *model_only, "--workers", "0", "--store", str(tmp_path / "a"))
    assert code == 0 and set(pids.read_text().split()) == {str(os.getpid())}
    pids.unlink()
    code, _, _ = encode(capsys, str(manifest), *model_only, "--workers", "2", "--batch-size", "2",
                        "--store", str(tmp_path / "b"))
    decoders = set(pids.read_text().split())  # 4 batches, dealt to the 2 workers in turn
    assert code == 0 and len(decoders) == 2 and str(os.getpid()) not in decoders


def test_device_option_reaches_the_model_loader(manifest, tmp_path, capsys):
    import torch

    cpu = tmp_path / "cpu"
    code, _, _ = encode(capsys, str(manifest), *MODEL, "--store", str(cpu))
    assert code == 0
    code, _, err = encode(capsys, str(manifest), "--model", "phantom-clip", "--workers", "0", "--device", "cuda",
                          "--store", str(tmp_path / "cuda"))
    if torch.cuda.is_available():
        assert code == 0
        X_cpu, X_cuda = (open_store(p).image_vectors("v1")[1] for p in (cpu, tmp_path / "cuda"))
        np.testing.assert_allclose(X_cuda, X_cpu, atol=2e-3)
    else:  # the model was asked for on a CUDA device, and loading it there failed
        assert one_line_error(code, err, "phantom-clip", "NVIDIA"), err


def test_precision_option_makes_a_version_of_that_dtype(manifest, tmp_path, capsys):
    store = tmp_path / "s"
    for precision in ("fp32", "bf16"):
        code, _, _ = encode(capsys, str(manifest), *MODEL, "--precision", precision, "--store", str(store))
        assert code == 0
    st = open_store(store)
    assert st.versions().select("version", "dtype").rows() == [("v1", "fp32"), ("v2", "bf16")]
    (_, fp32), (_, bf16) = st.image_vectors("v1"), st.image_vectors("v2")
    assert 0 < np.abs(fp32 - bf16).max() and (fp32 * bf16).sum(axis=1).min() > 0.99  # rounded, same model


def test_model_and_pretrained_options_pick_the_weights(manifest, tmp_path, capsys, tiny_model):
    store = tmp_path / "s"
    code, _, _ = encode(capsys, str(manifest), "--model", tiny_model, "--device", "cpu", "--workers", "0",
                        "--store", str(store))
    assert code == 0
    code, _, _ = encode(capsys, str(manifest), "--model", "ViT-S-32-alt", "--pretrained", "random", "--device", "cpu",
                        "--workers", "0", "--store", str(store))
    assert code == 0
    st = open_store(store)
    assert st.versions().select("version", "model_name", "dim").rows() == [
        ("v1", tiny_model, 32), ("v2", "ViT-S-32-alt", 256)]
    record = st.version("v2").model_record
    assert (record["pretrained"], record["revision"], record["source"]) == (
        "random", "random-seed-0", "open_clip:ViT-S-32-alt/random")
    code, _, err = encode(capsys, str(manifest), "--model", "ViT-S-32-alt", "--device", "cpu", "--store", str(store))
    assert one_line_error(code, err, "needs --pretrained"), err
    code, _, err = encode(capsys, str(manifest), *MODEL, "--pretrained", "random", "--store", str(store))
    assert one_line_error(code, err, "--pretrained 'random' applies only to open_clip architecture names"), err


def test_version_option_appends_to_that_version_only_for_its_model(manifest, tmp_path, capsys, tiny_model):
    """Half the images into v1, a second model's v2, then the rest into v1 by name."""
    store = tmp_path / "s"
    half = tmp_path / "half.csv"
    pl.read_csv(manifest).head(4).write_csv(half)
    assert encode(capsys, str(half), *MODEL, "--store", str(store))[0] == 0
    assert encode(capsys, str(half), "--model", tiny_model, "--device", "cpu", "--workers", "0",
                  "--store", str(store))[0] == 0
    code, out, _ = encode(capsys, str(manifest), *MODEL, "--version", "v1", "--store", str(store), "--format", "json")
    assert code == 0 and (json.loads(out)["version"], json.loads(out)["encoded"]) == ("v1", 4)
    assert open_store(store).versions().select("version", "images").rows() == [("v1", 8), ("v2", 4)]
    code, _, err = encode(capsys, str(manifest), "--model", tiny_model, "--device", "cpu", "--version", "v1",
                          "--store", str(store))
    assert one_line_error(code, err, "version v1 was made by model 'phantom-clip'"), err


def test_format_option_picks_the_output(manifest, tmp_path, capsys):
    store = str(tmp_path / "s")
    code, out, _ = encode(capsys, str(manifest), *MODEL, "--store", store, "--format", "json")
    assert code == 0 and json.loads(out)["version"] == "v1"
    code, out, _ = encode(capsys, str(manifest), *MODEL, "--store", store, "--format", "csv")
    header, row = out.strip().splitlines()
    assert code == 0 and header.split(",")[:3] == ["version", "encoded", "skipped"] and row.startswith("v1,0,8,")
    code, out, _ = encode(capsys, str(manifest), *MODEL, "--store", store)
    assert code == 0 and "encode" in out and "skipped" in out and not out.lstrip().startswith("{")
