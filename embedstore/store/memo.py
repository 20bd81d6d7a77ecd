"""A read-only store's memo of read results, valid for one snapshot of the DuckDB file.

A server's store is opened read-only and asked the same few small questions on every request
(which version is the latest, a stored text's vector, the prompts of a finding, the index's
recorded count). Opening the file costs tens of milliseconds; answering from memory costs two
`os.stat` calls. The snapshot is `os.stat` of `embedstore.duckdb` and of its `.wal` (inode, size,
mtime_ns, ctime_ns; an absent WAL is None): every commit changes one of them, so a reader still
sees every commit, and any change drops every answer remembered before it.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

ENTRIES = 256  # answers remembered, least recently used first out
ENTRY_BYTES = 32 * 1024 * 1024  # a larger answer (every image vector of a version) is read each time
TOTAL_BYTES = 256 * 1024 * 1024
MISSING = object()


def snapshot(db_path: Path) -> tuple | None:
    """The file's state (None when there is no file): changes on every commit."""
    try:
        db = os.stat(db_path)
    except OSError:
        return None
    try:
        w = os.stat(f"{db_path}.wal")
        wal = (w.st_ino, w.st_size, w.st_mtime_ns, w.st_ctime_ns)
    except OSError:
        wal = None
    return db.st_ino, db.st_size, db.st_mtime_ns, db.st_ctime_ns, wal


def freeze(params) -> tuple | None:
    """Query parameters as a hashable key (None when one is neither a scalar nor a list of them)."""
    out = []
    for p in params or ():
        if isinstance(p, (list, tuple)):
            p = ("list", *p)
        try:
            hash(p)
        except TypeError:
            return None
        out.append(p)
    return tuple(out)


def size_of(value) -> int:
    """Bytes an answer holds, roughly: a polars frame's estimate; rows at 64 bytes a value."""
    if hasattr(value, "estimated_size"):
        return int(value.estimated_size())
    if hasattr(value, "nbytes"):
        return int(value.nbytes)
    if isinstance(value, list):
        return sum(sum(64 * (len(v) if isinstance(v, list) else 1) for v in row) if isinstance(row, tuple) else 64
                   for row in value) + 64
    return 64


class ReadMemo:
    """Answers keyed by (what was asked, snapshot); thread-safe, bounded by count and bytes."""

    def __init__(self, entries: int = ENTRIES, entry_bytes: int = ENTRY_BYTES, total_bytes: int = TOTAL_BYTES):
        self.entries, self.entry_bytes, self.total_bytes = entries, entry_bytes, total_bytes
        self._items: OrderedDict = OrderedDict()  # key -> (value, bytes)
        self._bytes = 0
        self._snap = None  # the snapshot the remembered answers belong to
        self._lock = threading.Lock()
        self._fetching: dict = {}  # (key, snap) -> Event: one thread reads what the others wait for
        self.hits = self.misses = 0

    def get(self, key, snap):
        with self._lock:
            found = self._items.get((key, snap), MISSING) if snap == self._snap else MISSING
            if found is MISSING:
                self.misses += 1
                return MISSING
            self._items.move_to_end((key, snap))
            self.hits += 1
            return found[0]

    def claim(self, key, snap) -> tuple[bool, threading.Event]:
        """(whether this thread is to read it, the event set when that read ends): the first
        thread to miss an answer reads it, the others may wait instead of reading it too (right
        after a commit every request misses at once)."""
        with self._lock:
            event = self._fetching.get((key, snap))
            if event is not None:
                return False, event
            event = self._fetching[(key, snap)] = threading.Event()
            return True, event

    def done(self, key, snap) -> None:
        with self._lock:
            event = self._fetching.pop((key, snap), None)
        if event is not None:
            event.set()

    def put(self, key, snap, value) -> None:
        size = size_of(value)
        if size > self.entry_bytes:
            return
        with self._lock:
            if snap != self._snap:  # the file changed: nothing remembered before holds
                self._items.clear()
                self._bytes, self._snap = 0, snap
            old = self._items.pop((key, snap), None)
            if old is not None:
                self._bytes -= old[1]
            self._items[(key, snap)] = (value, size)
            self._bytes += size
            while self._items and (len(self._items) > self.entries or self._bytes > self.total_bytes):
                self._bytes -= self._items.popitem(last=False)[1][1]

    def __len__(self) -> int:
        return len(self._items)
