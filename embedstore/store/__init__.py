"""The store: DuckDB tables + FAISS index files (see docs/architecture.md). Owns all SQL.

Internal to embedstore: users open a store with `embedstore.open(path)`; services receive the
`Storage` object it holds.

May import: data (splits), files, errors (never models, torch or a service).
"""

from embedstore.store.keys import fingerprint, stable_hash, text_hash
from embedstore.store.storage import Storage, default_path

__all__ = ["Storage", "default_path", "fingerprint", "stable_hash", "text_hash"]
