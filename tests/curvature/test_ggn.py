"""GGN, Fisher, output Hessians, parameter blocks, per-class helpers and stack PCA against dense float64 references."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.func import jacrev

from lab.behavior import behavior_jacobian
from lab.curvature import (
    DenseOperator,
    block,
    class_means,
    dense_block,
    dense_hessian,
    fisher_operator,
    ggn_operator,
    hutchpp_trace,
    hvp_operator,
    output_hessian_operator,
    param_indices,
    per_class,
    slq_density,
    stack_pca,
    to_dense,
    top_eigs,
    unpack_loss,
)
from lab.flat import make_loss_fn


def _logcosh(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.log(torch.cosh(out - y)).mean()


def _problem(loss: str | object = "cross_entropy", n: int = 12, seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)).double()
    x = torch.randn(n, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (n,)) if loss == "cross_entropy" else torch.randn(n, 3, dtype=torch.float64)
    f, theta, spec = make_loss_fn(model, x, y, loss=loss)
    theta = theta + 0.3 * torch.randn_like(theta)         # away from the model's own parameters
    return f, theta, spec, model, x, y


def _dense_ggn(f, theta) -> torch.Tensor:
    """Jᵀ H_out J formed densely: J by jacrev, H_out by autograd.functional.hessian of the criterion."""
    p = unpack_loss(f, theta)
    out = p.forward(theta, p.x)
    j = jacrev(lambda t: p.forward(t, p.x).reshape(-1))(theta)                        # (n·C, P)
    h_out = torch.autograd.functional.hessian(lambda o: p.crit(o.reshape(out.shape), p.y), out.detach().reshape(-1))
    return j.T @ h_out @ j


@pytest.mark.parametrize("loss", ["cross_entropy", "mse", _logcosh], ids=["ce", "mse", "callable"])
def test_ggn_equals_dense_jt_hout_j(loss) -> None:
    f, theta, *_ = _problem(loss)
    ref = _dense_ggn(f, theta)
    op = ggn_operator(f, theta)
    batched = to_dense(op)                                       # matmat: the vmapped path
    one_by_one = torch.stack([op(e) for e in torch.eye(op.size, dtype=torch.float64)], dim=1)
    scale = ref.abs().max()
    assert float((batched - ref).abs().max()) <= 1e-12 * scale
    assert float((one_by_one - ref).abs().max()) <= 1e-12 * scale
    assert op.count == 2 * op.size and op.dtype == torch.float64


def test_output_jacobian_wrt_parameters_comes_from_behavior_jacobian() -> None:
    """The J of the GGN is lab.behavior.behavior_jacobian on unpack_loss's forward (no second implementation)."""
    f, theta, *_ = _problem("mse")
    p = unpack_loss(f, theta)
    j = behavior_jacobian(p.forward, theta, p.x)
    assert torch.equal(j, jacrev(lambda t: p.forward(t, p.x).reshape(-1))(theta))
    g = to_dense(ggn_operator(f, theta))
    ref = 2.0 / j.shape[0] * j.T @ j                                # MSE: H_out = 2/(n·C)·I
    assert float((g - ref).abs().max()) <= 1e-13 * ref.abs().max()


def test_cross_entropy_output_hessian_is_softmax_covariance() -> None:
    f, theta, *_ = _problem("cross_entropy")
    op = ggn_operator(f, theta)
    n = op.outputs.shape[0]
    p = torch.softmax(op.outputs, -1)
    u = torch.randn_like(op.outputs)
    closed = (p * u - p * (p * u).sum(-1, keepdim=True)) / n
    assert float((op.output_hvp(u) - closed).abs().max()) <= 1e-15


def test_ggn_is_the_hessian_for_mse_on_a_linear_model() -> None:
    torch.manual_seed(1)
    x = torch.randn(15, 4, dtype=torch.float64)
    f, theta, _ = make_loss_fn(torch.nn.Linear(4, 2).double(), x, torch.randn(15, 2, dtype=torch.float64), "mse")
    h = dense_hessian(f, theta)
    assert float((to_dense(ggn_operator(f, theta)) - h).abs().max()) <= 1e-13 * h.abs().max()


def test_hessian_is_ggn_plus_residual_output_hessian() -> None:
    f, theta, *_ = _problem("cross_entropy")
    h = dense_hessian(f, theta)
    split = to_dense(ggn_operator(f, theta)) + to_dense(output_hessian_operator(f, theta, weights="loss"))
    assert float((split - h).abs().max()) <= 1e-12 * h.abs().max()


