"""Real data files shipped in torchxrayvision's package data (the `test` extra), read in place."""

import importlib.util
import os

import pytest


def txv_file(name: str) -> str:
    """A real file in torchxrayvision's package data, found without importing it (that pulls in torch)."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("torchxrayvision (the `test` extra) is not installed: it ships the real data files")
    path = os.path.join(spec.submodule_search_locations[0], "data", name)
    if not os.path.isfile(path):
        pytest.skip(f"{name} is not in this torchxrayvision's package data")
    return path
