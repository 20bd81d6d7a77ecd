"""Every metric a zero-shot or probe run stores equals scikit-learn's, recomputed in the test from
the store's own tables (`image_scores`, `labels`, `images`, read with `Store.sql`): per finding and
macro, at the fitted operating point and `@default`. The numbers a report shows are then what
scikit-learn says about the stored scores, whatever the code's helpers do."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import polars as pl
import pytest
from scipy.special import expit
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

import synthetic_vectors as synthetic

MIN_POSITIVES = 10  # the README's evaluable-finding bar (patients), the runs' default
# Stored metrics fitted on val (the probe's C path): not recomputable from the scored split's tables.
FITTED_ON_VAL = {"C", "C_at_edge", "val_ap", "n_C_at_edge"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A synthetic store, two images per patient, whose last finding has a few positive patients
    only (not evaluable on test, none on val: no fitted threshold): every zero-shot rule and the
    logistic probe run on it.

    Each finding's three prompts per polarity are renamed: prompts.toml's first template (the one
    raw-dot's `single` must take), a sentence of the finding's own (template "") that sorts before
    it in the store, and the toml's second template."""
    from embedstore.analyses.probe import probe
    from embedstore.analyses.zeroshot import zeroshot
    from store_helpers import open_store as Store

    syn = synthetic.make(n=1600, n_findings=5, d=16, seed=7, images_per_patient=2)
    rare = syn.Y[:, 4]
    rare[np.isfinite(rare)] = 0
    rare[(np.arange(len(rare)) % 100 < 2) & (syn.split != "val")] = 1  # one patient in fifty, none on val
    toml = _toml_templates()
    renamed = []
    for k, r in enumerate(syn.texts.iter_rows(named=True)):
        first, second, word = toml[r["polarity"]][0], toml[r["polarity"]][1], r["polarity"][:3]
        template = [first, "", second][k % 3]
        text = template.format(term=r["finding"]) if template else f"a big {word} {r['finding']}"
        renamed.append({**r, "template": template, "text": text})
    syn.texts = pl.DataFrame(renamed)
    st = Store(tmp_path_factory.mktemp("stored-metrics") / "store")
    version = synthetic.to_store(syn, st)
    # a later version with other vectors: the runs below name theirs and must read it, not the latest
    synthetic.to_store(replace(syn, X=np.roll(syn.X, 1, axis=0), M=np.roll(syn.M, 1, axis=0)), st, name="later")
    runs = {f"zeroshot:{r.config['rule']}": r for r in zeroshot(st, version, n_boot=20)}
    runs["probe"] = probe(st, version, n_boot=20)[0]
    return st, version, runs


def _toml_templates() -> dict[str, list[str]]:
    """The generic templates of each polarity, read from prompts.toml itself."""
    import tomllib
    from importlib import resources

    return tomllib.loads(resources.files("embedstore.data").joinpath("prompts.toml").read_text())["templates"]


def _scored(st, run_id: str) -> dict:
    """The run's scored images as wide arrays from SQL: score, pred, label (NaN = not 1 / 0), patient."""
    long = st.sql(f"""SELECT s.id, s.finding, s.score, s.pred, l.value AS label, i.patient_id
                      FROM image_scores s JOIN images i USING (id)
                      LEFT JOIN labels l ON l.id = s.id AND l.finding = s.finding
                      WHERE s.run_id = '{run_id}' ORDER BY s.id, s.finding""")
    findings = sorted(set(long["finding"].to_list()))
    F = len(findings)
    wide = lambda col: long[col].to_numpy().astype(np.float64).reshape(-1, F)  # noqa: E731
    label = wide("label")
    label[(label != 0) & (label != 1)] = np.nan  # uncertain (-1) and blank are masked by default
    patient = np.asarray(long["patient_id"].to_list()).reshape(-1, F)[:, 0]
    return {"findings": findings, "score": wide("score"), "pred": wide("pred"), "label": label, "patient": patient}


def _stored_metrics(st, run_id: str) -> dict:
    rows = st.sql(f"SELECT finding, metric, value FROM metrics WHERE run_id = '{run_id}'")
    return {(r["finding"], r["metric"]): r["value"] for r in rows.iter_rows(named=True)}


