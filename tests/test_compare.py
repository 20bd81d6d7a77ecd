"""`embedstore compare V1 V2`: the metrics of runs on both versions side by side, checked against
the stored metrics read back by plain SQL; the CLI table shows both versions' zero-shot and probe."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
from store_helpers import FastLoaded, build_store  # noqa: E402


class OtherModel(FastLoaded):
    """Another tiny model (other weights, other record): encoding with it makes a second version."""

    def __init__(self):
        super().__init__(seed=1)
        self.record = {**self.record, "name": "fast-test-2"}


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    st, ds = build_store(tmp_path_factory.mktemp("cmp"), n=60)
    st.encode(ds, loaded=OtherModel(), batch_size=16, workers=0)
    for v in ("v1", "v2"):
        st.zeroshot(v, rule="pos-neg", n_boot=200)
        st.probe(v, n_boot=200)
    st.zeroshot("v1", rule="cosine", n_boot=200)  # on v1 only: not compared
    return st


def _stored(st, version: str, kind: str) -> dict:
    """(finding, metric) -> (value, lo, hi) of the latest run of `kind` on `version`, by SQL."""
    with st.connect() as con:
        rows = con.sql(
            """SELECT m.finding, m.metric, m.value, m.lo, m.hi FROM metrics m
               WHERE m.run_id = (SELECT run_id FROM runs WHERE version = ? AND kind = ?
                                 AND (kind <> 'zeroshot' OR config->>'rule' = 'pos-neg')
                                 ORDER BY started DESC LIMIT 1)""", params=[version, kind]).fetchall()
    return {(f, m): (v, lo, hi) for f, m, v, lo, hi in rows}


def _num(v):
    return None if v is None or v != v else v


def test_compare_pairs_runs_and_puts_metrics_side_by_side(two):
    st = two
    df = st.compare("v1", "v2")
    assert set(df["run"].unique().to_list()) == {
        "zeroshot(rule=pos-neg)", "probe(classifier=logreg)"}
    for kind in ("zeroshot", "probe"):
        a, b = _stored(st, "v1", kind), _stored(st, "v2", kind)
        part = df.filter(df["kind"] == kind)
        assert part.height == len(set(a) & set(b)) > 10
        for row in part.iter_rows(named=True):
            va, la, ha = a[(row["finding"], row["metric"])]
            vb, lb, hb = b[(row["finding"], row["metric"])]
            assert _num(row["value_1"]) == pytest.approx(_num(va), nan_ok=True)
            assert _num(row["value_2"]) == pytest.approx(_num(vb), nan_ok=True)
            if _num(va) is not None and _num(vb) is not None:
                assert row["diff"] == pytest.approx(vb - va)
            if None in (_num(la), _num(ha), _num(lb), _num(hb)):
                assert row["overlap"] is None
            else:
                assert row["overlap"] == (max(la, lb) <= min(ha, hb))
    # both kinds of interval outcome occur on this data (two unrelated random models)
    aurocs = df.filter(df["metric"] == "auroc")
    assert aurocs["overlap"].drop_nulls().len() > 0
    # the versions' macro AUROC really differ somewhere (the comparison is not trivially zero)
    assert np.nanmax(np.abs(df.filter(df["metric"] == "macro_auroc")["diff"].to_numpy())) > 0


def test_compare_refuses_one_version_twice_and_is_empty_without_shared_runs(two, tmp_path):
    from embedstore.errors import InputError, StoreError

    with pytest.raises(InputError, match="two different versions"):
        two.compare("v1", "v1")
    with pytest.raises(StoreError, match="unknown version"):
        two.compare("v1", "v9")
    st, ds = build_store(tmp_path, n=30)
    st.encode(ds, loaded=OtherModel(), batch_size=16, workers=0)
    assert st.compare("v1", "v2").is_empty()


def test_cli_prints_both_versions_zero_shot_and_probe(two, capsys, monkeypatch):
    from embedstore.cli import main

    monkeypatch.setenv("COLUMNS", "160")  # rich folds cells at the terminal's width

    with pytest.raises(SystemExit) as exc:
        main(["compare", "v1", "v2", "--store", str(two.path)])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "v1" in out and "v2" in out
    assert "zeroshot(rule=pos-neg)" in out and "probe(classifier=logreg)" in out
    assert "macro_auroc" in out
    macro = two.compare("v1", "v2").filter(two.compare("v1", "v2")["metric"] == "macro_auroc")
    for v in macro["value_1"].to_list() + macro["value_2"].to_list():
        assert f"{v:.3f}".rstrip("0").rstrip(".") in out

    with pytest.raises(SystemExit):
        main(["compare", "v1", "v2", "--store", str(two.path), "--format", "json"])
    rows = json.loads(capsys.readouterr().out)
    kinds = {r["kind"] for r in rows}
    assert kinds == {"zeroshot", "probe"}
    assert {"value_1", "value_2", "diff", "overlap", "lo_1", "hi_2"} <= set(rows[0])
    # compact by default: overall summary metrics and per-finding AUROC only
    assert all(r["metric"] == "auroc" for r in rows if r["finding"] is not None)
    with pytest.raises(SystemExit) as exc:
        main(["compare", "v1", "v1", "--store", str(two.path)])
    assert exc.value.code == 2


def test_compare_refuses_versions_whose_test_sets_differ(tmp_path):
    from embedstore.data.records import Dataset
    from embedstore.errors import InputError

    st, ds = build_store(tmp_path, n=30)
    tests = [r for r in ds.records if r.split == "test"]
    kept = [r for r in ds.records if r not in tests[:2]]  # v2 lacks two test images, v1 has them
    st.encode(Dataset(ds.name, ds.source, ds.scheme, ds.findings, kept), loaded=OtherModel(), batch_size=16, workers=0)
    with pytest.raises(InputError, match=rf"versions v1 and v2 have different test sets: 2 of {len(tests)} test images") as err:
        st.compare("v1", "v2")
    assert "\n" not in str(err.value)
    st.encode(ds, loaded=OtherModel(), batch_size=16, workers=0)  # the two missing images added: compare works
    assert st.compare("v1", "v2").is_empty()
