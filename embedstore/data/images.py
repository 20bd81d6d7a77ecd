"""Image files -> display-ready 8-bit greyscale, the model's input tensor, and a preview of it.

`read_image` returns a PIL image in mode "L" for every supported file:
- PNG / JPEG / TIFF / BMP at 8 bit: as stored (colour converted to grey, JPEG EXIF rotation applied);
- 16-bit (and 32-bit integer) PNG / TIFF: scaled linearly by the image's *actual* range
  (min -> 0, max -> 255), not by its bit depth: exports often hold 10-12 significant bits in a
  16-bit container, which dividing by 257 would leave nearly black;
- DICOM (pydicom): modality LUT (rescale), then the VOI LUT or the first window (VOI LUT
  function honoured), scaled by that LUT's / window's output range (by the actual range when the
  file has neither), and inverted for MONOCHROME1 (or a Presentation LUT Shape of INVERSE), so
  dense tissue is bright. Multi-frame files give their first frame. 12-16 bits stored.

Speed (shared 2-core machine, one thread): the 1955 x 1841, 15-bit `RG1_UNCR.dcm` decodes in
0.05-0.1 s; a 1024 x 1024 PNG in about 6 ms (8 bit) or 23 ms (16 bit), a JPEG in about 6 ms; far
below a ViT-B/16 forward pass (about 0.3 s an image on CPU). encode decodes in worker processes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from embedstore.errors import InputError

RASTER_FORMATS = ("PNG", "JPEG", "MPO", "TIFF", "BMP")  # PIL format names accepted (MPO: some JPEGs)
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")


def read_image(path) -> "Image.Image":
    """Decode `path` into a display-ready 8-bit greyscale PIL image (mode "L")."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such image file; check the path (or the data set's image folder)")
    if _is_dicom(p):
        return _read_dicom(p)
    return _read_raster(p)


def model_input(path, preprocess):
    """The tensor a model gets for `path`: grey image -> RGB -> the model's preprocess."""
    return preprocess(read_image(path).convert("RGB"))


def content_hash(path) -> str:
    """"sha256:<hex>" of the file's bytes, read in chunks."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    except FileNotFoundError as err:
        raise InputError(f"{path}: no such image file; check the path") from err
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror}); check its permissions") from err
    return "sha256:" + h.hexdigest()


def preview(path, image_size: int = 224, out=None, interpolation: str = "bicubic") -> dict:
    """Write a PNG of exactly the pixels the model sees (shortest-side resize + centre crop).

    Same geometry as open_clip's eval transform (`embedstore.data.geometry.crop_geometry`) and the
    same PIL resampling; returns the output path, the original size and the visible part of it.
    """
    from PIL import Image

    from embedstore.data.geometry import crop_geometry

    if image_size < 1:
        raise InputError(f"--size must be a positive number of pixels, got {image_size}")
    resample = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST,
                "lanczos": Image.LANCZOS}.get(interpolation)
    if resample is None:
        raise InputError(f"interpolation {interpolation!r}: use bicubic, bilinear, nearest or lanczos")
    img = read_image(path)
    g = crop_geometry(img.width, img.height, image_size)
    seen = img.resize((g.resized_width, g.resized_height), resample)
    seen = seen.crop((g.left, g.top, g.left + image_size, g.top + image_size))
    out = Path(out) if out else Path(f"{Path(path).stem}-preview.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    from embedstore.files import atomic_path

    with atomic_path(out) as tmp:  # no half-written preview
        seen.save(tmp, format="PNG")
    return {"path": str(path), "out": str(out), "width": img.width, "height": img.height, "size": image_size,
            "visible_box": [round(v, 1) for v in g.visible_box()]}


# ---- rasters -----------------------------------------------------------------------------
def _read_raster(p: Path):
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(p) as img:
            fmt = img.format
            if fmt not in RASTER_FORMATS:
                raise InputError(f"{p}: unsupported image format {fmt}; convert it to PNG (or give DICOM/JPEG)")
            img.load()
            if fmt in ("JPEG", "MPO"):
                img = ImageOps.exif_transpose(img)
            return _to_grey8(img)
    except UnidentifiedImageError as err:
        raise InputError(f"{p}: not a PNG, JPEG or DICOM image (or the file is corrupt); re-export it as PNG") from err
    except (OSError, SyntaxError, ValueError) as err:  # truncated / corrupt data
        raise InputError(f"{p}: corrupt or truncated image ({_short(err)}); re-export or re-download it") from err


def _to_grey8(img):
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return Image.fromarray(_scale(np.asarray(img, dtype=np.float64)), mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA").convert("RGB")  # drop alpha as stored, no compositing surprises
    return img.convert("L")


def _scale(arr: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Linear map [lo, hi] (default: the array's range) -> 0..255 uint8; a flat image is 0."""
    lo = float(np.min(arr)) if lo is None else lo
    hi = float(np.max(arr)) if hi is None else hi
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    out = (arr.astype(np.float64) - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# ---- DICOM -------------------------------------------------------------------------------
def _is_dicom(p: Path) -> bool:
    if p.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(p, "rb") as fh:
            head = fh.read(132)
    except OSError as err:
        raise InputError(f"{p}: cannot read ({err.strerror}); check its permissions") from err
    return head[128:132] == b"DICM"


def _read_dicom(p: Path):
    import pydicom
    from PIL import Image
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(p)
    except (InvalidDicomError, OSError, EOFError, ValueError) as err:
        raise InputError(f"{p}: not a readable DICOM file ({_short(err)}); re-export it") from err
    if "PixelData" not in ds:
        raise InputError(f"{p}: DICOM file has no pixel data (a report or structured document?); give the image file")
    try:
        arr = ds.pixel_array
    except Exception as err:  # noqa: BLE001 - missing codec, truncated data, bad tags
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        ts_name = getattr(ts, "name", ts)
        raise InputError(f"{p}: cannot decode DICOM pixels (transfer syntax {ts_name}: {_short(err)}); "
                         "install a decoder (pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg) "
                         "or convert the file to uncompressed DICOM/PNG") from err
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):  # colour DICOM: grey as a viewer shows it
        rgb = arr[0] if frames > 1 else arr
        from pydicom.pixels import convert_color_space

        if photometric.startswith("YBR"):
            rgb = convert_color_space(rgb, photometric, "RGB")
        return Image.fromarray(np.asarray(rgb, dtype=np.uint8)).convert("L")
    if frames > 1:
        arr = arr[0]
    try:
        values = apply_modality_lut(arr, ds)
        shown = apply_voi_lut(values, ds)
        lo, hi = _voi_range(ds, values, shown)
    except (ValueError, KeyError, IndexError, TypeError) as err:
        raise InputError(f"{p}: invalid DICOM LUT / window ({_short(err)}); fix or remove the VOI tags") from err
    grey = _scale(shown, lo, hi)
    shape = str(ds.get("PresentationLUTShape", "")).upper()
    if photometric == "MONOCHROME1" or shape == "INVERSE":
        grey = 255 - grey  # MONOCHROME1: the lowest value is white
    return Image.fromarray(grey, mode="L")


