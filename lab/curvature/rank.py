"""Numerical rank and conditioning with a dtype-aware tolerance: one rule for every matrix in the workbook.

The rank of a matrix computed in a dtype is the number of its singular values above σmax · size · ε(dtype)
(numpy.linalg.matrix_rank's rule): below it a singular value is indistinguishable from rounding. A Hessian
H ∝ GᵀG has singular values σᵢ(G)², so the rank of G *as H sees it* uses σᵢ(G)² > σmax(G)² · P · ε, i.e. the
tolerance σmax · √(P·ε) on G (`gram=True`); comparing rank(H) with rank(G) at G's own, much finer tolerance
would count directions H cannot resolve.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from lab.checks import require_finite, require_int


class Rank(NamedTuple):
    """A numerical rank: the rank, the singular values (or |eigenvalues|) it was read from, the tolerance."""

    rank: int
    values: np.ndarray
    tolerance: float


def _eps(dtype: torch.dtype | np.dtype | type) -> float:
    return float(torch.finfo(dtype).eps if isinstance(dtype, torch.dtype) else np.finfo(dtype).eps)


def singular_values(a: torch.Tensor | np.ndarray) -> np.ndarray:
    """Singular values of a matrix (float64), or the absolute values of a 1-D array of eigen/singular values.

    Raises:
        lab.checks.NonFiniteError: an entry of `a` is NaN or inf (an SVD of it means nothing).
        ValueError: `a` has more than 2 dimensions.
    """
    if getattr(a, "ndim", np.ndim(a)) > 2:
        raise ValueError(f"lab.curvature.singular_values: parameter 'a' has shape {tuple(np.shape(a))}: expected a "
                         "matrix or a 1-D array of eigen/singular values")
    require_finite(a, "parameter 'a'", "lab.curvature.singular_values")
    if isinstance(a, torch.Tensor):
        if a.ndim == 1:
            return a.detach().double().abs().cpu().numpy()
        return torch.linalg.svdvals(a.detach().double()).cpu().numpy()
    arr = np.asarray(a, dtype=np.float64)
    return np.abs(arr).ravel() if arr.ndim <= 1 else np.linalg.svd(arr, compute_uv=False)


def _size(a: torch.Tensor | np.ndarray, values: np.ndarray, size: int | None, gram: bool) -> int:
    if size is not None:
        return int(size)
    shape = tuple(a.shape)
    if len(shape) == 2:
        return int(shape[1] if gram else max(shape))
    return int(values.size)


def rank_tolerance(values: np.ndarray, size: int, dtype: torch.dtype = torch.float64, gram: bool = False) -> float:
    """σmax · size · ε(dtype); with gram=True the tolerance on a factor G read at the resolution of GᵀG:
    σmax · √(size · ε).

    >>> bool(rank_tolerance(np.array([2.0, 1.0]), 10) == 2.0 * 10 * np.finfo(float).eps)
    True
    """
    s = np.abs(np.asarray(values, dtype=np.float64)).ravel()
    require_finite(s, "parameter 'values'", "lab.curvature.rank_tolerance")
    size = require_int(size, "size", "lab.curvature.rank_tolerance", lo=1)
    if s.size == 0:
        return 0.0
    eps = _eps(dtype)
    return float(s.max() * (np.sqrt(size * eps) if gram else size * eps))


def numerical_rank(a: torch.Tensor | np.ndarray, dtype: torch.dtype = torch.float64, size: int | None = None,
                   gram: bool = False) -> Rank:
    """Rank of a matrix (or of a 1-D array of its eigen/singular values) computed in `dtype`.

    size defaults to max(shape) for a matrix (the number of values for a 1-D array); gram=True reads a factor G at
    the resolution of the Gram matrix GᵀG (size defaults to G's number of columns).

    >>> numerical_rank(np.diag([1.0, 1e-9, 0.0])).rank, numerical_rank(np.diag([1.0, 1e-9, 0.0]), gram=True).rank
    (2, 1)
    """
    s = singular_values(a)
    if s.size == 0:
        return Rank(0, s, 0.0)
    tol = rank_tolerance(s, _size(a, s, size, gram), dtype, gram)
    return Rank(int((s > tol).sum()), s, tol)


def condition_number(a: torch.Tensor | np.ndarray, dtype: torch.dtype = torch.float64,
                     size: int | None = None) -> float:
    """σmax / σmin over the singular values (or |eigenvalues|) above the rank tolerance (NaN if none are)."""
    r = numerical_rank(a, dtype, size)
    kept = r.values[r.values > r.tolerance]
    return float(kept.max() / kept.min()) if kept.size else float("nan")
