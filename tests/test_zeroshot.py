"""Zero-shot rules on synthetic stored vectors (clustered images + prompt vectors)."""

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import f1_score

from embedstore.analyses import metrics as mt
import synthetic_vectors as synthetic
from embedstore.analyses import zeroshot as zs
from embedstore.analyses.scoring import apply_thresholds, fit_thresholds


@pytest.fixture(scope="module")
def syn():
    return synthetic.make(n=3000, n_findings=6, d=48, seed=1)


def _run(syn, rule, templates="ensemble", calibrate=False):
    pv = zs.prompt_vectors(syn.texts, syn.M, syn.findings, templates)
    S = zs.scores(syn.X, pv, rule, syn.logit_scale)
    thr = None
    if calibrate:
        va = syn.split == "val"
        Y01, known = mt.apply_policy(syn.Y[va])
        thr = fit_thresholds(Y01, known, S[va])
    te = syn.split == "test"
    P = apply_thresholds(S[te], zs.default_predictions(S[te], rule), thr)
    return mt.evaluate(syn.Y[te], S[te], P, syn.findings, n_boot=0), S, P


def test_raw_dot_overpredicts(syn):
    table, S, P = _run(syn, "raw-dot", "single")
    te = syn.split == "test"
    over = 0
    for j, f in enumerate(syn.findings):
        keep = np.isfinite(syn.Y[te, j]) & (syn.Y[te, j] != -1)
        prevalence = (syn.Y[te, j][keep] == 1).mean()
        rate = P[keep, j].mean()
        assert mt.metric_value(table, "pred_rate", f) == pytest.approx(rate)
        over += rate > prevalence
    assert over >= len(syn.findings) - 1


def test_raw_dot_is_cosine_sign_and_cosine_at_half_makes_the_same_decisions(syn):
    pv = zs.prompt_vectors(syn.texts, syn.M, syn.findings, "single")
    raw = zs.scores(syn.X, pv, "raw-dot", syn.logit_scale)
    assert np.array_equal(zs.default_predictions(raw, "raw-dot"), (syn.X @ pv.positive.T > 0).astype(np.int8))
    cos = zs.scores(syn.X, pv, "cosine", syn.logit_scale)
    assert np.array_equal(zs.default_predictions(cos, "cosine"), zs.default_predictions(raw, "raw-dot"))


def test_calibrated_pos_neg_beats_raw_dot_macro_f1(syn):
    raw, _, _ = _run(syn, "raw-dot", "single")
    posneg, _, _ = _run(syn, "pos-neg", "ensemble", calibrate=True)
    assert mt.metric_value(posneg, "macro_f1") > mt.metric_value(raw, "macro_f1")


def test_softmax_predicts_the_top_finding_and_sums_to_one(syn):
    pv = zs.prompt_vectors(syn.texts, syn.M, syn.findings)
    S = zs.scores(syn.X[:50], pv, "softmax", syn.logit_scale)  # log-probabilities
    assert np.allclose(np.exp(S).sum(axis=1), 1.0)
    P = zs.default_predictions(S, "softmax")
    assert (P.sum(axis=1) == 1).all() and (P.argmax(axis=1) == S.argmax(axis=1)).all()


def test_pos_neg_is_softmax_over_the_two_prompts(syn):
    pv = zs.prompt_vectors(syn.texts, syn.M, syn.findings)
    S = zs.scores(syn.X[:20], pv, "pos-neg", syn.logit_scale)
    zp, zn = syn.logit_scale * syn.X[:20] @ pv.positive.T, syn.logit_scale * syn.X[:20] @ pv.negative.T
    expected = np.exp(zp) / (np.exp(zp) + np.exp(zn))
    assert np.allclose(1 / (1 + np.exp(-S)), expected, atol=1e-6)  # scores are the logits


def test_confident_scores_do_not_tie(syn):
    """At CLIP's logit scale sigmoid probabilities round to exactly 1.0; logits keep the ranking."""
    pv = zs.prompt_vectors(syn.texts, syn.M, syn.findings)
    S = zs.scores(syn.X, pv, "cosine", 100.0)
    assert (1 / (1 + np.exp(-S)) == 1.0).any()  # the probabilities would tie here
    assert len(np.unique(S[:, 0])) > 0.99 * S.shape[0]


