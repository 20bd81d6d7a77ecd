"""Paired comparisons: the statistics on simulated data with a known answer (a planted difference
is found, identical methods are not told apart more than alpha allows, DeLong agrees, Holm is
Holm), then `compare V1 V2` and `compare --methods` on a real store and through the CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from embedstore.analyses import compare as cmp
import synthetic_vectors as synthetic

sys.path.insert(0, str(Path(__file__).resolve().parent))
from store_helpers import build_store  # noqa: E402


def _methods(rng, n=300, F=2, signal_1=1.0, signal_2=1.0, prev=0.3, per_group=2):
    """Labels shared within groups of `per_group` images and two methods' scores with their own noise."""
    G = n // per_group
    Y = np.repeat((rng.random((G, F)) < prev), per_group, axis=0).astype(np.float32)
    base = np.repeat(rng.normal(size=(G, F)), per_group, axis=0)  # what both methods see in a patient
    S1 = signal_1 * Y + 0.7 * base + rng.normal(size=Y.shape)
    S2 = signal_2 * Y + 0.7 * base + rng.normal(size=Y.shape)
    groups = np.repeat(np.arange(G), per_group)
    return Y, S1, S2, (S1 > 0.5).astype(np.int8), (S2 > 0.5).astype(np.int8), groups


def test_a_planted_difference_is_found_with_an_interval_excluding_zero():
    rng = np.random.default_rng(0)
    Y, S1, S2, P1, P2, groups = _methods(rng, n=600, signal_1=0.5, signal_2=1.5)
    out = cmp.paired_differences(Y, S1, S2, P1, P2, groups, ["a", "b"], n_boot=1000)
    for metric in ("auroc", "macro_auroc"):
        for r in out.filter(pl.col("metric") == metric).iter_rows(named=True):
            assert r["diff"] > 0 and r["diff_lo"] > 0 and r["verdict"] == "better", r
            assert r["p_value"] < 0.01
    # swapping the sides flips the sign and the verdict
    back = cmp.paired_differences(Y, S2, S1, P2, P1, groups, ["a", "b"], n_boot=1000)
    macro = back.filter(pl.col("metric") == "macro_auroc").row(0, named=True)
    assert macro["diff_hi"] < 0 and macro["verdict"] == "worse"


def test_identical_methods_are_called_different_at_most_8_percent_of_the_time():
    """200 null replicates: both methods have the same signal (exchangeable scores)."""
    rng = np.random.default_rng(1)
    macro_hits, finding_hits = 0, 0
    for r in range(200):
        Y, S1, S2, P1, P2, groups = _methods(rng, n=200, F=2)
        out = cmp.paired_differences(Y, S1, S2, P1, P2, groups, ["a", "b"], n_boot=400, seed=r)
        macro_hits += out.filter(pl.col("metric") == "macro_auroc")["verdict"][0] != "no difference"
        finding_hits += out.filter(pl.col("metric") == "auroc")["verdict"][0] != "no difference"
    assert macro_hits / 200 <= 0.08 and finding_hits / 200 <= 0.08, (macro_hits, finding_hits)


def test_delong_agrees_with_the_paired_bootstrap_on_independent_images():
    rng = np.random.default_rng(2)
    for s2, expect_different in ((1.0, False), (1.8, True)):
        Y, S1, S2, P1, P2, groups = _methods(rng, n=800, F=1, signal_1=1.0, signal_2=s2, per_group=1)
        out = cmp.paired_differences(Y, S1, S2, P1, P2, None, ["a"], n_boot=2000)
        r = out.filter(pl.col("metric") == "auroc").row(0, named=True)
        diff, se, p = cmp.delong_paired(Y[:, 0], S1[:, 0], S2[:, 0])
        assert diff == pytest.approx(r["diff"])
        assert r["delong_p"] == pytest.approx(p)
        assert (p < 0.05) == (r["p_value"] < 0.05) == expect_different
        # DeLong's standard error and the bootstrap interval's width agree within 25 %
        assert (r["diff_hi"] - r["diff_lo"]) / (2 * 1.96 * se) == pytest.approx(1.0, rel=0.25)


def test_holm_is_the_step_down_correction():
    p = np.array([0.01, 0.04, np.nan, 0.03, 0.2])
    # sorted 0.01, 0.03, 0.04, 0.2 with m = 4: 0.04, 0.09, 0.09 (monotone), 0.2
    np.testing.assert_allclose(cmp.holm(p), [0.04, 0.09, np.nan, 0.09, 0.2])


