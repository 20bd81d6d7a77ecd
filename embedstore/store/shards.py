"""Embedding shards: Parquet files an `encode --engine ray` run writes under the store, one per
Ray Data block, and their ingestion into `image_embeddings` (a part of `Storage`).

A shard is committed when its file is whole: Parquet writes its footer last, so a file cut off
by a killed job does not open, and is deleted (its images were never stored and are encoded
again). Each whole shard is ingested in ONE transaction through `add_image_vectors` (vectors,
content hashes, sizes and the shard's errors, replacing any older vector of the same id), then
deleted; a shard ingested twice (a kill between the commit and the delete) changes nothing, as
(version, id) is the table's key.

The shards are *ingested*, not read in place: `image_embeddings` stays the one source of truth
every reader, the index builder and `verify` read, behind its (version, id) key; readers keep
DuckDB's external file access off; and the store stays one file to copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SHARD_COLUMNS = ("id", "content_hash", "vector", "width", "height", "image_id", "path", "stage", "reason")


@dataclass
class Ingested:
    """What `ingest_shards` stored: vectors, error rows (with the errors themselves), shards."""

    encoded: int = 0
    failed: int = 0
    shards: int = 0
    discarded: int = 0  # files cut off by a killed job: deleted, their images encoded again
    errors: list[dict] = field(default_factory=list)
    ids: set[int] = field(default_factory=set)  # the images stored


class ShardFiles:
    """`shards/<version>/*.parquet` (a part of `Storage`)."""

    def shard_dir(self, version: str) -> Path:
        return self.path / "shards" / version

    def pending_shards(self, version: str) -> list[Path]:
        """The shard files of `version` not ingested yet (left by an interrupted run, or this one's)."""
        folder = self.shard_dir(version)
        return sorted(folder.glob("*.parquet")) if folder.is_dir() else []

    def ingest_shards(self, version: str) -> Ingested:
        """Store every whole shard of `version`, one transaction per shard, and delete it."""
        import pyarrow.parquet as pq

        done = Ingested()
        for shard in self.pending_shards(version):
            try:
                table = pq.read_table(shard, columns=list(SHARD_COLUMNS))
            except Exception:  # noqa: BLE001 - a file cut off mid-write: never committed
                shard.unlink(missing_ok=True)
                done.discarded += 1
                continue
            rows = table.to_pydict()
            ok = [i for i, v in enumerate(rows["vector"]) if v is not None]
            errors = [{k: rows[k][i] for k in ("image_id", "path", "stage", "reason")}
                      for i, v in enumerate(rows["vector"]) if v is None]
            X = np.asarray([rows["vector"][i] for i in ok], dtype=np.float32).reshape(len(ok), -1)
            self.add_image_vectors(version, np.asarray([rows["id"][i] for i in ok], dtype=np.int64),
                                   [rows["content_hash"][i] for i in ok], X,
                                   sizes=[(rows["width"][i], rows["height"][i]) for i in ok], errors=errors)
            shard.unlink()
            done.ids.update(int(rows["id"][i]) for i in ok)
            done.encoded += len(ok)
            done.failed += len(errors)
            done.errors += errors
            done.shards += 1
        return done
