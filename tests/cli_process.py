"""CLI commands run in one fresh interpreter, to see which modules each one loads.

`run_in_fresh_process(commands)` runs each argument list through `embedstore.cli.main` in a new
Python process (this one's environment, so this checkout's code) and returns, per command, its
exit code, what it printed and which of the `heavy` modules were loaded once it had finished.
The fast commands must never load torch or open_clip: those take seconds to import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

HEAVY = ("torch", "open_clip")

RUNNER = """
import contextlib, faulthandler, io, json, sys
faulthandler.enable()  # a crash leaves its traceback on stderr
from embedstore.cli import main
heavy, commands = json.loads(sys.argv[1]), json.loads(sys.argv[2])
results = []
for args in commands:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(args)
            code = 0
        except SystemExit as exc:
            code = 0 if exc.code is None else exc.code
    results.append({"args": args, "code": code, "out": out.getvalue(), "err": err.getvalue(),
                    "loaded": [m for m in heavy if m in sys.modules]})
print(json.dumps(results))
"""


def run_in_fresh_process(commands: list[list[str]], heavy=HEAVY, timeout: float = 300) -> list[dict]:
    """[{"args", "code", "out", "err", "loaded"}] for `commands`, run in order in one new process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(list(heavy)), json.dumps(commands)],
                          capture_output=True, text=True, env=env, timeout=timeout)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:], proc.stdout[-1000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])
