"""Session fixtures shared by test modules, and the skip policy (skip_policy.py).

The report tests' phantom study is built once (report_store.py).
"""

from __future__ import annotations

import pytest


def pytest_configure(config):
    from skip_policy import SkipPolicy

    config.pluginmanager.register(SkipPolicy(), "embedstore-skip-policy")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """Registry name (`local-dir:...`) of a tiny open_clip CLIP (store_helpers.TINY_CFG, seed 0),
    exported once per session: the second model wherever a test needs two, and the fine-tune tests' model."""
    from store_helpers import export_tiny_model

    return export_tiny_model(tmp_path_factory.mktemp("models") / "tiny", seed=0)


@pytest.fixture(scope="session")
def small_phantoms(tmp_path_factory):
    """16 phantom studies (`phantoms/`, 64 px, with boxes) and their store (`store/`: v1 by
    phantom-clip, no analysis run): the CLI tests' data. Read-only: copy the store to write."""
    import embedstore
    from embedstore.synth import synth

    root = tmp_path_factory.mktemp("small-phantoms")
    synth(str(root / "phantoms"), studies=16, seed=4, size=64, workers=1)
    embedstore.open(root / "store").encode(str(root / "phantoms"), model="phantom-clip", workers=0, device="cpu")
    return root


@pytest.fixture(scope="session")
def small_two_versions(small_phantoms, tiny_model, tmp_path_factory):
    """A copy of `small_phantoms`' store with a second model's version (v2: the tiny open_clip) and
    the pos-neg zero-shot and probe runs on both, which `compare v1 v2` pairs. Read-only."""
    import shutil

    import embedstore

    path = tmp_path_factory.mktemp("small-two-versions") / "store"
    shutil.copytree(small_phantoms / "store", path)
    st = embedstore.open(path)
    st.encode(str(small_phantoms / "phantoms"), model=tiny_model, workers=0, device="cpu")
    for version in ("v1", "v2"):
        st.zeroshot(version, rule="pos-neg", n_boot=10, min_positives=1)
        st.probe(version, n_boot=10, min_positives=1)
    return st


@pytest.fixture(scope="session")
def phantom_store(tmp_path_factory):
    """A phantom study through the real pipeline: v1, its fine-tuned child v2, every analysis, agreement."""
    from finetune_helpers import torch_threads
    from report_store import phantom_study

    with torch_threads(2):
        return phantom_study(tmp_path_factory.mktemp("report-phantoms"))


@pytest.fixture(scope="session")
def phantom_report(phantom_store, tmp_path_factory):
    """The report of `phantom_store` (default version and its lineage): (BuiltReport, its text)."""
    from embedstore.reports.build import build_report

    built = build_report(phantom_store, out=tmp_path_factory.mktemp("report") / "report.html")
    return built, built.path.read_text(encoding="utf-8")
