"""The store: one DuckDB file plus FAISS index files in a directory.

`Storage` knows nothing of models: it keeps the vectors and the model *record* (a dict) it is
given. Writers take an exclusive lock (`lock`, holding the writer's PID); readers open DuckDB
read-only and never take the lock. Every write is a DuckDB transaction; index files are
written to a temporary file and renamed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from embedstore.errors import StoreBusy, StoreError
from embedstore.store import schema
from embedstore.store.images import ImageTables
from embedstore.store.index import IndexFiles
from embedstore.store.lock import WriteLock
from embedstore.store.quality import QualityTables
from embedstore.store.reads import SummaryReads
from embedstore.store.runs import RunTables
from embedstore.store.shards import ShardFiles
from embedstore.store.vectors import VectorTables
from embedstore.store.versions import VersionTables

DB_NAME = "embedstore.duckdb"
DEFAULT_STORE = ".embedstore"


def default_path(path: str | os.PathLike | None = None) -> Path:
    """`path`, else $EMBEDSTORE_STORE, else ./.embedstore."""
    return Path(path or os.environ.get("EMBEDSTORE_STORE") or DEFAULT_STORE)


class Storage(VersionTables, ImageTables, VectorTables, IndexFiles, RunTables, SummaryReads, QualityTables,
              ShardFiles):
    """A store directory: `embedstore.duckdb`, `index/<version>.faiss`, `shards/<version>/`, `lock`. Internal: users
    reach it through `embedstore.open()`'s `Store`; services receive this object.

    `Storage(path=None)` resolves `path`, else $EMBEDSTORE_STORE, else ./.embedstore; the
    directory and database are created on first write. Each table family's reads and writes
    live in its own module (versions, images, vectors, index, runs, quality); this class holds the
    connection and the lock.
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = default_path(path).expanduser().resolve()
        self.db_path = self.path / DB_NAME
        self.index_dir = self.path / "index"
        self._lock = WriteLock(self.path / "lock")
        self._con = None  # the open write connection, shared by nested `connect(write=True)`
        self._layout_checked = False  # the file's layout is checked (and migrated) once per object

    def __repr__(self) -> str:
        return f"Storage({str(self.path)!r})"

    def writable(self) -> bool:
        """Whether this process may write the store's files (a read-only copy or mount is not)."""
        return all(os.access(p, os.W_OK) for p in (self.path, self.db_path) if p.exists())

    @property
    def lock_fd(self) -> int | None:
        """The writer lock's file descriptor while this process holds it (forked children close it)."""
        return self._lock.fd

    # ---- connections -------------------------------------------------------------------
    @contextlib.contextmanager
    def connect(self, write: bool = False, external: bool = False) -> Iterator[Any]:
        """A DuckDB connection. `write=True` takes the store lock (StoreBusy if held).

        Readers open the file read-only and never block on the lock; while another process
        holds the DuckDB file open for writing, DuckDB refuses readers and that becomes
        the same StoreBusy message. Reading a store that does not exist is a StoreError that
        creates nothing. Every connection has DuckDB's external access off and its configuration
        locked (no file, network, extension or setting reachable from SQL) unless `external`.
        """
        import duckdb

        if self.path.exists() and not self.path.is_dir():
            raise StoreError(f"--store {self.path} is a file, not a store directory; give a folder")
        if write:
            if self._con is not None:  # nested use inside one writer
                yield self._con
                return
            self._lock.acquire()
            try:
                self.path.mkdir(parents=True, exist_ok=True)
                con = self._open(duckdb, read_only=False, external=external)
                try:
                    if not self._layout_checked:
                        schema.migrate(con, self.path)
                        self._layout_checked = True
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
            raise StoreError(f"no store at {self.path}; encode a data set into it first "
                             f"(`embedstore encode SOURCE --store {self.path}`) or check --store")
        if not self._layout_checked and self._needs_migration(duckdb):
            with self.connect(write=True):  # migrate a store written by an older embedstore
                pass
        con = self._open(duckdb, read_only=True, external=external)
        try:
            yield con
        finally:
            con.close()

    def _needs_migration(self, duckdb) -> bool:
        con = self._open(duckdb, read_only=True)
        try:
            layout = schema.stored_version(con)
        finally:
            con.close()
        schema.check_readable(layout, self.path)
        self._layout_checked = layout == schema.SCHEMA_VERSION
        return not self._layout_checked

    def _open(self, duckdb, read_only: bool, external: bool = False):
        config = {} if external else {"enable_external_access": False, "lock_configuration": True}
        try:
            return duckdb.connect(str(self.db_path), read_only=read_only, config=config)
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

    def _rows(self, sql: str, params: list | None = None) -> list[tuple]:
        """Run a read query and return its rows."""
        with self.connect() as con:
            return con.sql(sql, params=params).fetchall()

    def _column(self, sql: str, params: list | None = None) -> list:
        """Run a read query and return its first column."""
        return [r[0] for r in self._rows(sql, params)]

    def _scalar(self, sql: str, params: list | None = None):
        """Run a read query and return the first column of its first row (None when it has none)."""
        rows = self._rows(sql, params)
        return rows[0][0] if rows else None
