"""Session fixtures shared by test modules, and the skip policy (skip_policy.py).

Stores that take seconds to build are built once per session, here, and are read-only: a test
that writes copies one first (store_helpers.copy_store). Their recipes are in report_store.py
(the site-B phantom study, its fine-tune and the report's analyses) and store_helpers.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


# Session fixtures that take more than ~5 s to build on a quiet 2-core machine: a test that needs
# one is `slow` (left out by `pytest -m "not slow"`, run by `make test`). Tests slow by themselves
# are named below by hand, or measured (tests/slow_measured.txt).
SLOW_FIXTURES = {"site_b_study", "site_b_tuned", "phantom_store", "phantom_report"}

# Tests slow by themselves, marked here rather than in their files (some of which are being edited
# elsewhere): node id (a parametrised case in full) -> why. Each is > ~3 s of CPU on a quiet 2-core
# machine (its server or subprocesses included), or the costly members of a family whose cheap
# members stay in the fast subset; each reason names the cheaper test that keeps its area covered
# (itself `slow` where tests/slow_measured.txt lists it: then `make test` covers the area).
SLOW_TESTS = {
    "tests/test_store_busy.py::test_a_writer_exits_75_while_another_process_holds_the_store[finetune]":
        "fine-tunes an epoch before it reaches the lock; the other six writers cover it",
    "tests/test_splits.py::test_stratified_splits_of_1000_phantom_studies": "synthesises 1,000 studies",
    "tests/test_splits.py::test_encoding_a_subset_then_all_keeps_every_shared_images_split":
        "three encodes, one by open_clip; test_a_new_image_of_a_stored_patient_joins_its_split covers it",
    "tests/test_splits.py::test_manifest_split_is_kept_group_column_honoured_and_new_groups_hashed": "four encodes",
    "tests/test_stored_metrics.py::test_stored_runs_equal_an_independent_recomputation_from_the_store_tables":
        "every analysis run and recomputed",
    "tests/test_review_fixes_probe.py::test_fit_logreg_reaches_the_exact_optimum_at_d512[100.0]":
        "a d=512 fit checked against the exact optimum; test_probe.py's Newton-Cholesky cases cover it",
    "tests/test_review_fixes_probe.py::test_fit_logreg_reaches_the_exact_optimum_at_d512[1.0]":
        "~8 s CPU; test_probe.py's test_fit_logreg_reaches_newton_choleskys_optimum_to_1e_5 cases cover it",
    "tests/test_read_only_store.py::test_query_with_new_text_answers_on_a_read_only_store_and_caches_nothing":
        "a fresh process that imports torch and open_clip; the four reading commands cover it",
    # every option reaching the code: the ones that load open_clip, spawn workers or encode twice
    "tests/test_cli_encode.py::test_model_and_pretrained_options_pick_the_weights": "two open_clip loads",
    "tests/test_cli_encode.py::test_version_option_appends_to_that_version_only_for_its_model": "three encodes",
    "tests/test_cli_encode.py::test_precision_option_makes_a_version_of_that_dtype": "two encodes",
    "tests/test_cli_encode.py::test_workers_option_decodes_in_worker_processes": "spawns decoding processes",
    "tests/test_serve_browser.py::test_search_open_a_result_and_see_its_overlay": "a browser session",
    "tests/test_serve.py::test_an_image_its_thumbnail_and_its_overlay": "Grad-CAM overlays",
    # > ~3 s of CPU each on a quiet machine (measured per test, a shared fixture's build left out)
    "tests/test_serve.py::test_an_uploaded_image_is_a_query":
        "the server loads the model for it (~6 s CPU there); test_query.py's "
        "test_cli_image_file_query_ranks_by_the_files_vector and test_uploads_oversized_empty_or_not_an_image cover it",
    "tests/test_serve_warm.py::test_without_model_warm_stored_text_loads_nothing_and_each_free_text_loads_the_model":
        "a server of its own that loads the model per free-text query (~15 s CPU); "
        "test_model_warm_loads_the_model_once_for_free_text_and_image_queries covers it",
    "tests/test_compare.py::test_compare_refuses_versions_whose_test_sets_differ":
        "its own 30-image store encoded three times, twice by open_clip (~9 s CPU); "
        "test_compare_refuses_one_version_twice_and_is_empty_without_shared_runs covers it",
    "tests/test_cli_json_is_the_api.py::test_analysis_commands":
        "every analysis through the CLI and the API (~9 s CPU); test_store_commands covers it, and "
        "test_runs.py's test_where_limits_the_images_an_analysis_scores runs the analyses' CLI",
    "tests/test_runs.py::test_cli_commands_and_no_torch": "five commands in fresh processes (~8 s CPU); test_cli_no_torch.py covers it",
    "tests/test_metrics.py::test_macro_interval_covers_the_true_macro_auroc":
        "200 simulated studies x 300 replicates (~8 s CPU); test_nominal_95_interval_covers_the_truth_90_to_99_percent_of_the_time, "
        "test_intervals_are_the_2_5_and_97_5_percentiles_of_the_patient_bootstrap_replicates (macro interval) and "
        "test_macro_metrics_equal_sklearn_macro_over_the_evaluable_findings cover it",
    "tests/test_metrics.py::test_overall_intervals_are_percentiles_of_weighted_replicates":
        "200 replicates recomputed by scikit-learn (~7 s CPU); "
        "test_intervals_are_the_2_5_and_97_5_percentiles_of_the_patient_bootstrap_replicates covers it",
    "tests/test_finetune.py::test_contrastive_keeps_zero_shot_working_on_the_new_version":
        "two fine-tunes (~6 s CPU); test_bce_finetune_writes_a_new_version_and_leaves_the_parent_alone covers it",
    "tests/test_finetune.py::test_a_run_that_fails_while_writing_its_version_finishes_it_when_run_again":
        "a fine-tune, then its completion (~4.5 s CPU); "
        "test_a_run_killed_after_its_run_was_written_is_completed_by_the_next_call covers it",
    "tests/test_finetune.py::test_a_finetuned_version_is_never_scored_on_the_images_it_was_fitted_on":
        "a copied store and a dozen analyses (~5 s CPU); test_probe.py's "
        "test_probe_reads_only_the_where_rows_and_refuses_a_tuned_versions_own_images covers it",
    "tests/test_index.py::test_an_older_ivf_pq_file_with_its_float_copy_is_still_searched":
        "ivf-pq codebooks trained again (~6 s CPU); test_ivf_pq_query_re_ranks_only_its_candidates_from_duckdb covers it",
    "tests/test_index.py::test_index_command_rebuilds_by_hand_and_later_rebuilds_keep_the_kind":
        "several index builds (~7 s CPU); test_the_kind_is_chosen_by_size_and_stated_in_versions covers it",
    "tests/test_explain_store.py::test_agreement_scores_the_test_split_and_counts_what_it_left_out":
        "Grad-CAM over the test split (~7 s CPU); test_agreement_run_is_stored_and_reused covers it",
    "tests/test_store_busy.py::test_an_analysis_stores_its_run_while_another_process_holds_the_writer_lock[agreement]":
        "Grad-CAM agreement in a subprocess (~6 s CPU); the zeroshot, probe and separability cases cover it",
    "tests/test_cli_encode.py::test_a_malformed_report_is_recorded_the_rest_encoded_exit_3_and_strict_stops":
        "four encodes (~5 s CPU); test_exit_3_for_a_corrupt_image_among_good_ones covers it",
    "tests/test_cli_encode.py::test_images_option_finds_images_kept_elsewhere":
        "~4.5 s CPU; test_dataset_option_picks_the_reader and test_labels_option_picks_the_label_scheme cover it",
}

# Tests over a second of their own time, measured by `make slow-tests` (scripts/measure_slow_tests.py),
# which writes this list with the machine and the date; the fast subset leaves them out too.
SLOW_MEASURED = Path(__file__).with_name("slow_measured.txt")

# Stay in the fast subset whatever they measure: each guards a headline number, or is the cheapest
# test of a file that would otherwise have none in the fast subset.
KEEP_FAST = {
    "tests/test_metrics.py::test_nominal_95_interval_covers_the_truth_90_to_99_percent_of_the_time":
        "the interval's level: an 80 % interval called 95 % fails it (~2 s)",
    "tests/test_metrics.py::test_intervals_are_the_2_5_and_97_5_percentiles_of_the_patient_bootstrap_replicates":
        "the intervals are percentiles of patient-level replicates (~2 s)",
    "tests/test_agreement.py::test_summary_interval_covers_the_true_mean_90_to_99_percent_of_the_time":
        "the agreement interval's level (~2 s)",
    "tests/test_encode.py::test_unreadable_images_are_recorded_and_the_rest_encoded": "encode's one fast test (~3 s)",
    "tests/test_transfer.py::test_export_writes_parquet_that_polars_and_duckdb_read": "export's one fast test (~1 s)",
    "tests/test_read_only_store.py::test_reading_commands_work_on_a_read_only_store[args2]":
        "a read-only store's one fast test (~1 s)",
    "tests/test_review_fixes_seed_table.py::test_seed_policy_rows_equal_scikit_learn_on_the_stored_scores"
    "[linear probe-probe-0.5]": "the seed table's one fast test (~1 s)",
}


def measured_slow_tests() -> set[str]:
    """Node ids in slow_measured.txt; none while `make slow-tests` measures (EMBEDSTORE_MEASURE_SLOW)
    or before it has written the list."""
    if os.environ.get("EMBEDSTORE_MEASURE_SLOW") or not SLOW_MEASURED.exists():
        return set()
    lines = SLOW_MEASURED.read_text(encoding="utf-8").splitlines()
    return {line.split("\t", 1)[-1] for line in lines if line and not line.startswith("#")} - set(KEEP_FAST)


def pytest_configure(config):
    from skip_policy import SkipPolicy

    config.pluginmanager.register(SkipPolicy(), "embedstore-skip-policy")


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by mark
def pytest_collection_modifyitems(items):
    slow_tests = SLOW_TESTS.keys() | measured_slow_tests()
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) or item.nodeid in slow_tests:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """Registry name (`local-dir:...`) of a tiny open_clip CLIP (store_helpers.TINY_CFG, seed 0),
    exported once per session: the second model wherever a test needs two, and the fine-tune tests' model."""
    from store_helpers import export_tiny_model

    return export_tiny_model(tmp_path_factory.mktemp("models") / "tiny", seed=0)


