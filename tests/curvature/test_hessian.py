"""Tests for lab.curvature: HVP operators, dense Hessians, Lanczos eigenpairs, trace estimators, SLQ densities, rank."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lab.curvature import (
    Eigs,
    condition_number,
    dense_hessian,
    directional_curvature,
    hutchinson_trace,
    hutchpp_trace,
    hvp,
    hvp_operator,
    minibatch_hvp_operator,
    numerical_rank,
    power_iteration,
    rank_tolerance,
    slq_density,
    spectral_density,
    top_eigs,
)
from lab.flat import make_forward, make_loss_fn
from lab.models import SimpleMLP


def _mlp() -> SimpleMLP:
    torch.manual_seed(0)
    return SimpleMLP(width=6, depth=1, activation="tanh", in_dim=5, out_dim=3).double()


def _xy(n: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Problems here are tiny: one intra-op thread avoids oversubscription stalls on a busy machine (~10-50x)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def problem() -> dict:
    """loss_fn, theta and the dense Hessian of a P = 57 MLP on 30 samples, with its eigenvalues."""
    m = _mlp()
    x, y = _xy()
    loss_fn, theta, _ = make_loss_fn(m, x, y)
    h = dense_hessian(loss_fn, theta)
    return {"model": m, "x": x, "y": y, "loss_fn": loss_fn, "theta": theta, "H": h,
            "evals": np.linalg.eigvalsh(h.numpy())}


def _quadratic(a: torch.Tensor):
    """θ ↦ ½ θᵀAθ, whose Hessian is A."""
    return lambda t: 0.5 * t @ (a @ t)


def _decaying(p: int = 57, rate: float = 0.7, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    u = torch.linalg.qr(torch.randn(p, p, generator=g, dtype=torch.float64)).Q
    return u @ torch.diag(rate ** torch.arange(p, dtype=torch.float64)) @ u.T


def test_hvp_operator_matches_dense_hessian(problem) -> None:
    loss_fn, theta, h = problem["loss_fn"], problem["theta"], problem["H"]
    assert h.shape == (theta.numel(), theta.numel()) == (57, 57)
    assert torch.allclose(h, h.T, atol=1e-12)
    op = hvp_operator(loss_fn, theta)
    g = torch.Generator().manual_seed(2)
    for i in range(3):
        v = torch.randn(theta.numel(), generator=g, dtype=torch.float64)
        assert torch.allclose(op(v), h @ v, atol=1e-10, rtol=0)
        assert op.count == i + 1
    # the pre-existing helpers are unchanged
    v = torch.randn(theta.numel(), generator=g, dtype=torch.float64)
    assert torch.allclose(hvp(loss_fn, theta, v), h @ v, atol=1e-10, rtol=0)
    assert directional_curvature(loss_fn, theta, v) == pytest.approx(float(v @ h @ v / (v @ v)), rel=1e-10)


class _Cube(torch.autograd.Function):
    """x³ with a backward but no jvp: forward-over-reverse is unavailable."""

    @staticmethod
    def forward(x):
        return x**3

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 3 * x**2 * g


def test_hvp_operator_falls_back_to_double_backward() -> None:
    theta = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    op = hvp_operator(lambda t: _Cube.apply(t).sum(), theta)
    v = torch.tensor([1.0, 1.0, 2.0], dtype=torch.float64)
    assert torch.allclose(op(v), 6 * theta * v, atol=1e-12)
    assert op.mode == "double_backward" and op.count == 1
    assert torch.allclose(op(-v), -6 * theta * v, atol=1e-12) and op.count == 2


def test_minibatch_operator_is_the_hessian_of_the_mean_loss(problem) -> None:
    x, y, theta, h = problem["x"], problem["y"], problem["theta"], problem["H"]
    forward, _, _ = make_forward(problem["model"])

    def loss_on_batch(t: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(forward(t, xb), yb)

    cuts = [0, 7, 17, 30]  # unequal batches: 7, 10, 13
    batches = [(x[a:b], y[a:b]) for a, b in zip(cuts, cuts[1:], strict=False)]
    op = minibatch_hvp_operator(loss_on_batch, theta, batches)
    v = torch.randn(theta.numel(), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert torch.allclose(op(v), h @ v, atol=1e-10, rtol=0)
    assert op.count == 1
    # the peers' bug: summing per-batch Hessians scales eigenvalues by the number of batches; an unweighted
    # average is also wrong when batch sizes differ
    per_batch = [hvp_operator(lambda t, xb=xb, yb=yb: loss_on_batch(t, xb, yb), theta)(v) for xb, yb in batches]
    assert not torch.allclose(sum(per_batch), h @ v, atol=1e-3)
    assert not torch.allclose(sum(per_batch) / 3, h @ v, atol=1e-6)
    # the top eigenvalue through the operator equals the full-data one
    e = top_eigs(op, k=1)
    assert e.values[0] == pytest.approx(problem["evals"][-1], rel=1e-8)
    with pytest.raises(ValueError, match="'batches'"):
        minibatch_hvp_operator(loss_on_batch, theta, [])


def test_dense_hessian_refuses_above_max_bytes(problem) -> None:
    with pytest.raises(ValueError, match="max_bytes") as info:
        dense_hessian(problem["loss_fn"], problem["theta"], max_bytes=1000)
    assert "top_eigs" in str(info.value) and str(57 * 57 * 8) in str(info.value)
    assert dense_hessian(problem["loss_fn"], problem["theta"], max_bytes=57 * 57 * 8).shape == (57, 57)


@pytest.mark.parametrize("which", ["LA", "SA"])
def test_top_eigs_match_dense_eigvalsh(problem, which: str) -> None:
    loss_fn, theta, h, evals = problem["loss_fn"], problem["theta"], problem["H"], problem["evals"]
    e = top_eigs(loss_fn, theta, k=3, which=which)
    assert isinstance(e, Eigs)
    want = evals[::-1][:3] if which == "LA" else evals[:3][::-1]  # descending either way
    scale = np.abs(evals).max()
    np.testing.assert_allclose(e.values, want, rtol=1e-6, atol=1e-6 * scale)
    assert np.all(np.diff(e.values) <= 0)
    assert e.vectors.shape == (57, 3) and e.vectors.dtype == theta.dtype
    assert torch.allclose(torch.linalg.vector_norm(e.vectors, dim=0), torch.ones(3, dtype=torch.float64))
    assert np.all(e.residuals < 1e-6) and e.residuals.shape == (3,)
    np.testing.assert_allclose(torch.linalg.vector_norm(h @ e.vectors - e.vectors * torch.from_numpy(e.values.copy()),
                                                        dim=0).numpy(), e.residuals, atol=1e-10)
    assert e.n_hvp > 3
    # reproducible from the seed
    np.testing.assert_array_equal(top_eigs(loss_fn, theta, k=3, which=which).values, e.values)


def test_largest_algebraic_is_not_largest_magnitude() -> None:
    diag = torch.cat([torch.tensor([1.0, 2.0, -5.0]), torch.linspace(-0.5, 0.5, 17)]).double()
    loss_fn, theta = _quadratic(torch.diag(diag)), torch.zeros(20, dtype=torch.float64)
    la = top_eigs(loss_fn, theta, k=2, which="LA")
    np.testing.assert_allclose(la.values, [2.0, 1.0], atol=1e-10)
    assert abs(float(la.vectors[1, 0])) == pytest.approx(1.0)  # the eigenvector of 2 is e₂
    np.testing.assert_allclose(top_eigs(loss_fn, theta, k=1, which="SA").values, [-5.0], atol=1e-10)
    # power iteration, by contrast, finds the largest MAGNITUDE: -5 first, then 2
    pi = power_iteration(loss_fn, theta, k=2, iters=100)
    np.testing.assert_allclose(pi.values, [-5.0, 2.0], atol=1e-8)
    assert np.all(pi.residuals < 1e-6) and pi.n_hvp == 2 * 101
    for bad in ("LM", "la", "BE"):
        with pytest.raises(ValueError, match="'which'") as info:
            top_eigs(loss_fn, theta, which=bad)
        assert "'LA'" in str(info.value) and "'SA'" in str(info.value)
    with pytest.raises(ValueError, match="'k'"):
        top_eigs(loss_fn, theta, k=20)


def test_trace_estimators_agree_with_dense_trace(problem) -> None:
    loss_fn, theta, h = problem["loss_fn"], problem["theta"], problem["H"]
    tr = float(torch.trace(h))
    for est, se in (hutchinson_trace(loss_fn, theta, n=100), hutchpp_trace(loss_fn, theta, n=99)):
        assert se > 0
        assert abs(est - tr) < 3 * se
        assert abs(est - tr) < 0.1 * abs(tr)
    with pytest.raises(ValueError, match="'n'"):
        hutchpp_trace(loss_fn, theta, n=3)


def test_hutchpp_beats_hutchinson_on_decaying_spectrum() -> None:
    a = _decaying()
    loss_fn, theta, tr = _quadratic(a), torch.zeros(57, dtype=torch.float64), float(torch.trace(a))
    err_h, err_pp, se_h, se_pp = [], [], [], []
    for seed in range(10):
        est, se = hutchinson_trace(loss_fn, theta, n=30, seed=seed)
        err_h.append(abs(est - tr))
        se_h.append(se)
        est, se = hutchpp_trace(loss_fn, theta, n=30, seed=seed)
        err_pp.append(abs(est - tr))
        se_pp.append(se)
    assert np.mean(err_pp) < 0.1 * np.mean(err_h)
    assert np.mean(se_pp) < 0.1 * np.mean(se_h)


def test_slq_density(problem) -> None:
    loss_fn, theta, h, evals = problem["loss_fn"], problem["theta"], problem["H"], problem["evals"]
    nodes, weights = slq_density(loss_fn, theta, n_runs=10, m=60)  # m > P: runs stop at P steps and are padded
    assert nodes.shape == weights.shape == (10, 60)
    assert weights.sum() == pytest.approx(1.0, abs=1e-12) and np.all(weights >= 0)
    scale = np.abs(evals).max()
    assert nodes.min() >= evals[0] - 1e-8 * scale and nodes.max() <= evals[-1] + 1e-8 * scale
    # Σ w·node is Hutchinson's estimate of tr H / P from the runs' probes: compare within 3 standard errors (10 runs
    # cannot reach 10% here: this indefinite Hessian has ‖H‖_F ≫ tr H, so one probe's sd is ~1.4× tr H)
    per_run = (nodes * weights).sum(axis=1) * 10
    se = per_run.std(ddof=1) / np.sqrt(10)
    assert abs(per_run.mean() - float(torch.trace(h)) / 57) < 3 * se
    # extreme Ritz values converge to the extreme eigenvalues
    assert nodes.max() == pytest.approx(evals[-1], rel=1e-8)
    grid = np.linspace(evals[0] - 1, evals[-1] + 1, 4001)
    dens = spectral_density(nodes, weights, grid, sigma=0.02)
    assert dens.shape == grid.shape and np.all(dens >= 0)
    assert np.trapezoid(dens, grid) == pytest.approx(1.0, abs=1e-3)
    # fewer steps than P: unpadded, still normalized, reproducible
    n2, w2 = slq_density(loss_fn, theta, n_runs=3, m=8, seed=5)
    assert n2.shape == (3, 8) and w2.sum() == pytest.approx(1.0) and np.all(w2 > 0)
    np.testing.assert_array_equal(slq_density(loss_fn, theta, n_runs=3, m=8, seed=5)[0], n2)
    with pytest.raises(ValueError, match="'sigma'"):
        spectral_density(nodes, weights, grid, sigma=0.0)


def test_slq_mean_is_trace_over_p() -> None:
    """For a diagonal Hessian every Rademacher probe gives zᵀAz = tr A exactly, so Σ w·node = tr A / P to rounding."""
    diag = torch.cat([0.7 ** torch.arange(40, dtype=torch.float64), -torch.linspace(0.1, 2.0, 17, dtype=torch.float64)])
    nodes, weights = slq_density(_quadratic(torch.diag(diag)), torch.zeros(57, dtype=torch.float64), n_runs=4, m=20)
    assert weights.sum() == pytest.approx(1.0, abs=1e-12)
    assert float((nodes * weights).sum()) == pytest.approx(float(diag.sum()) / 57, rel=1e-10)
    assert nodes.min() >= -2.0 - 1e-8 and nodes.max() <= 1.0 + 1e-8
    assert nodes.min() == pytest.approx(-2.0, rel=1e-8) and nodes.max() == pytest.approx(1.0, rel=1e-8)


def test_numerical_rank_and_condition_number() -> None:
    g = torch.randn(3, 57, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    h = dense_hessian(lambda t: 0.5 * (g @ t).pow(2).sum(), torch.zeros(57, dtype=torch.float64))
    assert torch.allclose(h, g.T @ g, atol=1e-12)
    values = np.linalg.eigvalsh(h.numpy())
    assert numerical_rank(values).rank == numerical_rank(h).rank == numerical_rank(g).rank == 3
    top3 = np.sort(np.abs(values))[-3:]
    assert condition_number(values) == pytest.approx(top3[-1] / top3[0])
    tol = numerical_rank(values).tolerance
    assert tol == pytest.approx(np.abs(values).max() * 57 * np.finfo(np.float64).eps)
    assert rank_tolerance(values, 57, torch.float32) > 1e8 * tol  # the float32 tolerance is coarser
    assert numerical_rank(np.array([])).rank == 0
    # a tiny but genuine eigenvalue counts in float64, not in float32
    vals = np.array([1.0, 1e-9, 0.0])
    assert numerical_rank(vals, torch.float64).rank == 2 and numerical_rank(vals, torch.float32).rank == 1
    assert condition_number(vals) == pytest.approx(1e9) and condition_number(vals, torch.float32) == 1.0


def test_gram_rank_matches_the_hessian_it_factors() -> None:
    """H = GᵀG squares G's singular values: a direction of G at 1e-10 relative is in rank(G) but below H's
    resolution; rank(G, gram=True) reads G at H's resolution and agrees with rank(H)."""
    gen = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(6, 6, generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(40, 6, generator=gen, dtype=torch.float64))
    s = torch.tensor([1.0, 0.5, 0.1, 1e-3, 1e-10, 0.0], dtype=torch.float64)
    g = u @ torch.diag(s) @ v.T
    h = g.T @ g
    assert numerical_rank(g).rank == 5            # G resolves 1e-10 (tolerance ~1e-14)
    assert numerical_rank(h).rank == 4            # H = GᵀG holds it at 1e-20, below its ~1e-14 tolerance
    assert numerical_rank(g, gram=True).rank == numerical_rank(h).rank


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_caller_model_untouched(mode: str) -> None:
    m = _mlp()
    getattr(m, mode)()
    before = [(n, p.detach().clone(), p.requires_grad, p.data_ptr()) for n, p in m.named_parameters()]
    x, y = _xy()
    loss_fn, theta, _ = make_loss_fn(m, x, y)
    theta0 = theta.clone()
    op = hvp_operator(loss_fn, theta)
    op(torch.ones_like(theta))
    dense_hessian(loss_fn, theta)
    top_eigs(loss_fn, theta, k=2)
    power_iteration(loss_fn, theta, iters=5)
    hutchinson_trace(loss_fn, theta, n=4)
    hutchpp_trace(loss_fn, theta, n=6)
    slq_density(loss_fn, theta, n_runs=2, m=5)
    assert torch.equal(theta, theta0)
    after = [(n, p.detach().clone(), p.requires_grad, p.data_ptr()) for n, p in m.named_parameters()]
    for (n0, p0, r0, d0), (n1, p1, r1, d1) in zip(before, after, strict=True):
        assert n0 == n1 and torch.equal(p0, p1) and r0 == r1 and d0 == d1
    assert all(p.grad is None for p in m.parameters())
    assert all(mod.training is (mode == "train") for mod in m.modules())


