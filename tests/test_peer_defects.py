"""Defects the peers' code has (met while benchmarking against them, issue #17) that lab must not share."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from lab.curvature import DenseOperator, dataloader_hvp_operator, dense_hessian, slq_density, top_eigs
from lab.flat import make_batch_loss_fn, make_loss_fn
from lab.landscape import line, plane
from lab.training import lr_range_test_model


def _model_and_data():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
    return model, torch.randn(45, 6, dtype=torch.float64), torch.randint(0, 3, (45,))


def test_top_k_are_k_distinct_eigenpairs() -> None:
    """hessian-eigenthings' default Lanczos (no reorthogonalisation) returns copies of λ1 for k = 5."""
    model, x, y = _model_and_data()
    f, theta, _ = make_loss_fn(model, x, y)
    ev = np.linalg.eigvalsh(dense_hessian(f, theta).numpy())[::-1]
    e = top_eigs(f, theta, k=5, tol=1e-10)
    np.testing.assert_allclose(e.values, ev[:5], rtol=1e-7)
    assert np.abs(e.vectors.T @ e.vectors - torch.eye(5, dtype=torch.float64)).max() < 1e-8


def test_unequal_batches_are_weighted_by_size() -> None:
    """hessian-eigenthings averages per-batch Hessians unweighted: a short last batch counts as much as a full one."""
    model, x, y = _model_and_data()
    f, theta, _ = make_loss_fn(model, x, y)
    loss_on_batch, _, _ = make_batch_loss_fn(model)
    op = dataloader_hvp_operator(loss_on_batch, theta, DataLoader(TensorDataset(x, y), batch_size=40))  # 40 + 5
    np.testing.assert_allclose(top_eigs(op, k=1, tol=1e-10).values, top_eigs(f, theta, k=1, tol=1e-10).values,
                               rtol=1e-9)


def test_surfaces_leave_the_model_alone_on_a_centred_regular_grid() -> None:
    """loss-landscapes leaves the model's weights moved (by 1.4·‖θ‖ in the benchmark) with requires_grad off, on a
    grid that is neither centred nor regular."""
    model, x, y = _model_and_data()
    before = {n: (p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()}
    f, theta, _ = make_loss_fn(model, x, y)
    d1, d2 = torch.randn_like(theta), torch.randn_like(theta)
    a = np.linspace(-1, 1, 7)
    s = plane(f, theta, d1, d2, a, a)
    prof = line(f, theta, d1, a)
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), before[n][0]) and p.requires_grad == before[n][1]
    np.testing.assert_array_equal(s.a, a)
    assert s.loss[3, 3] == float(f(theta)) == prof[3]           # the centre is θ itself


def test_slq_is_scale_free() -> None:
    """PyHessian normalises Lanczos vectors by ‖v‖ + 1e-6, which biases the density of a small-loss Hessian."""
    d = torch.diag(torch.linspace(1, 2, 30, dtype=torch.float64))
    nodes, w = slq_density(DenseOperator(d), n_runs=2, m=30)
    nodes_s, w_s = slq_density(DenseOperator(1e-9 * d), n_runs=2, m=30)
    np.testing.assert_allclose(nodes_s, 1e-9 * nodes, rtol=1e-8)
    np.testing.assert_allclose(w_s, w, rtol=1e-8)


def test_lr_range_test_model_never_touches_the_model() -> None:
    """torch-lr-finder trains the caller's model in place and must restore it; lab trains a flat copy."""
    model, x, y = _model_and_data()
    before = [p.detach().clone() for p in model.parameters()]
    loader = DataLoader(TensorDataset(x, y), batch_size=9)
    rt = lr_range_test_model(model, loader, steps=80, lr_min=1e-4, lr_max=10.0, smooth=5)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))
    assert all(p.grad is None for p in model.parameters())
    batches = [(xb, yb) for xb, yb in loader]
    rt2 = lr_range_test_model(model, lambda i: batches[i % len(batches)], steps=80, lr_min=1e-4, lr_max=10.0,
                              smooth=5)
    np.testing.assert_array_equal(rt.loss, rt2.loss)
    assert 1e-4 <= rt.suggestion <= 10.0


def test_a_second_operator_on_the_same_model_sees_the_same_hessian() -> None:
    """PyHessian's constructor runs backward(create_graph=True) without clearing the model's .grad: a
    `hessian(model, ...)` built after another one that has not yet run eigenvalues()/trace() (which zero the grads)
    accumulates onto its gradient — every eigenvalue doubled, 0.831 → 1.661 on this net (met in the benchmark). lab's
    operators are pure functions of θ: they never read or write .grad."""
    from lab.curvature import hvp_operator

    model, x, y = _model_and_data()
    f, theta, _ = make_loss_fn(model, x, y)
    first = top_eigs(hvp_operator(f, theta), k=2, tol=1e-10).values
    second = top_eigs(hvp_operator(f, theta), k=2, tol=1e-10).values
    np.testing.assert_array_equal(first, second)
    assert all(p.grad is None for p in model.parameters())
