"""The 1D linear interpolation between two points of parameter space (Goodfellow et al. 2015): the loss along
θ(t) = (1 − t)·θ_a + t·θ_b, whether it falls monotonically, and the barrier it crosses."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from lab.checks import not_allowed, require_finite, require_int, require_real, require_vector
from lab.landscape.surfaces import line

__all__ = ["interpolate", "is_monotone", "barrier"]


def interpolate(loss_fn: Callable[[torch.Tensor], torch.Tensor], theta_a: torch.Tensor, theta_b: torch.Tensor,
                t: np.ndarray | int = 21) -> tuple[np.ndarray, np.ndarray]:
    """The loss at (1 − t)·θ_a + t·θ_b (points formed in float64, evaluated in θ_a's dtype).

    Args:
        loss_fn: θ (P,) ↦ scalar.
        theta_a, theta_b: the end points (P,), same dtype and device.
        t: the positions (t = 0 is θ_a, 1 is θ_b; values outside [0, 1] extrapolate), or a number of evenly spaced
            points in [0, 1].

    Returns:
        (t, loss): both shape (n,), float64.

    Example:
        >>> import torch
        >>> t, loss = interpolate(lambda p: (p ** 2).sum(), torch.zeros(2), torch.ones(2), 3)
        >>> t.tolist(), loss.tolist()
        ([0.0, 0.5, 1.0], [0.0, 0.5, 2.0])
    """
    where = "lab.landscape.interpolate"
    if isinstance(t, (int, np.integer)) and not isinstance(t, bool):
        tt = np.linspace(0.0, 1.0, require_int(t, "t", where, lo=2))
    else:
        tt = np.asarray(t, dtype=np.float64)
    for name, th in (("theta_a", theta_a), ("theta_b", theta_b)):
        require_vector(th, name, where)
    if theta_a.shape != theta_b.shape:
        raise ValueError(f"{where}: parameters 'theta_a' and 'theta_b' have shapes {tuple(theta_a.shape)} and "
                         f"{tuple(theta_b.shape)}: expected the same shape")
    d = theta_b.detach().double() - theta_a.detach().double()
    if not bool(d.ne(0).any()):
        raise ValueError(f"{where}: parameters 'theta_a' and 'theta_b' are equal: no path between them")
    return tt, line(loss_fn, theta_a, d, tt)


def is_monotone(loss: np.ndarray, tol: float = 0.0) -> bool:
    """Whether a loss profile never rises by more than tol from one point to the next (falling or flat).

    Args:
        loss: the profile, shape (n,), n >= 2.
        tol: the rise allowed between neighbours (the loss's rounding), >= 0.

    Returns:
        True when every step rises by at most tol.

    Example:
        >>> is_monotone([3.0, 2.0, 2.0, 1.0]), is_monotone([3.0, 2.0, 2.5, 1.0]), is_monotone([3.0, 3.1], tol=0.2)
        (True, False, True)
    """
    a = _profile(loss, "lab.landscape.is_monotone", finite=False)
    tol = require_real(tol, "tol", "lab.landscape.is_monotone", lo=0)
    return bool(np.all(np.isfinite(a)) and np.all(np.diff(a) <= tol))


def barrier(loss: np.ndarray) -> float:
    """The height of the barrier on a path: max over the path minus the higher of its two ends (≤ 0: none).

    Args:
        loss: the profile, shape (n,), n >= 2, ends first and last.

    Returns:
        The barrier height, in the loss's units.

    Example:
        >>> barrier([1.0, 1.5, 0.8]), barrier([1.0, 0.9, 0.8])
        (0.5, 0.0)
    """
    a = _profile(loss, "lab.landscape.barrier")
    return float(a.max() - max(a[0], a[-1]))


def _profile(loss, where: str, finite: bool = True) -> np.ndarray:
    """A loss profile: a 1-D float64 array of at least 2 points (finite unless finite=False), else a named error."""
    a = np.asarray(loss, dtype=np.float64)
    if a.ndim != 1 or a.size < 2:
        raise ValueError(not_allowed("loss", loss, f"a 1-D profile of at least 2 points (got shape {a.shape})", where))
    if finite:
        require_finite(a, "parameter 'loss'", where)
    return a
