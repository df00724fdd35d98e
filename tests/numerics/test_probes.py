"""Tests for lab.numerics: exactness on a quadratic, the ulp threshold, perturbation modes, doubling distances."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lab.flat import make_loss_fn
from lab.models import SimpleMLP
from lab.numerics import doubling_h, doubling_probe, points_along, ulp, ulp_threshold

EPS64 = np.finfo(np.float64).eps


def _quadratic(a: torch.Tensor, b: torch.Tensor):
    return lambda t: 0.5 * t @ (a.to(t.dtype) @ t) + b.to(t.dtype) @ t


def _random_quadratic(p: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(p, p, generator=g, dtype=torch.float64)
    a = m.T @ m / p + torch.eye(p, dtype=torch.float64)
    b, theta, d = (torch.randn(p, generator=g, dtype=torch.float64) for _ in range(3))
    return a, b, theta, d


def _check_quadratic(pr, q: float, rtol: float) -> None:
    h = pr.h
    np.testing.assert_allclose(pr.fd, q * h**2, rtol=rtol, atol=0)
    np.testing.assert_allclose(pr.curvature, np.full_like(h, q), rtol=rtol, atol=0)
    np.testing.assert_allclose(pr.grit, q * h, rtol=rtol, atol=0)
    np.testing.assert_allclose(pr.tangent, 0.5 * q * h**2, rtol=rtol, atol=0)


def test_probe_exact_on_random_quadratic() -> None:
    """|θ|~1: float64 rounding of f (~eps·|f|) is below 1e-12·dᵀAd·h² once h ≳ 0.05; check h in [1/16, 16]."""
    a, b, theta, d = _random_quadratic()
    f = _quadratic(a, b)
    pr = doubling_probe(f, theta, d, h_min=2.0**-4, decades=2.5, dtype=torch.float64)
    q = float(d @ a @ d)
    assert pr.h[0] == 2.0**-4 and pr.h[-1] >= 2.0**-4 * 10**2.5
    assert pr.f0 == float(f(theta))
    assert pr.slope == pytest.approx(float((a @ theta + b) @ d), rel=1e-14)
    _check_quadratic(pr, q, rtol=1e-12)
    np.testing.assert_array_equal(pr.changed, np.ones_like(pr.h))  # every coordinate moves at these h
    np.testing.assert_allclose(pr.step, np.full_like(pr.h, float(d.norm())), rtol=1e-12)


def test_probe_exact_on_dyadic_quadratic() -> None:
    """Small-integer A, b, θ, d and power-of-two h: every float64 operation is exact, so is the probe, to h = 2⁻²⁰."""
    g = torch.Generator().manual_seed(1)
    p = 5
    m = torch.randint(-3, 4, (p, p), generator=g).double()
    a = m.T @ m + torch.eye(p, dtype=torch.float64)
    b, theta, d = (torch.randint(-4, 5, (p,), generator=g).double() for _ in range(3))
    d[d == 0] = 1.0
    f = _quadratic(a, b)
    pr = doubling_probe(f, theta, d, h_min=2.0**-20, decades=7, dtype=torch.float64)
    q = float(d @ a @ d)
    assert pr.h[-1] >= 2.0**-20 * 1e7 and len(pr.h) > 20
    np.testing.assert_array_equal(pr.fd, q * pr.h**2)
    _check_quadratic(pr, q, rtol=0)


def test_probe_rounding_limits_small_h() -> None:
    """Where FD is far below eps·|f| the probe cannot be exact: the same quadratic at h = 1e-8 is off by >1%.

    (This is the regime the probe is meant to expose; it guards against a probe that silently uses exact math.)"""
    a, b, theta, d = _random_quadratic()
    pr = doubling_probe(_quadratic(a, b), theta, d, h_min=1e-9, decades=0.5, dtype=torch.float64)
    q = float(d @ a @ d)
    assert np.max(np.abs(pr.curvature / q - 1)) > 1e-2


@pytest.fixture(scope="module")
def mlp_problem():
    torch.manual_seed(0)
    m = SimpleMLP(width=16, depth=2, in_dim=8, out_dim=3)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 8, generator=g), torch.randint(0, 3, (32,), generator=g)
    loss_fn, theta0, _ = make_loss_fn(m, x, y)
    d = torch.randn(theta0.shape, generator=g, dtype=torch.float64)
    return loss_fn, theta0, d


def test_fd_zero_below_ulp_threshold(mlp_problem) -> None:
    loss_fn, theta0, d = mlp_problem
    assert theta0.dtype == torch.float32
    thr = ulp_threshold(theta0, d, torch.float32)
    # the threshold is where the most sensitive coordinate reaches half its gap
    gap = ulp(theta0).double()
    assert 0 < thr <= float((0.5 * gap / d.abs()).max())
    # 15 decades: the loss itself moves only once |∇L·d|·h passes half an ulp of L (here h ≈ 2e-6, ~10⁵× the
    # threshold); with 12 decades the sweep stopped at 8.7e-7, where the kernels' rounding decided it (AVX2: moved
    # at the last point; AVX-512: not at all)
    pr = doubling_probe(loss_fn, theta0, d, h_min=0.75 * thr / 2**24, decades=15, dtype=torch.float32)
    below = pr.h < thr
    assert below.sum() >= 20 and (~below).sum() >= 5
    assert np.all(pr.fd[below] == 0.0)
    assert np.all(pr.changed[below] == 0.0)
    assert np.all(pr.step[below] == 0.0)
    assert np.all(pr.f1[below] == pr.f0)
    # above the threshold the stored point moves, and far above it the loss does too
    assert np.all(pr.changed[~below] > 0)
    assert np.any(pr.fd[~below] != 0)
    pts = points_along(theta0.double(), d, np.array([0.0, 2.5 * thr]), torch.float32)
    assert torch.equal(pts[0], theta0)
    assert (pts[1] != theta0).double().mean().item() > 0


def test_changed_positive_at_2p5_threshold(mlp_problem) -> None:
    loss_fn, theta0, d = mlp_problem
    thr = ulp_threshold(theta0, d, torch.float32)
    pr = doubling_probe(loss_fn, theta0, d, h_min=2.5 * thr, decades=0.1, dtype=torch.float32)
    assert pr.h[0] == 2.5 * thr
    assert pr.changed[0] > 0


def test_changed_zero_below_threshold_for_off_grid_theta(mlp_problem) -> None:
    loss_fn, theta0, d = mlp_problem
    thr = ulp_threshold(theta0, d, torch.bfloat16)
    pr = doubling_probe(loss_fn, theta0, d, h_min=thr / 2**20, decades=7, dtype=torch.bfloat16)
    assert np.all(pr.changed[pr.h < thr] == 0.0)
    assert pr.changed[np.searchsorted(pr.h, 2 * thr)] > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_perturb_working_vs_float64_within_one_ulp(mlp_problem, dtype: torch.dtype) -> None:
    """Same stored points to within one ulp where there is no cancellation (h·|d_i| ≤ |θ_i|/2).

    Beyond that the working-precision product h·d carries ~u·|h·d| error, many ulps of a cancelled result."""
    _, theta0, d = mlp_problem
    th = theta0.to(dtype).double()
    t = np.concatenate([[0.0], doubling_h(1e-12, 12)])
    p64 = points_along(th, d, t, dtype, "float64")
    pw = points_along(th, d, t, dtype, "working")
    assert p64.dtype == pw.dtype == dtype and p64.shape == pw.shape == (len(t), th.numel())
    assert torch.equal(p64[0], theta0.to(dtype)) and torch.equal(pw[0], theta0.to(dtype))
    no_cancel = torch.as_tensor(t)[:, None] * d.abs()[None] <= 0.5 * th.abs()[None]
    assert no_cancel.double().mean() > 0.5
    diff = (p64.double() - pw.double()).abs()
    gap = torch.maximum(ulp(p64), ulp(pw))
    assert (diff[no_cancel] <= gap[no_cancel]).all()
    assert (p64 != th.to(dtype)).any()  # the comparison covers points that actually moved
    with pytest.raises(ValueError, match="'perturb'"):
        points_along(th, d, t, dtype, "float32")


@pytest.mark.parametrize("h_min, decades", [(1e-12, 13.0), (1e-8, 1.0), (0.5, 0.3), (3e-7, 6.5)])
def test_doubling_h_covers_decades(h_min: float, decades: float) -> None:
    h = doubling_h(h_min, decades)
    assert h[0] == h_min
    np.testing.assert_array_equal(h[1:] / h[:-1], 2.0)
    assert h[-1] / h[0] >= 10**decades * (1 - 1e-12)
    assert h[-2] / h[0] < 10**decades  # no more doublings than needed


def test_identical_points_get_identical_losses_whatever_the_batch_layout(monkeypatch) -> None:
    """evaluate_distinct evaluates each run of identical rows once, so a kernel whose rounding depends on a row's
    position in the batch (simulated here) cannot make f(θ) ≠ f(θ)."""
    import lab.numerics.probes as P

    theta = torch.arange(4.0)
    pts = torch.stack([theta, theta, theta, theta + 1, theta + 1, theta + 2])
    torch.testing.assert_close(P.evaluate_distinct(lambda t: t.sum(), pts, chunk_size=4),
                               torch.tensor([6.0, 6.0, 6.0, 10.0, 10.0, 14.0]))
    positional = lambda f, x, c=64: x.sum(1) + 1e-3 * torch.arange(len(x))   # noqa: E731
    assert positional(None, pts)[0] != positional(None, pts)[1]               # would split identical points
    monkeypatch.setattr(P, "batched", positional)
    v = P.evaluate_distinct(None, pts)
    assert v[0] == v[1] == v[2] and v[3] == v[4] and v[5] != v[4]
