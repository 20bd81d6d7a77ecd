"""The `embedstore` command line: thin wrappers that parse options and call the Python API.

Each command group lives in its own module and imports heavy libraries only inside
the command body, so `embedstore --help` stays fast.
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
        from embedstore import code_version

        print(code_version())
        raise typer.Exit()


# Register command groups (each module adds its commands to `app`), in the order of the study.
from embedstore.cli import datasets as _datasets  # noqa: E402,F401  inspect
from embedstore.cli import images as _images  # noqa: E402,F401  preview
from embedstore.cli import synth as _synth  # noqa: E402,F401  synth
from embedstore.cli import store as _store  # noqa: E402,F401  encode, query, sql, versions, verify
from embedstore.cli import splits as _splits  # noqa: E402,F401  splits
from embedstore.cli import analyses as _analyses  # noqa: E402,F401  zeroshot, probe, separability, runs
from embedstore.cli import finetune as _finetune  # noqa: E402,F401  finetune, compare
from embedstore.cli import explain as _explain  # noqa: E402,F401  explain, agreement
from embedstore.cli import report as _report  # noqa: E402,F401  report
from embedstore.cli import demo as _demo  # noqa: E402,F401  demo

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
