"""The store: DuckDB tables + FAISS index files (see docs/architecture.md)."""

from embedstore.store.store import Store, default_path, stable_hash, text_hash

__all__ = ["Store", "default_path", "stable_hash", "text_hash"]
