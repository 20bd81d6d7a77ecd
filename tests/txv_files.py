"""Real data files shipped in torchxrayvision's package data (the `test` extra), read in place.

torchxrayvision is a test dependency (`pip install -e '.[test]'`, which `make test` runs), not an
optional component: when it or one of its files is missing the install is broken, and the test
that needs the file fails saying so instead of skipping (see skip_policy.py).
"""

import importlib.util
import os

import pytest


def txv_file(name: str) -> str:
    """A real file in torchxrayvision's package data, found without importing it (that pulls in torch)."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("torchxrayvision is not installed: it is in the `test` extra (pip install -e '.[test]') "
                    "and ships the real data files these tests read", pytrace=False)
    path = os.path.join(spec.submodule_search_locations[0], "data", name)
    if not os.path.isfile(path):
        pytest.fail(f"{name} is not in torchxrayvision's package data ({path}): reinstall the `test` extra",
                    pytrace=False)
    return path
