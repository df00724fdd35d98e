"""Operators: every estimator takes one; the DataLoader operator equals the full-batch Hessian; only "unsupported"
errors make the HVP fall back."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lab.curvature import (
    DenseOperator,
    HessianOperator,
    dataloader_hvp_operator,
    dense_hessian,
    hutchinson_trace,
    hutchpp_trace,
    hvp_operator,
    minibatch_hvp_operator,
    power_iteration,
    slq_density,
    top_eigs,
)
from lab.flat import make_batch_loss_fn, make_loss_fn


@pytest.fixture
def problem():
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3)).double()
    x, y = torch.randn(37, 5, dtype=torch.float64), torch.randint(0, 3, (37,))
    f, theta, _ = make_loss_fn(model, x, y)
    batch_loss, _, _ = make_batch_loss_fn(model)
    return f, theta, batch_loss, x, y


@pytest.mark.parametrize("batch_size", [1, 5, 10, 37, 100])
def test_dataloader_operator_is_the_full_batch_hessian(problem, batch_size: int) -> None:
    """Batches of unequal size (37 = 3·10 + 7 …) are weighted by their size: the same operator as the full batch."""
    f, theta, batch_loss, x, y = problem
    h = dense_hessian(f, theta)
    op = dataloader_hvp_operator(batch_loss, theta, DataLoader(TensorDataset(x, y), batch_size=batch_size))
    v = torch.randn(theta.numel(), dtype=torch.float64)
    np.testing.assert_allclose(op(v).numpy(), (h @ v).numpy(), rtol=1e-10, atol=1e-12)
    assert op.count == 1 and op.n_samples == 37


def test_dataloader_operator_refuses_a_changing_loader(problem) -> None:
    f, theta, batch_loss, x, y = problem
    batches = [[(x[:10], y[:10])], [(x[:11], y[:11])]]
    it = iter(batches)

    class Changing:
        def __iter__(self):
            return iter(next(it))

    op = dataloader_hvp_operator(batch_loss, theta, Changing())
    op(torch.ones(theta.numel()))
    with pytest.raises(ValueError, match="same data every pass"):
        op(torch.ones(theta.numel()))


def test_every_estimator_takes_an_operator(problem) -> None:
    """One operator, built once, serves every estimator; each reports the products it used from it."""
    f, theta, batch_loss, x, y = problem
    h = dense_hessian(f, theta)
    evals = np.linalg.eigvalsh(h.numpy())
    op = minibatch_hvp_operator(batch_loss, theta, [(x[:20], y[:20]), (x[20:], y[20:])])
    e = top_eigs(op, k=2, tol=1e-10)
    np.testing.assert_allclose(e.values, evals[::-1][:2], rtol=1e-8)
    lo = top_eigs(op, k=1, which="SA", tol=1e-10, ncv=40)
    np.testing.assert_allclose(lo.values, evals[:1], rtol=1e-6, atol=1e-10)
    pw = power_iteration(op, k=1, iters=500)
    assert abs(abs(pw.values[0]) - abs(evals).max()) <= 1e-6 * abs(evals).max()
    est, se = hutchpp_trace(op, n=theta.numel() * 3)
    assert abs(est - np.trace(h.numpy())) <= 1e-8 * np.abs(evals).sum()
    est, se = hutchinson_trace(op, n=200)
    assert abs(est - np.trace(h.numpy())) <= 5 * se
    before = op.count
    assert before == e.n_hvp + lo.n_hvp + pw.n_hvp + 3 * theta.numel() + 200     # every product counted, once
    nodes, weights = slq_density(op, n_runs=2, m=theta.numel())
    assert nodes.max() == pytest.approx(evals.max(), rel=1e-8)
    assert 2 <= op.count - before <= 2 * theta.numel()


def test_a_loss_function_and_theta_build_the_same_operator(problem) -> None:
    f, theta, *_ = problem
    a = top_eigs(f, theta, k=1, tol=1e-10).values
    b = top_eigs(hvp_operator(f, theta), k=1, tol=1e-10).values
    np.testing.assert_allclose(a, b, rtol=1e-12)
    with pytest.raises(TypeError, match="operator"):
        top_eigs(f, k=1)
    with pytest.raises(ValueError, match="entries"):
        top_eigs(DenseOperator(torch.eye(3)), torch.zeros(4), k=1)


def test_hvp_falls_back_only_for_unsupported_errors() -> None:
    """An out-of-memory error (or any error that is not "unsupported") propagates at once: no silent slow path."""
    calls = []

    def oom(t):
        calls.append(1)
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    op = HessianOperator(oom, torch.zeros(3))
    with pytest.raises(torch.OutOfMemoryError):
        op(torch.ones(3))
    assert op.mode == "double_backward" and len(calls) == 1

    def broken(t):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (3x2 and 4x5)")

    with pytest.raises(RuntimeError, match="shapes"):
        HessianOperator(broken, torch.zeros(3))(torch.ones(3))


def test_hvp_falls_back_when_double_backward_is_unsupported(monkeypatch) -> None:
    """An "unsupported" error moves the operator to the next mode, which gives the same product; it stays there."""
    theta = torch.tensor([1.0, 2.0], dtype=torch.float64)
    op = HessianOperator(lambda t: (t ** 3).sum(), theta)

    def unsupported(v):
        raise RuntimeError("derivative for aten::foo is not implemented")

    monkeypatch.setattr(op, "_double_backward", unsupported)
    np.testing.assert_allclose(op(torch.tensor([1.0, 1.0])).numpy(), [6.0, 12.0])
    assert op.mode == "linearize" and op.count == 1
    np.testing.assert_allclose(op(torch.tensor([0.0, 1.0])).numpy(), [0.0, 12.0])
    assert op.mode == "linearize"

def _spectrum_operator(p: int = 200, seed: int = 0) -> tuple[DenseOperator, np.ndarray]:
    """A dense symmetric operator with a network-like spectrum: a few large outliers, a bulk near 0, a few negative."""
    g = torch.Generator().manual_seed(seed)
    u = torch.linalg.qr(torch.randn(p, p, generator=g, dtype=torch.float64)).Q
    ev = torch.cat([torch.tensor([50.0, 20.0, 9.0, 4.0, 2.0]), 0.05 * torch.randn(p - 8, generator=g),
                    torch.tensor([-0.8, -0.5, -0.3])]).double()
    return DenseOperator(u @ torch.diag(ev) @ u.T), np.sort(ev.numpy())


@pytest.mark.parametrize("which, k", [("LA", 1), ("LA", 5), ("SA", 1), ("SA", 3)])
def test_lanczos_converges_to_dense_eigh_with_residuals(which: str, k: int) -> None:
    op, ev = _spectrum_operator()
    e = top_eigs(op, k=k, which=which, tol=1e-8, exact_residuals=True)
    want = ev[::-1][:k] if which == "LA" else ev[:k][::-1]
    np.testing.assert_allclose(e.values, want, rtol=1e-7, atol=1e-9)
    assert e.residuals.max() <= 1e-6 * abs(ev).max()
    est = top_eigs(op, k=k, which=which, tol=1e-8)
    assert est.n_hvp == e.n_hvp - k                        # the estimates cost nothing; exact ones one product each
    np.testing.assert_allclose(est.residuals, e.residuals, atol=1e-7 * abs(ev).max())


def test_lanczos_needs_fewer_products_than_arpack_and_warm_starts_help() -> None:
    op, ev = _spectrum_operator()
    lz = top_eigs(op, k=1, tol=1e-6)
    ap = top_eigs(op, k=1, tol=1e-6, method="arpack")
    np.testing.assert_allclose(lz.values, ap.values, rtol=1e-6)
    assert lz.n_hvp < ap.n_hvp
    warm = top_eigs(op, k=1, tol=1e-6, v0=lz.vectors[:, 0])
    assert warm.n_hvp < lz.n_hvp / 2


def test_lanczos_warns_when_it_does_not_converge() -> None:
    op, _ = _spectrum_operator()
    with pytest.warns(RuntimeWarning, match="not converged"):
        top_eigs(op, k=1, which="SA", tol=1e-12, max_steps=5)


@pytest.mark.parametrize("n", [10, 40])
def test_xtrace_beats_hutchinson_on_a_decaying_spectrum(n: int) -> None:
    """XTrace's error falls far below Hutchinson's where a few eigenvalues dominate (a network Hessian's case)."""
    from lab.curvature import xtrace

    op, ev = _spectrum_operator()
    tr = float(ev.sum())
    errs = {f.__name__: np.median([abs(f(op, n=n, seed=s)[0] - tr) for s in range(10)])
            for f in (hutchinson_trace, hutchpp_trace, xtrace)}
    assert errs["xtrace"] < errs["hutchinson_trace"] / 3
    assert errs["xtrace"] <= errs["hutchpp_trace"] * 1.5
    est, se = xtrace(op, n=n, seed=0)
    assert np.isfinite(se) and se > 0 and op.count > 0


def test_xtrace_is_exact_when_the_sketch_holds_the_range() -> None:
    from lab.curvature import xtrace

    d = torch.diag(torch.tensor([3.0, 2.0, 1.0] + [0.0] * 20, dtype=torch.float64))
    assert xtrace(DenseOperator(d), n=10) == (pytest.approx(6.0, rel=1e-12), 0.0)


def test_no_blas_threads_fight_torch_inside_the_eigensolvers() -> None:
    """Inside top_eigs (both methods) and slq_density, where every step is a torch product (2 OpenMP threads here)
    followed by scipy work, scipy's BLAS runs on one thread: two pools of 2 threads on 2 cores made each product
    2–7× slower (#17). Outside the solver the caller's BLAS limit is restored."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from lab.curvature import LinearOperator, slq_density

    def blas_threads() -> list[int]:
        return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]

    if not blas_threads():
        pytest.skip("no BLAS library that threadpoolctl can see")
    seen: list[list[int]] = []
    a = torch.diag(torch.linspace(-1.0, 4.0, 60, dtype=torch.float64))

    class Probe(LinearOperator):
        def _apply(self, v: torch.Tensor) -> torch.Tensor:
            seen.append(blas_threads())
            return a @ v

    op = Probe(size=60, dtype=torch.float64)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
            for method in ("lanczos", "arpack"):
                top_eigs(op, k=2, which="SA", method=method, tol=1e-8)
            slq_density(op, n_runs=1, m=10)
            outside = blas_threads()
    finally:
        torch.set_num_threads(threads)
    assert seen and all(n == 1 for s in seen for n in s), seen[:3]
    assert all(n == 2 for n in outside)


# ------------------------------------------------------------------------------------ several vectors at once
def _mse_f_loss(x, y):
    """A loss written with F.mse_loss: forward-over-reverse of it raises "ZeroTensors are immutable" in torch 2.14."""
    def f(t):
        return torch.nn.functional.mse_loss(x @ t.view(3, 5).T, y)
    return f


@pytest.mark.parametrize("case", ["vmap_jvp", "grads_batched", "one_by_one"])
def test_matmat_equals_the_dense_hessian_in_every_batch_mode(problem, case: str) -> None:
    """Each way of applying several vectors gives H·V (float64, against the dense Hessian), counts one product a
    column, and a mode that fails is dropped for the next (F.mse_loss cannot be vmapped forward-over-reverse)."""
    f, theta, *_ = problem
    if case == "grads_batched":
        torch.manual_seed(0)
        x, y = torch.randn(40, 5, dtype=torch.float64), torch.randn(40, 3, dtype=torch.float64)
        f, theta = _mse_f_loss(x, y), torch.randn(15, dtype=torch.float64)
    op = hvp_operator(f, theta, batched=case != "one_by_one", batch=3)     # batch 3: 7 columns in 3 passes
    v = torch.randn(theta.numel(), 7, dtype=torch.float64)
    out = op.matmat(v)
    np.testing.assert_allclose(out.numpy(), (dense_hessian(f, theta) @ v).numpy(), rtol=1e-10, atol=1e-12)
    assert op.count == 7
    assert op.batch_mode == (case if case != "one_by_one" else "vmap_jvp") and op.batched == (case != "one_by_one")


def test_matmat_refuses_nothing_it_should_raise(problem) -> None:
    """A loss that fails for its own reasons (not a batching limitation) still raises from the one-by-one path."""
    _, theta, *_ = problem

    def broken(t):
        raise RuntimeError("the loss's own bug")

    with pytest.raises(RuntimeError, match="own bug"):
        hvp_operator(broken, theta).matmat(torch.ones(theta.numel(), 3, dtype=torch.float64))


def test_matmat_auto_batches_small_p_on_a_cpu_only(problem) -> None:
    f, theta, *_ = problem
    assert hvp_operator(f, theta).batched
    big = torch.zeros(HessianOperator.BATCH_MAX_P + 1)
    assert not hvp_operator(lambda t: (t ** 2).sum(), big).batched
    assert hvp_operator(lambda t: (t ** 2).sum(), big, batched=True).batched
    with pytest.raises(ValueError, match="'batch'"):
        hvp_operator(f, theta, batch=0)


def test_matmat_of_sums_and_dense(problem) -> None:
    f, theta, batch_loss, x, y = problem
    v = torch.randn(theta.numel(), 4, dtype=torch.float64)
    h = dense_hessian(f, theta)
    mb = minibatch_hvp_operator(batch_loss, theta, [(x[:20], y[:20]), (x[20:], y[20:])])
    np.testing.assert_allclose(mb.matmat(v).numpy(), (h @ v).numpy(), rtol=1e-10, atol=1e-12)
    assert mb.count == 4
    dl = dataloader_hvp_operator(batch_loss, theta, DataLoader(TensorDataset(x, y), batch_size=10))
    np.testing.assert_allclose(dl.matmat(v).numpy(), (h @ v).numpy(), rtol=1e-10, atol=1e-12)
    dense = DenseOperator(h)
    assert torch.equal(dense.matmat(v), h @ v) and dense.matmat(v[:, 0]).shape == (theta.numel(), 1)


def test_trace_estimators_agree_whether_products_are_batched_or_not(problem) -> None:
    """The same probes give the same estimate (to rounding) batched or one at a time."""
    from lab.curvature import xtrace
    f, theta, *_ = problem
    for est in (hutchinson_trace, hutchpp_trace, xtrace):
        a = est(hvp_operator(f, theta, batched=True), n=12, seed=4)
        b = est(hvp_operator(f, theta, batched=False), n=12, seed=4)
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_lanczos_keeps_a_float32_basis_for_float32_operators(problem) -> None:
    """The basis kept for reorthogonalisation is in the operator's precision (float32 halves its memory and
    traffic); the eigenvalues still match the float64 dense spectrum to float32's rounding, with no more products
    than with a float64 basis."""
    from lab.curvature import spectrum
    f, theta, *_ = problem
    evals = torch.linalg.eigvalsh(dense_hessian(f, theta)).numpy()
    f32 = hvp_operator(f, theta.float())
    assert spectrum._basis_dtype(f32) == torch.float32
    assert spectrum._basis_dtype(hvp_operator(f, theta)) == torch.float64
    e32 = top_eigs(f32, k=3, tol=1e-6)
    np.testing.assert_allclose(e32.values, evals[::-1][:3], rtol=2e-5, atol=2e-6 * abs(evals).max())
    e64 = top_eigs(hvp_operator(f, theta), k=3, tol=1e-6)
    assert e32.n_hvp <= e64.n_hvp + 2
