"""Tests for lab.noise: ECnoise recovers injected noise; the FD-noise and rounding models."""
from __future__ import annotations

import numpy as np
import pytest

from lab.noise import ecnoise, fd_noise, rounding_model


@pytest.mark.parametrize("sigma", [1e-3, 1e-6, 1e-10])
def test_ecnoise_recovers_gaussian_noise(sigma: float) -> None:
    rng = np.random.default_rng(12345)
    h = sigma ** (1 / 3) / 10  # smooth part's k-th differences (~h^k) fall below sigma by k = 3..4
    est, informs = [], []
    for _ in range(50):
        x = rng.uniform(0.2, 1.2) + h * np.arange(9)
        r = ecnoise(np.sin(x) + sigma * rng.standard_normal(9))
        informs.append(r.inform)
        if r.ok:
            est.append(r.sigma)
            assert 1 <= r.order <= 6 and r.levels.shape == (8,)
    assert informs.count(1) >= 45
    assert abs(np.mean(est) / sigma - 1) < 0.2


def test_ecnoise_on_pure_noise_order_one() -> None:
    rng = np.random.default_rng(0)
    est = [ecnoise(rng.standard_normal(9) * 0.5) for _ in range(200)]
    ok = [e for e in est if e.ok]
    assert len(ok) >= 150 and all(e.order == 1 for e in ok)
    assert abs(np.mean([e.sigma for e in ok]) / 0.5 - 1) < 0.2


def test_ecnoise_levels_formula() -> None:
    f = np.array([0.0, 1.0, 0.0, -1.0, 0.0, 1.0, 0.0, -1.0, 0.0])
    r = ecnoise(f)
    d1 = np.diff(f)
    assert r.levels[0] == pytest.approx(np.sqrt(0.5 * np.mean(d1**2)), rel=1e-15)
    d2 = np.diff(d1)
    assert r.levels[1] == pytest.approx(np.sqrt(4 / 24 * np.mean(d2**2)), rel=1e-15)


def test_ecnoise_constant_data_inform_2() -> None:
    r = ecnoise(np.full(9, 0.731))
    assert r.inform == 2 and not r.ok and np.isnan(r.sigma) and r.order == 0
    np.testing.assert_array_equal(r.levels, 0.0)


def test_ecnoise_smooth_data_fails() -> None:
    r = ecnoise(np.exp(np.linspace(0, 1, 9)))  # no noise, differences never change sign
    assert r.inform == 3 and not r.ok and np.isnan(r.sigma)


def test_ecnoise_needs_seven_points() -> None:
    with pytest.raises(ValueError, match="7 points"):
        ecnoise(np.zeros(6))


def test_fd_noise_is_sqrt6_sigma() -> None:
    assert fd_noise(1.0) == pytest.approx(np.sqrt(6), rel=1e-15)
    assert fd_noise(2e-7) == pytest.approx(2e-7 * 6**0.5, rel=1e-15)
    e = np.random.default_rng(0).standard_normal((3, 200_000)) * 0.3
    assert np.std(e[0] - 2 * e[1] + e[2]) == pytest.approx(fd_noise(0.3), rel=0.01)


def test_rounding_model() -> None:
    u32 = 2.0**-24
    assert rounding_model(u32, 2.5) == u32 * 2.5
    assert rounding_model(u32, -2.5, factor=3.0) == 3.0 * u32 * 2.5
    assert rounding_model(u32, 0.0) == 0.0
