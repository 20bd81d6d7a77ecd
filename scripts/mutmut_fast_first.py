"""pytest plugin for `make mutation` (loaded by [tool.mutmut]'s `pytest_add_cli_args`): a mutant's
tests run cheapest first, so a killed mutant stops (`-x`) before the slow ones run.

mutmut's fork-server runner hands pytest a mutant's tests in set order (its plain fork runner
sorts them by duration; the fork server, which pyproject needs, does not). One store-building test
(tests/test_stored_metrics.py, ~30 s with its fixture under load) covers most functions, so in that
order about half the killed mutants paid for it before a 0.1 s test killed them. This sorts the
selected tests by the call durations mutmut recorded (mutants/mutmut-stats.json), keeping each
test file's tests together (its module fixtures are built once): files by their tests' total
duration, then tests by their own. The same tests run; only the order changes.
"""

from __future__ import annotations

import json
from pathlib import Path


def pytest_collection_modifyitems(session, config, items):
    stats = Path("mutmut-stats.json")  # the cwd is mutants/ while mutmut runs tests
    if not stats.exists() or len(items) < 2:
        return
    try:
        duration = json.loads(stats.read_text()).get("duration_by_test", {})
    except (OSError, ValueError):
        return
    cost = {item.nodeid: duration.get(item.nodeid, float("inf")) for item in items}
    by_file: dict[str, float] = {}
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        by_file[path] = by_file.get(path, 0.0) + cost[item.nodeid]
    items.sort(key=lambda item: (by_file[item.nodeid.split("::", 1)[0]], cost[item.nodeid]))
