"""`embedstore export` / `import`: a version's vectors as Parquet, and vectors made elsewhere as a version.

Export writes `DIR/vectors.parquet` (id, image_id, split, labels, vector) with polars, which
Spark, Ray, polars and DuckDB read directly, and `DIR/model.json` (the version's model record),
the two files `import` takes back. Import checks the whole file before the first write (columns,
dimension, NaN, unknown image ids), then writes a new version (status `building` until its
vectors and index are written, as encode does), chunk by chunk; run again, it finishes the same
version. No torch: vectors are taken as given, L2-normalised as every stored vector is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedstore.errors import InputError
from embedstore.results import Row

VECTORS_FILE = "vectors.parquet"
MODEL_FILE = "model.json"
CHUNK = 50_000  # rows per import commit


@dataclass
class ExportResult(Row):
    """What `export` wrote: one row of version, out, rows, dim, vectors (the Parquet file), model (the record's JSON file)."""

    version: str
    out: str
    rows: int
    dim: int | None
    vectors: str
    model: str


@dataclass
class ImportResult(Row):
    """What `import` stored: one row of version, imported, dim, normalized, index_count."""

    version: str
    imported: int
    dim: int
    normalized: int  # vectors whose norm was not 1 and were scaled to it
    index_count: int


def export(st, version: str | None, out) -> ExportResult:
    """Write `version`'s vectors and model record under the folder `out` (created if missing)."""
    from embedstore.files import atomic_path

    ver = st.resolve_version(version)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a folder to write {VECTORS_FILE} and {MODEL_FILE} into")
    frame = st.export_frame(ver)
    made = st.version(ver)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / VECTORS_FILE) as tmp:
        frame.write_parquet(tmp)
    with atomic_path(out / MODEL_FILE) as tmp:
        tmp.write_text(json.dumps(made.model_record, indent=2, default=str) + "\n")
    return ExportResult(version=ver, out=str(out), rows=frame.height, dim=made.dim,
                        vectors=str(out / VECTORS_FILE), model=str(out / MODEL_FILE))


def import_vectors(st, source, model_record=None) -> ImportResult:
    """Store the vectors of the Parquet file `source` (columns image_id and vector; a folder
    `export` wrote works too) as a version of the model described by `model_record` (a JSON
    file; default `model.json` beside the vectors)."""
    source = Path(source)
    if source.is_dir():
        source = source / VECTORS_FILE
    record_path = Path(model_record) if model_record else source.parent / MODEL_FILE
    record = _read_record(record_path)
    image_ids, X = _read_vectors(source, int(record["embed_dim"]))
    unknown = st.unknown_image_ids(image_ids) if st.db_path.exists() else image_ids
    if unknown:
        raise InputError(f"{source}: {len(unknown)} image_id(s) not in the store (first: {unknown[0]!r}); encode "
                         "their data set into it first (any model) or leave those rows out")
    norms = np.linalg.norm(X, axis=1)
    if (norms == 0).any():
        raise InputError(f"{source}: image_id {image_ids[int(np.argmax(norms == 0))]!r} has an all-zero vector; "
                         "leave it out")
    normalized = int((np.abs(norms - 1) > 1e-3).sum())
    X = X / norms[:, None]
    with st.writer():
        ver = st.find_version(record, "fp32", kind="import") or st.create_version(
            None, record, record.get("preprocess"), "fp32", "import")
        for start in range(0, len(image_ids), CHUNK):
            st.add_vectors_by_image_id(ver, image_ids[start:start + CHUNK], X[start:start + CHUNK])
        built = st.rebuild_index(ver)
        st.complete_version(ver)
    return ImportResult(version=ver, imported=len(image_ids), dim=X.shape[1], normalized=normalized,
                        index_count=built["count"])


def _read_record(path: Path) -> dict:
    if not path.is_file():
        raise InputError(f"--model-record {path}: no such file; give the JSON model record the vectors were made "
                         f"with (at least name and embed_dim; `export` writes one as {MODEL_FILE})")
    try:
        record = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise InputError(f"--model-record {path}: not JSON ({str(err).splitlines()[0]})") from None
    if not isinstance(record, dict):
        raise InputError(f"--model-record {path}: a JSON object is needed, with at least name and embed_dim")
    missing = [k for k in ("name", "embed_dim") if k not in record]
    if missing:
        raise InputError(f"--model-record {path}: missing {', '.join(missing)}; add them (embed_dim: the "
                         "vectors' length)")
    if not isinstance(record["embed_dim"], int) or record["embed_dim"] < 1:
        raise InputError(f"--model-record {path}: embed_dim {record['embed_dim']!r} must be a positive integer")
    return record


def _read_vectors(path: Path, dim: int) -> tuple[list[str], np.ndarray]:
    import polars as pl

    if not path.is_file():
        raise InputError(f"{path}: no such file; give a Parquet file with columns image_id and vector")
    try:
        frame = pl.read_parquet(path)
    except Exception as err:  # noqa: BLE001 - any unreadable file is bad input
        raise InputError(f"{path}: not a readable Parquet file ({str(err).splitlines()[0]})") from None
    missing = [c for c in ("image_id", "vector") if c not in frame.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)} (has {', '.join(frame.columns)}); "
                         "give image_id (the store's image ids) and vector (a list of floats)")
    if frame.height == 0:
        raise InputError(f"{path}: no rows")
    ids = frame["image_id"].cast(pl.String)
    if ids.null_count() or ids.n_unique() != frame.height:
        raise InputError(f"{path}: image_id must be filled and unique ({ids.null_count()} empty, "
                         f"{frame.height - ids.n_unique()} repeated)")
    vec = frame["vector"]
    if not isinstance(vec.dtype, (pl.List, pl.Array)):
        raise InputError(f"{path}: column vector is {vec.dtype}; it must be a list of floats")
    lengths = vec.list.len() if isinstance(vec.dtype, pl.List) else pl.Series([vec.dtype.size] * len(vec))
    wrong = (lengths.fill_null(0) != dim)
    if wrong.any():
        row = int(wrong.arg_max())
        raise InputError(f"{path}: vector of image_id {ids[row]!r} has length {lengths[row]}, but the model record's "
                         f"embed_dim is {dim}; fix the record or the vectors")
    X = np.asarray(vec.to_list(), dtype=np.float32).reshape(frame.height, dim)
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        raise InputError(f"{path}: vector of image_id {ids[int(np.argmax(bad))]!r} has NaN or inf; leave it out")
    return ids.to_list(), X
