"""Image decoding (PNG / JPEG 8 and 16 bit, DICOM with LUTs), content hashes and the preview."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from embedstore.data.images import content_hash, model_input, preview, read_image
from embedstore.errors import InputError


def _rg1() -> str:
    import pydicom.data

    return pydicom.data.get_testdata_file("RG1_UNCR.dcm")


def _gradient(h: int = 40, w: int = 64) -> np.ndarray:
    """Every grey level 0..255 along x, a different offset per row."""
    x = np.linspace(0, 255, w)
    return np.rint((x[None, :] + 3 * np.arange(h)[:, None]) % 256).astype(np.uint8)


# ---- the real chest radiograph ----------------------------------------------------------
def test_rg1_body_is_brighter_than_the_air_around_it():
    ds = pydicom.dcmread(_rg1())
    assert ds.PhotometricInterpretation == "MONOCHROME1" and ds.BitsStored == 15
    img = read_image(_rg1())
    assert img.mode == "L" and img.size == (ds.Columns, ds.Rows)
    a = np.asarray(img, dtype=np.float64)
    h, w = a.shape
    # air: above the shoulders, the top corners; body: mediastinum / spine in the middle
    air = np.concatenate([a[: h // 20, : w // 10].ravel(), a[: h // 20, -w // 10:].ravel()])
    body = a[int(0.3 * h): int(0.7 * h), int(0.45 * w): int(0.55 * w)]
    lung = a[int(0.3 * h): int(0.5 * h), int(0.2 * w): int(0.3 * w)]
    assert body.mean() > air.mean() + 60, (body.mean(), air.mean())
    assert body.mean() > lung.mean() > air.mean()  # aerated lung is darker than the mediastinum
    # and it is MONOCHROME1 handled, not luck: the stored values order the regions the other way
    raw = ds.pixel_array.astype(np.float64)
    raw_air = np.concatenate([raw[: h // 20, : w // 10].ravel(), raw[: h // 20, -w // 10:].ravel()])
    assert raw[int(0.3 * h): int(0.7 * h), int(0.45 * w): int(0.55 * w)].mean() < raw_air.mean()
    sample = (slice(None, None, 7), slice(None, None, 7))
    assert np.corrcoef(a[sample].ravel(), raw[sample].ravel())[0, 1] < -0.99  # a decreasing linear map


# ---- DICOM LUTs on synthetic files -------------------------------------------------------
def _write_dicom(path: Path, stored: np.ndarray, photometric: str = "MONOCHROME2", bits: int = 12,
                 slope: float | None = None, intercept: float | None = None,
                 window: tuple[float, float] | None = None) -> Path:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = stored.astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_dicom_rescale_and_window_follow_the_standard(tmp_path):
    stored = np.tile(np.linspace(0, 4095, 128).round().astype(np.uint16), (8, 1))
    slope, intercept, (c, w) = 2.0, -1000.0, (3000.0, 4001.0)
    p = _write_dicom(tmp_path / "w.dcm", stored, slope=slope, intercept=intercept, window=(c, w))
    got = np.asarray(read_image(p), dtype=np.float64)
    # PS3.3 C.11.2.1.2 (LINEAR) written out here, independently of pydicom
    v = stored * slope + intercept
    frac = np.clip((v - (c - 0.5)) / (w - 1) + 0.5, 0, 1)
    assert np.abs(got - frac * 255).max() <= 1.0
    assert got.min() == 0 and got.max() == 255  # the window clips both ends of this ramp


def test_monochrome1_is_the_inverse_of_monochrome2(tmp_path):
    stored = (_gradient().astype(np.uint16) * 16)  # 12 bits stored
    m2 = np.asarray(read_image(_write_dicom(tmp_path / "m2.dcm", stored)), dtype=int)
    m1 = np.asarray(read_image(_write_dicom(tmp_path / "m1.dcm", stored, photometric="MONOCHROME1")), dtype=int)
    np.testing.assert_array_equal(m1, 255 - m2)
    np.testing.assert_array_equal(m2, _gradient())  # no window: scaled by the data's range


def test_dicom_without_suffix_is_recognised(tmp_path):
    p = _write_dicom(tmp_path / "IM0001", _gradient().astype(np.uint16))
    assert np.asarray(read_image(p)).shape == (40, 64)


# ---- PNG / JPEG ------------------------------------------------------------------------
def test_8bit_png_and_rgb_png_and_jpeg(tmp_path):
    g = _gradient()
    Image.fromarray(g, "L").save(tmp_path / "g.png")
    np.testing.assert_array_equal(np.asarray(read_image(tmp_path / "g.png")), g)
    rgb = np.stack([g, g, g], axis=-1)
    Image.fromarray(rgb, "RGB").save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(np.asarray(read_image(tmp_path / "rgb.png")), g)
    Image.fromarray(g, "L").save(tmp_path / "g.jpg", quality=95)
    j = read_image(tmp_path / "g.jpg")
    assert j.mode == "L" and np.abs(np.asarray(j, dtype=int) - g).mean() < 3  # lossy, but close


@pytest.mark.parametrize("factor", [257, 16])  # full 16-bit range; 12 bits in a 16-bit container
def test_16bit_png_round_trips_by_its_actual_range(tmp_path, factor):
    g = _gradient()
    p = tmp_path / f"g16-{factor}.png"
    Image.fromarray(g.astype(np.uint16) * factor).save(p)
    with Image.open(p) as check:
        assert check.mode.startswith("I")  # really a 16-bit PNG
    img = read_image(p)
    assert img.mode == "L"
    np.testing.assert_array_equal(np.asarray(img), g)


def test_16bit_png_with_a_narrow_range_is_stretched(tmp_path):
    raw = (np.arange(64, dtype=np.uint16)[None, :].repeat(4, 0) * 10 + 1000)  # 1000..1630 of 65535
    Image.fromarray(raw).save(tmp_path / "n.png")
    a = np.asarray(read_image(tmp_path / "n.png"), dtype=int)
    assert a.min() == 0 and a.max() == 255 and np.all(np.diff(a[0]) > 0)


# ---- bad input --------------------------------------------------------------------------
def test_corrupt_png_names_the_path(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(good)
    bad = tmp_path / "truncated.png"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(InputError, match="truncated.png") as err:
        read_image(bad)
    assert "\n" not in str(err.value)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(InputError, match="junk.png.*not a PNG, JPEG or DICOM"):
        read_image(junk)


def test_missing_unsupported_and_broken_dicom(tmp_path):
    with pytest.raises(InputError, match="absent.png: no such image file"):
        read_image(tmp_path / "absent.png")
    Image.fromarray(_gradient(), "L").save(tmp_path / "anim.gif")
    with pytest.raises(InputError, match="anim.gif: unsupported image format GIF"):
        read_image(tmp_path / "anim.gif")
    (tmp_path / "bad.dcm").write_bytes(b"\0" * 64)
    with pytest.raises(InputError, match="bad.dcm"):
        read_image(tmp_path / "bad.dcm")
    with pytest.raises(InputError, match="absent.png"):
        content_hash(tmp_path / "absent.png")


# ---- hash, model input, preview ---------------------------------------------------------
def test_content_hash_is_sha256_of_the_bytes(tmp_path):
    p = tmp_path / "x.bin"
    data = np.random.default_rng(1).bytes(3 << 20)  # larger than one read chunk
    p.write_bytes(data)
    assert content_hash(p) == "sha256:" + hashlib.sha256(data).hexdigest()
    p.write_bytes(data[:-1] + b"\x00")
    assert content_hash(p) != "sha256:" + hashlib.sha256(data).hexdigest()


def test_preview_is_exactly_what_open_clip_feeds_the_model(tmp_path):
    import open_clip
    import torch

    src = tmp_path / "wide.png"
    rng = np.random.default_rng(2)
    Image.fromarray(rng.integers(0, 256, (50, 90), dtype=np.uint8), "L").save(src)
    pp = open_clip.image_transform(32, is_train=False, mean=(0.0,) * 3, std=(1.0,) * 3)
    x = model_input(src, pp)
    assert tuple(x.shape) == (3, 32, 32) and isinstance(x, torch.Tensor)
    info = preview(src, image_size=32, out=tmp_path / "p.png")
    seen = np.asarray(Image.open(tmp_path / "p.png"), dtype=np.int64)
    assert seen.shape == (32, 32) and info["size"] == 32 and (info["width"], info["height"]) == (90, 50)
    np.testing.assert_array_equal(seen, np.rint(x[0].numpy() * 255).astype(np.int64))
    # the visible box: full height; 90 px wide resized to int(32 * 90 / 50) = 57, crop from round(12.5) = 12
    x0, y0, x1, y1 = info["visible_box"]
    assert (y0, y1) == (0, 50)
    assert x0 == pytest.approx(12 * 90 / 57, abs=0.06) and x1 == pytest.approx(44 * 90 / 57, abs=0.06)


def test_preview_cli(tmp_path, monkeypatch, capsys):
    from embedstore.cli import main

    monkeypatch.chdir(tmp_path)
    Image.fromarray(_gradient(), "L").save(tmp_path / "g.png")
    with pytest.raises(SystemExit) as ex:
        main(["preview", str(tmp_path / "g.png"), "--size", "24", "--format", "json"])
    assert ex.value.code in (0, None)
    assert Image.open(tmp_path / "g-preview.png").size == (24, 24)
    with pytest.raises(SystemExit) as ex:
        main(["preview", str(tmp_path / "nope.png"), "--out", "x.png"])
    assert ex.value.code == 2 and "nope.png" in capsys.readouterr().err and not (tmp_path / "x.png").exists()
    with pytest.raises(SystemExit) as ex:
        main(["preview", str(tmp_path / "g.png"), "--model", "biomedclip", "--out", "b.png"])
    assert ex.value.code in (0, None) and Image.open(tmp_path / "b.png").size == (224, 224)


def test_decoding_speed_note():
    """Prints what decoding the real radiograph costs here (no assertion on the time), and checks
    that what was timed is the whole image the note names, not a thumbnail or an error."""
    start = time.perf_counter()
    img = read_image(_rg1())
    seconds = time.perf_counter() - start
    assert (img.mode, img.size) == ("L", (1841, 1955))  # width x height of RG1_UNCR.dcm
    print(f"RG1_UNCR.dcm (1841 x 1955, 15 bit) decoded in {seconds:.3f} s")
