"""The `embedstore` command line: thin wrappers that parse options and call the Python API
(`embedstore.api`), nothing else.

Each command lives in a module of its name (options shared by many are in `options.py`), and
heavy libraries load only inside the API call, so `embedstore --help` stays fast.

May import: embedstore.api, errors (and typer, rich).
"""

from __future__ import annotations

import sys

import typer

app = typer.Typer(
    name="embedstore",
    help="Encode chest radiographs and label prompts once; analyse, query and explain the embeddings.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

@app.callback(invoke_without_command=True)
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    """Encode chest radiographs and label prompts once; analyse, query and explain the embeddings."""
    if version:
        from embedstore.provenance import code_version

        print(code_version())
        raise typer.Exit()


# Register the commands (each module, named after its commands, adds them to `app`), in the order of the study.
from embedstore.cli import inspect as _inspect  # noqa: E402,F401
from embedstore.cli import preview as _preview  # noqa: E402,F401
from embedstore.cli import synth as _synth  # noqa: E402,F401
from embedstore.cli import encode as _encode  # noqa: E402,F401
from embedstore.cli import query as _query  # noqa: E402,F401
from embedstore.cli import sql as _sql  # noqa: E402,F401
from embedstore.cli import versions as _versions  # noqa: E402,F401  versions, verify
from embedstore.cli import splits as _splits  # noqa: E402,F401
from embedstore.cli import zeroshot as _zeroshot  # noqa: E402,F401
from embedstore.cli import probe as _probe  # noqa: E402,F401
from embedstore.cli import separability as _separability  # noqa: E402,F401
from embedstore.cli import runs as _runs  # noqa: E402,F401  runs, stability, seed-table
from embedstore.cli import compare as _compare  # noqa: E402,F401
from embedstore.cli import finetune as _finetune  # noqa: E402,F401
from embedstore.cli import explain as _explain  # noqa: E402,F401
from embedstore.cli import agreement as _agreement  # noqa: E402,F401
from embedstore.cli import report as _report  # noqa: E402,F401
from embedstore.cli import demo as _demo  # noqa: E402,F401


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: user errors become one line and a non-zero exit code."""
    from embedstore.errors import EmbedstoreError

    try:
        app(args=argv, prog_name="embedstore")  # standalone: usage errors exit by themselves
    except EmbedstoreError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)

if __name__ == "__main__":
    main()