def test_bootstrap_p_is_two_sided_and_smoothed():
    assert cmp.bootstrap_p(np.zeros(99)) == 1.0
    assert cmp.bootstrap_p(np.ones(99)) == pytest.approx(2 / 100)
    assert cmp.bootstrap_p(np.r_[np.ones(89), -np.ones(10)]) == pytest.approx(2 * 11 / 100)


def test_a_finding_below_min_positives_is_not_evaluable_and_left_out_of_the_macro():
    rng = np.random.default_rng(3)
    Y, S1, S2, P1, P2, groups = _methods(rng, n=400, F=2, signal_2=2.0)
    Y[:, 1] = 0
    Y[:8, 1] = 1  # four positive groups
    out = cmp.paired_differences(Y, S1, S2, P1, P2, groups, ["a", "b"], n_boot=300, min_positives=10)
    b = out.filter((pl.col("finding") == "b") & (pl.col("metric") == "auroc")).row(0, named=True)
    assert b["verdict"] == "not evaluable" and b["diff_lo"] is None and b["p_holm"] is None
    a = out.filter((pl.col("finding") == "a") & (pl.col("metric") == "auroc")).row(0, named=True)
    macro = out.filter(pl.col("metric") == "macro_auroc").row(0, named=True)
    assert macro["diff"] == pytest.approx(a["diff"])


# ---- on a store ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two(tmp_path_factory):
    """One store, two versions of the same 1,500 images: v2's vectors carry more label signal."""
    import embedstore

    st = embedstore.open(tmp_path_factory.mktemp("cmp"))
    weak = synthetic.make(n=1500, n_findings=4, d=32, seed=0, signal=0.6)
    strong = synthetic.make(n=1500, n_findings=4, d=32, seed=0, signal=1.6)
    synthetic.to_store(weak, st, name="weak")
    synthetic.to_store(strong, st, name="strong")
    for v in ("v1", "v2"):
        st.zeroshot(v, rule="pos-neg", n_boot=300)
        st.probe(v, n_boot=300)
    st.zeroshot("v1", rule="cosine", n_boot=300)  # on v1 only: compare runs it on v2 with v1's settings
    return st


def test_compare_versions_pairs_runs_side_by_side_with_paired_intervals(two):
    cosine_runs = "SELECT count(*) AS n FROM runs WHERE kind = 'zeroshot' AND config->>'rule' = 'cosine'"
    assert two.sql(cosine_runs)["n"][0] == 1
    df = two.compare("v1", "v2")
    assert two.sql(cosine_runs)["n"][0] == 2  # v1's cosine run, now also on v2, with v1's settings
    assert set(df["run"].unique().to_list()) == {"zeroshot(rule=pos-neg)", "zeroshot(rule=cosine)",
                                                  "probe(classifier=logreg)"}
    for kind, label in (("zeroshot", "zeroshot(rule=pos-neg)"), ("probe", "probe(classifier=logreg)")):
        part = df.filter(pl.col("run") == label)
        stored = {v: two.sql(f"""SELECT finding, metric, value FROM metrics WHERE run_id =
                     (SELECT run_id FROM runs WHERE version = '{v}' AND kind = '{kind}'
                      AND (kind <> 'zeroshot' OR config->>'rule' = 'pos-neg') ORDER BY started DESC LIMIT 1)""")
                  for v in ("v1", "v2")}
        for side, v in (("value_1", "v1"), ("value_2", "v2")):
            got = part.select("finding", "metric", side).join(stored[v], on=["finding", "metric"], nulls_equal=True)
            assert got.height == part.height
            assert np.allclose(got[side].to_numpy(), got["value"].to_numpy(), equal_nan=True)
        macro = part.filter(pl.col("metric") == "macro_auroc").row(0, named=True)
        assert macro["diff"] == pytest.approx(macro["value_2"] - macro["value_1"])
        assert macro["diff_lo"] > 0 and macro["verdict"] == "better"  # v2 has the stronger signal
        # per-finding AUROC rows carry paired intervals, Holm p-values and DeLong's cross-check
        rows = part.filter(pl.col("metric") == "auroc")
        assert rows["diff_lo"].null_count() == 0 and rows["p_holm"].null_count() == 0
        assert (rows["p_holm"] >= rows["p_value"]).all()
        # metrics that cannot be paired (e.g. the threshold) have no paired interval
        assert part.filter(pl.col("metric") == "threshold")["diff_lo"].null_count() == \
            part.filter(pl.col("metric") == "threshold").height


