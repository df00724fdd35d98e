"""Shared fixtures: restore torch's global switches after each test, small seeded models and data."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _restore_torch_globals() -> Iterator[None]:
    """lab.repro.setup() flips process-wide switches; put them back so tests stay independent."""
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