def test_ensemble_is_renormalised_mean_and_single_picks_preferred_template(syn):
    pv = zs.prompt_vectors(syn.texts, syn.M, syn.findings, "ensemble")
    rows = (syn.texts["finding"] == syn.findings[2]) & (syn.texts["polarity"] == "positive")
    v = syn.M[rows.to_numpy()].mean(axis=0)
    assert np.allclose(pv.positive[2], v / np.linalg.norm(v), atol=1e-6)
    tpl = syn.texts.filter(rows)["template"][1]
    single = zs.prompt_vectors(syn.texts, syn.M, syn.findings, "single", {"positive": tpl})
    idx = np.flatnonzero(rows.to_numpy())[1]
    assert np.allclose(single.positive[2], syn.M[idx], atol=1e-6)


def test_calibrated_threshold_maximises_f1_on_its_split(syn):
    pv = zs.prompt_vectors(syn.texts, syn.M, syn.findings)
    va = syn.split == "val"
    S = zs.scores(syn.X[va], pv, "pos-neg", syn.logit_scale)
    Y01, known = mt.apply_policy(syn.Y[va])
    thr = fit_thresholds(Y01, known, S)
    for j in range(2):
        y, s = Y01[known[:, j], j], S[known[:, j], j]
        best = max(f1_score(y, s >= t) for t in np.unique(s))  # brute force over every cut
        assert f1_score(y, s >= thr[j]) == pytest.approx(best)


def test_youden_threshold_maximises_tpr_minus_fpr_on_its_split(syn):
    from sklearn.metrics import roc_curve

    pv = zs.prompt_vectors(syn.texts, syn.M, syn.findings)
    va = syn.split == "val"
    S = zs.scores(syn.X[va], pv, "pos-neg", syn.logit_scale)
    Y01, known = mt.apply_policy(syn.Y[va])
    thr = fit_thresholds(Y01, known, S, rule="youden")
    for j in range(3):
        y, s = Y01[known[:, j], j], S[known[:, j], j]
        fpr, tpr, _ = roc_curve(y, s)
        got = ((s >= thr[j]) & (y == 1)).sum() / y.sum() - ((s >= thr[j]) & (y == 0)).sum() / (y == 0).sum()
        assert got == pytest.approx((tpr - fpr).max())


def test_raw_dot_defaults_to_one_prompt_per_finding_the_others_to_the_ensemble():
    assert zs.default_templates("raw-dot") == "single"
    assert {zs.default_templates(r) for r in ("cosine", "softmax", "pos-neg")} == {"ensemble"}


def test_a_finding_with_too_few_calibration_positives_keeps_the_default_threshold():
    S = np.array([[0.9, 0.9], [0.8, 0.8], [0.7, 0.7], [0.6, 0.6], [0.5, 0.5], [0.1, 0.1], [0.2, 0.2]])
    Y01 = np.array([[1, 1], [1, 0], [1, 0], [1, 0], [1, 0], [0, 0], [0, 0]])
    thr = fit_thresholds(Y01, np.ones_like(Y01, bool), S, min_positives=5)
    assert thr[0] == pytest.approx(0.5) and np.isnan(thr[1])  # 5 positives: fitted; 1: default
    P = apply_thresholds(S, zs.default_predictions(S, "pos-neg"), thr)
    np.testing.assert_array_equal(P[:, 1], (S[:, 1] >= 0).astype(np.int8))


def test_bad_rule_and_missing_prompts_are_one_line_errors(syn):
    from embedstore.errors import InputError

    pv = zs.prompt_vectors(syn.texts, syn.M, syn.findings)
    with pytest.raises(InputError, match="raw-dot"):
        zs.scores(syn.X, pv, "dot", syn.logit_scale)
    with pytest.raises(InputError, match="no positive prompt embedding for Cardiomegaly"):
        zs.prompt_vectors(syn.texts, syn.M, ["Cardiomegaly"])


