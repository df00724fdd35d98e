"""Sharpness measures against dense float64 references, and their behaviour under Dinh et al.'s rescaling."""
import numpy as np
import pytest
import torch

from lab.curvature import (
    MEASURES,
    DenseOperator,
    adaptive_operator,
    dense_hessian,
    epsilon_sharpness,
    filter_normalized_curvature,
    hutchinson_trace,
    layer_pairs,
    rescale,
    sharpness_measures,
    top_eigs,
)
from lab.flat import make_forward, make_loss_fn
from lab.landscape import directions
from lab.models import SimpleMLP


@pytest.fixture
def small():
    """A 5-6-3 ReLU net on 20 points, in float64: f, θ, spec, forward, x."""
    torch.manual_seed(0)
    net = SimpleMLP(width=6, depth=1, in_dim=5, out_dim=3).double()
    x = torch.randn(20, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (20,))
    f, theta, spec = make_loss_fn(net, x, y)
    forward, _, _ = make_forward(net)
    return f, theta, spec, forward, x


def test_rescale_keeps_the_function_and_scales_the_hessian_blocks(small):
    f, theta, spec, forward, x = small
    alpha = 7.0
    th_a = rescale(theta, spec, alpha)
    assert torch.allclose(forward(th_a, x), forward(theta, x), rtol=1e-12, atol=1e-12)
    # the map is T = diag(t): H(Tθ) = T⁻¹ H(θ) T⁻¹ exactly for a function-preserving diagonal map
    t = th_a / theta
    h, h_a = dense_hessian(f, theta), dense_hessian(f, th_a)
    assert torch.allclose(h_a, h / t[:, None] / t[None, :], rtol=1e-8, atol=1e-10)
    w2 = spec.slices()[layer_pairs(spec)[1][0]]
    assert torch.allclose(t[w2], torch.full_like(t[w2], 1 / alpha))


def test_rescale_rejects_bad_factors_and_layers(small):
    _, theta, spec, _, _ = small
    with pytest.raises(ValueError, match="parameter 'alpha'"):
        rescale(theta, spec, 0.0)
    with pytest.raises(ValueError, match="parameter 'layer'"):
        rescale(theta, spec, 2.0, layer=1)     # the output layer has no next layer


def test_filter_normalized_curvature_matches_the_dense_quadratic_form_and_is_invariant(small):
    f, theta, spec, _, _ = small
    h = dense_hessian(f, theta)
    gen = torch.Generator().manual_seed(3)
    ds = [directions.filter_normalized(theta, spec, gen) for _ in range(4)]
    ref = np.mean([float(d @ h @ d) for d in ds])
    mean, se = filter_normalized_curvature(f, theta, spec, 4, torch.Generator().manual_seed(3))
    assert mean == pytest.approx(ref, rel=1e-10) and se >= 0
    moved = filter_normalized_curvature(f, rescale(theta, spec, 9.0), spec, 4, torch.Generator().manual_seed(3))[0]
    assert moved == pytest.approx(mean, rel=1e-9)


def test_adaptive_operator_is_dense_DHD_and_invariant_while_lambda_max_moves(small):
    f, theta, spec, _, _ = small
    h = dense_hessian(f, theta)
    d = theta.abs()
    ref = torch.linalg.eigvalsh(d[:, None] * h * d[None, :])[-1]
    lam = top_eigs(adaptive_operator(f, theta), k=1, tol=1e-10).values[0]
    assert lam == pytest.approx(float(ref), rel=1e-8)
    th_a = rescale(theta, spec, 10.0)
    assert top_eigs(adaptive_operator(f, th_a), k=1, tol=1e-10).values[0] == pytest.approx(lam, rel=1e-7)
    # the unnormalized λmax is not invariant: it grows by more than α (the positive control of the chapter's C8)
    assert top_eigs(f, th_a, k=1).values[0] > 10 * top_eigs(f, theta, k=1).values[0]
    # batched products agree with single ones
    op = adaptive_operator(DenseOperator(h), theta)
    v = torch.randn(theta.numel(), 3, dtype=torch.float64)
    assert torch.allclose(op.matmat(v), torch.stack([op(v[:, j]) for j in range(3)], 1))


def test_epsilon_sharpness_finds_the_box_maximum_of_a_quadratic():
    a = torch.tensor([3.0, 1.0, 0.5], dtype=torch.float64)
    theta = torch.tensor([0.0, 1.0, -2.0], dtype=torch.float64)
    f = lambda t: 0.5 * (a * (t - theta) ** 2).sum()  # noqa: E731 - minimum at θ, L = 0
    eps = 0.01
    half = eps * (theta.abs() + 1)
    ref = 100 * float(0.5 * (a * half**2).sum())      # the corner of the box; 1 + L(θ) = 1
    assert epsilon_sharpness(f, theta, eps, maxiter=20) == pytest.approx(ref, rel=1e-6)
    with pytest.raises(ValueError, match="parameter 'eps'"):
        epsilon_sharpness(f, theta, eps=-1.0)


def test_sharpness_measures_reports_every_measure_with_its_cost(small):
    f, theta, spec, _, _ = small
    values, costs = sharpness_measures(f, theta, spec, n_dirs=3, n_probes=200, eps_iters=3)
    assert set(values) == set(costs) == set(MEASURES)
    h = dense_hessian(f, theta)
    assert values["lambda_max"] == pytest.approx(float(torch.linalg.eigvalsh(h)[-1]), rel=1e-4)
    assert values["trace"] == pytest.approx(float(torch.trace(h)), rel=0.2)   # 200 probes
    assert hutchinson_trace(f, theta, n=200)[0] == pytest.approx(values["trace"], rel=1e-12)
    assert all(c[1] > 0 for c in costs.values()) and values["eps_sharpness"] > 0
