"""`embedstore serve` in a subprocess on 127.0.0.1 and a free port, for the server's tests.

`started(store, *args)` is a context manager: it starts the server with this checkout first on
PYTHONPATH, polls /health in a bounded loop (at most `wait_s` seconds, one poll per 0.2 s), yields
the base URL and stops the server by its own PID (SIGTERM, then SIGKILL after 10 s).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(store, *args: str) -> list[str]:
    return [sys.executable, "-m", "embedstore", "serve", "--store", str(store), *args]


def env() -> dict:
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


@contextlib.contextmanager
def started(store, *args: str, log: Path, wait_s: float = 120, headers: dict | None = None):
    port = free_port()
    with open(log, "w") as out:
        proc = subprocess.Popen(command(store, "--host", "127.0.0.1", "--port", str(port), *args), env=env(),
                                stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(int(wait_s / 0.2)):
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{base}/health", headers=headers, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError(f"the server did not answer /health in {wait_s} s: {log.read_text()[-2000:]}")
        yield base
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
