"""The study end to end on phantoms with the bundled model: synth -> read -> encode -> analyses
-> Grad-CAM agreement. These are the acceptance checks that need real model behaviour.

One module-scoped store (a few hundred phantom studies) serves every test, so the model is
loaded and the images are encoded once.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from store_helpers import open_store
from embedstore.data.datasets import read_boxes, read_dataset
from embedstore.data.records import POSITIVE

STUDIES = 300
SEED = 1


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    from embedstore.synth import synth

    out = tmp_path_factory.mktemp("phantoms") / "p"
    synth(str(out), studies=STUDIES, seed=SEED, size=128, workers=2)
    return out


@pytest.fixture(scope="module")
def store(phantoms, tmp_path_factory):
    st = open_store(tmp_path_factory.mktemp("store"))
    st.encode(str(phantoms), model="phantom-clip", workers=0)
    return st


def _overall(metrics: pl.DataFrame, name: str) -> float:
    row = metrics.filter(pl.col("finding").is_null() & (pl.col("metric") == name))
    return float(row["value"][0])


def test_synth_then_openi_reader_gives_the_recorded_labels(phantoms):
    ds = read_dataset(str(phantoms))
    truth = pl.read_csv(phantoms / "labels.csv")
    assert len({r.study_id for r in ds.records}) == STUDIES
    assert len(ds.records) == truth.height
    by_id = {r.image_id: r for r in ds.records}
    findings = [c for c in truth.columns if c not in ("image_id", "study_id", "view")]
    assert sorted(findings) == sorted(ds.findings)
    for row in truth.iter_rows(named=True):
        rec = by_id[row["image_id"]]
        got = {f for f, v in rec.labels.items() if v == POSITIVE}
        assert got == {f for f in findings if row[f] == 1}, row["image_id"]
        assert rec.view == row["view"]


def test_synth_boxes_read_through_the_canonical_reader(phantoms):
    boxes = read_boxes(str(phantoms / "boxes.csv"), box_format="canonical")
    truth = pl.read_csv(phantoms / "labels.csv")
    assert boxes.height > 0
    assert set(boxes["image_id"]) <= set(truth["image_id"])
    assert (boxes["x_max"] > boxes["x_min"]).all() and (boxes["y_max"] > boxes["y_min"]).all()


@pytest.mark.slow  # the 300-study store: ~8 s to encode
def test_encode_stores_every_image_and_boxes(store, phantoms):
    truth = pl.read_csv(phantoms / "labels.csv")
    ids, X = store.image_vectors(store.resolve_version(None))
    assert len(ids) == truth.height
    assert np.allclose(np.linalg.norm(X, axis=1), 1, atol=1e-3)
    assert store.boxes().height == pl.read_csv(phantoms / "boxes.csv").height
    assert store.verify(strict=True).height > 0


@pytest.mark.slow  # the 300-study store: ~8 s to encode
def test_raw_dot_over_predicts(store):
    m = store.zeroshot(rule="raw-dot").to_polars()
    per = m.filter(pl.col("finding").is_not_null())
    wide = per.pivot(on="metric", index="finding", values="value")
    wide = wide.filter(pl.col("prevalence") > 0)
    over = (wide["pred_rate@default"] > wide["prevalence"]).sum()  # the seed's cut at 0
    assert over > wide.height / 2, wide.select("finding", "prevalence", "pred_rate@default")


@pytest.mark.slow  # the 300-study store: ~8 s to encode
def test_calibrated_pos_neg_beats_raw_dot_on_macro_f1(store):
    # 60 test studies: at the default bar of 10 positive patients no finding is evaluable, so 5 here
    raw = store.zeroshot(rule="raw-dot", min_positives=5).to_polars()  # as the seed ran it: one prompt, cut at 0 (@default)
    posneg = store.zeroshot(rule="pos-neg", calibrate_on="val", min_positives=5).to_polars()
    assert _overall(posneg, "n_macro_findings") >= 3
    assert _overall(posneg, "macro_f1") > _overall(raw, "macro_f1@default")


@pytest.mark.slow  # the 300-study store: ~8 s to encode
def test_separability_fits_on_train_and_scores_on_test(store, monkeypatch):
    from embedstore.analyses import separability as sp
    from separability_spy import assert_fitted_on_train_scored_on_test, spy_on_fitted_parts

    seen = spy_on_fitted_parts(monkeypatch)
    assert_fitted_on_train_scored_on_test(store, seen, sp.separability(store, tsne_max=200, force=True)[0])


@pytest.fixture(scope="module")
def shifted_store(tmp_path_factory):
    """1,000 phantom studies rendered as another site would (`--shift site-b`), encoded with
    phantom-clip: out of the model's training distribution, as IU-Xray is for BiomedCLIP. The
    probe needs this many studies: with a few hundred, its rare findings have a handful of
    train positives. Measured (macro AUROC, probe vs pos-neg zero-shot): 1,000 studies, seed 1:
    0.85 vs 0.76 over 6 evaluable findings; 600 studies: 3 evaluable findings, margins 0.10,
    0.03 and 0.09 for seeds 1-3; 300 studies (the session's site-B study, seed 3): none evaluable
    at the default 10 positive patients, and at 3 the probe loses (0.82 vs 0.84)."""
    from embedstore.synth import synth

    root = tmp_path_factory.mktemp("site-b")
    synth(str(root / "p"), studies=1000, seed=SEED, size=128, workers=2, shift="site-b")
    st = open_store(root / "store")
    st.encode(str(root / "p"), model="phantom-clip", workers=0)
    return st


@pytest.mark.slow  # 1,000 studies: ~30 s to draw and encode
def test_probe_beats_zero_shot_on_macro_auroc_out_of_distribution(shifted_store):
    zs = _overall(shifted_store.zeroshot(rule="pos-neg").to_polars(), "macro_auroc")
    probe = _overall(shifted_store.probe().to_polars(), "macro_auroc")
    assert probe > zs + 0.02, (probe, zs)


@pytest.fixture(scope="module")
def large_store(tmp_path_factory):
    """1,000 phantom studies in phantom-clip's own domain: enough test patients (200 studies) for
    six findings to be evaluable at the default bar of 10 positive patients."""
    from embedstore.synth import synth

    root = tmp_path_factory.mktemp("large")
    synth(str(root / "p"), studies=1000, seed=SEED, size=128, workers=2)
    st = open_store(root / "store")
    st.encode(str(root / "p"), model="phantom-clip", workers=0)
    return st


@pytest.mark.slow
def test_calibrated_probe_predicts_each_evaluable_finding_at_about_its_prevalence(large_store):
    """The probe's threshold fitted on val keeps predicted rate / prevalence within [0.5, 2] for
    every evaluable finding, where the default cut at 0.5 of the class-balanced model over-predicts.

    Measured (seeds 1, 2): calibrated 0.87-1.66, default up to 2.06. Out of distribution (site-b)
    a weak finding (AUROC 0.62) reaches 2.5 calibrated (4.5 at the default cut): a max-F1 cut on a
    weak classifier predicts more positives than occur, by the rule's nature."""
    metrics = large_store.probe().to_polars()
    run_id = metrics["run_id"][0]
    evaluable = large_store.sql(f"SELECT finding FROM run_findings WHERE run_id = '{run_id}' AND evaluable")
    assert evaluable.height >= 5
    bias = (metrics.filter(pl.col("metric").is_in(["bias", "bias@default"]))
            .pivot(on="metric", index="finding", values="value").join(evaluable, on="finding"))
    assert bias["bias"].is_between(0.5, 2.0).all(), bias
    assert (bias["bias@default"] > bias["bias"]).sum() > bias.height / 2, bias  # the default over-predicts


def _overall_intervals(run) -> dict[str, tuple[float, float, float]]:
    return {r["metric"]: (r["value"], r["lo"], r["hi"])
            for r in run.metrics.filter(pl.col("finding").is_null()).iter_rows(named=True)}


BASELINES = ("random", "random_box", "centre")


@pytest.mark.slow  # the 300-study store: ~8 s to encode
def test_gradcam_beats_the_baselines_on_held_out_test_items(store, phantoms):
    """The default: test-split images only (51 of the 309 boxed items at 300 studies; 235 are the
    probe's training images, 23 val). The estimate keeps its 1.3x margin over every baseline and
    its interval clears the chance baselines, but with 51 items clustered by patient the interval
    no longer clears the centre prior (pointing 0.22 [0.12, 0.37] vs centre 0.13; energy 0.11
    [0.06, 0.17] vs centre 0.07). No check scores all items: most are the probe's training images."""
    store.probe()
    result = store.agreement(boxes=str(phantoms / "boxes.csv"), box_format="canonical", target="probe", n_boot=200)
    images = store.images().select("image_id", "split")
    boxed = pl.read_csv(phantoms / "boxes.csv").select("image_id", "finding").unique().join(images, on="image_id")
    per_split = dict(boxed.group_by("split").len().iter_rows())
    assert result.scored == per_split["test"] and result.left_out == {"train": per_split["train"], "val": per_split["val"]}
    overall = _overall_intervals(result.run)
    for metric in ("pointing", "energy"):
        value, lo, _ = overall[metric]
        assert value >= 1.3 * max(overall[f"{metric}@{b}"][0] for b in BASELINES), (metric, overall)
        assert lo > max(overall[f"{metric}@{b}"][0] for b in ("random", "random_box")), (metric, overall)