def test_compare_methods_on_one_version(two):
    df = two.compare(methods=["zeroshot:pos-neg", "probe"], version="v2")
    assert set(df["method_1"]) == {"zeroshot:pos-neg"} and set(df["method_2"]) == {"probe"}
    paired = df.filter(pl.col("metric") == "macro_auroc").row(0, named=True)
    zs = two.sql("""SELECT value FROM metrics JOIN runs USING (run_id) WHERE version = 'v2' AND kind = 'zeroshot'
                    AND config->>'rule' = 'pos-neg' AND finding IS NULL AND metric = 'macro_auroc'""")["value"][0]
    assert paired["value_1"] == pytest.approx(zs)
    from embedstore.errors import InputError

    with pytest.raises(InputError, match="no stored run on version v2"):
        two.compare(methods=["zeroshot:softmax", "probe"], version="v2")
    with pytest.raises(InputError, match="unknown method"):
        two.compare(methods=["zeroshot:pos-neg", "lasso"], version="v2")


def test_compare_refuses_one_version_twice_and_is_empty_without_shared_runs(two, tmp_path):
    import embedstore
    from embedstore.errors import InputError, StoreError

    with pytest.raises(InputError, match="two different versions"):
        two.compare("v1", "v1")
    with pytest.raises(StoreError, match="unknown version"):
        two.compare("v1", "v9")
    st = embedstore.open(tmp_path / "s")
    syn = synthetic.make(n=200, n_findings=2, d=16, seed=1)
    synthetic.to_store(syn, st, name="a")
    synthetic.to_store(syn, st, name="b")
    with pytest.raises(InputError, match="run the missing analyses first: embedstore probe") as err:
        st.compare("v1", "v2", no_run=True)  # nothing run on either: it names the commands
    assert "embedstore zeroshot" in str(err.value) and "\n" not in str(err.value)
    assert st.sql("SELECT count(*) AS n FROM runs")["n"][0] == 0
    df = st.compare("v1", "v2")  # runs the headline analyses on both, then pairs them
    assert set(df["kind"]) == {"zeroshot", "probe"}
    assert st.sql("SELECT version, count(*) AS n FROM runs GROUP BY ALL ORDER BY 1").rows() == [("v1", 5), ("v2", 5)]


def test_cli_prints_paired_differences(two, capsys, monkeypatch):
    from embedstore.cli import main

    monkeypatch.setenv("COLUMNS", "200")  # rich folds cells at the terminal's width
    with pytest.raises(SystemExit) as exc:
        main(["compare", "v1", "v2", "--store", str(two.path)])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "zeroshot(rule=pos-neg)" in out and "probe(classifier=logreg)" in out
    assert "macro_auroc" in out and "better" in out
    with pytest.raises(SystemExit):
        main(["compare", "v1", "v2", "--store", str(two.path), "--format", "json"])
    rows = json.loads(capsys.readouterr().out)
    assert {r["kind"] for r in rows} == {"zeroshot", "probe"}
    assert {"value_1", "value_2", "diff", "diff_lo", "diff_hi", "p_value", "p_holm", "verdict"} <= set(rows[0])
    # json is the API's frame, every row; only the screen table is compact (summary metrics, AUROC)
    assert len(rows) == two.compare("v1", "v2").height > len([line for line in out.splitlines() if "│" in line])
    assert any(r["metric"] == "f1" for r in rows) and " f1 " not in out
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--methods", "zeroshot:pos-neg,probe", "--version", "v2", "--store", str(two.path),
              "--format", "json"])
    assert exc.value.code == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and {"method_1", "method_2", "diff_lo", "verdict"} <= set(rows[0])
    with pytest.raises(SystemExit) as exc:
        main(["compare", "v1", "v1", "--store", str(two.path)])
    assert exc.value.code == 2


def test_compare_refuses_versions_whose_test_sets_differ(tmp_path, tiny_model):
    """v1 (phantom-clip) has every image; v2, another model's (the tiny open_clip), lacks two test images."""
    from embedstore.data.records import Dataset
    from embedstore.errors import InputError

    st, ds = build_store(tmp_path, n=30)
    tests = [r for r in ds.records if r.split == "test"]
    kept = [r for r in ds.records if r not in tests[:2]]  # v2 lacks two test images, v1 has them
    st.encode(Dataset(ds.name, ds.source, ds.scheme, ds.findings, kept), model=tiny_model, batch_size=16, workers=0)
    with pytest.raises(InputError, match=rf"versions v1 and v2 have different test sets: 2 of {len(tests)} test images") as err:
        st.compare("v1", "v2")
    assert "\n" not in str(err.value)
    st.encode(ds, model=tiny_model, batch_size=16, workers=0)  # the two missing images added: compare works
    assert not st.compare("v1", "v2").is_empty()
