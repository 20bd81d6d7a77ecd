"""Issue 6's acceptance on CPU with `phantom-clip` at a small size.

The session's site-B phantom study (conftest.py, report_store.py): 300 phantom studies rendered as
another site would (`synth --shift site-b`), out of the model's training distribution as IU-Xray
is for BiomedCLIP, encoded with phantom-clip as v1; a `bce` fine-tune of the image tower (head
started from the zero-shot classifier) writes v2. The report tests read the same fine-tune.
"Raises validation macro AUROC over its parent" is checked against the better of the parent's
two linear read-outs on the same val images: its pos-neg zero-shot scores, and logistic
regressions fitted by scikit-learn on its stored train vectors (the C best on val).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from finetune_helpers import kill_after_first_epoch, parent_snapshot, torch_threads  # noqa: E402
from report_store import FINETUNE_ARGS as ARGS  # noqa: E402
from store_helpers import copy_store  # noqa: E402


@pytest.fixture(scope="module", autouse=True)  # the thread count the session's fine-tune ran with
def _two_threads():
    with torch_threads(2):
        yield


@pytest.fixture(scope="module")
def base(site_b_study):
    """The phantoms and the store holding v1 (phantom-clip); read-only, copied by each test that writes."""
    return site_b_study


@pytest.fixture(scope="module")
def tuned(site_b_tuned):
    """(the fine-tuned store, v1's snapshot before the fine-tune, the FinetuneResult); read-only."""
    return site_b_tuned


def _zero_shot_scores(st, version: str, findings: list[str]) -> np.ndarray:
    """The store's pos-neg zero-shot logits of every stored image (analyses/zeroshot.py, from the
    stored image and prompt vectors), in `st.image_vectors` order, computed without writing a run."""
    from embedstore.analyses import zeroshot as zs

    _, X = st.image_vectors(version)
    texts, M = st.text_vectors(version)
    return zs.scores(X, zs.prompt_vectors(texts, M, findings, "ensemble", zs._preferred_templates()), "pos-neg",
                     float(st.version_row(version)["logit_scale"]))


def _scores(st, run_id: str, ids: np.ndarray, findings: list[str]) -> np.ndarray:
    df = st.sql(f"SELECT id, finding, score FROM image_scores WHERE run_id = '{run_id}'")
    pos = {int(i): k for k, i in enumerate(ids)}
    S = np.full((len(ids), len(findings)), np.nan)
    for i, f, s in df.iter_rows():
        if int(i) in pos and f in findings:
            S[pos[int(i)], findings.index(f)] = s
    return S


def test_zero_shot_head_gives_the_stored_pos_neg_scores(base):
    """The head a bce fine-tune starts from, applied to v1's stored vectors, equals the store's
    own pos-neg zero-shot logits (analyses/zeroshot.py, from stored prompt vectors)."""
    from store_helpers import open_store
    from embedstore.finetune.data import prompt_sets
    from embedstore.finetune.objectives import zero_shot_head
    from embedstore.models import load_model

    st = open_store(base / "store")
    findings = st.findings()
    _, X = st.image_vectors("v1")
    expected = _zero_shot_scores(st, "v1", findings)
    lm = load_model("phantom-clip")
    W, b = zero_shot_head(lm.model.float(), lm.tokenizer, prompt_sets(findings))
    got = X @ W.numpy().T + b.numpy()
    assert np.abs(expected).max() > 0.5  # a real spread of logits, not all zero
    np.testing.assert_allclose(got, expected, atol=2e-3)


def test_new_version_records_its_parent_and_leaves_the_parent_alone(tuned):
    st, before, r = tuned
    assert (r.version, r.parent, r.reused, r.trained_now) == ("v2", "v1", False, list(range(1, ARGS["epochs"] + 1)))
    row = st.versions().filter(st.versions()["version"] == "v2").row(0, named=True)
    assert (row["parent"], row["kind"]) == ("v1", "finetune")
    after = parent_snapshot(st)
    np.testing.assert_array_equal(after[0], before[0])
    np.testing.assert_array_equal(after[1], before[1])
    assert after[2] == before[2]
    np.testing.assert_array_equal(after[3], before[3])
    assert after[4:] == before[4:]  # recorded index checksum and the index file's bytes
    ids2, X2 = st.image_vectors("v2")
    np.testing.assert_array_equal(ids2, before[0])
    assert np.abs(X2 - before[1]).max() > 0.05
    assert st.index_is_current("v2")


def test_bce_finetune_raises_val_macro_auroc_over_its_parent(tuned):
    from sklearn.linear_model import LogisticRegression

    from embedstore.analyses.metrics import macro_auroc  # scikit-learn's AUROC over known labels; tested in core

    st, before, r = tuned
    ids, X1 = before[0], before[1]
    findings = st.findings()
    split = dict(zip(st.images()["id"].to_list(), st.images()["split"].to_list()))
    sp = np.array([split[int(i)] for i in ids])
    Y = st.label_matrix(ids, findings)
    tr, va = sp == "train", sp == "val"

    head = _scores(st, r.run_id, ids, findings)
    assert np.isfinite(head).all()
    tuned_val = macro_auroc(head[va], Y[va])[0]
    assert r.best_val_auroc == pytest.approx(tuned_val, abs=1e-4)  # the stored head is the best epoch's

    zero_shot_val = macro_auroc(_zero_shot_scores(st, "v1", findings)[va], Y[va])[0]
    probe_val = 0.0
    for C in (0.1, 1.0, 10.0):
        S = np.zeros((int(va.sum()), len(findings)))
        for j in range(len(findings)):
            known = tr & ((Y[:, j] == 0) | (Y[:, j] == 1))
            if len(np.unique(Y[known, j])) == 2:
                lr = LogisticRegression(C=C, class_weight="balanced", max_iter=5000).fit(X1[known], Y[known, j])
                S[:, j] = lr.decision_function(X1[va])
        probe_val = max(probe_val, macro_auroc(S, Y[va])[0])
    parent_val = max(zero_shot_val, probe_val)
    assert tuned_val > parent_val + 0.03, (tuned_val, zero_shot_val, probe_val)


def test_a_run_killed_after_its_first_epoch_resumes_instead_of_restarting(base, tuned, tmp_path):
    st = copy_store(base / "store", tmp_path / "store")
    state = kill_after_first_epoch(st.path, ARGS)
    assert state["epoch"] == 1 and st.versions().height == 1
    r = st.finetune("v1", **ARGS)
    assert (r.version, r.resumed_from, r.trained_now, r.epochs_run) == (
        "v2", 1, list(range(2, ARGS["epochs"] + 1)), ARGS["epochs"])
    assert r.history[0] == state["history"][0]
    ref_st, _, ref = tuned
    assert [h["val_auroc"] for h in r.history] == pytest.approx([h["val_auroc"] for h in ref.history], abs=1e-6)
    np.testing.assert_allclose(st.image_vectors("v2")[1], ref_st.image_vectors("v2")[1], atol=1e-5)
