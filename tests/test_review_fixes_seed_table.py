"""Review fix: the seed table uses only runs made under the label policy (and --where) it is asked
for, scores the fine-tuned head under that policy too, and its cells equal scikit-learn's
recomputation from the stored scores and labels. Real store; the fine-tuned head's run is written
by hand (its logits for every image), as `finetune` writes it, without training a model."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import accuracy_score, coverage_error, f1_score, label_ranking_average_precision_score

import synthetic_vectors as synthetic
from embedstore.store import Storage

SEED_POLICY = {"uncertain": "negative", "blank": "negative"}  # the seed's CheXpert-on-IU-Xray setting


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    import embedstore
    from embedstore.analyses.scoring import score_table

    st = embedstore.open(tmp_path_factory.mktemp("seed"))
    syn = synthetic.make(n=800, n_findings=3, d=24, seed=5, signal=1.4, images_per_patient=2,
                         uncertain_rate=0.08, missing_rate=0.08)
    synthetic.to_store(syn, st)
    st.zeroshot(rule="raw-dot", n_boot=20, **SEED_POLICY)
    st.probe(n_boot=20, **SEED_POLICY)
    st.probe(n_boot=20)  # newer, under the default (mask) policy: must not fill the seed-policy table
    low = Storage(st.path)
    tuned = low.create_version("v1", {"name": "tuned", "embed_dim": 24}, None, "float32", "finetune")
    low.complete_version(tuned)
    L = 8.0 * syn.X @ np.random.default_rng(0).normal(size=(24, 3))  # the head's logits, every image
    low.write_run("finetune", tuned, {}, dt.datetime.now(), 0.0,
                  {"image_scores": score_table(syn.ids, syn.findings, L, (L > 0).astype(np.int8))})
    return st


def _test_rows(st, run_id: str):
    """(Y under the seed policy, scores) of a run's stored test images, from the store."""
    low = Storage(st.path)
    wide = low.image_scores(run_id).pivot(on="finding", index="id", values="score").sort("id")
    test = low.image_groups().filter(pl.col("split") == "test")["id"].to_list()
    wide = wide.filter(pl.col("id").is_in(test))
    findings = [c for c in wide.columns if c != "id"]
    Y = low.label_matrix(wide["id"].to_numpy(), findings)
    return (Y == 1).astype(int), wide.select(findings).to_numpy()  # uncertain and blank count as negative


def _sklearn_row(Y, S, cut: float) -> dict:
    P = (S >= cut).astype(int) if cut == 0.5 else (S > cut).astype(int)
    return {"macro F1": f1_score(Y, P, average="macro", zero_division=0), "exact match": accuracy_score(Y, P),
            "LRAP": label_ranking_average_precision_score(Y, S), "coverage error": coverage_error(Y, S)}


@pytest.mark.parametrize("method, kind, cut", [("linear probe", "probe", 0.5), ("fine-tuned", "finetune", 0.0)])
def test_seed_policy_rows_equal_scikit_learn_on_the_stored_scores(store, method, kind, cut):
    low = Storage(store.path)
    table = store.seed_table("v1", **SEED_POLICY)
    row = table.filter(pl.col("method") == method).row(0, named=True)
    runs = low.runs().filter(pl.col("kind") == kind)
    run_id = runs.filter(pl.col("config").str.contains('"uncertain": "negative"'))["run_id"][0] \
        if kind == "probe" else runs["run_id"][0]
    Y, S = _test_rows(store, run_id)
    assert Y.sum(axis=0).min() >= 20  # >= 10 patients each: every finding evaluable: macro F1 is over all three, as scikit-learn's
    expected = _sklearn_row(Y, S, cut)
    assert {k: row[k] for k in expected} == pytest.approx(expected, abs=1e-9)


def test_rows_of_another_policy_are_not_mixed_in(store):
    mask = store.seed_table("v1")  # the default policy: the newer mask probe, the head rescored under mask
    seed = store.seed_table("v1", **SEED_POLICY)
    for method in ("linear probe", "fine-tuned"):
        a, b = (t.filter(pl.col("method") == method).row(0, named=True) for t in (mask, seed))
        assert a["exact match"] != b["exact match"]
    frontal = store.seed_table("v1", where="view = 'frontal'", **SEED_POLICY)
    assert frontal.filter(pl.col("method") == "linear probe")["missing"][0].startswith("embedstore probe")
    assert frontal.filter(pl.col("method") == "linear probe")["macro F1"][0] is None