def test_default_cuts_at_exactly_zero_raw_dot_strict_the_others_inclusive():
    """The seed's raw-dot rule is dot > 0; cosine and pos-neg predict at probability >= 0.5, i.e.
    logit >= 0 (the README's rules), so a score of exactly 0 splits them."""
    S = np.array([[0.0, -1e-9, 2.0]])
    np.testing.assert_array_equal(zs.default_predictions(S, "raw-dot"), [[0, 0, 1]])
    for rule in ("cosine", "pos-neg"):
        np.testing.assert_array_equal(zs.default_predictions(S, rule), [[1, 0, 1]])
    np.testing.assert_array_equal(zs.default_predictions(S, "softmax"), [[0, 0, 1]])


def test_probabilities_are_exp_of_softmax_log_probabilities_else_the_sigmoid_of_the_logit():
    S = np.log(np.array([[0.2, 0.3, 0.5]]))
    np.testing.assert_allclose(zs.probabilities(S, "softmax"), [[0.2, 0.3, 0.5]])
    logits = np.array([[0.0, np.log(3.0), -np.log(3.0)]])  # odds 1, 3 and 1/3
    for rule in ("raw-dot", "cosine", "pos-neg"):
        np.testing.assert_allclose(zs.probabilities(logits, rule), [[0.5, 0.75, 0.25]])


def test_ensemble_averages_unit_vectors_and_single_takes_the_first_without_a_preference():
    """Prompt vectors of unequal length: each is normalised before the mean, so the ensemble of
    (3, 0) and (0, 1) points along (1, 1), not along their raw mean (1.5, 0.5). A table without a
    template column (prompt texts given directly) works too."""
    texts = pl.DataFrame({"finding": ["A", "A", "A"], "polarity": ["positive", "positive", "negative"]})
    M = np.array([[3.0, 0.0], [0.0, 1.0], [0.0, -2.0]], dtype=np.float32)
    pv = zs.prompt_vectors(texts, M, ["A"], "ensemble")
    np.testing.assert_allclose(pv.positive[0], [2 ** -0.5, 2 ** -0.5], rtol=1e-6)
    np.testing.assert_allclose(pv.negative[0], [0.0, -1.0])
    single = zs.prompt_vectors(texts, M, ["A"], "single")  # no preferred template: the first row
    np.testing.assert_allclose(single.positive[0], [1.0, 0.0])


def test_softmax_log_probabilities_stay_finite_for_images_far_apart():
    """One image near every positive prompt, one opposite them: at logit scale 100 their logits
    differ by about 200, so each row must be shifted by its own maximum (float32 exp(-200) is 0)."""
    pv = zs.PromptVectors(["A", "B"], np.array([[1.0, 0.0], [0.8, 0.6]], np.float32), np.full((2, 2), np.nan, np.float32))
    X = np.array([[1.0, 0.0], [-1.0, 0.0]], dtype=np.float32)
    S = zs.scores(X, pv, "softmax", 100.0)
    assert np.isfinite(S).all()
    z = 100.0 * np.array([[1.0, 0.8], [-1.0, -0.8]])
    np.testing.assert_allclose(S, z - np.log(np.exp(z - z.max(axis=1, keepdims=True)).sum(axis=1, keepdims=True))
                               - z.max(axis=1, keepdims=True), rtol=1e-5, atol=1e-5)


def test_rule_list_takes_all_one_or_several_rules():
    assert zs.rule_list("all") == list(zs.RULES)
    assert zs.rule_list("cosine") == ["cosine"]
    assert zs.rule_list(["pos-neg", "softmax"]) == ["pos-neg", "softmax"]


@pytest.mark.parametrize("call, message", [
    (lambda syn, pv: zs.scores(syn.X, pv, "dot", syn.logit_scale),
     "zero-shot rule 'dot' is not one of raw-dot, cosine, softmax, pos-neg"),
    (lambda syn, pv: zs.rule_list(["cosine", "dot"]),
     r"zero-shot rule 'dot' is not one of raw-dot, cosine, softmax, pos-neg \(or all\)"),
    (lambda syn, pv: zs.prompt_vectors(syn.texts, syn.M, syn.findings, "mean"),
     "templates 'mean' is not one of single, ensemble"),
    (lambda syn, pv: zs.prompt_vectors(syn.texts, syn.M, ["Cardiomegaly", "Edema"]),
     "no positive prompt embedding for Cardiomegaly, Edema; encode the prompts for this version first"),
    (lambda syn, pv: zs.scores(syn.X, zs.PromptVectors(pv.findings, pv.positive, np.full_like(pv.negative, np.nan)),
                               "pos-neg", syn.logit_scale),
     "rule pos-neg needs a negative prompt for finding_00, finding_01, finding_02"),
])
def test_bad_input_is_an_input_error_naming_the_choices(syn, call, message):
    from embedstore.errors import InputError

    pv = zs.prompt_vectors(syn.texts, syn.M, syn.findings)
    with pytest.raises(InputError, match=message):
        call(syn, pv)


