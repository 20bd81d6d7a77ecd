"""Versions: which model made which vectors, their lineage, and the images a fine-tune was fitted on."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedstore.errors import StoreError
from embedstore.store.keys import stable_hash
from embedstore.store.rows import first, now, registered

FIT_ROLES = ("train", "val")  # `fit_images.role`: the images a fine-tune trained and early-stopped on


@dataclass(frozen=True)
class Version:
    """One embedding version, read once: which model made it, from which parent, and (for a
    fine-tuned version) where its weights are. `models.load_model(version)` loads its model."""

    id: str
    parent: str | None
    kind: str  # "encode" | "finetune"
    model_name: str
    model_record: dict
    dtype: str
    dim: int | None
    logit_scale: float | None
    record_hash: str
    checkpoint: Path | None  # the fine-tuned weights (open_clip local-dir layout), else None
    finetune: dict | None  # the fine-tune's settings and head (objective, head, head_init, findings, key, ...)

    @property
    def pretrained(self) -> str | None:
        """The weights tag an encoded version's model was built with."""
        return self.model_record.get("pretrained")


class VersionTables:
    """The `versions`, `models` and `fit_images` tables (a part of `Storage`)."""

    # ---- versions ----------------------------------------------------------------------

    def versions(self):
        """One row per version: status, lineage, model, dimension, counts, index file, creation time.
        A version still `building` shows its progress (`images` of `expected`, a fine-tune's parent's)."""
        return self._df(
            """SELECT v.version, v.status, v.parent, v.kind, v.model_name, v.dim, v.dtype, v.logit_scale,
                      (SELECT count(*) FROM image_embeddings e WHERE e.version = v.version) AS images,
                      (SELECT count(*) FROM image_embeddings e WHERE e.version = v.parent) AS expected,
                      (SELECT count(*) FROM text_embeddings t WHERE t.version = v.version) AS texts,
                      (SELECT count(*) FROM errors r WHERE r.version = v.version) AS errors,
                      v.index_kind, v.index_params, v.index_file, v.created, v.code_version
               FROM versions v ORDER BY v.created, v.version"""
        )

    def resolve_version(self, version: str | None) -> str:
        """`version` if it exists, else the latest complete one; StoreError listing the known ones.

        A version still being built (an encode or fine-tune that has not finished) is never the
        default; asked for by name it is used, with a warning."""
        import warnings

        status = dict(self._rows("SELECT version, status FROM versions ORDER BY created, version"))
        if version is None:
            complete = [v for v, s in status.items() if s == "complete"]
            if complete:
                return complete[-1]
            if status:
                building = next(iter(status))
                raise StoreError(f"version {building} is still being built; finish it by running the same encode or "
                                 f"finetune again, or remove it with `embedstore versions --drop {building}`")
            raise StoreError(f"store {self.path} has no versions yet; run `embedstore encode SOURCE` first")
        if version not in status:
            raise StoreError(f"unknown version {version!r} in {self.path}; known: {', '.join(status) or 'none'}")
        warned = self.__dict__.setdefault("_warned_building", set())
        if status[version] != "complete" and not self.writing and version not in warned:  # once; not the writer's
            warned.add(version)
            warnings.warn(f"version {version} is still being built (a killed encode or finetune); its results cover "
                          "what it holds so far", stacklevel=2)
        return version

    def complete_version(self, version: str) -> None:
        """Mark a version whole: its encode or fine-tune has finished."""
        with self.transaction() as con:
            con.execute("UPDATE versions SET status = 'complete' WHERE version = ?", [version])

    def drop_version(self, version: str) -> None:
        """Remove a version and everything of it (vectors, texts, runs, fit images, errors, index file,
        checkpoint); StoreError while another version was made from it."""
        import shutil

        version = self.resolve_version(version)
        row = self.version_row(version)
        with self.transaction() as con:
            children = self._column("SELECT version FROM versions WHERE parent = ?", [version])
            if children:
                raise StoreError(f"version {version} is the parent of {', '.join(children)}; drop those first")
            for run_id in self._column("SELECT run_id FROM runs WHERE version = ?", [version]):
                self._delete_run(con, run_id)
            for table in ("image_embeddings", "text_embeddings", "fit_images", "errors", "versions"):
                con.execute(f"DELETE FROM {table} WHERE version = ?", [version])
        self.index_path(version).unlink(missing_ok=True)
        if row.get("checkpoint"):
            shutil.rmtree(self.path / row["checkpoint"], ignore_errors=True)

    def version_row(self, version: str) -> dict:
        """The raw `versions` row (counts and index bookkeeping too), for the store's own checks."""
        with self.connect() as con:
            cur = con.sql("SELECT * FROM versions WHERE version = ?", params=[version])
            return dict(zip(cur.columns, first(cur)))

    def version(self, version: str | None = None) -> Version:
        """The `Version` of `version` (the latest when None); StoreError listing the known ones."""
        version = self.resolve_version(version)
        row = self.version_row(version)
        record = json.loads(row["model_record"]) if isinstance(row["model_record"], str) else (row["model_record"] or {})
        return Version(
            id=version, parent=row["parent"], kind=row["kind"], model_name=row["model_name"], model_record=record,
            dtype=row["dtype"], dim=row["dim"], logit_scale=row["logit_scale"], record_hash=row["record_hash"],
            checkpoint=self.path / row["checkpoint"] if row.get("checkpoint") else None,
            finetune=record.get("finetune"))

    def next_version_id(self, con=None) -> str:
        """The id the next `create_version` gives ("v1", "v2", ...): read under the store's lock."""
        sql = "SELECT version FROM versions"
        rows = con.sql(sql).fetchall() if con is not None else self._rows(sql)
        nums = [int(m.group(1)) for (v,) in rows if (m := re.fullmatch(r"v(\d+)", v))]
        return f"v{max(nums, default=0) + 1}"

    def finetuned_with_key(self, key: str, run_kind: str) -> list[tuple[str, bool]]:
        """(version, whether its `run_kind` run is written) of every fine-tuned version made with
        `key`, newest first."""
        return [(v, bool(done)) for v, done in self._rows(
            """SELECT v.version, EXISTS (SELECT 1 FROM runs r WHERE r.version = v.version AND r.kind = ?)
               FROM versions v WHERE v.kind = 'finetune' AND v.finetune_key = ? ORDER BY v.created DESC""",
            [run_kind, key])]

    def find_version(self, model_record: dict, dtype: str, kind: str = "encode") -> str | None:
        """The version made by exactly this model record and dtype, if any."""
        return self._scalar("SELECT version FROM versions WHERE record_hash = ? AND kind = ? ORDER BY created LIMIT 1",
                            [stable_hash({"record": model_record, "dtype": dtype}), kind])

    def create_version(self, parent: str | None, model_record: dict, preprocess: Any, dtype: str, kind: str,
                       fit_ids: dict[str, np.ndarray] | None = None, checkpoint: str | None = None) -> str:
        """Register a new, empty version ("v1", "v2", ...) and return its id.

        `fit_ids` (role "train" / "val" -> image ids) are the images a fine-tuned version's model was
        trained and early-stopped on, written to `fit_images` with the version (`fitted_ids`);
        `checkpoint` is its weights folder relative to the store."""
        from embedstore.provenance import code_version

        with self.transaction() as con:
            version = self.next_version_id(con)
            name = str(model_record.get("name", "unknown"))
            con.execute(
                "INSERT INTO models VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET record = excluded.record",
                [name, json.dumps(model_record, default=str)],
            )
            con.execute(
                """INSERT INTO versions (version, parent, model_name, model_record, record_hash, preprocess,
                       dtype, normalized, dim, logit_scale, count, index_file, code_version, created, kind,
                       checkpoint, finetune_key)
                   VALUES (?, ?, ?, ?, ?, ?, ?, TRUE, ?, ?, 0, ?, ?, ?, ?, ?, ?)""",
                [
                    version, parent, name, json.dumps(model_record, default=str),
                    stable_hash({"record": model_record, "dtype": dtype}),
                    json.dumps(preprocess, default=str), dtype,
                    model_record.get("embed_dim"), model_record.get("logit_scale"),
                    f"index/{version}.faiss", code_version(), now(), kind,
                    checkpoint, (model_record.get("finetune") or {}).get("key"),
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
        with registered(con, fit_rows=frame):
            con.execute("INSERT INTO fit_images SELECT ?, id, role FROM fit_rows", [version])

    def fitted_ids(self, version: str) -> dict[str, np.ndarray]:
        """role ("train", "val") -> sorted int64 ids the version's model was fitted or early-stopped
        on, its ancestors' included (`versions.parent`): a model tuned from a tuned parent has seen
        the parent's images too."""
        rows = self._rows(
            """WITH RECURSIVE lineage(version) AS (
                   SELECT ?::TEXT
                   UNION SELECT v.parent FROM versions v JOIN lineage l USING (version) WHERE v.parent IS NOT NULL)
               SELECT DISTINCT role, id FROM fit_images WHERE version IN (SELECT version FROM lineage)
               ORDER BY role, id""", [version])
        return {role: np.array([i for r, i in rows if r == role], dtype=np.int64) for role in FIT_ROLES}
