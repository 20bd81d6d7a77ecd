"""Runs against the real Store: reuse, --force, listing, SQL reach, CLI, and no torch import."""

import json
import subprocess
import sys

import numpy as np
import pytest

from embedstore.analyses import synthetic


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from embedstore.api import Store

    st = Store(tmp_path_factory.mktemp("runs") / "store")
    synthetic.to_store(synthetic.make(n=900, n_findings=4, d=16, seed=4), st)
    return st


def test_run_is_reused_then_replaced_with_force(store):
    from embedstore.analyses.probe import probe
    from embedstore.analyses.runs import runs

    first = probe(store, n_boot=50)
    again = probe(store, n_boot=50)
    assert not first.reused and again.reused and again.run_id == first.run_id
    assert again.metrics.sort(["finding", "metric"], nulls_last=True).equals(
        first.metrics.sort(["finding", "metric"], nulls_last=True))
    forced = probe(store, n_boot=50, force=True)
    assert not forced.reused and forced.run_id != first.run_id
    listed = runs(store, "probe")["run_id"].to_list()
    assert forced.run_id in listed and first.run_id not in listed  # replaced, not duplicated
    n_old = store.sql(f"select count(*) as n from metrics where run_id = '{first.run_id}'")["n"][0]
    assert n_old == 0
    other = probe(store, n_boot=60)  # another config is another run
    assert not other.reused and other.run_id != forced.run_id


def test_every_result_table_is_reachable_by_sql(store):
    from embedstore.analyses.probe import load_probe, probe

    r = probe(store, n_boot=50)
    scores = store.sql(f"select * from image_scores where run_id = '{r.run_id}' order by id, finding")
    assert scores.height > 0
    fit = load_probe(store, r.run_id)
    ids, X = store.image_vectors()
    sub = scores.filter(scores["finding"] == fit.findings[0])
    rows = np.searchsorted(ids, sub["id"].to_numpy())
    assert np.allclose(fit.predict_proba(X[rows])[:, 0], sub["score"].to_numpy(), atol=1e-5)
    co = store.sql(f"select * from cooccurrence where run_id = '{r.run_id}'")
    assert co.height == len(fit.findings) ** 2
    all_runs = store.sql("select * from runs")
    assert r.run_id in all_runs["run_id"].to_list()


def test_zeroshot_runs_per_rule_and_labels_change_invalidates(store):
    from embedstore.analyses.zeroshot import RULES, zeroshot

    res = zeroshot(store, calibrate_on="val", n_boot=20)
    assert [r.config["rule"] for r in res] == list(RULES)
    assert all(not r.reused for r in res)
    assert all(r.reused for r in zeroshot(store, calibrate_on="val", n_boot=20))
    thr = res[3].metrics.filter(res[3].metrics["metric"] == "threshold")
    assert thr.height == 4
    df = store.zeroshot(rule="pos-neg", calibrate_on="val", n_boot=20)  # the facade
    assert set(df["rule"].unique()) == {"pos-neg"} and store.last_runs[0].reused


def test_bad_split_is_a_one_line_error(store):
    from embedstore.analyses.zeroshot import zeroshot
    from embedstore.errors import InputError

    with pytest.raises(InputError, match="split 'holdout'"):
        zeroshot(store, split="holdout")


def test_cli_commands_and_no_torch(store):
    code = (
        "import sys, json, contextlib, io\n"
        "from embedstore.cli import main\n"
        "out = io.StringIO()\n"
        "for cmd in (['zeroshot', '--n-boot', '20'], ['probe', '--n-boot', '20', '--cooccurrence'],\n"
        "            ['separability'], ['runs'], ['probe', '--n-boot', '20', '--format', 'json']):\n"
        "    with contextlib.redirect_stdout(out):\n"
        "        try:\n"
        "            main(cmd + ['--store', sys.argv[1]])\n"
        "        except SystemExit as e:\n"
        "            assert not e.code, (cmd, e.code)\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'open_clip': 'open_clip' in sys.modules,\n"
        "                  'out': out.getvalue()}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(store.path)], capture_output=True, text=True,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not res["torch"] and not res["open_clip"]
    assert "pos-neg" in res["out"] and "separability" in res["out"]
    payload = res["out"][res["out"].index("[\n"):]
    rows = json.loads(payload)
    assert {"run_id", "finding", "metric", "value", "lo", "hi"} <= set(rows[0])