def test_zeroshot_refuses_unknown_templates_before_reading_the_store():
    from embedstore.errors import InputError

    with pytest.raises(InputError, match="templates 'mean' is not one of single, ensemble"):
        zs.zeroshot(None, templates="mean")


def test_single_without_the_preferred_template_takes_one_row_and_opposite_prompts_average_to_zero():
    """`single` falls back to the first row (one prompt, not an average) when no row has the
    preferred template; the preferred templates are prompts.toml's, one per polarity; prompts that
    cancel out ensemble to the zero vector, not NaN."""
    from embedstore.data.prompts import prompts_for

    texts = pl.DataFrame({"finding": ["A", "A", "A"], "polarity": ["positive", "positive", "negative"],
                          "template": ["t1", "t2", "t3"]})
    M = np.array([[3.0, 0.0], [0.0, 1.0], [0.0, -2.0]], dtype=np.float32)
    single = zs.prompt_vectors(texts, M, ["A"], "single", {"positive": "other", "negative": "t3"})
    np.testing.assert_allclose(single.positive[0], [1.0, 0.0])
    np.testing.assert_allclose(single.negative[0], [0.0, -1.0])
    preferred = zs._preferred_templates()
    rows = prompts_for("Edema")
    for polarity in ("positive", "negative"):
        assert preferred[polarity] == next(r["template"] for r in rows if r["polarity"] == polarity) != ""
    np.testing.assert_array_equal(zs.ensemble(np.array([[1.0, 0.0], [-1.0, 0.0]])), [0.0, 0.0])


def test_zeroshot_reads_the_where_rows_labels_its_runs_by_rule_and_refuses_a_tuned_versions_own_images(tmp_path):
    """Through the store: `where` selects the images (the runs equal those on the same rows passed
    as data); `Runs.to_polars()` tells the runs apart by rule; a missing calibration split is
    refused naming the version; a fine-tuned version is not scored on its own training images."""
    from dataclasses import replace

    from embedstore.analyses.runs import load_data
    from embedstore.errors import InputError
    from store_helpers import copy_tuned_on_test_images
    from store_helpers import open_store as Store

    syn = synthetic.make(n=400, n_findings=3, d=8, seed=7)
    path = tmp_path / "store"
    st = Store(path)
    version = synthetic.to_store(syn, st)
    where = "view = 'frontal'"
    runs = zs.zeroshot(st, version, rule=["cosine", "pos-neg"], where=where, n_boot=0)
    assert sorted(runs.to_polars()["rule"].unique().to_list()) == ["cosine", "pos-neg"]
    data = load_data(st, version, where)
    assert 0 < len(data.ids) < len(syn.ids)
    same = zs.zeroshot(st, version, rule=["cosine", "pos-neg"], n_boot=0, data=data)
    key = ["finding", "metric"]
    for a, b in zip(runs, same):
        assert a.config["where"] == where and b.config["where"] is None and a.run_id != b.run_id
        assert a.metrics.sort(key, nulls_last=True).equals(b.metrics.sort(key, nulls_last=True))

    full = load_data(st, version)
    no_val = replace(full, split=np.where(full.split == "val", "train", full.split))
    with pytest.raises(InputError, match=rf"no image of version {version} is in split 'val'"):
        zs.zeroshot(st, rule="cosine", n_boot=0, data=no_val)

    tuned, v2 = copy_tuned_on_test_images(path, tmp_path / "tuned", full, texts=(syn.texts.select("text"), syn.M))
    with pytest.raises(InputError, match=rf"^zeroshot on split 'test' would score version {v2} on 3 image\(s\) it .* and 2 it was"):
        zs.zeroshot(tuned, v2, rule="cosine", n_boot=0)
