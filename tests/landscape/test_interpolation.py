"""Goodfellow et al.'s linear interpolation: profiles, monotonicity and barriers on closed-form losses."""
import numpy as np
import pytest
import torch

from lab.landscape import barrier, interpolate, is_monotone


def test_interpolation_of_a_quadratic_is_the_closed_form():
    a, b = torch.tensor([1.0, -1.0], dtype=torch.float64), torch.tensor([3.0, 2.0], dtype=torch.float64)
    t, loss = interpolate(lambda p: (p**2).sum(), a, b, np.array([-0.5, 0.0, 0.25, 1.0]))
    expect = [float((((1 - s) * a + s * b) ** 2).sum()) for s in t]
    assert loss == pytest.approx(expect, rel=1e-12)


def test_a_double_well_has_a_barrier_and_a_bowl_has_none():
    well = lambda p: ((p**2 - 1) ** 2).sum()  # noqa: E731 - minima at ±1, a bump of 1 at 0
    _, prof = interpolate(well, torch.tensor([-1.0], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64),
                          21)
    assert barrier(prof) == pytest.approx(1.0) and not is_monotone(prof)
    _, bowl = interpolate(lambda p: (p**2).sum(), torch.tensor([2.0], dtype=torch.float64),
                          torch.tensor([0.0], dtype=torch.float64), 21)
    assert is_monotone(bowl) and barrier(bowl) <= 0


def test_monotone_tolerance_and_nan():
    assert is_monotone([1.0, 1.0 + 1e-9, 0.5], tol=1e-8)
    assert not is_monotone([1.0, 1.0 + 1e-7, 0.5], tol=1e-8)
    assert not is_monotone([1.0, float("nan"), 0.5])