def _default_decisions(method: str, S: np.ndarray) -> np.ndarray:
    """Each method's documented default cut, applied to its stored scores (README, analyses/zeroshot.py)."""
    if method == "zeroshot:raw-dot":
        return (S > 0).astype(int)
    if method == "zeroshot:softmax":  # the top-1 finding of each image
        return (S == S.max(axis=1, keepdims=True)).astype(int)
    if method == "probe":  # the stored score is the probability
        return (S >= 0.5).astype(int)
    return (S >= 0).astype(int)  # cosine and pos-neg: probability >= 0.5, i.e. logit >= 0


def _probabilities(method: str, S: np.ndarray) -> np.ndarray:
    if method == "zeroshot:softmax":
        return np.exp(S)  # stored as log-probabilities
    return S if method == "probe" else expit(S)


def _ece(y: np.ndarray, p: np.ndarray) -> float:
    """Count-weighted |observed - predicted| over scikit-learn's 10 uniform calibration bins."""
    observed, predicted = calibration_curve(y, p, n_bins=10)
    counts = np.bincount(np.searchsorted(np.linspace(0, 1, 11)[1:-1], p), minlength=10)
    return float((counts[counts > 0] * np.abs(observed - predicted)).sum() / len(y))


def _expected(method: str, d: dict) -> tuple[dict, list[int]]:
    """((finding, metric) -> scikit-learn's value on the stored scores and labels, the evaluable
    findings' columns: at least MIN_POSITIVES positive and as many negative patients)."""
    S, Y, patient = d["score"], d["label"], d["patient"]
    decisions = {"": d["pred"].astype(int), "@default": _default_decisions(method, S)}
    prob = _probabilities(method, S)
    out, evaluable = {}, []
    for j, f in enumerate(d["findings"]):
        k = np.isfinite(Y[:, j])
        y, s = Y[k, j].astype(int), S[k, j]
        pos_patients, neg_patients = len(set(patient[k][y == 1])), len(set(patient[k][y == 0]))
        if min(pos_patients, neg_patients) >= MIN_POSITIVES:
            evaluable.append(j)
        out[(f, "n")], out[(f, "support")], out[(f, "positive_groups")] = k.sum(), y.sum(), pos_patients
        out[(f, "auroc")] = skm.roc_auc_score(y, s) if 0 < y.sum() < y.size else np.nan
        out[(f, "ap")] = skm.average_precision_score(y, s) if y.sum() else np.nan
        out[(f, "brier")] = skm.brier_score_loss(y, prob[k, j])
        out[(f, "ece")] = _ece(y, prob[k, j])
        for suffix, P in decisions.items():
            p = P[k, j]
            out[(f, "prevalence" + suffix)], out[(f, "pred_rate" + suffix)] = y.mean(), p.mean()
            out[(f, "bias" + suffix)] = p.mean() / y.mean() if y.sum() else np.nan
            out[(f, "precision" + suffix)] = skm.precision_score(y, p, zero_division=0)
            out[(f, "recall" + suffix)] = skm.recall_score(y, p, zero_division=0)
            out[(f, "f1" + suffix)] = skm.f1_score(y, p, zero_division=0)
    for name in ("auroc", "ap", "f1", "f1@default", "brier", "ece"):
        out[(None, "macro_" + name)] = np.mean([out[(d["findings"][j], name)] for j in evaluable])
    out[(None, "n_findings")], out[(None, "n_macro_findings")] = len(d["findings"]), len(evaluable)
    complete = np.isfinite(Y).all(axis=1)
    y, s = Y[complete].astype(int), S[complete]
    ranked = y.any(axis=1)
    out[(None, "n_complete")], out[(None, "n_ranked")] = complete.sum(), ranked.sum()
    for suffix, P in decisions.items():
        out[(None, "micro_f1" + suffix)] = skm.f1_score(y, P[complete], average="micro")
        out[(None, "exact_match" + suffix)] = skm.accuracy_score(y, P[complete])
        out[(None, "hamming_loss" + suffix)] = skm.hamming_loss(y, P[complete])
    out[(None, "lrap")] = skm.label_ranking_average_precision_score(y, s)
    out[(None, "coverage_error")] = skm.coverage_error(y, s)
    out[(None, "ranking_loss")] = skm.label_ranking_loss(y, s)
    out[(None, "lrap_positive_rows")] = skm.label_ranking_average_precision_score(y[ranked], s[ranked])
    out[(None, "coverage_error_positive_rows")] = skm.coverage_error(y[ranked], s[ranked])
    return out, evaluable


