"""Issue #31 regressions for lab.curvature: degenerate spectra (zero, multiples of the identity, repeated
eigenvalues), Lanczos breakdown, bad arguments refused by name, and non-finite operator products refused once in
LinearOperator."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from lab.checks import NonFiniteError
from lab.curvature import (
    DenseOperator,
    LinearOperator,
    WeightedSum,
    hutchinson_trace,
    hutchpp_trace,
    lanczos,
    power_iteration,
    slq_density,
    spectral_density,
    top_eigs,
    xtrace,
)


def diag(*vals: float) -> DenseOperator:
    return DenseOperator(torch.diag(torch.tensor(vals, dtype=torch.float64)))


@pytest.mark.parametrize("vals, k, which, want", [
    ([2.0] * 6, 2, "LA", [2.0, 2.0]),                        # a multiple of the identity: β = 0 at the first step
    ([0.0] * 5, 1, "LA", [0.0]),                             # the zero Hessian
    ([0.0] * 5, 3, "LA", [0.0, 0.0, 0.0]),
    ([-3.0] * 6, 2, "SA", [-3.0, -3.0]),
    ([5.0, 0.0, 0.0, 0.0], 2, "LA", [5.0, 0.0]),             # rank one
])
def test_top_eigs_on_degenerate_operators_is_exact(vals, k, which, want) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")                       # converged: no warning either
        e = top_eigs(diag(*vals), k=k, which=which, exact_residuals=True)
    assert e.values == pytest.approx(want, abs=1e-12)
    assert e.residuals.max() < 1e-10
    assert e.vectors.T @ e.vectors == pytest.approx(torch.eye(k, dtype=torch.float64), abs=1e-10)


@pytest.mark.parametrize("k, which, want", [(4, "LA", [3, 3, 3, 3]), (6, "LA", [3, 3, 3, 3, 2, 2]),
                                            (3, "SA", [1, 1, 1]), (5, "SA", [2, 2, 1, 1, 1])])
def test_top_eigs_finds_every_copy_of_a_repeated_eigenvalue(k, which, want) -> None:
    op = diag(1, 1, 1, 2, 2, 2, 3, 3, 3, 3)
    e = top_eigs(op, k=k, which=which, exact_residuals=True)
    assert e.values == pytest.approx(want, abs=1e-10)         # was [3, 3, 2, 2] for k = 4, with tiny residuals
    assert e.residuals.max() < 1e-10
    arpack = top_eigs(op, k=k, which=which, method="arpack")
    assert np.sort(e.values) == pytest.approx(np.sort(arpack.values), abs=1e-8)


def test_top_eigs_after_a_breakdown_on_a_low_rank_operator() -> None:
    rng = np.random.default_rng(0)
    g = torch.from_numpy(rng.standard_normal((3, 12)))
    h = g.T @ g                                              # rank 3, 9 zero eigenvalues
    dense = np.sort(np.linalg.eigvalsh(h.numpy()))[::-1]
    e = top_eigs(DenseOperator(h), k=5, exact_residuals=True)
    assert e.values == pytest.approx(dense[:5], abs=1e-9)
    assert e.residuals.max() < 1e-8


def test_top_eigs_generic_spectrum_is_unchanged() -> None:
    vals = np.linspace(1.0, 10.0, 40) ** 2
    e = top_eigs(diag(*vals), k=3)
    assert e.values == pytest.approx(vals[::-1][:3], rel=1e-9)


@pytest.mark.parametrize("kwargs, exc, name", [
    (dict(k=2.5), TypeError, "k"), (dict(k=True), TypeError, "k"), (dict(k=0), ValueError, "k"),
    (dict(k=4), ValueError, "k"), (dict(k=2, max_steps=0), ValueError, "max_steps"),
    (dict(k=2, max_steps=-3), ValueError, "max_steps"), (dict(k=3, max_steps=1), ValueError, "max_steps"),
    (dict(k=1, max_steps=2.5), TypeError, "max_steps"), (dict(k=1, tol=0.0), ValueError, "tol"),
    (dict(k=1, tol=float("nan")), NonFiniteError, "tol"), (dict(k=1, seed=-1), ValueError, "seed"),
    (dict(k=1, v0=torch.zeros(4)), ValueError, "v0"), (dict(k=1, v0=torch.ones(3)), ValueError, "v0"),
    (dict(k=1, v0=torch.full((4,), float("nan"))), NonFiniteError, "v0"),
])
def test_top_eigs_refuses_bad_arguments_by_name(kwargs, exc, name) -> None:
    with pytest.raises(exc, match=f"parameter '{name}'"):
        top_eigs(diag(1, 2, 3, 4), **kwargs)


def test_lanczos_validates_m_and_q0_and_normalises_q0() -> None:
    op = diag(1, 2, 3, 4)
    q = torch.ones(4, dtype=torch.float64)
    for m, exc in ((0, ValueError), (-2, ValueError), (2.5, TypeError)):
        with pytest.raises(exc, match="parameter 'm'"):
            lanczos(op, q / 2, m)
    with pytest.raises(ValueError, match="parameter 'q0'"):
        lanczos(op, torch.zeros(4, dtype=torch.float64), 3)
    with pytest.raises(NonFiniteError, match="parameter 'q0'"):
        lanczos(op, torch.full((4,), float("nan"), dtype=torch.float64), 3)
    with pytest.raises(ValueError, match="parameter 'q0'"):
        lanczos(op, torch.ones(3, dtype=torch.float64), 3)
    a, b = lanczos(op, 3 * q, 4)                             # not a unit vector: normalised, the same T as q / 2
    a2, b2 = lanczos(op, q / 2, 4)
    assert a == pytest.approx(a2) and b == pytest.approx(b2)
    t = np.diag(a) + np.diag(b, 1) + np.diag(b, -1)
    assert np.sort(np.linalg.eigvalsh(t)) == pytest.approx([1, 2, 3, 4])


def nan_op(p: int = 6, value: float = float("nan"), every: bool = True) -> LinearOperator:
    def mv(v: torch.Tensor) -> torch.Tensor:
        out = v * torch.arange(1.0, p + 1, dtype=torch.float64)
        if every:
            return out * value
        out[-1] = value
        return out
    return LinearOperator(mv, size=p, dtype=torch.float64)


@pytest.mark.parametrize("value, every", [(float("nan"), True), (float("inf"), True), (float("nan"), False)])
def test_a_non_finite_product_is_refused_by_every_estimator(value, every) -> None:
    calls = [lambda op: hutchinson_trace(op, n=4), lambda op: hutchpp_trace(op, n=9), lambda op: xtrace(op, n=8),
             lambda op: power_iteration(op), lambda op: top_eigs(op, k=1),
             lambda op: lanczos(op, torch.ones(6, dtype=torch.float64), 3), lambda op: slq_density(op, n_runs=2, m=3),
             lambda op: top_eigs(op, k=1, method="arpack"), lambda op: op.matmat(torch.ones(6, 2)),
             lambda op: WeightedSum([op], [1.0])(torch.ones(6))]
    for call in calls:
        with pytest.raises(NonFiniteError, match="operator product is not finite"):
            call(nan_op(value=value, every=every))


def test_linear_operator_checks_its_size_and_its_products_shape() -> None:
    for size, exc in ((0, ValueError), (-2, ValueError), (2.5, TypeError)):
        with pytest.raises(exc, match="parameter 'size'"):
            LinearOperator(lambda v: v, size=size)
    with pytest.raises(ValueError, match="product has shape"):
        LinearOperator(lambda v: v[:2], size=3)(torch.ones(3))
    with pytest.raises(ValueError, match="parameter 'v'"):
        LinearOperator(lambda v: v, size=3)(torch.ones(4))
    with pytest.raises(ValueError, match="parameter 'vs'"):
        diag(1, 2, 3).matmat(torch.ones(4, 2))


@pytest.mark.parametrize("call, exc, name", [
    (lambda: hutchinson_trace(diag(1, 2), n=2.5), TypeError, "n"), (lambda: hutchpp_trace(diag(1, 2), n=5.5),
                                                                      TypeError, "n"),
    (lambda: xtrace(diag(1, 2), n=4.5), TypeError, "n"), (lambda: power_iteration(diag(1, 2), k=1.5), TypeError, "k"),
    (lambda: power_iteration(diag(1, 2), iters=0), ValueError, "iters"),
    (lambda: slq_density(diag(1, 2), m=1.5), TypeError, "m"),
    (lambda: spectral_density(np.zeros(3), np.ones(2), np.zeros(3), 1.0), ValueError, "nodes"),
    (lambda: spectral_density(np.zeros(2), np.array([np.nan, 1.0]), np.zeros(3), 1.0), NonFiniteError, "weights"),
    (lambda: spectral_density(np.zeros(2), np.ones(2), np.zeros(3), float("nan")), NonFiniteError, "sigma"),
])
def test_estimators_refuse_bad_arguments_by_name(call, exc, name) -> None:
    with pytest.raises(exc, match=f"'{name}'"):
        call()


def test_degenerate_operators_in_the_other_estimators() -> None:
    assert power_iteration(diag(0.0, 0.0, 0.0, 0.0), k=2).values == pytest.approx([0.0, 0.0])
    assert power_iteration(diag(*[2.0] * 6), k=3).values == pytest.approx([2.0, 2.0, 2.0])
    assert xtrace(diag(*[0.0] * 6), n=8)[0] == pytest.approx(0.0)
    assert xtrace(diag(*[2.0] * 6), n=8)[0] == pytest.approx(12.0)
    assert hutchinson_trace(diag(*[0.0] * 4), n=4) == (0.0, 0.0)
    nodes, w = slq_density(diag(*[0.0] * 4), n_runs=2, m=3)
    assert np.allclose(nodes, 0.0) and w.sum() == pytest.approx(1.0)