def test_estimators_take_the_ggn() -> None:
    f, theta, *_ = _problem("cross_entropy")
    ref = torch.linalg.eigvalsh(_dense_ggn(f, theta)).numpy()
    op = ggn_operator(f, theta)
    e = top_eigs(op, k=3, tol=1e-10)
    np.testing.assert_allclose(e.values, ref[::-1][:3], rtol=1e-8)
    est, _ = hutchpp_trace(op, n=3 * op.size)                     # enough probes: exact up to rounding
    assert abs(est - ref.sum()) <= 1e-8 * ref.sum()
    slq_density(op, n_runs=1, m=5)


def test_output_hessian_of_one_output_and_of_a_weighting() -> None:
    f, theta, *_ = _problem("cross_entropy")
    p = unpack_loss(f, theta)
    for k in range(3):
        ref = torch.func.hessian(lambda t, k=k: p.forward(t, p.x)[:, k].mean())(theta)
        got = to_dense(output_hessian_operator(f, theta, weights=k))
        assert float((got - ref).abs().max()) <= 1e-12 * ref.abs().max()
    c = torch.randn(12, 3, dtype=torch.float64)
    ref = torch.func.hessian(lambda t: (p.forward(t, p.x) * c).sum())(theta)
    got = to_dense(output_hessian_operator(f, theta, weights=c))
    assert float((got - ref).abs().max()) <= 1e-12 * ref.abs().max()
    with pytest.raises(ValueError, match="parameter 'weights' = 3"):
        output_hessian_operator(f, theta, weights=3)


def _per_sample_grads(f, theta) -> torch.Tensor:
    p = unpack_loss(f, theta)
    rows = []
    for i in range(len(p.x)):
        t = theta.clone().requires_grad_(True)
        rows.append(torch.autograd.grad(p.crit(p.forward(t, p.x[i:i + 1]), p.y[i:i + 1]), t)[0])
    return torch.stack(rows)


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_empirical_fisher_is_the_mean_outer_product_of_per_sample_gradients(loss: str) -> None:
    f, theta, *_ = _problem(loss)
    g = _per_sample_grads(f, theta)
    ref = g.T @ g / len(g)
    op = fisher_operator(f, theta)
    assert float((op.grads - g).abs().max()) <= 1e-14 * g.abs().max()
    assert float((to_dense(op) - ref).abs().max()) <= 1e-14 * ref.abs().max()
    full = torch.func.grad(f)(theta)                              # the per-sample losses average to the loss
    assert float((g.mean(0) - full).abs().max()) <= 1e-14 * full.abs().max()


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_monte_carlo_fisher_averages_to_the_ggn(loss: str) -> None:
    f, theta, *_ = _problem(loss, n=10)
    ggn = to_dense(ggn_operator(f, theta))
    op = fisher_operator(f, theta, kind="mc", n_samples=4000, generator=torch.Generator().manual_seed(0))
    assert op.grads.shape == (40_000, theta.numel())
    rel = float(torch.linalg.norm(to_dense(op) - ggn) / torch.linalg.norm(ggn))
    assert rel < 0.05, rel                 # seeded; unbiased: 0.02 (MSE), 0.007 (CE) here, shrinking as 1/√S


def test_fisher_rejects_unknown_kind_and_needs_a_sampler_for_other_losses() -> None:
    f, theta, *_ = _problem(_logcosh)
    with pytest.raises(ValueError, match="parameter 'kind' = 'true'"):
        fisher_operator(f, theta, kind="true")
    with pytest.raises(ValueError, match="parameter 'sample' = None"):
        fisher_operator(f, theta, kind="mc")
    op = fisher_operator(f, theta, kind="mc", n_samples=2, sample=lambda o, s, g: o.expand(s, *o.shape) + 1.0)
    assert op.grads.shape == (24, theta.numel())