METHODS = ("zeroshot:raw-dot", "zeroshot:cosine", "zeroshot:softmax", "zeroshot:pos-neg", "probe")


def test_stored_runs_equal_an_independent_recomputation_from_the_store_tables(store):
    """One test over the module's store on purpose: the store is built once (module fixture), and
    a mutation tool attributes the fixture's calls to the first test that uses it, so every check
    of the stored runs lives in the test that builds them. Each check says which part failed."""
    st, version, runs = store
    ids = {m: r.run_id for m, r in runs.items()}
    for method in METHODS:
        assert runs[method].version == version, method
        d, stored = _scored(st, ids[method]), _stored_metrics(st, ids[method])
        expected, evaluable = _expected(method, d)
        _check_every_metric(method, stored, expected, evaluable, len(d["findings"]))
        _check_decisions(method, d, stored)
        _check_evaluable(st, ids[method], method, d["findings"], evaluable)
    _check_scores(st, version, ids)
    _check_scored_split(st, ids)
    _check_configs_and_reuse(st, version, runs)
    _check_other_settings(st, version)
    _check_probe_tables(st, version, runs["probe"].run_id)


def _check_every_metric(method: str, stored: dict, expected: dict, evaluable: list[int], n_findings: int) -> None:
    """Every stored metric, per finding and macro, at the operating point and @default, equals
    scikit-learn's on the stored scores and labels."""
    assert 0 < len(evaluable) < n_findings, method  # the rare finding is left out of the macro
    for key, value in expected.items():
        got = stored[key]
        # zero-shot probabilities are float32, the precision of the scores: Brier and ECE to 1e-6
        rel = 1e-6 if "brier" in key[1] or "ece" in key[1] else 1e-9
        assert (np.isnan(got) and np.isnan(value)) or got == pytest.approx(value, rel=rel, abs=1e-12), \
            (method, key, got, value)
    # nothing stored goes unchecked but the threshold (below) and the probe's choice of C on val
    unchecked = {m for (_, m) in stored} - {m for (_, m) in expected} - FITTED_ON_VAL
    assert unchecked == {"threshold"}, method


def _check_decisions(method: str, d: dict, stored: dict) -> None:
    """`pred` in image_scores is score >= the stored per-finding threshold where one was fitted,
    else the method's default cut: the decisions the operating-point metrics are made of."""
    default = _default_decisions(method, d["score"])
    fitted = 0
    for j, f in enumerate(d["findings"]):
        t = stored[(f, "threshold")]
        want = (d["score"][:, j] >= t).astype(int) if np.isfinite(t) else default[:, j]
        np.testing.assert_array_equal(d["pred"][:, j], want, err_msg=f"{method} {f}")
        fitted += np.isfinite(t)
    assert 3 <= fitted < len(d["findings"]), method  # the rare finding keeps the default cut


def _check_evaluable(st, run_id: str, method: str, findings: list[str], evaluable: list[int]) -> None:
    """run_findings marks exactly the findings with enough positive and negative patients."""
    table = st.sql(f"SELECT finding, evaluable FROM run_findings WHERE run_id = '{run_id}' ORDER BY finding")
    assert table["finding"].to_list() == findings, method
    assert table["evaluable"].to_list() == [j in evaluable for j in range(len(findings))], method


def _vectors(frame: pl.DataFrame, column: str = "vector") -> np.ndarray:
    return np.asarray(frame[column].to_list(), dtype=np.float64)


