"""embedstore: encode chest radiographs and label prompts once, then analyse, query and explain.

Importing this package is cheap: torch, open_clip and faiss load only inside the
functions that need them, so `embedstore --help`, `query` on stored text and `sql` start fast.
"""

__version__ = "0.1.0"


def open(path=None):  # noqa: A001 - mirrors the CLI's --store
    """Open (or create) the store at `path` (else $EMBEDSTORE_STORE, else ./.embedstore)."""
    from embedstore.api import Store

    return Store(path)


def code_version() -> str:
    """Package version plus the git commit when running from a checkout, for provenance."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=2,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__}+{commit}" if commit else __version__
