"""The `embedstore` command line: thin wrappers that parse options and call the Python API
(`embedstore.api`), nothing else.

Each command lives in a module of its name (options shared by many are in `options.py`), and
heavy libraries load only inside the API call, so `embedstore --help` stays fast.

May import: embedstore.api, errors (and typer, rich).
"""

from __future__ import annotations

import importlib
import sys

import typer

app = typer.Typer(
    name="embedstore",
    help="Encode chest radiographs and label prompts once; analyse, query and explain the embeddings.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DEBUG = {"on": False}  # --debug: let tracebacks through


@app.callback(invoke_without_command=True)
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show Python tracebacks instead of one-line errors."),
) -> None:
    """Encode chest radiographs and label prompts once; analyse, query and explain the embeddings."""
    DEBUG["on"] = debug
    if version:
        from embedstore.provenance import code_version

        print(code_version())
        raise typer.Exit()


# The command modules, in the order of the study: each, named after its commands, adds them to `app`
# (`versions`: versions and verify; `runs`: runs, stability and seed-table).
COMMAND_MODULES = ("inspect", "preview", "synth", "encode", "query", "sql", "versions", "splits", "zeroshot", "probe",
                   "separability", "duplicates", "label_issues", "index",
                   "infer_views", "runs", "compare", "transfer", "finetune", "explain", "agreement", "report", "demo",
                   "serve")
for _module in COMMAND_MODULES:
    importlib.import_module(f"embedstore.cli.{_module}")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point, the CLI's one error boundary: every expected failure is one line,
    `error: ...`, and an exit code (2 bad input, 3 partial success, 75 store busy; 1 anything
    else); a Python traceback only with --debug."""
    from embedstore.errors import EmbedstoreError

    import logging
    import warnings

    # Libraries that log tracebacks of their own (pydicom on an unreadable file) stay quiet: our
    # error line says what happened.
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    warnings.showwarning = lambda message, *_, **__: print(f"warning: {message}", file=sys.stderr)
    try:
        code = app(args=argv, prog_name="embedstore", standalone_mode=False)
    except typer.Abort:
        _fail("interrupted", 130)
    except typer.TyperException as err:  # a bad option or argument: one line, and where the help is
        ctx = getattr(err, "ctx", None)
        where = ctx.command_path if ctx is not None else "embedstore"
        _fail(f"{err.format_message()} (see `{where} --help`)", getattr(err, "exit_code", 2))
    except EmbedstoreError as err:
        _fail(str(err), err.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as err:  # noqa: BLE001 - the boundary: one line, not a traceback
        if DEBUG["on"]:
            raise
        _fail(_describe(err), 2 if isinstance(err, OSError) else 1)
    # Always exit, as click's standalone mode does: typer.Exit(code) from a command (3 for partial
    # success) or 0, so callers and tests see one way a command ends.
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int) -> None:
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(code)


def _describe(err: Exception) -> str:
    """One line for an unexpected exception: what failed on which file, and what to do."""
    import errno

    if isinstance(err, OSError):
        where = f" {err.filename}" if getattr(err, "filename", None) else ""
        hint = {errno.ENOSPC: "free disk space and run the command again",
                errno.EACCES: "check the permissions (or give another --store / --out)",
                errno.EROFS: "the file system is read-only; give a writable --store / --out",
                errno.EISDIR: "give a file, not a folder", errno.ENOTDIR: "give a folder, not a file",
                errno.ENOENT: "check the path"}.get(err.errno, "check the path and try again")
        return f"{err.strerror or type(err).__name__}:{where}; {hint}"
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {first} (run again with --debug for the traceback)"


if __name__ == "__main__":
    main()