def _check_scores(st, version: str, ids: dict) -> None:
    """The stored scores are each rule's formula (README, analyses/zeroshot.py) on the stored
    vectors: raw-dot s * x.t with prompts.toml's first template of each polarity, the others with
    the renormalised mean of a finding's prompt vectors; the probe's the logistic of its stored
    weights."""
    X = _vectors(st.sql(f"SELECT vector FROM image_embeddings WHERE version = '{version}' "
                     "AND id IN (SELECT id FROM images WHERE split = 'test') ORDER BY id"))
    scale = st.sql(f"SELECT logit_scale FROM versions WHERE version = '{version}'")["logit_scale"][0]
    prompts = st.sql("SELECT p.finding, p.polarity, p.template, t.vector FROM prompts p "
                     f"JOIN text_embeddings t USING (text_hash) WHERE t.version = '{version}' ORDER BY p.finding")
    findings = sorted(set(prompts["finding"].to_list()))
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
    first = _toml_templates()

    def prompt(finding, polarity, single=False):
        rows = prompts.filter((pl.col("finding") == finding) & (pl.col("polarity") == polarity))
        if single:
            rows = rows.filter(pl.col("template") == first[polarity][0])
            assert rows.height == 1
        return unit(unit(_vectors(rows)).mean(axis=0))

    pos = np.stack([prompt(f, "positive") for f in findings])
    neg = np.stack([prompt(f, "negative") for f in findings])
    single = np.stack([prompt(f, "positive", single=True) for f in findings])
    z = scale * X @ pos.T
    want = {"zeroshot:raw-dot": scale * X @ single.T, "zeroshot:cosine": z,
            "zeroshot:softmax": z - np.log(np.exp(z - z.max(axis=1, keepdims=True)).sum(axis=1, keepdims=True))
            - z.max(axis=1, keepdims=True),
            "zeroshot:pos-neg": scale * X @ (pos - neg).T}
    weights = st.sql(f"SELECT finding, intercept, coef FROM probe_weights WHERE run_id = '{ids['probe']}' ORDER BY finding")
    coef = _vectors(weights, "coef")
    want["probe"] = expit(X @ coef.T + weights["intercept"].to_numpy())
    for method, S in want.items():
        got = _scored(st, ids[method])["score"]
        np.testing.assert_allclose(got, S, rtol=1e-4, atol=1e-3 if method.startswith("zeroshot") else 1e-5,
                                   err_msg=method)


def _check_scored_split(st, ids: dict) -> None:
    """image_scores hold exactly the test split's images, every finding of each."""
    test_ids = set(st.sql("SELECT id FROM images WHERE split = 'test'")["id"].to_list())
    for method, run_id in ids.items():
        scored = st.sql(f"SELECT id, count(*) AS n FROM image_scores WHERE run_id = '{run_id}' GROUP BY id")
        assert set(scored["id"].to_list()) == test_ids and set(scored["n"].to_list()) == {5}, method


def _check_configs_and_reuse(st, version: str, runs: dict) -> None:
    """A run's config holds every parameter and a fingerprint of its data and prompts, is stored
    under its kind, and the same call again reuses the stored run."""
    from embedstore.analyses.probe import probe
    from embedstore.analyses.zeroshot import zeroshot

    stored = st.sql("SELECT run_id, kind, config FROM runs")
    kinds = dict(zip(stored["run_id"].to_list(), stored["kind"].to_list()))
    hashes = sorted(st.sql("SELECT text_hash FROM prompts")["text_hash"].to_list())
    findings = sorted(set(st.sql("SELECT finding FROM labels")["finding"].to_list()))
    scoring = {"split": "test", "calibrate_on": "val", "operating_point": "max-f1", "uncertain": "mask",
               "blank": "mask", "n_boot": 20, "seed": 0, "min_positives": 10, "min_calibration_positives": 5,
               "where": None, "findings": findings}
    for method, run in runs.items():
        kind, _, rule = method.partition(":")
        assert kinds[run.run_id] == kind, method
        assert {k: run.config[k] for k in scoring} == scoring, method
        assert isinstance(run.config["data"], str) and len(run.config["data"]) == 16, method
        if kind == "zeroshot":
            assert run.config["rule"] == rule and run.config["prompts"] == hashes, method
            assert run.config["templates"] == ("single" if rule == "raw-dot" else "ensemble"), method
        else:
            from embedstore.analyses.probe import C_GRID, PATIENCE

            assert run.config["classifier"] == "logreg" and run.config["class_weight"] == "balanced"
            assert run.config["grid"] == list(C_GRID) and run.config["patience"] == PATIENCE == 2
    again = {f"zeroshot:{r.config['rule']}": r for r in zeroshot(st, version, n_boot=20)}
    again["probe"] = probe(st, version, n_boot=20)[0]
    for method, run in again.items():
        assert run.reused and run.run_id == runs[method].run_id, method
        assert {"metrics", "run_findings"} <= set(run.tables), method
    forced = zeroshot(st, version, rule="pos-neg", n_boot=20, force=True)[0]
    assert not forced.reused and forced.run_id != runs["zeroshot:pos-neg"].run_id
    runs["zeroshot:pos-neg"] = forced