@pytest.fixture(scope="session")
def small_phantoms(tmp_path_factory):
    """16 phantom studies (`phantoms/`, 64 px, with boxes) and their store (`store/`: v1 by
    phantom-clip, no analysis run): the CLI tests' data. Read-only: copy the store to write."""
    from store_helpers import open_store
    from embedstore.synth import synth

    root = tmp_path_factory.mktemp("small-phantoms")
    synth(str(root / "phantoms"), studies=16, seed=4, size=64, workers=1)
    open_store(root / "store").encode(str(root / "phantoms"), model="phantom-clip", workers=0, device="cpu")
    return root


@pytest.fixture(scope="session")
def small_two_versions(small_phantoms, tiny_model, tmp_path_factory):
    """A copy of `small_phantoms`' store with a second model's version (v2: the tiny open_clip) and
    the pos-neg zero-shot and probe runs on both, which `compare v1 v2` pairs. Read-only."""
    import shutil

    from store_helpers import open_store

    path = tmp_path_factory.mktemp("small-two-versions") / "store"
    shutil.copytree(small_phantoms / "store", path)
    st = open_store(path)
    st.encode(str(small_phantoms / "phantoms"), model=tiny_model, workers=0, device="cpu")
    for version in ("v1", "v2"):
        st.zeroshot(version, rule="pos-neg", n_boot=10, min_positives=1)
        st.probe(version, n_boot=10, min_positives=1)
    return st


