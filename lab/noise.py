"""Estimating the noise of a function evaluation: ECnoise (Moré & Wild 2011) and a rounding model."""
from __future__ import annotations

from dataclasses import dataclass
from math import factorial

import numpy as np


@dataclass
class NoiseEstimate:
    """ECnoise result: sigma, the difference order used, all levels, and a status (1 ok, 2 h too small, 3 too large)."""

    sigma: float
    order: int
    levels: np.ndarray
    inform: int

    @property
    def ok(self) -> bool:
        """True when the difference table gave a consistent estimate."""
        return self.inform == 1


def ecnoise(fvals: np.ndarray, max_ratio: float = 4.0) -> NoiseEstimate:
    """Noise level of f from values at m+1 equally spaced points (Moré & Wild's difference-table estimator).

    sigma_k = sqrt(gamma_k · mean((Δ^k f)^2)), gamma_k = (k!)^2/(2k)!; the estimate is the first sigma_k
    whose next two levels agree within `max_ratio` and whose differences change sign.
    """
    f = np.asarray(fvals, dtype=np.float64)
    m = len(f) - 1
    if m < 6:
        raise ValueError(f"ecnoise needs at least 7 points, got {len(f)}")
    levels = np.zeros(m)
    sign_change = np.zeros(m, dtype=bool)
    d = f.copy()
    for k in range(1, m + 1):
        d = np.diff(d)
        gamma = factorial(k) ** 2 / factorial(2 * k)
        levels[k - 1] = np.sqrt(gamma * np.mean(d ** 2))
        sign_change[k - 1] = d.min() < 0 < d.max()
    for k in range(1, m - 1):
        lv = levels[k - 1:k + 2]
        if lv.min() > 0 and lv.max() <= max_ratio * lv.min() and sign_change[k - 1]:
            return NoiseEstimate(float(levels[k - 1]), k, levels, 1)
    too_small = np.sum(np.diff(f) == 0) > m / 2
    return NoiseEstimate(float("nan"), 0, levels, 2 if too_small else 3)


def rounding_model(u: float, loss: float, factor: float = 1.0) -> float:
    """Predicted noise of a loss evaluation: factor · u · |L| (u the dtype's unit roundoff)."""
    return factor * u * abs(loss)


def fd_noise(sigma: float) -> float:
    """Std of f(x) - 2f(x+h) + f(x+2h) from independent evaluation noise sigma: sqrt(6)·sigma."""
    return float(np.sqrt(6.0) * sigma)