def _check_other_settings(st, version: str) -> None:
    """The parameters reach the run: at the defaults (1,000 replicates, seed 0) a run records
    them; without calibration only the default cut is scored, no threshold and no @default
    metric; a lower evaluable bar takes in the rare finding; a template choice is kept."""
    from embedstore.analyses.zeroshot import zeroshot

    default = zeroshot(st, version, rule="cosine")[0]
    assert (default.config["n_boot"], default.config["seed"]) == (1000, 0)
    assert zeroshot(st, version, rule="cosine")[0].reused
    plain = zeroshot(st, version, rule="pos-neg", calibrate_on=None, n_boot=20)[0]
    names = {m for _, m in _stored_metrics(st, plain.run_id)}
    assert "threshold" not in names and not any(n.endswith("@default") for n in names)
    d = _scored(st, plain.run_id)
    np.testing.assert_array_equal(d["pred"], _default_decisions("zeroshot:pos-neg", d["score"]))
    low = zeroshot(st, version, rule="pos-neg", n_boot=20, min_positives=1)[0]
    assert low.config["min_positives"] == 1
    assert st.sql(f"SELECT bool_and(evaluable) AS e FROM run_findings WHERE run_id = '{low.run_id}'")["e"][0]
    single = zeroshot(st, version, rule="cosine", templates="single", n_boot=20)[0]
    assert single.config["templates"] == "single"


def _check_probe_tables(st, version: str, run_id: str) -> None:
    """The probe's co-occurrence table is what its stored decisions say on test images with one
    positive finding; its stored weights, loaded back, give its stored scores; a kNN probe keeps
    no weights and records its k."""
    from embedstore.analyses.probe import K_GRID, load_probe, probe

    d = _scored(st, run_id)
    Y, P = d["label"], d["pred"]
    single = np.isfinite(Y).all(axis=1) & (np.nan_to_num(Y).sum(axis=1) == 1)
    co = st.sql(f"SELECT predicted, present, rate, n FROM cooccurrence WHERE run_id = '{run_id}'")
    assert co.height == len(d["findings"]) ** 2
    for r in co.iter_rows(named=True):
        rows = single & (Y[:, d["findings"].index(r["present"])] == 1)
        assert r["n"] == rows.sum()
        want = P[rows, d["findings"].index(r["predicted"])].mean() if rows.any() else np.nan
        assert (np.isnan(r["rate"]) and np.isnan(want)) or r["rate"] == pytest.approx(want), r
    X = _vectors(st.sql(f"SELECT vector FROM image_embeddings WHERE version = '{version}' "
                        "AND id IN (SELECT id FROM images WHERE split = 'test') ORDER BY id"))
    np.testing.assert_allclose(load_probe(st, run_id).predict_proba(X), d["score"], rtol=1e-4, atol=1e-6)
    knn = probe(st, version, classifier="knn", n_boot=20)[0]
    assert knn.config["grid"] == list(K_GRID) and knn.config["class_weight"] is None and "patience" not in knn.config
    assert st.sql(f"SELECT count(*) AS n FROM probe_weights WHERE run_id = '{knn.run_id}'")["n"][0] == 0
    assert _stored_metrics(st, knn.run_id)[(None, "param")] in K_GRID

