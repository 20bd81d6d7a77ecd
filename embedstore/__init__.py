"""embedstore: encode chest radiographs and label prompts once, then analyse, query and explain.

    import embedstore
    st = embedstore.open("./.embedstore")   # an embedstore.api.Store: the CLI's commands as methods

Importing this package is cheap: torch, open_clip and faiss load only inside the functions that
need them, so `embedstore --help`, `query` on stored text and `sql` start fast.
"""

from embedstore.provenance import __version__, code_version  # noqa: F401 - the package's own version

__all__ = ["Store", "__version__"]  # no "open": `from embedstore import *` must not shadow the builtin


def open(path=None):  # noqa: A001 - mirrors the CLI's --store
    """The store at `path` (else $EMBEDSTORE_STORE, else ./.embedstore), created on first write."""
    from embedstore.api import Store

    return Store(path)


def __getattr__(name: str):
    if name == "Store":  # lazily, so that importing the package stays cheap
        from embedstore.api import Store

        return Store
    raise AttributeError(f"module 'embedstore' has no attribute {name!r}")
