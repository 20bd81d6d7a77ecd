"""Every fast command runs without importing torch or open_clip (seconds of start-up each):
`sql`, `versions`, `verify`, `compare` (two versions, and two methods), `report`, `inspect`,
`query` with a stored text, `zeroshot`, `probe`, `separability`, `runs`, `splits`, `seed-table`.

They run one after another in one fresh process (cli_process.py) on a copy of the session's small
phantom store with a second model's version (v2) and the runs that `compare v1 v2` pairs
(conftest.py's `small_two_versions`); the analyses in the fresh process compute new runs (other
settings), so their computing paths are the ones checked, not a stored run's reuse.
"""

from __future__ import annotations

import shutil

import pytest
from cli_process import run_in_fresh_process

import embedstore

BOOT = ["--n-boot", "20", "--min-positives", "1"]


@pytest.fixture
def store(small_two_versions, tmp_path):
    path = tmp_path / "store"
    shutil.copytree(small_two_versions.path, path)
    return path


@pytest.mark.slow  # 17 commands and a second version: ~8 s
def test_fast_commands_never_import_torch_or_open_clip(store, small_phantoms, tmp_path):
    s = ["--store", str(store)]
    commands = {
        "inspect": ["inspect", str(small_phantoms / "phantoms")],
        "versions": ["versions", *s],
        "verify": ["verify", *s],
        "sql": ["sql", "SELECT count(*) AS n FROM images", *s],
        "splits": ["splits", *s],
        "query": ["query", "cardiomegaly", "-k", "3", *s],
        "query prompt": ["query", "enlarged cardiac silhouette", "-k", "3", "--version", "v1", *s],
        "zeroshot": ["zeroshot", "--version", "v1", *BOOT, *s],
        "probe": ["probe", "--version", "v1", *BOOT, *s],
        "separability": ["separability", "--version", "v1", *s],
        "runs": ["runs", *s],
        "seed-table": ["seed-table", "--version", "v1", *s],
        "compare versions": ["compare", "v1", "v2", *s],
        "compare methods": ["compare", "--methods", "zeroshot:pos-neg,probe", "--version", "v1", *s],
        "report": ["report", "--out", str(tmp_path / "report.html"), *s],
        "export": ["export", "--out", str(tmp_path / "exported"), "--version", "v1", *s],
        "import": ["import", str(tmp_path / "exported"), *s],  # last: it adds a version
    }
    stored_prompt = embedstore.open(store).sql(
        "SELECT count(*) AS n FROM text_embeddings WHERE version = 'v1' AND text = 'enlarged cardiac silhouette'")
    assert stored_prompt["n"][0] == 1  # a stored text: no model needed for it
    results = dict(zip(commands, run_in_fresh_process(list(commands.values()))))
    assert {name: r["code"] for name, r in results.items()} == dict.fromkeys(commands, 0), {
        name: r["err"][-500:] for name, r in results.items() if r["code"]}
    assert {name: r["loaded"] for name, r in results.items()} == dict.fromkeys(commands, [])
    for name, r in results.items():  # each printed its result
        assert r["out"].strip(), name
    assert (tmp_path / "report.html").stat().st_size > 0
    new_runs = embedstore.open(store).sql("SELECT kind FROM runs WHERE version = 'v1'")["kind"].to_list()
    assert sorted(new_runs).count("zeroshot") > 1 and "separability" in new_runs  # computed, not reused
