"""A pytest plugin: a skip passes only when an optional component is missing.

`pytest.importorskip("torch")`, a data file looked for at a hard-coded path, a fixture that skips
when something is absent: each turns a broken install into a green run. This plugin (registered
by conftest.py, so `make test`, `.ci/run` and a plain `pytest` all get it) lets a session pass
with skips only when every skip's reason starts with the reason of a documented optional
component (`OPTIONAL_COMPONENTS`); any other skip fails the session with exit code 1 and is listed,
with its reason, under "unexpected skips". Every skip's reason is also printed as `pytest -rs`
prints it (pyproject's `addopts`).
"""

from __future__ import annotations

import pytest

# The one optional component: tests that need it skip with this reason (or with it and more text).
CHROMIUM_MISSING = "chromium is not installed (scripts/install-chromium.sh installs it as root; make test runs it)"
OPTIONAL_COMPONENTS = {CHROMIUM_MISSING: "chromium, for the report's browser tests"}


def skip_reason(report) -> str:
    """The reason pytest records for a skip: `longrepr` is (path, line, "Skipped: reason")."""
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


def allowed(reason: str) -> bool:
    return any(reason.startswith(known) for known in OPTIONAL_COMPONENTS)


class SkipPolicy:
    """Collects the session's skips; fails the session when one is not an optional component's."""

    def __init__(self) -> None:
        self.unexpected: list[tuple[str, str]] = []  # (node id, reason)

    def _note(self, report) -> None:
        if report.skipped and not hasattr(report, "wasxfail"):
            reason = skip_reason(report)
            if not allowed(reason):
                self.unexpected.append((report.nodeid, reason))

    def pytest_runtest_logreport(self, report) -> None:
        self._note(report)

    def pytest_collectreport(self, report) -> None:  # a module-level skip skips at collection
        self._note(report)

    def pytest_sessionfinish(self, session) -> None:
        if self.unexpected and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.unexpected:
            return
        terminalreporter.section("unexpected skips", sep="=", red=True, bold=True)
        terminalreporter.line(f"{len(self.unexpected)} skip(s) for a reason that is no optional component's "
                              "(a broken install?): the session fails")
        for nodeid, reason in self.unexpected:
            terminalreporter.line(f"SKIPPED {nodeid}: {reason}")
        terminalreporter.line("optional components: " + "; ".join(OPTIONAL_COMPONENTS.values()))
