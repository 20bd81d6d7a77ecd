"""The skip policy (skip_policy.py) in a pytest session of its own: a skip for any reason but an
optional component's fails the session and is listed with its reason; the optional component's
skip passes and its reason is printed."""

from __future__ import annotations

import pytest
from skip_policy import CHROMIUM_MISSING, SkipPolicy, allowed

INNER = f'''
import pytest

def test_needs_a_hard_dependency():
    pytest.importorskip("embedstore_no_such_module")

def test_needs_the_browser():
    pytest.skip({CHROMIUM_MISSING!r} + ": the report was not opened")

def test_passes():
    pass
'''


def run_inner(pytester, source: str, **more_modules: str):
    """`source` as test_inner.py (and `more_modules`) run by pytest in-process with the policy."""
    pytester.makepyfile(test_inner=source, **more_modules)
    return pytester.runpytest("-rs", "-p", "no:cacheprovider", plugins=[SkipPolicy()])


def test_a_skip_for_a_missing_hard_dependency_fails_the_session(pytester):
    result = run_inner(pytester, INNER)
    result.assert_outcomes(passed=1, skipped=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        "*= unexpected skips =*",
        "SKIPPED test_inner.py::test_needs_a_hard_dependency: could not import 'embedstore_no_such_module'*",
    ])
    unexpected = result.stdout.str().split("unexpected skips", 1)[1]
    assert "test_needs_the_browser" not in unexpected.split("short test summary", 1)[0]


def test_a_module_that_skips_at_collection_fails_the_session(pytester):
    result = run_inner(pytester, 'import pytest\npytest.importorskip("embedstore_no_such_module")\n\n'
                                 'def test_never_collected():\n    pass\n',
                       test_other="def test_passes():\n    pass\n")
    result.assert_outcomes(passed=1, skipped=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["SKIPPED test_inner.py: could not import 'embedstore_no_such_module'*"])


def test_the_optional_components_skip_passes_and_says_why(pytester):
    result = run_inner(pytester, INNER.replace('pytest.importorskip("embedstore_no_such_module")', "pass"))
    result.assert_outcomes(passed=2, skipped=1)
    assert result.ret == pytest.ExitCode.OK
    assert "unexpected skips" not in result.stdout.str()
    result.stdout.fnmatch_lines([f"SKIPPED [[]1[]] test_inner.py:*: {CHROMIUM_MISSING}*"])  # -rs


def test_the_suites_chromium_skips_use_the_allowed_reason():
    from test_demo import CHROMIUM_SKIP as demo_reason
    from test_report_browser import pytestmark

    assert allowed(demo_reason) and allowed(pytestmark.kwargs["reason"])
    assert not allowed("chromium")  # a prefix of the reason is not the reason
