"""Image and text vectors of every version, and the prompts."""

from __future__ import annotations

import numpy as np

from embedstore.errors import StoreError
from embedstore.store.keys import text_hash
from embedstore.store.rows import ids_and_matrix, matrix, registered


# DuckDB's index scan serves an IN list of up to `index_scan_max_count` (2,048) values.
LOOKUP_MAX = 2048
# a read-only store of up to this many images describes hits from one remembered metadata frame
HIT_META_MAX = 200_000
HIT_LABELS = "coalesce(string_agg(l.finding, ', ' ORDER BY l.finding) FILTER (WHERE l.value = 1), '') AS labels"


class VectorTables:
    """The `image_embeddings`, `text_embeddings` and `prompts` tables (a part of `Storage`)."""

    # ---- vectors -----------------------------------------------------------------------

    def encoded_hashes(self, version: str) -> dict[int, str]:
        """id -> content hash of every image already encoded in `version`."""
        return dict(self._rows("SELECT id, content_hash FROM image_embeddings WHERE version = ?", [version]))

    def add_image_vectors(self, version: str, ids: np.ndarray, hashes: list[str], X: np.ndarray,
                          sizes: list[tuple[int, int]] | None = None, errors: list[dict] | None = None) -> int:
        """Write one batch in ONE transaction: vectors (replacing any older vector of the same
        id in this version), the images' content hash and size, and the batch's errors. A batch
        that replaces vectors marks the version's index stale (index_count NULL) in the same
        transaction, so a run killed before its index refresh never leaves old vectors indexed.
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
                with registered(con, batch=frame):
                    replaced = con.execute("DELETE FROM image_embeddings WHERE version = ? AND id IN (SELECT id FROM batch)",
                                           [version]).fetchall()[0][0]
                    if replaced:
                        con.execute("UPDATE versions SET index_count = NULL WHERE version = ?", [version])
                    con.execute("INSERT INTO image_embeddings SELECT ?, id, content_hash, vector FROM batch", [version])
                    con.execute(
                        """UPDATE images SET content_hash = b.content_hash, width = coalesce(b.width, images.width),
                               height = coalesce(b.height, images.height) FROM batch b WHERE images.id = b.id"""
                    )
            self.write_errors(version, errors or [], con=con)
            con.execute(
                "UPDATE versions SET count = (SELECT count(*) FROM image_embeddings WHERE version = ?) WHERE version = ?",
                [version, version],
            )
        return len(ids)

    def image_vectors(self, version: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids int64 [n], X float32 [n, d]) of `version`, ordered by id."""
        version = self.resolve_version(version)
        table = self._df("SELECT id, vector FROM image_embeddings WHERE version = ? ORDER BY id", [version],
                         memo=False)
        return ids_and_matrix(table, self._dim(version))

    def _dim(self, version: str) -> int | None:
        return self._scalar("SELECT dim FROM versions WHERE version = ?", [version])

    def image_vectors_for(self, version: str, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Like `image_vectors` but only for the given ids (those encoded in `version`).

        Up to `LOOKUP_MAX` ids (an ivf-pq re-rank's candidates) are a constant `IN` list, which
        DuckDB answers by looking each id up in the `image_embeddings (id)` index (schema.ID_INDEX)
        and fetching only those rows; a registered frame or `IN (SELECT unnest(?))` scans every
        vector of the table instead (about 150 ms for 160 ids at 100,000 x 512, against 45 ms; see
        bench/RESULTS.md). More ids (an index's appended vectors) are joined as a frame."""
        import polars as pl

        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) <= LOOKUP_MAX:
            listed = ", ".join(str(int(i)) for i in ids) or "NULL"  # int64s: nothing to quote
            table = self._df(f"SELECT id, vector FROM image_embeddings WHERE version = ? AND id IN ({listed}) "
                             "ORDER BY id", [version], memo=False)
            return ids_and_matrix(table, None if table.height else self._dim(version))
        want = pl.DataFrame({"id": ids})
        with self.connect() as con, registered(con, ivf_want=want):
            table = con.sql(
                "SELECT e.id, e.vector FROM image_embeddings e JOIN ivf_want USING (id) WHERE e.version = ? ORDER BY e.id",
                params=[version],
            ).pl()
        return ids_and_matrix(table, self._dim(version))

    def image_vector_chunks(self, version: str, ids: np.ndarray | None = None, rows: int = 65_536):
        """Yield (ids, X) of `version` (only the given ids, when given) in chunks of at most `rows`
        vectors, ordered by id: DuckDB streams the result, so one chunk is in memory at a time."""
        import polars as pl

        dim = self._dim(version)
        sql = "SELECT e.id, e.vector FROM image_embeddings e WHERE e.version = ? ORDER BY e.id"
        frames = {}
        if ids is not None:
            frames["chunk_want"] = pl.DataFrame({"id": np.asarray(ids, dtype=np.int64)})
            sql = ("SELECT e.id, e.vector FROM image_embeddings e JOIN chunk_want USING (id) "
                   "WHERE e.version = ? ORDER BY e.id")
        with self.connect() as con, registered(con, **frames):
            reader = con.sql(sql, params=[version]).to_arrow_reader(rows)
            for batch in reader:
                if batch.num_rows:
                    yield ids_and_matrix(pl.from_arrow(batch), dim)

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
        with self.transaction() as con, registered(con, tb=frame):
            con.execute("DELETE FROM text_embeddings WHERE version = ? AND text_hash IN (SELECT text_hash FROM tb)", [version])
            con.execute("INSERT INTO text_embeddings SELECT ?, text_hash, text, vector FROM tb", [version])
        return frame.height

    def text_hashes(self, version: str) -> set[str]:
        """The text keys the version has an embedding for."""
        return set(self._column("SELECT text_hash FROM text_embeddings WHERE version = ?", [version]))

    def texts_missing(self, source: str, version: str):
        """text_hash, text of every text `source` has an embedding for and `version` has not."""
        return self._df("""SELECT p.text_hash, p.text FROM text_embeddings p WHERE p.version = ?
                             AND p.text_hash NOT IN (SELECT text_hash FROM text_embeddings WHERE version = ?)
                           ORDER BY p.text_hash""", [source, version])

    def upsert_prompts(self, df) -> None:
        """Insert prompt rows (finding, polarity, template, text); duplicates are ignored."""
        import polars as pl

        frame = df.select("finding", "polarity", "template", "text").with_columns(
            pl.col("text").map_elements(text_hash, return_dtype=pl.String).alias("text_hash")
        )
        with self.transaction() as con, registered(con, np_=frame):
            con.execute("INSERT OR IGNORE INTO prompts SELECT finding, polarity, template, text, text_hash FROM np_")

    def text_vectors(self, version: str | None = None):
        """(DataFrame[text_hash, text, finding, polarity, template], M float32 [m, d]): the stored
        prompts of `version` (prompts without an embedding in it are left out)."""
        version = self.resolve_version(version)
        table = self._df("""SELECT t.text_hash, p.text, p.finding, p.polarity, p.template, t.vector
                            FROM text_embeddings t JOIN prompts p USING (text_hash)
                            WHERE t.version = ? ORDER BY p.finding, p.polarity DESC, p.text""", [version])
        return table.drop("vector"), matrix(table["vector"], self._dim(version))

    def stored_text_vector(self, version: str, text: str) -> np.ndarray | None:
        """The stored embedding of exactly this text (case and spacing ignored), if any."""
        vector = self._scalar("SELECT vector FROM text_embeddings WHERE version = ? AND text_hash = ?",
                              [version, text_hash(text)])
        return None if vector is None else np.asarray(vector, dtype=np.float32)

    # ---- Parquet export and import (`embedstore export` / `import`) --------------------------
    def export_frame(self, version: str):
        """id, image_id, split, labels (a list of {finding, value}, value 1 / 0 / -1; a missing label
        is left out), vector of every image of `version`, by id: what `export` writes."""
        return self._df(
            """SELECT e.id, i.image_id, i.split,
                      coalesce((SELECT list({'finding': l.finding, 'value': l.value} ORDER BY l.finding)
                                FROM labels l WHERE l.id = e.id AND l.value IS NOT NULL), []) AS labels,
                      e.vector
               FROM image_embeddings e JOIN images i ON i.id = e.id WHERE e.version = ? ORDER BY e.id""", [version],
            memo=False)

    def unknown_image_ids(self, image_ids) -> list[str]:
        """The `image_ids` the store has no image of, in the order given."""
        import polars as pl

        want = pl.DataFrame({"image_id": pl.Series(list(image_ids), dtype=pl.String)}).with_row_index("n")
        with self.connect() as con, registered(con, want_ids=want):
            return [r[0] for r in con.sql("SELECT w.image_id FROM want_ids w ANTI JOIN images i USING (image_id) "
                                          "ORDER BY w.n").fetchall()]

    def add_vectors_by_image_id(self, version: str, image_ids: list[str], X: np.ndarray) -> int:
        """Write vectors made elsewhere for stored images (by `image_id`) in ONE transaction,
        replacing any older vector of those images in `version`; the images keep their content hash."""
        import polars as pl

        X = np.ascontiguousarray(X, dtype=np.float32)
        frame = pl.DataFrame({"image_id": pl.Series(list(image_ids), dtype=pl.String),
                              "vector": pl.Series(list(X), dtype=pl.List(pl.Float32))})
        with self.transaction() as con, registered(con, imported=frame):
            con.execute("""DELETE FROM image_embeddings WHERE version = ?
                             AND id IN (SELECT i.id FROM images i JOIN imported USING (image_id))""", [version])
            con.execute("""INSERT INTO image_embeddings SELECT ?, i.id, i.content_hash, b.vector
                           FROM imported b JOIN images i USING (image_id)""", [version])
            con.execute("UPDATE versions SET count = (SELECT count(*) FROM image_embeddings WHERE version = ?) "
                        "WHERE version = ?", [version, version])
        return frame.height

    # ---- what `query` reads ------------------------------------------------------------------
    def finding_prompts(self, version: str, name: str):
        """(texts, M) of the positive prompts of the finding called `name` (case, spaces and
        underscores ignored), in `text_vectors` form; empty when no finding has that name."""
        key = name.replace("_", " ").casefold().strip()
        texts, M = self.text_vectors(version)
        keep = [i for i, (f, p) in enumerate(zip(texts["finding"].to_list(), texts["polarity"].to_list()))
                if p == "positive" and f.replace("_", " ").casefold() == key]
        return texts[keep], M[keep]

    def stored_image_vector(self, version: str, image_id: str) -> tuple[int, np.ndarray | None] | None:
        """(id, vector in `version` or None) of a stored image; None when there is no such image."""
        rows = self._rows("""SELECT i.id, e.vector FROM images i LEFT JOIN image_embeddings e
                               ON e.id = i.id AND e.version = ? WHERE i.image_id = ? LIMIT 1""", [version, image_id])
        if not rows:
            return None
        row = rows[0]
        return int(row[0]), None if row[1] is None else np.asarray(row[1], dtype=np.float32)

    def matching_ids(self, version: str, where: str | None) -> np.ndarray:
        """Ids encoded in `version` whose images (and labels_wide columns) satisfy the predicate
        `where` (a read-only array; remembered while the file is unchanged on a read-only store)."""
        import duckdb

        from embedstore.errors import InputError

        def fetch():
            sql = "SELECT e.id FROM image_embeddings e WHERE e.version = ?"
            with self.connect() as con:
                if where:
                    sql = ("SELECT e.id FROM image_embeddings e JOIN images i ON i.id = e.id "
                           "LEFT JOIN (SELECT * EXCLUDE (image_id) FROM labels_wide) lw ON lw.id = e.id "
                           f"WHERE e.version = ? AND ({self.predicate(con, where)})")
                try:
                    rows = con.sql(sql + " ORDER BY e.id", params=[version]).fetchnumpy()
                except duckdb.Error as err:
                    raise InputError(f"--where {where!r}: {str(err).splitlines()[0]}") from None
            ids = np.asarray(rows["id"], dtype=np.int64)
            ids.setflags(write=False)
            return ids

        return self.memoised(("matching_ids", version, where), fetch)

    def describe_hits(self, ids: np.ndarray, scores: np.ndarray):
        """rank, score, image_id, path, view, labels (positive findings), id of ranked hits.

        A read-only store (a server's) of up to HIT_META_MAX images joins the hits to one frame of
        every image's metadata, read once while the file is unchanged, instead of a query each time."""
        import polars as pl

        hits = pl.DataFrame({"rank": np.arange(1, len(ids) + 1), "score": np.asarray(scores, np.float32),
                             "id": np.asarray(ids, np.int64)})
        if self._memo is not None and (self._scalar("SELECT count(*) FROM images") or 0) <= HIT_META_MAX:
            meta = self._df(f"SELECT i.id, i.image_id, i.path, i.view, {HIT_LABELS} FROM images i LEFT JOIN labels l "
                            "ON l.id = i.id GROUP BY i.id, i.image_id, i.path, i.view ORDER BY i.id")
            known = meta["id"].to_numpy()
            at = np.minimum(np.searchsorted(known, hits["id"].to_numpy()), max(len(known) - 1, 0))
            found = (known[at] == hits["id"].to_numpy()) if len(known) else np.zeros(hits.height, bool)
            rows = meta[at[found]].drop("id")
            return pl.concat([hits.filter(pl.Series(found)), rows], how="horizontal").select(
                "rank", "score", "image_id", "path", "view", "labels", "id")
        with self.connect() as con, registered(con, hits=hits):
            return con.sql(
                f"""SELECT h.rank, h.score, i.image_id, i.path, i.view, {HIT_LABELS}, h.id
                   FROM hits h JOIN images i ON i.id = h.id LEFT JOIN labels l ON l.id = h.id
                   GROUP BY h.rank, h.score, i.image_id, i.path, i.view, h.id ORDER BY h.rank""").pl()