def _voi_range(ds, values: np.ndarray, shown: np.ndarray) -> tuple[float, float]:
    """The output range of the VOI step that was applied (what a viewer maps to black..white)."""
    from pydicom.pixels import apply_voi_lut

    probe = None
    if ds.get("VOILUTSequence"):  # pydicom prefers the LUT over a window, as here
        n, first = int(ds.VOILUTSequence[0].LUTDescriptor[0] or 65536), int(ds.VOILUTSequence[0].LUTDescriptor[1])
        probe = np.array([first - 1, first + n], dtype=np.int64)  # its first and last entries
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        lo, hi = float(np.min(values)), float(np.max(values))
        span = max(hi - lo, 1.0)
        probe = np.array([lo - 1e3 * span, hi + 1e3 * span], dtype=np.float64)  # far outside the window
    if probe is not None:
        ends = apply_voi_lut(probe, ds)
        a, b = float(np.min(ends)), float(np.max(ends))
        if b > a:
            return a, b
    return float(np.min(shown)), float(np.max(shown))


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:200]


def thumbnail_png(path, size: int = 256) -> bytes:
    """A PNG of the image at `path` (any format `read_image` reads), its longer side at most `size`."""
    import io

    img = read_image(path).convert("L")
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def prepare_image(sid: int, image_id: str, path: str, known: str | None, preprocess) -> dict:
    """One image: hash, then (only if its hash is not `known`) decode + preprocess. The mapper of
    both `encode` engines (a DataLoader worker, or a Ray Data task in `encode_ray`); `preprocess`
    is the model's (PIL -> tensor)."""
    base = {"id": sid, "image_id": image_id, "path": path}
    try:
        digest = content_hash(path)
    except Exception as err:  # noqa: BLE001 - any unreadable file becomes an errors row
        return {**base, "status": "error", "stage": "read", "reason": failure_reason(err)}
    if digest == known:
        return {**base, "status": "skip"}
    try:
        img = read_image(path)
        tensor = preprocess(img.convert("RGB"))
    except Exception as err:  # noqa: BLE001
        return {**base, "status": "error", "stage": "decode", "reason": failure_reason(err)}
    return {**base, "status": "ok", "hash": digest, "tensor": tensor, "size": tuple(img.size)}


def failure_reason(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text}"[:500]
