"""Trace estimators on operators: Hutchinson, Hutch++ (Meyer, Musco, Musco & Woodruff 2021) and XTrace (Epperly,
Tropp & Webber 2024). Each applies its probes through `op.matmat`, all at once, so an operator that batches products
(`HessianOperator` on small nets and on a GPU) does."""
from __future__ import annotations

import numpy as np
import torch

from lab.checks import require_int
from lab.curvature.operators import LinearOperator, LossFn, as_operator

__all__ = ["hutchinson_trace", "hutchpp_trace", "xtrace"]


def _rademacher(p: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """A p × n matrix of ±1 entries (float64, CPU)."""
    return torch.randint(0, 2, (p, n), generator=gen).to(torch.float64).mul_(2).sub_(1)


def _cols(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """diag(aᵀb): the dot products of matching columns."""
    return (a * b).sum(0)


def _mean_se(samples: list[float]) -> tuple[float, float]:
    a = np.asarray(samples, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1) / np.sqrt(len(a))) if len(a) > 1 else float("nan")


def hutchinson_trace(op_or_loss: LinearOperator | LossFn, theta: torch.Tensor | None = None, n: int = 100,
                     seed: int = 0) -> tuple[float, float]:
    """tr H ≈ the mean of zᵀHz over n Rademacher probes z.

    Args:
        op_or_loss: an operator (`lab.curvature.hvp_operator`, ...), or a loss function θ (P,) ↦ scalar with theta.
        theta: shape (P,); only needed with a loss function.
        n: probes (= products), >= 2.
        seed: seeds the probes.

    Returns:
        (estimate, standard error), floats.

    Example:
        >>> import torch
        >>> from lab.curvature import DenseOperator
        >>> est, se = hutchinson_trace(DenseOperator(torch.diag(torch.tensor([1.0, 2.0, 3.0]).double())), n=10)
        >>> est, se                       # a diagonal operator: every Rademacher probe gives the trace exactly
        (6.0, 0.0)
    """
    n = require_int(n, "n", "lab.curvature.hutchinson_trace", lo=2)          # >= 2 for a standard error
    seed = require_int(seed, "seed", "lab.curvature.hutchinson_trace", lo=0)
    op = as_operator(op_or_loss, theta, "lab.curvature.hutchinson_trace")
    z = _rademacher(op.size, n, torch.Generator().manual_seed(seed)).to(op.device)
    return _mean_se(_cols(z, op.matmat(z).to(torch.float64)).tolist())


def hutchpp_trace(op_or_loss: LinearOperator | LossFn, theta: torch.Tensor | None = None, n: int = 99,
                  seed: int = 0) -> tuple[float, float]:
    """Hutch++ with n products: the exact trace on a sketched top subspace plus Hutchinson on the rest.

    The error is the complement's sample std / √(#probes), as the subspace part is exact given the sketch.

    Args:
        op_or_loss: an operator, or a loss function θ (P,) ↦ scalar with theta.
        theta: shape (P,); only needed with a loss function.
        n: products, >= 4 (n // 3 sketch columns, the rest probes).
        seed: seeds the sketch and the probes.

    Returns:
        (estimate, standard error), floats.

    Example:
        >>> import torch
        >>> from lab.curvature import DenseOperator
        >>> est, _ = hutchpp_trace(DenseOperator(torch.diag(torch.tensor([5.0, 1.0, 0.0, 0.0]).double())), n=9)
        >>> round(est, 8)                 # rank 2 <= the 3 sketch columns: exact
        6.0
    """
    n = require_int(n, "n", "lab.curvature.hutchpp_trace", lo=4)      # n // 3 sketch columns, >= 2 probes
    seed = require_int(seed, "seed", "lab.curvature.hutchpp_trace", lo=0)
    op = as_operator(op_or_loss, theta, "lab.curvature.hutchpp_trace")
    p = op.size
    gen = torch.Generator().manual_seed(seed)
    m = min(n // 3, p)
    s = _rademacher(p, m, gen).to(op.device)
    g = _rademacher(p, n - 2 * m, gen).to(op.device)
    q = torch.linalg.qr(op.matmat(s).to(torch.float64)).Q
    top = float(_cols(q, op.matmat(q).to(torch.float64)).sum())
    g = g - q @ (q.T @ g)
    est, se = _mean_se(_cols(g, op.matmat(g).to(torch.float64)).tolist())
    return top + est, se


def xtrace(op_or_loss: LinearOperator | LossFn, theta: torch.Tensor | None = None, n: int = 100,
           seed: int = 0) -> tuple[float, float]:
    """XTrace (Epperly, Tropp & Webber 2024, SIMAX): an exchangeable trace estimator with n products.

    It sketches the range with m = n // 2 random vectors, takes the exact trace on that subspace and estimates the
    rest with each vector in turn — leaving that vector out of the sketch (so every sample is used both ways and no
    vector is wasted, unlike Hutch++'s fixed split). Test vectors are Gaussian, normalised to length √P, with the
    authors' improved scaling. For a Hessian with a few dominant eigenvalues its error falls far faster than
    Hutchinson's and faster than Hutch++'s at equal products. The error is the std of the m leave-one-out estimates
    / √m. The algorithm follows the authors' reference implementation (github.com/eepperly/XTrace).

    Args:
        op_or_loss: an operator, or a loss function θ (P,) ↦ scalar with theta.
        theta: shape (P,); only needed with a loss function.
        n: products, >= 4 (m = n // 2 sketch vectors; two products each).
        seed: seeds the test vectors.

    Returns:
        (estimate, standard error), floats.

    Example:
        >>> import torch
        >>> from lab.curvature import DenseOperator
        >>> est, _ = xtrace(DenseOperator(torch.diag(torch.tensor([5.0, 1.0, 0.5, 0.0, 0.0, 0.0]).double())), n=8)
        >>> round(est, 8)                 # rank 3 < the 4 sketch vectors: exact
        6.5
    """
    n = require_int(n, "n", "lab.curvature.xtrace", lo=4)             # n // 2 >= 2 sketch vectors
    seed = require_int(seed, "seed", "lab.curvature.xtrace", lo=0)
    op = as_operator(op_or_loss, theta, "lab.curvature.xtrace")
    p = op.size
    m = min(n // 2, p - 1) if p > 2 else 1
    gen = torch.Generator().manual_seed(seed)
    om = torch.randn(p, m, generator=gen, dtype=torch.float64).to(op.device)
    om = np.sqrt(p) * om / torch.linalg.vector_norm(om, dim=0)

    y = op.matmat(om).to(torch.float64)
    q, r = torch.linalg.qr(y)
    z = op.matmat(q).to(torch.float64)
    h = q.T @ z
    if float(r.diagonal().abs().min()) <= 1e-12 * float(r.diagonal().abs().max()):
        # the sketch has rank < m: for a symmetric operator its range holds the operator's whole range, so the
        # trace on it is exact (the extra columns of Q lie in the null space)
        return float(torch.trace(h)), 0.0
    w = q.T @ om
    eye = torch.eye(m, dtype=torch.float64, device=op.device)
    s = eye - torch.linalg.solve_triangular(r, torch.triu(r, 1), upper=True, left=False)   # I − triu(R,1)·R⁻¹
    s = (s / torch.linalg.vector_norm(s, dim=1, keepdim=True)).T      # rows normalised, as columns
    scale = np.sqrt(p - m + 1) / torch.sqrt(p - torch.linalg.vector_norm(w, dim=0) ** 2
                                            + (_cols(s, w).abs() * torch.linalg.vector_norm(s, dim=0)) ** 2)
    om, r, y, w = om * scale, r * scale, y * scale, w * scale
    hw, t = h @ w, z.T @ om
    d_sw, d_shs = _cols(w, s), _cols(s, h @ s)
    ests = (torch.trace(h) - d_shs + _cols(om, y) - _cols(w, r) - _cols(t, w) + _cols(w, hw)
            + d_sw * _cols(s, r - hw) + d_sw ** 2 * d_shs + _cols(t - h.T @ w, s) * d_sw)
    est = float(ests.mean())
    return est, float(ests.std() / np.sqrt(m)) if m > 1 else float("nan")