def test_blocks_are_slices_of_the_dense_hessian() -> None:
    f, theta, spec, *_ = _problem("cross_entropy")
    h = dense_hessian(f, theta)
    op = ggn_operator(f, theta)
    g = to_dense(op)
    s = spec.slices()
    first = torch.arange(s["0.weight"].start, s["0.bias"].stop)
    last = torch.arange(s["2.weight"].start, s["2.bias"].stop)
    assert torch.equal(param_indices(spec, "0"), first)
    assert torch.equal(param_indices(spec, ["2.bias", "0.weight"]),      # the flat vector's order
                       torch.cat([torch.arange(s["0.weight"].start, s["0.weight"].stop),
                                  torch.arange(s["2.bias"].start, s["2.bias"].stop)]))
    hop = hvp_operator(f, theta)
    assert float((dense_block(hop, spec, "0") - h[first][:, first]).abs().max()) <= 1e-13 * h.abs().max()
    assert float((dense_block(hop, spec, "0", "2") - h[first][:, last]).abs().max()) <= 1e-13 * h.abs().max()
    assert float((dense_block(op, spec, "2", "0") - g[last][:, first]).abs().max()) <= 1e-13 * g.abs().max()
    assert torch.equal(dense_block(DenseOperator(h), spec, "2"), h[last][:, last])
    b = block(hop, spec, "2")
    ref = torch.linalg.eigvalsh(h[last][:, last])
    assert abs(top_eigs(b, k=1, tol=1e-12).values[0] - float(ref[-1])) <= 1e-9 * float(ref.abs().max())
    rect = block(hop, spec, "0", "2")
    assert rect.shape == (len(first), len(last)) and rect(torch.ones(len(last))).shape == (len(first),)
    with pytest.raises(ValueError, match="parameter 'group' = '5'"):
        block(hop, spec, "5")


def test_per_class_and_class_means() -> None:
    f, theta, _, model, x, y = _problem("cross_entropy", n=30)
    dense = per_class(lambda xc, yc: to_dense(ggn_operator(make_loss_fn(model, xc, yc)[0], theta)), x, y)
    assert sorted(dense) == sorted(set(y.tolist()))
    counts = {c: int((y == c).sum()) for c in dense}
    total = sum(counts[c] * dense[c] for c in dense) / len(y)     # the class GGNs average to the full GGN
    full = to_dense(ggn_operator(f, theta))
    assert float((total - full).abs().max()) <= 1e-14 * full.abs().max()
    stack = torch.randn(30, 2, 2, dtype=torch.float64)
    classes, means = class_means(stack, torch.nn.functional.one_hot(y, 3))
    for c, m in zip(classes.tolist(), means, strict=True):
        assert torch.allclose(m, stack[y == c].mean(0), rtol=0, atol=1e-15)


def test_stack_pca_matches_numpy_svd_of_the_centred_stack() -> None:
    rng = np.random.default_rng(0)
    mats = rng.normal(size=(20, 3, 4)) + rng.normal(size=(20, 1, 1)) * np.arange(12.0).reshape(3, 4)
    pca = stack_pca(torch.from_numpy(mats), k=3)
    flat = mats.reshape(20, -1)
    centred = flat - flat.mean(0)
    s = np.linalg.svd(centred, compute_uv=False)
    np.testing.assert_allclose(pca.singular_values, s[:3], rtol=1e-12)
    np.testing.assert_allclose(pca.explained_variance_ratio, s[:3] ** 2 / (s ** 2).sum(), rtol=1e-12)
    recon = pca.mean.reshape(-1) + pca.scores @ pca.components.reshape(3, -1)
    full = stack_pca(mats)
    np.testing.assert_allclose(full.mean.reshape(-1) + full.scores @ full.components.reshape(len(full.scores[0]), -1),
                               flat, atol=1e-12)
    assert np.abs(recon - flat).max() < np.abs(centred).max()
    assert pca.explained_variance_ratio[0] > 0.5
    with pytest.raises(ValueError, match="parameter 'k' = 0"):
        stack_pca(mats, k=0)


def test_float32_operators_agree_with_float64() -> None:
    """The float32 GGN and Fisher products agree with the float64 reference to float32 rounding."""
    f, theta, *_ = _problem("cross_entropy")
    v = torch.randn_like(theta)
    for build in (ggn_operator, fisher_operator):
        ref = build(f, theta)(v)
        got = build(f, theta.float())(v.float())
        assert got.dtype == torch.float32
        assert float((got.double() - ref).abs().max()) <= 1e-5 * float(ref.abs().max())


class _Encoder(torch.nn.Module):
    """PyTorch's fused encoder path has no forward-mode derivative: the GGN takes J v in reverse mode instead."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.TransformerEncoderLayer(4, 2, dim_feedforward=8, dropout=0.1, batch_first=True)
        self.out = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.layer(x).mean(1))


def test_ggn_of_a_model_without_forward_mode_derivatives() -> None:
    torch.manual_seed(0)
    model = _Encoder().double().eval()
    f, theta, _ = make_loss_fn(model, torch.randn(4, 3, 4, dtype=torch.float64), torch.randint(0, 3, (4,)))
    ref = _dense_ggn(f, theta)
    op = ggn_operator(f, theta)
    got = to_dense(op)
    assert op.mode == "double_vjp"
    assert float((got - ref).abs().max()) <= 1e-12 * ref.abs().max()