@pytest.fixture(scope="session")
def site_b_study(tmp_path_factory):
    """300 site-B phantom studies (`phantoms/`) and their store (`store/`: v1 by phantom-clip),
    report_store.py's `site_b_study`. Read-only: copy the store to write."""
    from finetune_helpers import torch_threads
    from report_store import site_b_study

    with torch_threads(2):
        return site_b_study(tmp_path_factory.mktemp("site-b"))


@pytest.fixture(scope="session")
def site_b_tuned(site_b_study, tmp_path_factory):
    """A copy of `site_b_study`'s store with v1 fine-tuned into v2 (report_store.FINETUNE_ARGS, 2
    torch threads): (Store, snapshot of v1 taken before the fine-tune, FinetuneResult). Read-only."""
    from finetune_helpers import parent_snapshot, torch_threads
    from report_store import finetune
    from store_helpers import copy_store

    st = copy_store(site_b_study / "store", tmp_path_factory.mktemp("site-b-tuned") / "store")
    before = parent_snapshot(st)
    with torch_threads(2):
        return st, before, finetune(st)


@pytest.fixture(scope="session")
def phantom_store(site_b_study, site_b_tuned, tmp_path_factory):
    """The report tests' phantom study: a copy of `site_b_tuned`'s store (v1 and its fine-tuned
    child v2) with every analysis on both versions and Grad-CAM agreement (report_store.py)."""
    from finetune_helpers import torch_threads
    from report_store import report_study
    from store_helpers import copy_store

    root = tmp_path_factory.mktemp("report-phantoms")
    st = copy_store(site_b_tuned[0].path, root / "store")
    with torch_threads(2):
        return report_study(st, site_b_study / "phantoms", root)


@pytest.fixture(scope="session")
def phantom_report(phantom_store, tmp_path_factory):
    """The report of `phantom_store` (default version and its lineage): (BuiltReport, its text)."""
    from embedstore.reports.build import build_report

    built = build_report(phantom_store, out=tmp_path_factory.mktemp("report") / "report.html")
    return built, built.path.read_text(encoding="utf-8")
