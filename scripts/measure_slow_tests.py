"""`make slow-tests`: measure the fast subset and write tests/slow_measured.txt.

Runs `pytest -m "not slow" -n 2 --durations=0` with the measured marks switched off
(EMBEDSTORE_MEASURE_SLOW=1), so every test not marked by hand is timed, and lists each test whose
own time (call + teardown) is at least --threshold seconds. conftest.py marks the listed tests
`slow`. A shared fixture's build (setup) is not counted: it is paid once per worker by whichever
test comes first, and is left out only when all the tests that use it are listed. Tests in
conftest.py's KEEP_FAST stay fast whatever they measure: they guard a headline number.

    python scripts/measure_slow_tests.py                  # measure, then write the list
    python scripts/measure_slow_tests.py --from out.txt   # write the list from a saved pytest output
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from _common import machine  # noqa: E402
LIST = ROOT / "tests" / "slow_measured.txt"
RAW = ROOT / "slow-tests-output.txt"  # the last measurement's pytest output, for --from
PASSED = re.compile(r"(\d+) passed")
DURATION = re.compile(r"^([\d.]+)s (setup|call|teardown)\s+(.+?)\s*$")


def run_fast_subset() -> str:
    env = dict(os.environ, EMBEDSTORE_MEASURE_SLOW="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "not slow", "-n", "2", "-p", "no:cacheprovider",
           "--durations=0", "--durations-min=0"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    RAW.write_text(done.stdout, encoding="utf-8")
    if done.returncode != 0:
        sys.exit(f"the fast subset failed (exit {done.returncode}); fix it before measuring:\n{done.stdout[-3000:]}")
    return done.stdout


def own_seconds(pytest_output: str) -> dict[str, float]:
    """Node id -> call + teardown seconds, from pytest's --durations report."""
    seconds: dict[str, float] = {}
    for line in pytest_output.splitlines():
        match = DURATION.match(line)
        if match and match[2] != "setup":
            seconds[match[3]] = seconds.get(match[3], 0.0) + float(match[1])
    return seconds


def write_list(seconds: dict[str, float], threshold: float, keep_fast: set[str]) -> list[str]:
    slow = sorted((s, node) for node, s in seconds.items() if s >= threshold and node not in keep_fast)
    header = [
        "# Tests marked `slow` because they measured at least "
        f"{threshold:g} s of their own (call + teardown) in the fast subset, 2 xdist workers.",
        f"# Written by `make slow-tests` (scripts/measure_slow_tests.py) on {time.strftime('%Y-%m-%d')}: {machine()}, "
        f"load {os.getloadavg()[0]:.1f} at the end.",
        "# seconds<TAB>node id; conftest.py reads the node ids.",
    ]
    LIST.write_text("\n".join(header + [f"{s:.2f}\t{node}" for s, node in reversed(slow)]) + "\n", encoding="utf-8")
    return [node for _, node in slow]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threshold", type=float, default=1.0, help="seconds of a test's own time that make it slow")
    parser.add_argument("--from", dest="saved", type=Path, help="a saved pytest --durations=0 output to read instead")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import KEEP_FAST

    output = args.saved.read_text(encoding="utf-8") if args.saved else run_fast_subset()
    seconds = own_seconds(output)
    passed = sum(int(n) for n in PASSED.findall(output.splitlines()[-1] if output.strip() else ""))
    if not seconds or len(seconds) < passed:  # a changed output format must not empty the list
        sys.exit(f"read durations of {len(seconds)} tests but {passed} passed; is it `--durations=0 "
                 f"--durations-min=0` output of the whole fast subset? {LIST.name} left as it was")
    slow = write_list(seconds, args.threshold, set(KEEP_FAST))
    print(f"{len(slow)} of {len(seconds)} measured tests at or over {args.threshold:g} s "
          f"({sum(seconds[n] for n in slow):.0f} of {sum(seconds.values()):.0f} s): {LIST.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
