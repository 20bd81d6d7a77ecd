"""Runs against the real Store: reuse, --force, listing, SQL reach, CLI, and no torch import."""

import json

import numpy as np
import pytest

import synthetic_vectors as synthetic


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from store_helpers import open_store as Store

    st = Store(tmp_path_factory.mktemp("runs") / "store")
    synthetic.to_store(synthetic.make(n=900, n_findings=4, d=16, seed=4), st)
    return st


def test_run_is_reused_then_replaced_with_force(store):
    from embedstore.analyses.probe import probe
    from embedstore.analyses.runs import runs

    first = probe(store, n_boot=50)[0]
    again = probe(store, n_boot=50)[0]
    assert not first.reused and again.reused and again.run_id == first.run_id
    assert again.metrics.sort(["finding", "metric"], nulls_last=True).equals(
        first.metrics.sort(["finding", "metric"], nulls_last=True))
    forced = probe(store, n_boot=50, force=True)[0]
    assert not forced.reused and forced.run_id != first.run_id
    listed = runs(store, "probe")["run_id"].to_list()
    assert forced.run_id in listed and first.run_id not in listed  # replaced, not duplicated
    n_old = store.sql(f"select count(*) as n from metrics where run_id = '{first.run_id}'")["n"][0]
    assert n_old == 0
    other = probe(store, n_boot=60)[0]  # another config is another run
    assert not other.reused and other.run_id != forced.run_id


def test_every_result_table_is_reachable_by_sql(store):
    from embedstore.analyses.probe import load_probe, probe

    r = probe(store, n_boot=50)[0]
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
    facade = store.zeroshot(rule="pos-neg", calibrate_on="val", n_boot=20)  # the API: the same stored run
    assert len(facade) == 1 and facade[0].reused and facade[0].run_id == res[3].run_id
    assert set(facade.to_polars()["rule"].unique()) == {"pos-neg"}


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


# ---- the analyses' --where and --uncertain through the CLI ---------------------------------------
def _cli_rows(capsys, args: list[str]) -> list[dict]:
    """`embedstore ARGS --format json` in this process: the printed rows (metrics with run_id)."""
    from embedstore.cli import main

    with pytest.raises(SystemExit) as exc:
        main([*args, "--format", "json"])
    assert exc.value.code == 0
    return json.loads(capsys.readouterr().out)


def _scored_ids(store, run_id: str) -> set[int]:
    """The images a run scored: its per-image scores, or its projections (separability)."""
    rows = store.sql(f"SELECT id FROM image_scores WHERE run_id = '{run_id}' "
                     f"UNION SELECT id FROM projections WHERE run_id = '{run_id}'")
    return set(rows["id"].to_list())


@pytest.mark.parametrize("command", [["zeroshot", "--rule", "pos-neg"], ["probe"], ["separability"]],
                         ids=["zeroshot", "probe", "separability"])
def test_where_limits_the_images_an_analysis_scores(store, capsys, command):
    args = [*command, "--store", str(store.path)] + (["--n-boot", "20"] if command[0] != "separability" else [])
    everything = _cli_rows(capsys, args)[0]["run_id"]
    frontal = _cli_rows(capsys, [*args, "--where", "view = 'frontal'"])[0]["run_id"]
    test_ids = set(store.images("split = 'test'")["id"].to_list())
    frontal_ids = set(store.images("split = 'test' AND view = 'frontal'")["id"].to_list())
    assert 0 < len(frontal_ids) < len(test_ids)
    assert _scored_ids(store, everything) == test_ids
    assert _scored_ids(store, frontal) == frontal_ids


@pytest.mark.parametrize("command", [["zeroshot", "--rule", "pos-neg"], ["probe"]], ids=["zeroshot", "probe"])
def test_uncertain_decides_what_an_uncertain_label_counts_as(store, capsys, command):
    """Per finding on the test split: `n` labelled images and `support` positives, against the
    stored labels counted here (1, 0, -1 = uncertain; a missing label has no row)."""
    labels = store.sql("SELECT finding, value, count(*) AS images FROM labels JOIN images USING (id) "
                       "WHERE split = 'test' GROUP BY ALL")
    count = {(f, v): n for f, v, n in labels.iter_rows()}
    findings = sorted({f for f, _ in count})
    assert sum(count.get((f, -1), 0) for f in findings) > 0  # the store has uncertain test labels

    def counts(policy: str) -> dict[str, tuple[int, int]]:
        rows = _cli_rows(capsys, [*command, "--uncertain", policy, "--n-boot", "20", "--store", str(store.path)])
        per = {(r["finding"], r["metric"]): r["value"] for r in rows if r["finding"] is not None}
        return {f: (int(per[(f, "n")]), int(per[(f, "support")])) for f in findings}

    pos, neg, unc = ({f: count.get((f, v), 0) for f in findings} for v in (1, 0, -1))
    assert counts("mask") == {f: (pos[f] + neg[f], pos[f]) for f in findings}
    assert counts("negative") == {f: (pos[f] + neg[f] + unc[f], pos[f]) for f in findings}
    assert counts("positive") == {f: (pos[f] + neg[f] + unc[f], pos[f] + unc[f]) for f in findings}


def test_versions_drop_removes_a_version_with_its_runs_and_keeps_the_others(tmp_path, capsys):
    """`versions --drop` of a version with stored runs: its runs, rows and index go, v1's stay."""
    from store_helpers import open_store

    from embedstore.cli import main

    st = open_store(tmp_path / "store")
    syn = synthetic.make(n=300, n_findings=3, d=16, seed=2)
    synthetic.to_store(syn, st, name="a")
    synthetic.to_store(syn, st, name="b")
    for v in ("v1", "v2"):
        st.probe(v, n_boot=20, min_positives=1)
        st.zeroshot(v, rule="pos-neg", n_boot=20, min_positives=1)
    kept = st.sql("SELECT run_id FROM runs WHERE version = 'v1' ORDER BY 1")["run_id"].to_list()
    with pytest.raises(SystemExit) as exc:
        main(["versions", "--drop", "v2", "--store", str(st.path)])
    assert exc.value.code == 0, capsys.readouterr().err
    assert st.versions()["version"].to_list() == ["v1"] and not st.index_path("v2").exists()
    assert st.sql("SELECT run_id FROM runs ORDER BY 1")["run_id"].to_list() == kept
    for table in ("metrics", "image_scores", "run_findings", "image_embeddings"):
        orphans = st.sql(f"SELECT count(*) AS n FROM {table} WHERE {'version' if table == 'image_embeddings' else 'run_id'} "
                         f"NOT IN (SELECT {'version' if table == 'image_embeddings' else 'run_id'} FROM "
                         f"{'versions' if table == 'image_embeddings' else 'runs'})")["n"][0]
        assert orphans == 0, table
