"""The 1D linear interpolation between two points of parameter space (Goodfellow et al. 2015): the loss along
θ(t) = (1 − t)·θ_a + t·θ_b, whether it falls monotonically, and the barrier it crosses."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

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
    tt = np.linspace(0.0, 1.0, t) if isinstance(t, (int, np.integer)) else np.asarray(t, dtype=np.float64)
    d = theta_b.detach().double() - theta_a.detach().double()
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
    a = np.asarray(loss, dtype=np.float64)
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
    a = np.asarray(loss, dtype=np.float64)
    return float(a.max() - max(a[0], a[-1]))
