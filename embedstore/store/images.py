"""Images, their frozen splits, labels, boxes and errors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import numpy as np

from embedstore.errors import InputError
from embedstore.store import schema
from embedstore.store.rows import first, now, registered

# An image's group where `splits` has none (images stored before splits were frozen).
GROUP_SQL = "coalesce('patient:' || i.patient_id, 'study:' || i.study_id, 'image:' || i.image_id)"
# id, split, group_id of every image: the frozen split, else the image's own columns.
GROUPS_SQL = (f"SELECT i.id, coalesce(s.split, i.split) AS split, coalesce(s.group_id, {GROUP_SQL}) AS group_id "
              "FROM images i LEFT JOIN splits s USING (id)")


def _value(record, column: str):
    """A record's value for an `images` column; a view without a stated source is the data set's own."""
    if column == "view_source":
        return record.view_source or ("dataset" if record.view else None)
    return getattr(record, column)


class ImageTables:
    """The `images`, `splits`, `labels`, `boxes` and `errors` tables (a part of `Storage`)."""

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
        columns = ("image_id", "path", "study_id", "patient_id", "view", "projection", "source", "findings", "impression",
                   "view_source")
        with self.transaction() as con:
            self._adopt_unfrozen_splits(con)
            placements = place(records, assigned or Assignment(), self._stored_splits(con))
            meta = pl.DataFrame({c: [_value(r, c) for r in records] for c in columns},
                                schema={c: pl.String for c in columns})
            meta = meta.with_columns(pl.Series("split", [p.split for p in placements], dtype=pl.String))
            with registered(con, new_meta=meta):
                con.execute(
                    """UPDATE images SET path = n.path, study_id = n.study_id, patient_id = n.patient_id,
                           view = n.view, projection = n.projection, split = n.split, source = n.source,
                           findings = n.findings, impression = n.impression, view_source = n.view_source
                       FROM new_meta n WHERE images.image_id = n.image_id"""
                )
                con.execute(
                    """INSERT INTO images (id, image_id, path, study_id, patient_id, view, projection, split,
                           source, findings, impression, view_source)
                       SELECT nextval('images_id_seq'), image_id, path, study_id, patient_id, view, projection, split,
                           source, findings, impression, view_source FROM new_meta n
                       WHERE n.image_id NOT IN (SELECT image_id FROM images)"""
                )
            self._write_splits(con, records, placements)
            ids = dict(con.sql("SELECT image_id, id FROM images").fetchall())
            self._write_labels(con, records, ids)
        return ids
    # ---- splits: frozen once per image -------------------------------------------------

    def _adopt_unfrozen_splits(self, con) -> None:
        """Images stored before splits were frozen keep the split they had (method `adopted`)."""
        con.execute(
            f"""INSERT INTO splits SELECT i.id, {GROUP_SQL}, i.split, 'adopted', NULL, NULL, ? FROM images i
                WHERE i.split IN ('train', 'val', 'test') AND i.id NOT IN (SELECT id FROM splits)""", [now()])

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
        with registered(con, new_splits=frame):
            con.execute(
                """INSERT INTO splits SELECT i.id, n.group_id, n.split, n.method, n.seed, n.fractions, ?
                   FROM new_splits n JOIN images i USING (image_id) WHERE i.id NOT IN (SELECT id FROM splits)""",
                [now()])

    def images_placed_by(self, method: str) -> int:
        """How many images got their split by `method` (stratified, given, hash, group, adopted)."""
        return self._scalar("SELECT count(*) FROM splits WHERE method = ?", [method])

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
        ids = self._column(f"""WITH g AS ({GROUPS_SQL}) SELECT e.id FROM image_embeddings e JOIN g USING (id)
                               WHERE e.version = ? AND g.split = ? ORDER BY e.id""", [version, split])
        return np.array(ids, dtype=np.int64)

    def _write_labels(self, con, records: list, ids: dict[str, int]) -> None:
        import polars as pl

        rows = [(ids[r.image_id], f, v) for r in records for f, v in r.labels.items()]
        frame = pl.DataFrame(rows, schema={"id": pl.Int64, "finding": pl.String, "value": pl.Int8}, orient="row")
        touched = pl.DataFrame({"id": [ids[r.image_id] for r in records]}, schema={"id": pl.Int64})
        with registered(con, touched=touched, new_labels=frame):
            con.execute("DELETE FROM labels WHERE id IN (SELECT id FROM touched)")
            con.execute("INSERT INTO labels SELECT id, finding, value FROM new_labels")
        self._ensure_labels_view(con)

    def _ensure_labels_view(self, con) -> None:
        findings = [r[0] for r in con.sql("SELECT DISTINCT finding FROM labels ORDER BY finding").fetchall()]
        con.execute(schema.labels_wide_sql(findings))

    def images(self, where: str | None = None):
        """Image metadata (id, image_id, path, study_id, patient_id, view, projection, split, ...).

        `where` is a predicate over `images` columns, e.g. "view = 'frontal'" (`predicates.checked`).
        """
        import duckdb

        with self.connect() as con:
            sql = "SELECT * FROM images"
            if where:
                sql += f" WHERE {self.predicate(con, where, labels=False)}"
            try:
                return con.sql(sql + " ORDER BY id").pl()
            except duckdb.Error as err:  # e.g. comparing a text column with a number
                raise InputError(f"--where {where!r}: {str(err).splitlines()[0]}") from None

    def predicate(self, con, where: str, labels: bool = True) -> str:
        """`where` checked and re-printed by `predicates.checked`, over the `images` columns (and,
        with `labels`, the findings' columns of `labels_wide`)."""
        from embedstore.store.predicates import checked

        tables = ["labels_wide", "images"] if labels else ["images"]
        columns = {r[0] for r in con.sql("SELECT column_name FROM information_schema.columns WHERE list_contains(?, "
                                         "table_name)", params=[tables]).fetchall()}
        return checked(con, where, columns)

    def image_detail(self, image_id: str) -> dict | None:
        """One image by its id: its `images` row, its labels ({finding: 1 / 0 / -1}) and its boxes
        (list of dicts, original pixels); None when no image has that id."""
        rows = self._df("SELECT * FROM images WHERE image_id = ?", [str(image_id)])
        if not rows.height:
            return None
        row = rows.row(0, named=True)
        labels = self._rows("SELECT finding, value FROM labels WHERE id = ? AND value IS NOT NULL ORDER BY finding",
                            [row["id"]])
        boxes = self._df("SELECT finding, x_min, y_min, x_max, y_max, reader FROM boxes WHERE image_id = ? "
                         "ORDER BY finding, x_min, y_min", [str(image_id)])
        return {**row, "labels": {f: int(v) for f, v in labels}, "boxes": boxes.to_dicts()}

    def filter_predicate(self, split: str | None = None, view: str | None = None,
                         present: list[str] | None = None, absent: list[str] | None = None) -> str | None:
        """Structured filters as one `--where` predicate over images / labels_wide (None when no
        filter is given): split and view compared as constants, each finding in `present` (label 1)
        or `absent` (label 0 or missing) checked against the store's findings (InputError naming it)."""
        from embedstore.store.schema import quote_ident, quote_literal

        parts = []
        if split is not None:
            parts.append(f"split = {quote_literal(str(split))}")
        if view is not None:
            parts.append(f"view = {quote_literal(str(view))}")
        known = self.findings() if (present or absent) else []
        for name, wanted in [(f, True) for f in present or []] + [(f, False) for f in absent or []]:
            if name not in known:
                raise InputError(f"finding {name!r} is not in the store; give one of {', '.join(known)}")
            column = quote_ident(name)
            parts.append(f"{column} = 1" if wanted else f"coalesce({column}, 0) = 0")  # absent: 0 or missing, not uncertain
        return " AND ".join(parts) or None

    def image_groups(self):
        """id, split, group_id of every image: the frozen split's group (`splits`), else the
        image's patient, else its study. Bootstraps resample these groups, never single images."""
        return self._df(f"{GROUPS_SQL} ORDER BY i.id")

    def image_files(self, image_ids: Iterable[str]):
        """id, image_id, path, width, height of the images with these ids (unknown ids are left
        out): what Grad-CAM needs to read an image, and its id to join `image_groups()`."""
        import polars as pl

        want = pl.DataFrame({"image_id": pl.Series(sorted(set(map(str, image_ids))), dtype=pl.String)})
        with self.connect() as con, registered(con, if_want=want):
            return con.sql("""SELECT i.id, i.image_id, i.path, i.width, i.height
                              FROM images i JOIN if_want USING (image_id) ORDER BY i.image_id""").pl()

    def findings(self) -> list[str]:
        """Every finding that has at least one label, sorted."""
        return self._column("SELECT DISTINCT finding FROM labels ORDER BY finding")

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
        with self.connect() as con, registered(con, lm_want=want, lm_cols=cols):
            long = con.sql("""SELECT w.row, c.col, l.value FROM labels l JOIN lm_want w USING (id)
                              JOIN lm_cols c USING (finding) WHERE l.value IS NOT NULL""").pl()
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
        with self.transaction() as con, registered(con, new_boxes=frame):
            con.execute("DELETE FROM boxes WHERE image_id IN (SELECT image_id FROM new_boxes)")
            con.execute(f"INSERT INTO boxes SELECT {', '.join(cols)} FROM new_boxes")
        return frame.height

    def clear_errors(self, version: str, image_ids: list[str], reports_under: str | None = None) -> None:
        """Delete the version's errors of these images, and of the unreadable reports under the
        data set's path `reports_under` (all about to be tried again)."""
        import polars as pl

        frame = pl.DataFrame({"image_id": image_ids}, schema={"image_id": pl.String})
        with self.transaction() as con, registered(con, run_ids=frame):
            con.execute("DELETE FROM errors WHERE version = ? AND image_id IN (SELECT image_id FROM run_ids)", [version])
            if reports_under:
                con.execute("""DELETE FROM errors WHERE version = ? AND image_id IS NULL AND stage = 'read'
                               AND starts_with(path, ?)""", [version, reports_under])

    def write_errors(self, version: str | None, rows: list[dict], con=None) -> None:
        """Append rows (image_id, path, stage, reason) to `errors`."""
        if not rows:
            return
        stamp = now()
        values = [(version, r.get("image_id"), r.get("path"), r.get("stage", "decode"), r["reason"], stamp) for r in rows]
        with contextlib.nullcontext(con) if con is not None else self.transaction() as c:
            c.executemany("INSERT INTO errors VALUES (?, ?, ?, ?, ?, ?)", values)
