"""Review fixes: `compare --methods` compares only runs scored alike (same operating-point rule,
label policy, evaluable bar and image filter)."""

from __future__ import annotations

import polars as pl
import pytest

import synthetic_vectors as synthetic
from embedstore.errors import InputError


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    import embedstore

    st = embedstore.open(tmp_path_factory.mktemp("alike"))
    synthetic.to_store(synthetic.make(n=800, n_findings=3, d=24, seed=2, signal=1.4), st)
    return st


def test_methods_scored_differently_are_refused_naming_the_settings(store):
    """The reviewer's case: uncalibrated zero-shot against a probe with uncertain=negative."""
    store.zeroshot(rule="pos-neg", calibrate_on=None, n_boot=50)
    store.probe(uncertain="negative", n_boot=50)
    with pytest.raises(InputError, match="calibrate_on") as err:
        store.compare(methods=["zeroshot:pos-neg", "probe"], n_boot=50)
    message = str(err.value)
    assert "uncertain" in message and "'negative'" in message and "\n" not in message
    assert "re-run" in message


def test_one_differing_setting_is_named_alone(store):
    store.probe(uncertain="negative", n_boot=50)
    store.zeroshot(rule="pos-neg", n_boot=50)  # calibrated like the probe; only the label policy differs
    with pytest.raises(InputError, match="uncertain") as err:
        store.compare(methods=["zeroshot:pos-neg", "probe"], n_boot=50)
    assert "calibrate_on" not in str(err.value)


def test_methods_scored_alike_are_compared(store):
    store.zeroshot(rule="pos-neg", n_boot=50)
    store.probe(n_boot=50)  # the latest probe is scored like the zero-shot run
    df = store.compare(methods=["zeroshot:pos-neg", "probe"], n_boot=50)
    assert df.filter(pl.col("metric") == "macro_auroc").height == 1


def test_a_where_filter_on_one_side_is_refused(store):
    store.zeroshot(rule="pos-neg", n_boot=50)
    store.probe(where="view = 'frontal'", n_boot=50)
    with pytest.raises(InputError, match="where"):
        store.compare(methods=["zeroshot:pos-neg", "probe"], n_boot=50)