def test_top_eigs_warm_start() -> None:
    a = torch.diag(torch.linspace(1.0, 2.0, 200, dtype=torch.float64))
    a[0, 0] = 5.0
    loss_fn = lambda th: 0.5 * th @ a @ th  # noqa: E731
    theta = torch.zeros(200, dtype=torch.float64)
    cold = top_eigs(loss_fn, theta, k=1, tol=1e-10, seed=0)
    warm = top_eigs(loss_fn, theta, k=1, tol=1e-10, v0=cold.vectors[:, 0] + 1e-3)
    assert warm.values[0] == pytest.approx(5.0, rel=1e-10)
    assert warm.n_hvp <= cold.n_hvp  # ARPACK builds >= 20 Lanczos vectors anyway: no saving without restarts
    with pytest.raises(ValueError, match="'v0'"):
        top_eigs(loss_fn, theta, k=1, v0=torch.zeros(200))


def test_top_eigs_ncv_finds_the_smallest_with_fewer_products() -> None:
    """A larger Krylov space converges the clustered small end of a Hessian spectrum in fewer HVPs, to the same
    eigenvalue as dense eigh."""
    torch.manual_seed(0)
    x, y = torch.randn(64, 5, dtype=torch.float64), torch.randint(0, 3, (64,))
    f, th, _ = make_loss_fn(_mlp(), x, y)
    th = th.double()
    dense = np.linalg.eigvalsh(dense_hessian(f, th).numpy())
    base = top_eigs(f, th, k=1, which="SA", tol=1e-8, seed=0)
    wide = top_eigs(f, th, k=1, which="SA", tol=1e-8, seed=0, ncv=40)
    assert wide.values[0] == pytest.approx(dense[0], abs=1e-8) and base.values[0] == pytest.approx(dense[0], abs=1e-8)
    assert wide.n_hvp <= base.n_hvp


def test_hvp_of_lab_mse_loss_does_not_crash_and_matches_dense() -> None:
    """lab's 'mse' is plain arithmetic: torch 2.14.1's linearize(grad(F.mse_loss)) segfaults, and every
    Hessian-vector product linearizes the gradient. The operator must agree with the dense Hessian."""
    torch.manual_seed(1)
    x, y = torch.randn(40, 5, dtype=torch.float64), torch.randn(40, 3, dtype=torch.float64)
    f, th, _ = make_loss_fn(_mlp(), x, y, "mse")
    th = th.double()
    assert float(f(th)) == pytest.approx(float(nn.functional.mse_loss(make_forward(_mlp())[0](th, x), y)), rel=1e-14)
    v = torch.randn(th.numel(), dtype=torch.float64)
    op = hvp_operator(f, th)
    torch.testing.assert_close(op(v), dense_hessian(f, th) @ v, rtol=1e-10, atol=1e-12)
    assert op.mode == "double_backward"
    lin = hvp_operator(f, th)
    lin.mode = "linearize"                       # the fallback path must not crash either
    torch.testing.assert_close(lin(v), op(v), rtol=1e-10, atol=1e-12)
