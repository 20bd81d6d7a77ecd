"""The store: one DuckDB file plus FAISS index files in a directory.

`Storage` knows nothing of models: it keeps the vectors and the model *record* (a dict) it is
given. Writers take an exclusive lock (`lock`, holding the writer's PID) for their whole command
but open the DuckDB file only while they write; readers open it read-only, never take the lock,
and retry for a bounded time while a writer commits. Every write is a DuckDB transaction; index
files are written to a temporary file and renamed.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from embedstore.errors import StoreBusy, StoreError
from embedstore.store import schema
from embedstore.store.images import ImageTables
from embedstore.store.index import IndexFiles
from embedstore.store.lock import WriteLock
from embedstore.store.memo import MISSING, ReadMemo, freeze, snapshot
from embedstore.store.quality import QualityTables
from embedstore.store.reads import SummaryReads
from embedstore.store.runs import RunTables
from embedstore.store.shards import ShardFiles
from embedstore.store.vectors import VectorTables
from embedstore.store.versions import VersionTables

DB_NAME = "embedstore.duckdb"
DEFAULT_STORE = ".embedstore"
BUSY_TIMEOUT_S = 10.0  # how long a reader retries while a writer commits, unless $EMBEDSTORE_BUSY_TIMEOUT
WRITER_WAIT_S = 60.0  # how long a writer's commit waits for readers' connections to close
WAITING_NAME = "commit-waiting"  # a writer touches it while readers keep it from the file
WAITING_FRESH_S = 2.0  # a marker older than this is a dead writer's: readers ignore it
# DuckDB's Python client shares one database instance among a process's connections to a file;
# opening and closing them from many threads at once can hand out an instance whose Python table
# functions are not registered yet ("python_arrow_scan does not exist"): they are serialised.
_CONNECT_LOCK = threading.RLock()  # re-entrant: a collected generator may close its connection inside an open


def busy_timeout() -> float:
    """Seconds a connection retries a file held by another process: $EMBEDSTORE_BUSY_TIMEOUT, else 10."""
    raw = os.environ.get("EMBEDSTORE_BUSY_TIMEOUT")
    try:
        return max(0.0, float(raw)) if raw else BUSY_TIMEOUT_S
    except ValueError:
        raise StoreError(f"EMBEDSTORE_BUSY_TIMEOUT={raw!r} is not a number of seconds; set e.g. 10") from None


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

    def __init__(self, path: str | os.PathLike | None = None, read_only: bool = False):
        self.path = default_path(path).expanduser().resolve()
        self.read_only = read_only  # a server's store: every write refused, no cache written
        self.db_path = self.path / DB_NAME
        self.index_dir = self.path / "index"
        self._lock = WriteLock(self.path / "lock")
        self._con = None  # the open write connection, shared by nested `connect(write=True)`
        self._layout_checked = False  # the file's layout is checked (and migrated) once per object
        self._view_checked = False  # labels_wide is checked once per writer session
        self._loaded_indexes: dict = {}  # version -> (file key, FAISS index): `load_index`'s
        self._reads = threading.local()  # this thread's `reading()` block: depth, its connection
        # a read-only store (a server's) remembers its reads while the file is unchanged (store/memo.py)
        self._memo = ReadMemo() if read_only else None

    def __repr__(self) -> str:
        return f"Storage({str(self.path)!r})"

    def writable(self) -> bool:
        """Whether this process may write the store's files (a read-only copy or mount is not, nor a
        store opened `read_only`)."""
        return not self.read_only and all(os.access(p, os.W_OK) for p in (self.path, self.db_path) if p.exists())

    @property
    def lock_fd(self) -> int | None:
        """The writer lock's file descriptor while this process holds it (forked children close it)."""
        return self._lock.fd

    # ---- connections -------------------------------------------------------------------
    def _busy_message(self, read_only: bool, err) -> str:
        """Who holds the file: for a reader, the writer that holds the lock; for a writer (which
        holds the lock itself), the readers DuckDB names (e.g. a `duckdb` shell left open)."""
        if read_only:
            return f"store busy, held by PID {self._lock.holder()} ({self.path}); try again when it finishes"
        return (f"store busy: {self.db_path} is open elsewhere ({str(err).splitlines()[0]}); "
                "close other sessions on it (e.g. a `duckdb` shell) and run the command again")

    @contextlib.contextmanager
    def writer(self) -> Iterator[None]:
        """Hold the store's writer lock (StoreBusy if another process holds it) for a whole
        command, without holding the DuckDB file: each write inside opens the file, commits and
        closes it (`connect(write=True)`), so readers get in between commits. Nested use is free.
        """
        if self._lock.fd is not None:
            yield
            return
        self._refuse_read_only()
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(f"--store {self.path} is a file, not a store directory; give a folder")
        self._lock.acquire()
        self._view_checked = False
        try:
            yield
        finally:
            self._lock.release()

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """A writer's run of short reads and writes on one connection: the block's store calls
        share one write connection (each write still its own transaction) instead of opening the
        file each (~30 ms CPU apiece). Readers wait while it is open: keep model work and other
        slow steps outside. Takes the writer lock as `connect(write=True)` does; nested use is free."""
        with self.connect(write=True):
            yield

    @contextlib.contextmanager
    def _appender(self) -> Iterator[None]:
        """A write without the writer lock (`connect(lock=False)`): refused on a read-only store."""
        self._refuse_read_only()
        yield

    def _refuse_read_only(self) -> None:
        if self.read_only:
            raise StoreError(f"the store {self.path} is opened read-only (a server's store); "
                             "run the writing command without `embedstore serve`'s store")

    @property
    def writing(self) -> bool:
        """Whether this process holds the store's writer lock (inside `writer()`)."""
        return self._lock.fd is not None

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Inside the block, this thread's reads share one read-only connection, opened at the
        first read and closed at the end (a query's half-dozen reads then open the file once, not
        each time). A write inside closes it first; the next read opens another. Keep the block
        short: a writer's commit waits for the connection to close. Nested use is free."""
        local = self._reads
        if getattr(local, "depth", 0):
            local.depth += 1
            try:
                yield
            finally:
                local.depth -= 1
            return
        local.depth, local.con = 1, None
        try:
            yield
        finally:
            local.depth = 0
            self.release_reads()

    def release_reads(self) -> None:
        """Close this thread's shared read connection now (before slow work inside `reading()`,
        such as loading a model, so a writer's commit does not wait on it); the next read reopens."""
        con, self._reads.con = getattr(self._reads, "con", None), None
        if con is not None:
            _close(con)

    @contextlib.contextmanager
    def connect(self, write: bool = False, external: bool = False, lock: bool = True) -> Iterator[Any]:
        """A DuckDB connection, open only for the block. `write=True` takes the store's writer lock
        (StoreBusy if another process holds it) unless `writer()` holds it already, or unless
        `lock=False`: an append that needs only the file (an analysis storing its run), which then
        gets in between a running writer's commits as readers do.

        Readers open the file read-only and never take the lock. DuckDB lets one process open the
        file for writing or many for reading, never both: a connection that meets the other kind
        retries for `busy_timeout()` seconds (`$EMBEDSTORE_BUSY_TIMEOUT`, default 10) before it is
        the StoreBusy message; writers hold the file only while they write, so readers get in
        between commits. Inside `writer()` reads use the writer's kind of connection (nested
        writes reuse it). Reading a store that does not exist is a StoreError that creates
        nothing. Every connection has DuckDB's external access off and its configuration locked
        (no file, network, extension or setting reachable from SQL) unless `external`.
        """
        import duckdb

        if self.path.exists() and not self.path.is_dir():
            raise StoreError(f"--store {self.path} is a file, not a store directory; give a folder")
        if self._con is not None:  # nested use inside one write connection
            yield self._con
            return
        if write or self.writing:
            self.release_reads()  # one process cannot hold the file read-only and for writing
            with self.writer() if lock or self.writing else self._appender():
                self.path.mkdir(parents=True, exist_ok=True)
                con = self._open(duckdb, read_only=False, external=external)
                try:
                    if not self._layout_checked:
                        schema.migrate(con, self.path)
                        self._layout_checked = True
                    if not self._view_checked:
                        self._ensure_labels_view(con)
                        self._view_checked = True
                    self._con = con
                    yield con
                finally:
                    self._con = None
                    _close(con)
            return
        if not self.db_path.exists():
            raise StoreError(f"no store at {self.path}; encode a data set into it first "
                             f"(`embedstore encode SOURCE --store {self.path}`) or check --store")
        if not self._layout_checked and self._needs_migration(duckdb):
            if not self.writable():
                raise StoreError(f"store {self.path} was written by an older embedstore and must be migrated once; "
                                 "run any command on it where it is writable (e.g. `embedstore versions`)")
            with self.connect(write=True):  # migrate a store written by an older embedstore
                pass
        shared = getattr(self._reads, "depth", 0) and not external
        if shared and self._reads.con is not None:
            yield self._reads.con
            return
        con = self._open(duckdb, read_only=True, external=external)
        if shared:
            self._reads.con = con  # closed by `reading()`
            yield con
            return
        try:
            yield con
        finally:
            _close(con)

    def _needs_migration(self, duckdb) -> bool:
        con = self._open(duckdb, read_only=True)
        try:
            layout = schema.stored_version(con)
        finally:
            _close(con)
        schema.check_readable(layout, self.path)
        self._layout_checked = layout == schema.SCHEMA_VERSION
        return not self._layout_checked

    def _open(self, duckdb, read_only: bool, external: bool = False):
        """Open the file, retrying while another process holds it in the other mode: readers for
        `busy_timeout()` seconds, writers (whose commit waits on readers' short reads) at least 60.

        A writer kept out by readers touches `commit-waiting` in the store on every try; readers
        do not open the file while it is fresh (a busy server would otherwise always hold it
        somewhere and starve the writer), so the writer gets in once their open reads end."""
        config = {} if external else {"enable_external_access": False, "lock_configuration": True}
        wait = busy_timeout() if read_only else max(busy_timeout(), WRITER_WAIT_S)
        deadline, pause = time.monotonic() + wait, 0.005
        waiting = self.path / WAITING_NAME
        marked = False
        try:
            while True:
                if not (read_only and self._writer_waiting(waiting)):
                    try:
                        with _CONNECT_LOCK:
                            return duckdb.connect(str(self.db_path), read_only=read_only, config=config)
                    except duckdb.IOException as err:
                        if "lock" not in str(err).lower():
                            raise StoreError(f"cannot open {self.db_path}: {str(err).splitlines()[0]}") from None
                        if time.monotonic() >= deadline:
                            raise StoreBusy(self._busy_message(read_only, err)) from None
                        if not read_only:
                            waiting.touch()
                            marked = True
                elif time.monotonic() >= deadline:
                    raise StoreBusy(self._busy_message(read_only, "a writer is waiting to commit"))
                time.sleep(pause)
                pause = min(pause * 2, 0.05)
        finally:
            if marked:
                waiting.unlink(missing_ok=True)

    @staticmethod
    def _writer_waiting(marker: Path) -> bool:
        try:
            return time.time() - marker.stat().st_mtime < WAITING_FRESH_S
        except OSError:
            return False

    @contextlib.contextmanager
    def transaction(self, lock: bool = True) -> Iterator[Any]:
        """A write connection inside BEGIN ... COMMIT (ROLLBACK on any error); `lock` as in `connect`."""
        with self.connect(write=True, lock=lock) as con:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def _df(self, sql: str, params: list | None = None, memo: bool = True):
        """Run a read query and return a polars DataFrame (`memo=False`: never remembered, for a
        large answer such as a version's vectors)."""
        def fetch():
            with self.connect() as con:
                return con.sql(sql, params=params).pl()

        found = self.memoised(_key("df", sql, params) if memo else None, fetch)
        return found.clone() if found is not None else found

    def _rows(self, sql: str, params: list | None = None) -> list[tuple]:
        """Run a read query and return its rows."""
        def fetch():
            with self.connect() as con:
                return con.sql(sql, params=params).fetchall()

        return list(self.memoised(_key("rows", sql, params), fetch))

    def memoised(self, key: tuple | None, fetch):
        """`fetch()`, remembered under `key` while the DuckDB file is unchanged, on a read-only
        store (a server's): a repeated read then opens nothing. Any commit changes the file's
        snapshot (store/memo.py), so readers still see it. Other stores, or no key, always fetch."""
        memo = self._memo
        if memo is None or key is None or self._con is not None:
            return fetch()
        snap = snapshot(self.db_path)  # before the read: a commit after it gives the next read a new key
        if snap is None:
            return fetch()
        found = memo.get(key, snap)
        if found is not MISSING:
            return found
        mine, fetched = memo.claim(key, snap)
        if not mine and getattr(self._reads, "con", None) is None:
            # another thread reads it; this one holds no connection a writer could wait on, so it waits
            fetched.wait(busy_timeout())
            found = memo.get(key, snap)
            if found is not MISSING:
                return found
        try:
            found = fetch()
            memo.put(key, snap, found)
        finally:
            if mine:
                memo.done(key, snap)
        return found

    def _column(self, sql: str, params: list | None = None) -> list:
        """Run a read query and return its first column."""
        return [r[0] for r in self._rows(sql, params)]

    def _scalar(self, sql: str, params: list | None = None):
        """Run a read query and return the first column of its first row (None when it has none)."""
        rows = self._rows(sql, params)
        return rows[0][0] if rows else None


def _key(kind: str, sql: str, params) -> tuple | None:
    frozen = freeze(params)
    return None if frozen is None else (kind, sql, frozen)


def _close(con) -> None:
    with _CONNECT_LOCK:
        con.close()
