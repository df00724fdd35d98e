"""Tests for lab.numerics: ECnoise recovers injected noise; the FD-noise and rounding models."""
from __future__ import annotations

import numpy as np
import pytest

from lab.numerics import ecnoise, fd_noise, rounding_model


@pytest.mark.parametrize("sigma", [1e-3, 1e-6, 1e-10])
def test_ecnoise_recovers_gaussian_noise(sigma: float) -> None:
    rng = np.random.default_rng(12345)
    h = sigma ** (1 / 3) / 10  # smooth part's k-th differences (~h^k) fall below sigma by k = 3..4
    est, informs = [], []
    for _ in range(50):
        x = rng.uniform(0.2, 1.2) + h * np.arange(9)
        r = ecnoise(2.0 + np.sin(x) + sigma * rng.standard_normal(9))  # range within 10% of |f|
        informs.append(r.inform)
        if r.ok:
            est.append(r.sigma)
            assert 1 <= r.order <= 6 and r.levels.shape == (8,)
    assert informs.count(1) >= 45
    assert abs(np.mean(est) / sigma - 1) < 0.2


def test_ecnoise_on_pure_noise_order_one() -> None:
    rng = np.random.default_rng(0)
    est = [ecnoise(100.0 + rng.standard_normal(9) * 0.5) for _ in range(200)]  # within 10% of |f|
    ok = [e for e in est if e.ok]
    assert len(ok) >= 150 and all(e.order == 1 for e in ok)
    assert abs(np.mean([e.sigma for e in ok]) / 0.5 - 1) < 0.2


def test_ecnoise_levels_formula() -> None:
    f = 100.0 + np.array([0.0, 1.0, 0.0, -1.0, 0.0, 1.0, 0.0, -1.0, 0.0])
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


def test_ecnoise_refuses_a_staircase_as_moré_and_wild_do() -> None:
    """Half or more of the first differences exactly zero is rounding to a grid, not noise: inform 2."""
    f = np.array([1.0, 1.0, 1.0, 1.0, 1.0 + 2**-23, 1.0 + 2**-23, 1.0, 1.0, 1.0])
    r = ecnoise(f)
    assert r.inform == 2 and np.isnan(r.sigma)
    # one zero difference too few: the table is used
    rng = np.random.default_rng(3)
    g = 1.0 + 1e-8 * rng.standard_normal(9)
    g[1] = g[0]
    assert ecnoise(g).inform in (1, 3)


def test_ecnoise_refuses_values_that_vary_by_more_than_ten_percent() -> None:
    rng = np.random.default_rng(0)
    f = 1.0 + np.linspace(0, 0.2, 9) + 1e-6 * rng.standard_normal(9)
    r = ecnoise(f)
    assert r.inform == 3 and np.isnan(r.sigma)
    with pytest.raises(ValueError, match="not finite"):  # a NaN is not "h too large" (nor "too small"): refused
        ecnoise(np.array([1.0, np.nan, 1, 1, 1, 1, 1, 1, 1]))


def test_loss_noise_retries_a_too_small_spacing() -> None:
    """A float32 loss probed at a spacing far below its ulp staircase is retried wider and succeeds."""
    import torch

    from lab.numerics import loss_noise

    g = torch.Generator().manual_seed(0)
    a = torch.randn(50, 50, generator=g, dtype=torch.float64)
    a = a @ a.T / 50
    f = lambda t: 1.0 + 0.5 * t @ (a.to(t.dtype) @ t) + t.sum()   # noqa: E731
    theta = torch.randn(50, generator=g, dtype=torch.float64)
    est = loss_noise(f, theta, torch.float32, n_dirs=3, spacing=1e-8, seed=0, retries=8)
    assert all(i == 1 for i in est.informs)
    u = 2.0**-24
    assert 0.05 < est.sigma / (u * abs(est.loss)) < 10
    no_retry = loss_noise(f, theta, torch.float32, n_dirs=3, spacing=1e-8, seed=0, retries=0)
    assert all(i == 2 for i in no_retry.informs) and np.isnan(no_retry.sigma)


def test_scaled_fd_noise_reduces_to_sqrt6_sigma_at_constant_f_and_scales_with_f() -> None:
    from lab.numerics import scaled_fd_noise

    assert scaled_fd_noise(1e-9, 2.0, np.array([2.0]), np.array([2.0]))[0] == pytest.approx(fd_noise(1e-9))
    big = scaled_fd_noise(1e-9, 2.0, np.array([200.0]), np.array([800.0]))[0]
    assert big == pytest.approx(1e-9 / 2 * np.sqrt(4 + 4 * 200**2 + 800**2))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_adaptive_spacing_gives_usable_tables_in_every_dtype(dtype) -> None:
    """The adaptive spacing lands inside the window between the ulp staircase and the 10% range limit, so ECnoise
    succeeds along every direction and finds σ of the order of u·|f| (the rounding model), bfloat16 included."""
    import torch

    from lab.flat import make_loss_fn
    from lab.models import SimpleMLP
    from lab.numerics import DTYPES, loss_noise, unit_roundoff

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(256, 20, generator=g), torch.randint(0, 4, (256,), generator=g)
    f, theta, _ = make_loss_fn(SimpleMLP(width=32, depth=1, in_dim=20, out_dim=4), x, y)
    est = loss_noise(f, theta.double(), DTYPES[dtype], n_dirs=6, seed=1)
    assert est.informs.count(1) >= 5
    assert 0.1 < est.sigma / (unit_roundoff(DTYPES[dtype]) * abs(est.loss)) < 10


def test_loss_error_splits_forward_and_reduction() -> None:
    """A loss whose forward pass is exact in any dtype (integers) has no forward error; rounding the mean to a
    coarse dtype is then all reduction error, and total = forward + reduction."""
    import torch

    from lab.numerics import loss_error

    vals = torch.tensor([1.0, 2.0, 4.0, 1000.0, 4.0])   # mean 202.2: not a bfloat16 number
    per_sample = lambda t: vals.to(t.dtype) * (1 + t.sum())  # noqa: E731
    loss = lambda t: per_sample(t).mean()  # noqa: E731
    pts = torch.zeros(3, 2, dtype=torch.bfloat16)
    e = loss_error(loss, per_sample, pts)
    np.testing.assert_array_equal(e.forward, 0.0)
    assert np.all(e.total != 0) and np.allclose(e.total, e.reduction)
    np.testing.assert_allclose(e.reference, float(vals.double().mean()))


def test_noise_by_dtype_equals_loss_noise_per_dtype() -> None:
    import torch

    from lab.numerics import loss_noise, noise_by_dtype

    g = torch.Generator().manual_seed(2)
    a = torch.randn(30, 30, generator=g, dtype=torch.float64)
    f = lambda t: 2.0 + 0.5 * t @ (a.to(t.dtype) @ t) / 30 + t.sum()   # noqa: E731
    theta = torch.randn(30, generator=g, dtype=torch.float64)
    both = noise_by_dtype(f, theta, {"float32": torch.float32, "bfloat16": torch.bfloat16}, n_dirs=3, seed=4)
    for name, dt in [("float32", torch.float32), ("bfloat16", torch.bfloat16)]:
        one = loss_noise(f, theta, dt, n_dirs=3, seed=4)
        np.testing.assert_array_equal(both[name].sigmas, one.sigmas)
        assert both[name].informs == one.informs and both[name].dtype == name
