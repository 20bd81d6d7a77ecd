"""The store: one DuckDB file plus FAISS index files in a directory.

`Store` knows nothing of models: it keeps the vectors and the model *record* (a dict) it is
given. Writers take an exclusive lock (`lock`, holding the writer's PID); readers open DuckDB
read-only and never take the lock. Every write is a DuckDB transaction; index files are
written to a temporary file and renamed.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import os
import re
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from embedstore.errors import InputError, StoreBusy, StoreError
from embedstore.store import schema

DB_NAME = "embedstore.duckdb"
DEFAULT_STORE = ".embedstore"
FIT_ROLES = ("train", "val")  # `fit_images.role`: the images a fine-tune trained and early-stopped on
# An image's group where `splits` has none (images stored before splits were frozen).
GROUP_SQL = "coalesce('patient:' || i.patient_id, 'study:' || i.study_id, 'image:' || i.image_id)"
# id, split, group_id of every image: the frozen split, else the image's own columns.
GROUPS_SQL = (f"SELECT i.id, coalesce(s.split, i.split) AS split, coalesce(s.group_id, {GROUP_SQL}) AS group_id "
              "FROM images i LEFT JOIN splits s USING (id)")


def default_path(path: str | os.PathLike | None = None) -> Path:
    """`path`, else $EMBEDSTORE_STORE, else ./.embedstore."""
    return Path(path or os.environ.get("EMBEDSTORE_STORE") or DEFAULT_STORE)


def stable_hash(obj: Any) -> str:
    """sha256 of a JSON-able object with sorted keys: equal configs give equal hashes."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def text_hash(text: str) -> str:
    """Key of a text in `text_embeddings`: whitespace-collapsed and case-folded."""
    norm = " ".join(text.split()).casefold()
    return hashlib.sha256(norm.encode()).hexdigest()[:24]


def _now() -> _dt.datetime:
    return _dt.datetime.now()


class WriteLock:
    """An exclusive `flock` on `<store>/lock`; the file holds the holder's PID.

    flock is released by the kernel when the holder dies (even by SIGKILL), so a killed
    writer never leaves a stale lock behind.
    """

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None
        self.depth = 0

    def acquire(self) -> None:
        if self._fd is not None:
            self.depth += 1
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreBusy(f"store busy, held by PID {self.holder()} ({self.path.parent}); try again when it finishes") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        os.fsync(fd)
        self._fd, self.depth = fd, 1

    def release(self) -> None:
        if self._fd is None:
            return
        self.depth -= 1
        if self.depth > 0:
            return
        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "?"
        except OSError:
            return "?"


