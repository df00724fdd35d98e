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


@dataclass
class LossNoise:
    """Noise of one loss evaluation in a dtype: ECnoise sigma per direction, their median, and the loss."""

    dtype: str
    loss: float
    sigmas: np.ndarray
    spacing: float
    informs: list[int]

    @property
    def sigma(self) -> float:
        """Median ECnoise sigma over directions (NaN if none succeeded)."""
        ok = self.sigmas[np.isfinite(self.sigmas)]
        return float(np.median(ok)) if len(ok) else float("nan")

    @property
    def ratio(self) -> float:
        """sigma / (u · |L|): the rounding-model factor."""
        import torch

        from lab.precision import DTYPES, unit_roundoff
        return self.sigma / (unit_roundoff(DTYPES[self.dtype] if self.dtype in DTYPES else getattr(torch, self.dtype))
                             * abs(self.loss))


def default_spacing(dtype) -> float:
    """ECnoise spacing along a unit direction: 16·sqrt(u), far above the ulp plateau, below smooth structure."""
    from lab.precision import unit_roundoff
    return 16.0 * float(np.sqrt(unit_roundoff(dtype)))


def loss_noise(loss_fn, theta, dtype, n_dirs: int = 4, points: int = 9, spacing: float | None = None,
               seed: int = 0) -> LossNoise:
    """ECnoise estimate of the evaluation noise of loss_fn at theta in `dtype`, along n_dirs random unit directions."""
    import torch

    from lab.params import batched
    from lab.probes import points_along
    spacing = spacing or default_spacing(dtype)
    th64 = theta.detach().double()
    g = torch.Generator(device="cpu").manual_seed(seed)
    sig, inf = [], []
    t = np.arange(points) * spacing
    loss0 = None
    with torch.no_grad():
        for _ in range(n_dirs):
            d = torch.randn(th64.shape, generator=g, dtype=torch.float64).to(th64.device)
            d /= d.norm()
            vals = batched(loss_fn, points_along(th64, d, t, dtype)).double().cpu().numpy()
            loss0 = vals[0] if loss0 is None else loss0
            e = ecnoise(vals)
            sig.append(e.sigma)
            inf.append(e.inform)
    name = str(dtype).replace("torch.", "")
    return LossNoise(name, float(loss0), np.array(sig), spacing, inf)


def grad_error_by_layer(loss_fn, theta, layers: dict[str, slice], dtype) -> dict[str, float]:
    """Relative error ‖g_dtype − g_64‖/‖g_64‖ per layer, both at the same stored point θ rounded to dtype."""
    from torch.func import grad
    p = theta.detach().to(dtype)
    g64 = grad(loss_fn)(p.double())
    gw = grad(loss_fn)(p).double()
    return {k: float((gw[s] - g64[s]).norm() / g64[s].norm()) for k, s in layers.items()}


def representation_fd_noise(gradient, theta, direction, dtype) -> float:
    """Predicted std of FD from rounding θ+h·d to dtype alone: sqrt(6·Σ g_i² gap_i²/12) (uniform rounding)."""
    import torch

    from lab.precision import neighbour
    th = theta.detach().to(dtype)
    gap = (neighbour(th, torch.sign(direction.double())).double() - th.double()).abs()
    return float(np.sqrt(6.0 * float((gradient.double() ** 2 * gap ** 2).sum()) / 12.0))


def crossover_h(sigma: float, curvature: float) -> float:
    """h* where the second-difference signal |c|·h² equals the FD noise sqrt(6)·sigma."""
    return float(np.sqrt(fd_noise(sigma) / abs(curvature)))


def observed_crossover(h: np.ndarray, fd: np.ndarray, fd_ref: np.ndarray, window: int = 5) -> float:
    """Smallest h from which on the running median (over `window` doublings) of |fd − fd_ref|/|fd_ref| stays below 1."""
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.abs(fd - fd_ref) / np.abs(fd_ref)
    rel = np.where(np.isfinite(rel), rel, np.inf)
    half = window // 2
    med = np.array([np.median(rel[max(0, i - half):i + half + 1]) for i in range(len(rel))])
    bad = np.where(med >= 1)[0]
    if len(bad) == 0:
        return float(h[0])
    return float(h[bad[-1] + 1]) if bad[-1] + 1 < len(h) else float("nan")


def fit_exponent(x: np.ndarray, y_by_seed: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Slope of log y vs log x per seed (rows), mean and a t-interval over seeds: (mean, low, high)."""
    from scipy import stats
    lx = np.log(np.asarray(x, dtype=float))
    slopes = np.array([np.polyfit(lx, np.log(row), 1)[0] for row in np.atleast_2d(y_by_seed)])
    m = float(slopes.mean())
    if len(slopes) < 2:
        return m, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + level / 2, len(slopes) - 1) * slopes.std(ddof=1) / np.sqrt(len(slopes)))
    return m, m - half, m + half


def minibatch_loss_std(per_sample: np.ndarray, batch_sizes, n_batches: int = 200, seed: int = 0) -> np.ndarray:
    """Std of the mean loss over random minibatches (without replacement) of each size."""
    rng = np.random.default_rng(seed)
    per_sample = np.asarray(per_sample, dtype=np.float64)
    out = []
    for b in batch_sizes:
        means = [per_sample[rng.choice(len(per_sample), b, replace=False)].mean() for _ in range(n_batches)]
        out.append(np.std(means, ddof=1))
    return np.array(out)


def power_law(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares fit of log y = a·log x + log c: returns (a, c)."""
    a, logc = np.polyfit(np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float)), 1)
    return float(a), float(np.exp(logc))
