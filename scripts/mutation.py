"""`make mutation`: mutation testing of the statistics modules with mutmut, as a measure of the tests.

mutmut (3.x, the `mutation` extra) mutates the five modules named in pyproject's [tool.mutmut] and
runs their fast tests only (no model, phantom or torch test), one module at a time with one worker
(`--max-children 1`: the machine is shared). The score per module goes to bench/RESULTS.md (with the
machine, its load and the time taken); every surviving mutant, its diff and its judgement go to
bench/MUTATION.md. Judgements are kept by hand in bench/mutation_judgements.toml. Not part of
`make test`.

    python scripts/mutation.py                 # all five modules, from a fresh mutants/ folder
    python scripts/mutation.py --module probe  # one module; the others' results in mutants/ are kept
    python scripts/mutation.py --survivors     # after adding tests: re-run only the mutants left alive or unchecked
    python scripts/mutation.py --module probe --only 'x_probe_tables__*' --only 'xǁ_Pathǁ*'
                                               # some functions' mutants only (globs after the module's dotted name)
    python scripts/mutation.py --report        # no run: read mutants/, write MUTATION.md, print the scores

A full run took about four hours on a shared 2-core machine (bench/RESULTS.md); --module runs
one module at a time.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from _common import append_results  # noqa: E402

MODULES = {  # short name -> source path (mutmut names a mutant by the dotted path of its function)
    "metrics": "embedstore/analyses/metrics.py",
    "zeroshot": "embedstore/analyses/zeroshot.py",
    "probe": "embedstore/analyses/probe.py",
    "separability": "embedstore/analyses/separability.py",
    "agreement": "embedstore/explain/agreement.py",
}
REPORT = ROOT / "bench" / "MUTATION.md"
JUDGEMENTS = ROOT / "bench" / "mutation_judgements.toml"
NOT_KILLED = ("survived", "no tests", "suspicious", "segfault")


def dotted(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def run_module(name: str, survivors_only: bool = False, only: list[str] | None = None) -> float:
    """`mutmut run` over one module's mutants (or only those the last run left alive; or only those of
    the functions matching `only`, globs after the module's dotted name), one worker, BLAS on one
    thread; seconds taken."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    # mutmut puts mutants/ first on the path; nothing may shadow it. scripts/ (no package in it) only
    # holds the pytest plugin that orders a mutant's tests cheapest first (mutmut_fast_first.py).
    env["PYTHONPATH"] = str(ROOT / "scripts")
    mutmut = Path(sys.executable).parent / "mutmut"
    targets = [f"{dotted(MODULES[name])}.{glob}" for glob in (only or ["*"])]
    if survivors_only:
        targets = [k for k, v in results(name).items() if v in (*NOT_KILLED, "not checked")
                   and any(fnmatch.fnmatchcase(k, t) for t in targets)]
        if not targets:
            return 0.0
    start = time.perf_counter()
    proc = subprocess.run([str(mutmut), "run", "--max-children", "1", *targets], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode:
        print(proc.stdout[-4000:])
        raise SystemExit(f"mutmut run failed for {name} (exit {proc.returncode})")
    return time.perf_counter() - start


def results(name: str) -> dict[str, str]:
    """mutant name -> status ("killed", "survived", "timeout", ...) of one module, from mutants/."""
    import json

    from mutmut.stats import status_by_exit_code

    meta = ROOT / "mutants" / (MODULES[name] + ".meta")
    if not meta.exists():
        return {}
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    return {k: status_by_exit_code[v] for k, v in sorted(codes.items(), key=lambda kv: _order(kv[0]))}


def _order(mutant: str) -> tuple[str, int]:
    function, _, number = mutant.rpartition("__mutmut_")
    return function, int(number) if number.isdigit() else 0


def changed_lines(mutant: str, path: str) -> list[str]:
    """The mutant's diff against the original function: its removed and added lines."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    diff = get_diff_for_mutant(mutant, path=path)
    return [line for line in diff.splitlines() if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def load_judgements() -> tuple[dict[str, str], list[tuple[re.Pattern, str, str]]]:
    """Per-mutant judgements and the rules (a regex over a mutant's changed lines -> judgement)."""
    data = tomllib.loads(JUDGEMENTS.read_text()) if JUDGEMENTS.exists() else {}
    rules = [(re.compile(r["pattern"], re.M), r["judgement"], r.get("label", "")) for r in data.get("rule", [])]
    return data.get("mutant", {}), rules


def judge(mutant: str, lines: list[str], by_name: dict, rules: list) -> str:
    if mutant in by_name:
        return by_name[mutant]
    text = "\n".join(lines)
    for pattern, judgement, _ in rules:
        if pattern.search(text):
            return judgement
    return "UNJUDGED"


def summary_row(name: str, status: dict[str, str], seconds: float | None) -> tuple[str, int, int]:
    counts = {s: sum(v == s for v in status.values()) for s in ("killed", "timeout", *NOT_KILLED, "not checked")}
    checked = len(status) - counts["not checked"]
    detected = counts["killed"] + counts["timeout"]
    score = 100.0 * detected / checked if checked else float("nan")
    minutes = f"{seconds / 60:.0f}" if seconds is not None else "-"
    row = (f"| {MODULES[name]} | {len(status)} | {counts['killed']} | {counts['timeout']} | {counts['survived']} | "
           f"{counts['no tests'] + counts['suspicious'] + counts['segfault']} | {counts['not checked']} | "
           f"**{score:.1f} %** | {minutes} |")
    return row, detected, checked


def write_report(names: list[str]) -> dict[str, int]:
    """bench/MUTATION.md: every mutant that was not killed, its diff and its judgement."""
    by_name, rules = load_judgements()
    out = ["# Surviving mutants", "",
           "Written by `scripts/mutation.py` from the last mutmut run (`mutants/`). Each mutant that no test "
           "killed, its diff and a judgement: **equivalent** (it cannot change what the module computes or "
           "returns), **not killed** (a behaviour change no fast test sees, and why no test is added), or **not "
           "killed in this run (real)** (a test written for it after the run, named, fails on it; not re-run). "
           "Judgements are kept in `bench/mutation_judgements.toml`: by mutant, or by a rule over the diff "
           "for a kind of mutant read and judged once.", ""]
    tally: dict[str, int] = {}
    for name in names:
        status = results(name)
        left = {k: v for k, v in status.items() if v in NOT_KILLED}
        out += [f"## {MODULES[name]}: {len(left)} of {len(status)} not killed", ""]
        for mutant, state in left.items():
            lines = changed_lines(mutant, MODULES[name])
            verdict = judge(mutant, lines, by_name, rules)
            kind = verdict.split(":", 1)[0]
            tally[kind] = tally.get(kind, 0) + 1
            out += [f"### `{mutant.removeprefix(dotted(MODULES[name]) + '.')}` ({state})", "", "```diff", *lines, "```",
                    "", f"{verdict}", ""]
    REPORT.write_text("\n".join(out).rstrip() + "\n")
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", action="append", choices=sorted(MODULES), help="only this module (repeatable)")
    parser.add_argument("--report", action="store_true", help="no run: read mutants/, write MUTATION.md, print the scores")
    parser.add_argument("--survivors", action="store_true",
                        help="re-run only the mutants the last run left alive (after adding tests), keeping the rest")
    parser.add_argument("--only", action="append", metavar="GLOB",
                        help="only the mutants of functions matching GLOB after the module's dotted name, e.g. "
                             "'x_fit_logreg__*' or 'xǁProbeFitǁ*' (repeatable; with one --module)")
    args = parser.parse_args()
    if args.only and len(args.module or []) != 1:
        parser.error("--only needs exactly one --module")
    names = args.module or list(MODULES)
    seconds: dict[str, float] = {}
    load_start = os.getloadavg()
    started = time.perf_counter()
    if not args.report:
        if not args.module and not args.survivors:
            shutil.rmtree(ROOT / "mutants", ignore_errors=True)  # cached results would outlive changed tests
        for name in names:
            print(f"mutmut: {name} ...", flush=True)
            seconds[name] = run_module(name, args.survivors, args.only)
    total = time.perf_counter() - started
    tally = write_report(list(MODULES))
    rows, detected, checked = [], 0, 0
    for name in MODULES:
        row, d, c = summary_row(name, results(name), seconds.get(name))
        rows.append(row)
        detected, checked = detected + d, checked + c
    load_end = os.getloadavg()
    lines = [
        f"mutmut 3 (`{'make mutation' if not args.module and not args.report else 'scripts/mutation.py'}`), one "
        "worker, BLAS on one thread; the fast tests of `[tool.mutmut]` in pyproject.toml. Load average "
        f"{load_start[0]:.1f} at the start and {load_end[0]:.1f} at the end (other jobs share the cores).",
        "",
        "| module | mutants | killed | timeout | survived | no test / suspicious | not checked | score | minutes |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Overall: {detected} of {checked} mutants detected, **{100.0 * detected / max(checked, 1):.1f} %**"
        + (f"; this run took {total / 60:.0f} minutes." if seconds else "."),
        "Score = (killed + timeout) / checked. Survivors by judgement: "
        + ", ".join(f"{k} {v}" for k, v in sorted(tally.items())) + "; each one, its diff and why, in "
        "[bench/MUTATION.md](MUTATION.md).",
    ]
    if args.report:  # nothing was run: print, append no entry
        print("\n".join(lines))
        return
    if args.module or args.survivors:
        what = "the survivors of the last run" if args.survivors else "every mutant"
        of = f" of the functions {', '.join(args.only)}" if args.only else ""
        lines.insert(1, f"\nRun now: {what} of {', '.join(names)}{of}; other results are from earlier runs in mutants/.")
    append_results("Mutation testing (scripts/mutation.py)", lines)


if __name__ == "__main__":
    main()