class Store:
    """A store directory: `embedstore.duckdb`, `index/<version>.faiss`, `lock`.

    `Store(path=None)` resolves `path`, else $EMBEDSTORE_STORE, else ./.embedstore; the
    directory and database are created on first write.
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = default_path(path).expanduser().resolve()
        self.db_path = self.path / DB_NAME
        self.index_dir = self.path / "index"
        self._lock = WriteLock(self.path / "lock")
        self._con = None  # the open write connection, shared by nested `connect(write=True)`

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    # ---- connections -------------------------------------------------------------------
    @contextlib.contextmanager
    def connect(self, write: bool = False) -> Iterator[Any]:
        """A DuckDB connection. `write=True` takes the store lock (StoreBusy if held).

        Readers open the file read-only and never block on the lock; while another process
        holds the DuckDB file open for writing, DuckDB refuses readers and that becomes
        the same StoreBusy message.
        """
        import duckdb

        if write:
            if self._con is not None:  # nested use inside one writer
                yield self._con
                return
            self._lock.acquire()
            try:
                self.path.mkdir(parents=True, exist_ok=True)
                con = self._open(duckdb, read_only=False)
                try:
                    con.execute(schema.TABLES)
                    con.execute(schema.VIEWS)
                    self._ensure_labels_view(con)
                    self._con = con
                    yield con
                finally:
                    self._con = None
                    con.close()
            finally:
                self._lock.release()
            return
        if self._con is not None:
            yield self._con
            return
        if not self.db_path.exists():
            with self.connect(write=True):  # create the empty store once
                pass
        con = self._open(duckdb, read_only=True)
        try:
            yield con
        finally:
            con.close()

    def _open(self, duckdb, read_only: bool):
        try:
            return duckdb.connect(str(self.db_path), read_only=read_only)
        except duckdb.IOException as err:
            if "lock" in str(err).lower():
                raise StoreBusy(
                    f"store busy, held by PID {self._lock.holder()} ({self.path}); try again when it finishes"
                ) from None
            raise StoreError(f"cannot open {self.db_path}: {str(err).splitlines()[0]}") from None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        """A write connection inside BEGIN ... COMMIT (ROLLBACK on any error)."""
        with self.connect(write=True) as con:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def _df(self, sql: str, params: list | None = None):
        """Run a read query and return a polars DataFrame."""
        with self.connect() as con:
            return con.sql(sql, params=params).pl()

    # ---- versions ----------------------------------------------------------------------
    def versions(self):
        """One row per version: lineage, model, dimension, counts, index file, creation time."""
        return self._df(
            """SELECT v.version, v.parent, v.kind, v.model_name, v.dim, v.dtype, v.logit_scale,
                      (SELECT count(*) FROM image_embeddings e WHERE e.version = v.version) AS images,
                      (SELECT count(*) FROM text_embeddings t WHERE t.version = v.version) AS texts,
                      (SELECT count(*) FROM errors r WHERE r.version = v.version) AS errors,
                      v.index_file, v.created, v.code_version
               FROM versions v ORDER BY v.created, v.version"""
        )

    def _version_ids(self) -> list[str]:
        with self.connect() as con:
            rows = con.sql("SELECT version FROM versions ORDER BY created, version").fetchall()
        return [r[0] for r in rows]

    def resolve_version(self, version: str | None) -> str:
        """`version` if it exists, the latest when None; StoreError listing the known ones."""
        known = self._version_ids()
        if version is None:
            if not known:
                raise StoreError(f"store {self.path} has no versions yet; run `embedstore encode SOURCE` first")
            return known[-1]
        if version not in known:
            raise StoreError(f"unknown version {version!r} in {self.path}; known: {', '.join(known) or 'none'}")
        return version

    def version_info(self, version: str | None = None) -> dict:
        """The `versions` row as a dict, with `model_record` and `preprocess` parsed."""
        version = self.resolve_version(version)
        with self.connect() as con:
            cur = con.sql("SELECT * FROM versions WHERE version = ?", params=[version])
            cols = cur.columns
            row = first(cur)
        info = dict(zip(cols, row))
        for key in ("model_record", "preprocess"):
            if isinstance(info.get(key), str):
                info[key] = json.loads(info[key])
        return info

    def find_version(self, model_record: dict, dtype: str, kind: str = "encode") -> str | None:
        """The version made by exactly this model record and dtype, if any."""
        h = stable_hash({"record": model_record, "dtype": dtype})
        with self.connect() as con:
            row = first(con.sql(
                "SELECT version FROM versions WHERE record_hash = ? AND kind = ? ORDER BY created LIMIT 1",
                params=[h, kind],
            ))
        return row[0] if row else None

    def create_version(self, parent: str | None, model_record: dict, preprocess: Any, dtype: str, kind: str,
                       fit_ids: dict[str, np.ndarray] | None = None) -> str:
        """Register a new, empty version ("v1", "v2", ...) and return its id.

        `fit_ids` (role "train" / "val" -> image ids) are the images a fine-tuned version's model was
        trained and early-stopped on, written to `fit_images` with the version (`fitted_ids`)."""
        from embedstore import code_version

        with self.transaction() as con:
            rows = con.sql("SELECT version FROM versions").fetchall()
            nums = [int(m.group(1)) for (v,) in rows if (m := re.fullmatch(r"v(\d+)", v))]
            version = f"v{max(nums, default=0) + 1}"
            name = str(model_record.get("name", "unknown"))
            con.execute(
                "INSERT INTO models VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET record = excluded.record",
                [name, json.dumps(model_record, default=str)],
            )
            con.execute(
                """INSERT INTO versions (version, parent, model_name, model_record, record_hash, preprocess,
                       dtype, normalized, dim, logit_scale, count, index_file, code_version, created, kind)
                   VALUES (?, ?, ?, ?, ?, ?, ?, TRUE, ?, ?, 0, ?, ?, ?, ?)""",
                [
                    version, parent, name, json.dumps(model_record, default=str),
                    stable_hash({"record": model_record, "dtype": dtype}),
                    json.dumps(preprocess, default=str), dtype,
                    model_record.get("embed_dim"), model_record.get("logit_scale"),
                    f"index/{version}.faiss", code_version(), _now(), kind,
                ],
            )
            self._write_fit_images(con, version, fit_ids or {})
        return version

    def _write_fit_images(self, con, version: str, fit_ids: dict[str, np.ndarray]) -> None:
        import polars as pl

        bad = sorted(set(fit_ids) - set(FIT_ROLES))
        if bad:
            raise StoreError(f"fit_images role {bad[0]!r}: use one of {', '.join(FIT_ROLES)}")
        frame = pl.DataFrame(
            [(int(i), role) for role, ids in fit_ids.items() for i in np.asarray(ids).tolist()],
            schema={"id": pl.Int64, "role": pl.String}, orient="row")
        con.register("fit_rows", frame)
        con.execute("INSERT INTO fit_images SELECT ?, id, role FROM fit_rows", [version])
        con.unregister("fit_rows")

    # ---- images, labels, boxes, errors -------------------------------------------------
    def upsert_images(self, records: Iterable, assigned=None) -> dict[str, int]:
        """Insert or update `ImageRecord`s and their labels; return image_id -> store id.

        Existing images keep their id (the FAISS id); their metadata and labels are replaced, but
        never their split: splits are frozen in `splits` the first time an image is stored, and
        `images.split` mirrors them (both written in this one transaction). Where new images go is
        decided by `embedstore.data.splits.place`; `assigned` (a `splits.Assignment`) says how the
        records' own splits were drawn (default: given by the data set).
        """
        import polars as pl

        from embedstore.data.splits import Assignment, place

        records = list(records)
        seen: set[str] = set()
        for r in records:
            if r.image_id in seen:
                raise InputError(f"image id {r.image_id!r} appears twice in the data set; image ids must be unique")
            seen.add(r.image_id)
        columns = ("image_id", "path", "study_id", "patient_id", "view", "projection", "source", "findings", "impression")
        with self.transaction() as con:
            self._adopt_unfrozen_splits(con)
            placements = place(records, assigned or Assignment(), self._stored_splits(con))
            meta = pl.DataFrame({c: [getattr(r, c) for r in records] for c in columns},
                                schema={c: pl.String for c in columns})
            meta = meta.with_columns(pl.Series("split", [p.split for p in placements], dtype=pl.String))
            con.register("new_meta", meta)
            con.execute(
                """UPDATE images SET path = n.path, study_id = n.study_id, patient_id = n.patient_id,
                       view = n.view, projection = n.projection, split = n.split, source = n.source,
                       findings = n.findings, impression = n.impression
                   FROM new_meta n WHERE images.image_id = n.image_id"""
            )
            con.execute(
                """INSERT INTO images (id, image_id, path, study_id, patient_id, view, projection, split,
                       source, findings, impression)
                   SELECT nextval('images_id_seq'), image_id, path, study_id, patient_id, view, projection, split,
                       source, findings, impression FROM new_meta n
                   WHERE n.image_id NOT IN (SELECT image_id FROM images)"""
            )
            con.unregister("new_meta")
            self._write_splits(con, records, placements)
            ids = dict(con.sql("SELECT image_id, id FROM images").fetchall())
            self._write_labels(con, records, ids)
        return ids

    # ---- splits: frozen once per image -------------------------------------------------
    def _adopt_unfrozen_splits(self, con) -> None:
        """Images stored before splits were frozen keep the split they had (method `adopted`)."""
        con.execute(
            f"""INSERT INTO splits SELECT i.id, {GROUP_SQL}, i.split, 'adopted', NULL, NULL, ? FROM images i
                WHERE i.split IN ('train', 'val', 'test') AND i.id NOT IN (SELECT id FROM splits)""", [_now()])

    def _stored_splits(self, con):
        """What `place` needs to know of the stored splits (`splits.Stored`)."""
        from embedstore.data.splits import Stored, parse_fractions

        by_image = dict(con.sql("SELECT i.image_id, s.split FROM splits s JOIN images i USING (id)").fetchall())
        by_group = dict(con.sql("SELECT group_id, mode(split) FROM splits GROUP BY group_id").fetchall())
        first_drawn = first(con.sql(
            """SELECT seed, fractions FROM splits WHERE method IN ('stratified', 'hash')
               ORDER BY method <> 'stratified', assigned, id"""))
        seed, fractions = first_drawn if first_drawn else (None, None)
        return Stored(by_image, by_group, seed, parse_fractions(fractions))

    def _write_splits(self, con, records: list, placements: list) -> None:
        import polars as pl

        new = [(r.image_id, p.group_id, p.split, p.method, p.seed, p.fractions)
               for r, p in zip(records, placements) if p.new]
        frame = pl.DataFrame(new, schema={"image_id": pl.String, "group_id": pl.String, "split": pl.String,
                                          "method": pl.String, "seed": pl.Int32, "fractions": pl.String}, orient="row")
        con.register("new_splits", frame)
        con.execute(
            """INSERT INTO splits SELECT i.id, n.group_id, n.split, n.method, n.seed, n.fractions, ?
               FROM new_splits n JOIN images i USING (image_id) WHERE i.id NOT IN (SELECT id FROM splits)""", [_now()])
        con.unregister("new_splits")

    def images_placed_by(self, method: str) -> int:
        """How many images got their split by `method` (stratified, given, hash, group, adopted)."""
        with self.connect() as con:
            return first(con.sql("SELECT count(*) FROM splits WHERE method = ?", params=[method]))[0]

    def split_methods(self):
        """One row per way splits were assigned: method, seed, fractions, images, and how many of
        them went to train, val and test."""
        return self._df(
            """SELECT method, seed, fractions, count(*) AS images,
                      count(*) FILTER (WHERE split = 'train') AS train, count(*) FILTER (WHERE split = 'val') AS val,
                      count(*) FILTER (WHERE split = 'test') AS test, min(assigned) AS assigned
               FROM splits GROUP BY method, seed, fractions ORDER BY min(assigned), method"""
        )

    def split_positives(self):
        """finding, split, positive_groups, positive_images: positives (value 1) per finding and split,
        counted as distinct groups (patients, else studies) and as images."""
        return self._df(
            f"""WITH g AS ({GROUPS_SQL})
               SELECT l.finding, g.split, count(DISTINCT g.group_id) AS positive_groups, count(*) AS positive_images
               FROM labels l JOIN g USING (id) WHERE l.value = 1 GROUP BY l.finding, g.split
               ORDER BY l.finding, g.split"""
        )

    def split_ids(self, version: str, split: str) -> np.ndarray:
        """int64 ids of the images in `split` that have a vector in `version`, sorted."""
        with self.connect() as con:
            rows = con.sql(
                f"""WITH g AS ({GROUPS_SQL}) SELECT e.id FROM image_embeddings e JOIN g USING (id)
                   WHERE e.version = ? AND g.split = ? ORDER BY e.id""", params=[version, split]).fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64)

    def fitted_ids(self, version: str) -> dict[str, np.ndarray]:
        """role ("train", "val") -> sorted int64 ids the version's model was fitted or early-stopped
        on, its ancestors' included (`versions.parent`): a model tuned from a tuned parent has seen
        the parent's images too."""
        with self.connect() as con:
            rows = con.sql(
                """WITH RECURSIVE lineage(version) AS (
                       SELECT ?::TEXT
                       UNION SELECT v.parent FROM versions v JOIN lineage l USING (version) WHERE v.parent IS NOT NULL)
                   SELECT DISTINCT role, id FROM fit_images WHERE version IN (SELECT version FROM lineage)
                   ORDER BY role, id""", params=[version]).fetchall()
        return {role: np.array([i for r, i in rows if r == role], dtype=np.int64) for role in FIT_ROLES}

    def _write_labels(self, con, records: list, ids: dict[str, int]) -> None:
        import polars as pl

        rows = [(ids[r.image_id], f, v) for r in records for f, v in r.labels.items()]
        frame = pl.DataFrame(rows, schema={"id": pl.Int64, "finding": pl.String, "value": pl.Int8}, orient="row")
        touched = pl.DataFrame({"id": [ids[r.image_id] for r in records]}, schema={"id": pl.Int64})
        con.register("touched", touched)
        con.register("new_labels", frame)
        con.execute("DELETE FROM labels WHERE id IN (SELECT id FROM touched)")
        con.execute("INSERT INTO labels SELECT id, finding, value FROM new_labels")
        con.unregister("touched")
        con.unregister("new_labels")
        self._ensure_labels_view(con)

    def _ensure_labels_view(self, con) -> None:
        findings = [r[0] for r in con.sql("SELECT DISTINCT finding FROM labels ORDER BY finding").fetchall()]
        con.execute(schema.labels_wide_sql(findings))

    def images(self, where: str | None = None):
        """Image metadata (id, image_id, path, study_id, patient_id, view, projection, split, ...).

        `where` is a SQL predicate over `images` columns, e.g. "view = 'frontal'".
        """
        sql = "SELECT * FROM images"
        if where:
            sql += f" WHERE {where}"
        return self._df(sql + " ORDER BY id")

    def image_groups(self):
        """id, split, group_id of every image: the frozen split's group (`splits`), else the
        image's patient, else its study. Bootstraps resample these groups, never single images."""
        return self._df(f"{GROUPS_SQL} ORDER BY i.id")

    def image_files(self, image_ids: Iterable[str]):
        """id, image_id, path, width, height of the images with these ids (unknown ids are left
        out): what Grad-CAM needs to read an image, and its id to join `image_groups()`."""
        import polars as pl

        want = pl.DataFrame({"image_id": pl.Series(sorted(set(map(str, image_ids))), dtype=pl.String)})
        with self.connect() as con:
            con.register("if_want", want)
            try:
                return con.sql("""SELECT i.id, i.image_id, i.path, i.width, i.height
                                  FROM images i JOIN if_want USING (image_id) ORDER BY i.image_id""").pl()
            finally:
                con.unregister("if_want")

    def findings(self) -> list[str]:
        """Every finding that has at least one label, sorted."""
        with self.connect() as con:
            return [r[0] for r in con.sql("SELECT DISTINCT finding FROM labels ORDER BY finding").fetchall()]

    def label_matrix(self, ids: np.ndarray, findings: list[str] | None = None) -> np.ndarray:
        """float32 [n, F]: 1 / 0 / -1 as stored, NaN where the label is missing."""
        import polars as pl

        findings = self.findings() if findings is None else list(findings)
        ids = np.asarray(ids, dtype=np.int64)
        out = np.full((len(ids), len(findings)), np.nan, dtype=np.float32)
        if not len(ids) or not findings:
            return out
        want = pl.DataFrame({"id": ids, "row": np.arange(len(ids))})
        cols = pl.DataFrame({"finding": findings, "col": np.arange(len(findings))})
        with self.connect() as con:
            con.register("lm_want", want)
            con.register("lm_cols", cols)
            try:
                long = con.sql(
                    """SELECT w.row, c.col, l.value FROM labels l JOIN lm_want w USING (id)
                       JOIN lm_cols c USING (finding) WHERE l.value IS NOT NULL"""
                ).pl()
            finally:
                con.unregister("lm_want")
                con.unregister("lm_cols")
        out[long["row"].to_numpy(), long["col"].to_numpy()] = long["value"].to_numpy().astype(np.float32)
        return out

    def boxes(self):
        """Annotated boxes in the canonical columns (pixels of the original image)."""
        return self._df("SELECT * FROM boxes ORDER BY image_id, finding")

    def write_boxes(self, df) -> int:
        """Replace the boxes of the images in `df` by `df`'s rows; return the number written."""
        import polars as pl

        cols = ["image_id", "finding", "x_min", "y_min", "x_max", "y_max", "reader", "width", "height"]
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise InputError(f"boxes frame lacks columns {missing}; expected {cols}")
        frame = df.select(cols).with_columns(pl.col("image_id").cast(pl.String))
        with self.transaction() as con:
            con.register("new_boxes", frame)
            con.execute("DELETE FROM boxes WHERE image_id IN (SELECT image_id FROM new_boxes)")
            con.execute(f"INSERT INTO boxes SELECT {', '.join(cols)} FROM new_boxes")
            con.unregister("new_boxes")
        return frame.height

    def write_errors(self, version: str | None, rows: list[dict], con=None) -> None:
        """Append rows (image_id, path, stage, reason) to `errors`."""
        if not rows:
            return
        now = _now()
        values = [(version, r.get("image_id"), r.get("path"), r.get("stage", "decode"), r["reason"], now) for r in rows]
        if con is None:
            with self.transaction() as c:
                c.executemany("INSERT INTO errors VALUES (?, ?, ?, ?, ?, ?)", values)
        else:
            con.executemany("INSERT INTO errors VALUES (?, ?, ?, ?, ?, ?)", values)

    # ---- vectors -----------------------------------------------------------------------
    def encoded_hashes(self, version: str) -> dict[int, str]:
        """id -> content hash of every image already encoded in `version`."""
        with self.connect() as con:
            return dict(con.sql("SELECT id, content_hash FROM image_embeddings WHERE version = ?", params=[version]).fetchall())

    def add_image_vectors(self, version: str, ids: np.ndarray, hashes: list[str], X: np.ndarray,
                          sizes: list[tuple[int, int]] | None = None, errors: list[dict] | None = None) -> int:
        """Write one batch in ONE transaction: vectors (replacing any older vector of the same
        id in this version), the images' content hash and size, and the batch's errors.
        """
        import polars as pl

        X = np.ascontiguousarray(X, dtype=np.float32)
        ids = np.asarray(ids, dtype=np.int64)
        if X.ndim != 2 or len(X) != len(ids) or len(hashes) != len(ids):
            raise StoreError(f"add_image_vectors: {len(ids)} ids, {len(hashes)} hashes, vectors {X.shape}")
        frame = pl.DataFrame({
            "id": ids, "content_hash": pl.Series(hashes, dtype=pl.String),
            "vector": pl.Series(list(X), dtype=pl.List(pl.Float32)) if len(X) else pl.Series([], dtype=pl.List(pl.Float32)),
            "width": pl.Series([s[0] for s in sizes] if sizes else [None] * len(ids), dtype=pl.Int32),
            "height": pl.Series([s[1] for s in sizes] if sizes else [None] * len(ids), dtype=pl.Int32),
        })
        with self.transaction() as con:
            if len(ids):
                con.register("batch", frame)
                con.execute("DELETE FROM image_embeddings WHERE version = ? AND id IN (SELECT id FROM batch)", [version])
                con.execute("INSERT INTO image_embeddings SELECT ?, id, content_hash, vector FROM batch", [version])
                con.execute(
                    """UPDATE images SET content_hash = b.content_hash, width = coalesce(b.width, images.width),
                           height = coalesce(b.height, images.height) FROM batch b WHERE images.id = b.id"""
                )
                con.unregister("batch")
            self.write_errors(version, errors or [], con=con)
            con.execute(
                "UPDATE versions SET count = (SELECT count(*) FROM image_embeddings WHERE version = ?) WHERE version = ?",
                [version, version],
            )
        return len(ids)

    def image_vectors(self, version: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids int64 [n], X float32 [n, d]) of `version`, ordered by id."""
        version = self.resolve_version(version)
        with self.connect() as con:
            dim = first(con.sql("SELECT dim FROM versions WHERE version = ?", params=[version]))[0]
            table = con.sql(
                "SELECT id, vector FROM image_embeddings WHERE version = ? ORDER BY id", params=[version]
            ).pl()
        return _ids_and_matrix(table, dim)

    def image_vectors_for(self, version: str, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Like `image_vectors` but only for the given ids (those encoded in `version`)."""
        import polars as pl

        want = pl.DataFrame({"id": np.asarray(ids, dtype=np.int64)})
        with self.connect() as con:
            dim = first(con.sql("SELECT dim FROM versions WHERE version = ?", params=[version]))[0]
            con.register("ivf_want", want)
            try:
                table = con.sql(
                    "SELECT e.id, e.vector FROM image_embeddings e JOIN ivf_want USING (id) WHERE e.version = ? ORDER BY e.id",
                    params=[version],
                ).pl()
            finally:
                con.unregister("ivf_want")
        return _ids_and_matrix(table, dim)

    def add_text_vectors(self, version: str, df, M: np.ndarray) -> int:
        """Store text embeddings (df has `text`; `text_hash` is computed when absent).

        Rows whose (version, text_hash) already exist are replaced.
        """
        import polars as pl

        M = np.ascontiguousarray(M, dtype=np.float32)
        texts = df["text"].to_list()
        hashes = df["text_hash"].to_list() if "text_hash" in df.columns else [text_hash(t) for t in texts]
        frame = pl.DataFrame({
            "text_hash": pl.Series(hashes, dtype=pl.String), "text": pl.Series(texts, dtype=pl.String),
            "vector": pl.Series(list(M), dtype=pl.List(pl.Float32)),
        }).unique("text_hash", keep="first")
        with self.transaction() as con:
            con.register("tb", frame)
            con.execute("DELETE FROM text_embeddings WHERE version = ? AND text_hash IN (SELECT text_hash FROM tb)", [version])
            con.execute("INSERT INTO text_embeddings SELECT ?, text_hash, text, vector FROM tb", [version])
            con.unregister("tb")
        return frame.height

    def upsert_prompts(self, df) -> None:
        """Insert prompt rows (finding, polarity, template, text); duplicates are ignored."""
        import polars as pl

        frame = df.select("finding", "polarity", "template", "text").with_columns(
            pl.col("text").map_elements(text_hash, return_dtype=pl.String).alias("text_hash")
        )
        with self.transaction() as con:
            con.register("np_", frame)
            con.execute("INSERT OR IGNORE INTO prompts SELECT finding, polarity, template, text, text_hash FROM np_")
            con.unregister("np_")

    def text_vectors(self, version: str | None = None):
        """(DataFrame[text_hash, text, finding, polarity, template], M float32 [m, d]): the stored
        prompts of `version` (prompts without an embedding in it are left out)."""
        version = self.resolve_version(version)
        with self.connect() as con:
            dim = first(con.sql("SELECT dim FROM versions WHERE version = ?", params=[version]))[0]
            table = con.sql(
                """SELECT t.text_hash, p.text, p.finding, p.polarity, p.template, t.vector
                   FROM text_embeddings t JOIN prompts p USING (text_hash)
                   WHERE t.version = ? ORDER BY p.finding, p.polarity DESC, p.text""",
                params=[version],
            ).pl()
        df = table.drop("vector")
        M = _matrix(table["vector"], dim)
        return df, M

    def stored_text_vector(self, version: str, text: str) -> np.ndarray | None:
        """The stored embedding of exactly this text (case and spacing ignored), if any."""
        with self.connect() as con:
            row = first(con.sql(
                "SELECT vector FROM text_embeddings WHERE version = ? AND text_hash = ?", params=[version, text_hash(text)]
            ))
        return None if row is None else np.asarray(row[0], dtype=np.float32)

    # ---- FAISS index -------------------------------------------------------------------
    def index_path(self, version: str) -> Path:
        return self.index_dir / f"{version}.faiss"

    def index_state(self, version: str) -> dict:
        """Recorded index checksum/count against DuckDB's row count (no file hashing)."""
        with self.connect() as con:
            rec = first(con.sql(
                """SELECT index_checksum, index_count,
                          (SELECT count(*) FROM image_embeddings WHERE version = ?) FROM versions WHERE version = ?""",
                params=[version, version],
            ))
        checksum, index_count, rows = rec
        return {"checksum": checksum, "index_count": index_count, "rows": rows, "exists": self.index_path(version).exists()}

    def index_is_current(self, version: str, check_file: bool = True) -> bool:
        """True when the index file exists, its checksum is the recorded one and its
        recorded count equals DuckDB's rows."""
        from embedstore.store import index as idx

        st = self.index_state(version)
        if not st["exists"] or st["checksum"] is None or st["index_count"] != st["rows"]:
            return False
        return not check_file or idx.file_checksum(self.index_path(version)) == st["checksum"]

    def rebuild_index(self, version: str, kind: str = "auto") -> dict:
        """Build the version's FAISS index from DuckDB, write it atomically, record checksum."""
        from embedstore.store import index as idx

        with self.connect(write=True) as con:
            ids, X = self.image_vectors(version)
            index = idx.build(ids, X, kind=kind)
            checksum = idx.write_atomic(index, self.index_path(version))
            con.execute(
                "UPDATE versions SET index_checksum = ?, index_count = ?, count = ?, index_file = ? WHERE version = ?",
                [checksum, len(ids), len(ids), f"index/{version}.faiss", version],
            )
        return {"version": version, "count": len(ids), "kind": idx.kind_of(index), "checksum": checksum}

    def ensure_index(self, version: str) -> bool:
        """Rebuild the index if it disagrees with DuckDB; return True when it was rebuilt."""
        if self.index_is_current(version):
            return False
        self.rebuild_index(version)
        return True

    def load_index(self, version: str):
        """The version's FAISS index, or None when it is missing or stale (count differs)."""
        from embedstore.store import index as idx

        st = self.index_state(version)
        if not st["exists"] or st["index_count"] != st["rows"]:
            return None
        index = idx.load(self.index_path(version))
        return index if index.ntotal == st["rows"] else None

    # ---- runs --------------------------------------------------------------------------
    def find_run(self, kind: str, version: str, config: dict) -> str | None:
        """The latest run of `kind` on `version` with exactly this config, if any."""
        with self.connect() as con:
            row = first(con.sql(
                "SELECT run_id FROM runs WHERE kind = ? AND version = ? AND config_hash = ? ORDER BY started DESC LIMIT 1",
                params=[kind, version, stable_hash(config)],
            ))
        return row[0] if row else None

    def write_run(self, kind: str, version: str, config: dict, started, duration_s: float,
                  tables: dict[str, Any]) -> str:
        """Write the `runs` row and every result frame (each gets `run_id`) in ONE transaction.

        `tables` maps a table name of the schema (metrics, image_scores, projections, ...) to a
        polars DataFrame whose columns are a subset of that table's columns.
        """
        import polars as pl

        from embedstore import code_version

        run_id = f"{kind}-{_dt.datetime.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
        if isinstance(started, (int, float)):
            started = _dt.datetime.fromtimestamp(started)
        with self.transaction() as con:
            known = {r[0] for r in con.sql("SELECT table_name FROM information_schema.tables").fetchall()}
            con.execute(
                "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [run_id, kind, version, json.dumps(config, sort_keys=True, default=str), stable_hash(config),
                 code_version(), started, float(duration_s)],
            )
            for name, frame in tables.items():
                if name not in known or name in ("runs", "images", "versions"):
                    raise StoreError(f"write_run: {name!r} is not a result table of the store")
                cols = [r[0] for r in con.sql(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position",
                    params=[name]).fetchall()]
                frame = frame.with_columns(pl.lit(run_id).alias("run_id"))
                extra = [c for c in frame.columns if c not in cols]
                if extra:
                    raise StoreError(f"write_run: table {name} has no columns {extra}; it has {cols}")
                con.register("run_rows", frame)
                sel = ", ".join(schema.quote_ident(c) for c in frame.columns)
                con.execute(f"INSERT INTO {name} ({sel}) SELECT {sel} FROM run_rows")
                con.unregister("run_rows")
        return run_id

    def delete_run(self, run_id: str) -> None:
        """Delete a run and its rows in every run table."""
        with self.transaction() as con:
            for name in self._run_tables(con):
                con.execute(f"DELETE FROM {name} WHERE run_id = ?", [run_id])
            con.execute("DELETE FROM runs WHERE run_id = ?", [run_id])

    def _run_tables(self, con) -> list[str]:
        rows = con.sql(
            """SELECT DISTINCT c.table_name FROM information_schema.columns c
               JOIN information_schema.tables t USING (table_name)
               WHERE c.column_name = 'run_id' AND c.table_name <> 'runs' AND t.table_type = 'BASE TABLE'"""
        ).fetchall()
        return [r[0] for r in rows]

    def metrics_of(self, run_ids: list[str]):
        """run_id, finding, metric, value, lo, hi of the given runs."""
        import polars as pl

        frame = pl.DataFrame({"run_id": list(run_ids)}, schema={"run_id": pl.String})
        with self.connect() as con:
            con.register("wanted_runs", frame)
            try:
                return con.sql("""SELECT m.run_id, m.finding, m.metric, m.value, m.lo, m.hi FROM metrics m
                                  JOIN wanted_runs USING (run_id)""").pl()
            finally:
                con.unregister("wanted_runs")

    def image_scores(self, run_id: str):
        """id, finding, score, pred of one run's scored images."""
        return self._df("SELECT id, finding, score, pred FROM image_scores WHERE run_id = ? ORDER BY id, finding",
                        [run_id])

    def runs(self):
        """Every analysis run, newest first."""
        return self._df("SELECT * FROM runs ORDER BY started DESC")


def first(rel):
    """The first row of a DuckDB relation, or None (relations have no fetchone in DuckDB 2)."""
    rows = rel.limit(1).fetchall()
    return rows[0] if rows else None


def _matrix(column, dim: int | None) -> np.ndarray:
    """A polars list column of vectors -> float32 [n, d] without a Python loop.

    (polars rather than pyarrow's to_numpy, which imports pandas: 0.5 s of start-up.)
    """
    n = len(column)
    if n == 0:
        return np.zeros((0, dim or 0), dtype=np.float32)
    flat = column.list.explode().to_numpy().astype(np.float32, copy=False)
    if flat.size % n:
        raise StoreError("stored vectors have unequal lengths; run `embedstore verify`")
    return flat.reshape(n, flat.size // n)


def _ids_and_matrix(frame, dim: int | None) -> tuple[np.ndarray, np.ndarray]:
    ids = frame["id"].to_numpy().astype(np.int64, copy=False)
    return ids, _matrix(frame["vector"], dim)
