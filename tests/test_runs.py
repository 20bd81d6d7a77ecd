"""Runs against the real Store: reuse, --force, listing, SQL reach, CLI, and no torch import."""

import json

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
    from cli_process import run_in_fresh_process

    commands = [["zeroshot", "--n-boot", "20"], ["probe", "--n-boot", "20", "--cooccurrence"], ["separability"],
                ["runs"], ["probe", "--n-boot", "20", "--format", "json"]]
    results = run_in_fresh_process([cmd + ["--store", str(store.path)] for cmd in commands])
    assert [r["code"] for r in results] == [0] * len(commands), [r["err"][-500:] for r in results]
    assert all(r["loaded"] == [] for r in results)  # neither torch nor open_clip
    assert "pos-neg" in results[0]["out"] and "separability" in results[2]["out"]
    rows = json.loads(results[-1]["out"][results[-1]["out"].index("[\n"):])
    assert {"run_id", "finding", "metric", "value", "lo", "hi"} <= set(rows[0])
