"""What every stored version and run records about the code that made it."""

from __future__ import annotations

__version__ = "0.1.0"


def code_version() -> str:
    """The package version, plus the git commit when this package runs from its own checkout
    (never the commit of another repository that happens to enclose an installed copy)."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists() or not (root / "pyproject.toml").is_file():
        return __version__
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=2).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__}+{commit}" if commit else __version__
