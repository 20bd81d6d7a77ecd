"""Open a report in headless Chromium with networking off: did every chart render, any errors?

Used by the browser test and to take the README's screenshot. Needs Debian's `chromium`
(`scripts/install-chromium.sh`); no Python dependency beyond the standard library.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from embedstore.errors import EmbedstoreError

CANDIDATES = ["/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"]
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-extensions",
    "--hide-scrollbars", "--mute-audio",
    # Networking off, belt and braces: no host resolves and every request goes to a dead proxy.
    "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
]
STATUS = re.compile(r'<pre id="report-status"[^>]*data-done="1"[^>]*>(.*?)</pre>', re.S)
CONSOLE = re.compile(r":CONSOLE[^\]]*\]\s*(.*)")


class BrowserUnavailable(EmbedstoreError):
    """No Chromium on this machine."""


@dataclass
class BrowserCheck:
    """What the page reported after vega-embed ran, plus the browser's console lines."""

    charts: int
    rendered: int
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    dom: str = field(default="", repr=False)  # the page as rendered: what each chart drew

    @property
    def ok(self) -> bool:
        return self.rendered == self.charts and not self.errors and not self.console_errors


def find_chromium() -> str | None:
    for c in CANDIDATES:
        path = shutil.which(c)
        if path:
            return path
    return None


def _offline_prefix() -> list[str]:
    """Run inside an empty network namespace where the kernel allows it (root in most containers)."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-n", "true"], capture_output=True).returncode == 0:
        return [unshare, "-n"]
    return []


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    chromium = find_chromium()
    if chromium is None:
        raise BrowserUnavailable("chromium not found: run scripts/install-chromium.sh (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="embedstore-chromium-") as profile:
        cmd = [*_offline_prefix(), chromium, *FLAGS, f"--user-data-dir={profile}", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def check_report(path: str | Path, budget_ms: int = 30000, timeout: float = 180) -> BrowserCheck:
    """Load the report offline, let vega-embed finish, and read the page's status element."""
    url = Path(path).resolve().as_uri()
    proc = _run(["--enable-logging=stderr", "--v=0", f"--virtual-time-budget={budget_ms}", "--dump-dom", url], timeout)
    found = STATUS.search(proc.stdout)
    console = [m.group(1) for m in map(CONSOLE.search, proc.stderr.splitlines()) if m]
    console_errors = [c for c in console if "uncaught" in c.lower() or "error" in c.lower()]
    if not found:
        # The page never finished: report it as an error rather than guessing a count.
        return BrowserCheck(charts=-1, rendered=0, errors=["status element never written (script did not finish)"],
                            console_errors=console_errors, dom=proc.stdout)
    status = json.loads(html.unescape(found.group(1)))
    return BrowserCheck(status["charts"], status["rendered"], status["errors"], status["warnings"], console_errors,
                        proc.stdout)


def screenshot(path: str | Path, out: str | Path, width: int = 1400, height: int = 3000,
               scale_to: int | None = 700, budget_ms: int = 30000, timeout: float = 180) -> Path:
    """A PNG of the report's top `height` pixels, downscaled to `scale_to` wide (small for a README)."""
    out = Path(out).resolve()
    url = Path(path).resolve().as_uri()
    proc = _run([f"--window-size={width},{height}", f"--virtual-time-budget={budget_ms}", f"--screenshot={out}", url], timeout)
    if not out.exists():
        raise EmbedstoreError(f"chromium wrote no screenshot to {out}: {proc.stderr.strip().splitlines()[-1:]}")
    if scale_to and scale_to < width:
        from PIL import Image

        with Image.open(out) as img:
            small = img.convert("RGB").resize((scale_to, round(img.height * scale_to / img.width)), Image.LANCZOS)
        small.quantize(colors=256).save(out, optimize=True)
    return out
