"""Estimating the noise of a function evaluation: ECnoise (Moré & Wild 2011) and a rounding model."""
from __future__ import annotations

from dataclasses import dataclass
from math import factorial

import numpy as np

from lab.checks import require_finite, require_finite_float


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
    """Noise level of f from values at m+1 equally spaced points: Moré & Wild's ECnoise (2011), as their
    reference ecnoise.m.

    sigma_k = sqrt(gamma_k · mean((Δ^k f)^2)), gamma_k = (k!)^2/(2k)!; the estimate is the first sigma_k whose next
    two levels agree within `max_ratio` and whose differences change sign (inform 1). As the reference does, it
    refuses with inform 2 ("h too small": try a 100× larger spacing) when at least half of the first differences are
    exactly zero — a staircase of rounded values, not noise — and with inform 3 ("h too large": try 1/100) when the
    values vary by more than 10% of their magnitude or no level qualifies.
    """
    f = np.asarray(fvals, dtype=np.float64)
    m = len(f) - 1
    if m < 6:
        raise ValueError(f"ecnoise needs at least 7 points, got {len(f)}")
    require_finite(f, "the function values", "lab.noise.ecnoise",
                   "noise is not defined where f is not finite (is θ finite? does f overflow along the line?)")
    levels = np.zeros(m)
    fmin, fmax = float(f.min()), float(f.max())
    scale = max(abs(fmin), abs(fmax))
    if scale > 0 and (fmax - fmin) / scale > 0.1:
        return NoiseEstimate(float("nan"), 0, levels, 3)
    if np.sum(np.diff(f) == 0) >= (m + 1) / 2:
        return NoiseEstimate(float("nan"), 0, levels, 2)
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
    return NoiseEstimate(float("nan"), 0, levels, 3)


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
    """A fixed ECnoise spacing along a unit direction, 16·sqrt(u) (used when the direction's slope is unknown)."""
    from lab.precision import unit_roundoff
    return 16.0 * float(np.sqrt(unit_roundoff(dtype)))


def step_change(dtype, points: int = 9) -> float:
    """The relative change of f per ECnoise step: about 4 ulps (8u·|f|) — above the ulp staircase, where at least
    half of the first differences would be exactly 0, yet small enough that the smooth part's higher differences
    vanish below the noise — capped at 80% of Moré & Wild's range limit (10% over the points − 1 steps), which
    binds for bfloat16."""
    from lab.precision import unit_roundoff
    return float(min(8 * unit_roundoff(dtype), 0.8 * 0.1 / (points - 1)))


def _line_derivatives(loss_fn, theta64, direction64) -> tuple[float, float, float]:
    """f, f' and f'' along a direction at theta (float64 forward-mode derivatives)."""
    from torch.func import jvp

    d = direction64.to(theta64.dtype)
    f0, f1 = (float(v) for v in jvp(loss_fn, (theta64,), (d,)))
    f2 = float(jvp(lambda t: jvp(loss_fn, (t,), (d,))[1], (theta64,), (d,))[1])
    return f0, f1, f2


def _spacing_from(derivs: tuple[float, float, float], dtype, points: int) -> float:
    """The positive root of |f'|·h + |f''|·h²/2 = step_change·|f| (default_spacing when it does not exist)."""
    f0, f1, f2 = derivs
    target = step_change(dtype, points) * abs(f0)
    a, b = abs(f2) / 2, abs(f1)
    if not np.isfinite(target) or target <= 0 or (a == 0 and b == 0):
        return default_spacing(dtype)
    return float(2 * target / (b + np.sqrt(b * b + 4 * a * target)))  # stable root of a·h² + b·h − target = 0


def adaptive_spacing(loss_fn, theta64, direction64, dtype, points: int = 9) -> float:
    """ECnoise spacing h along a unit direction such that f changes by step_change(dtype)·|f| per step: the
    positive root of |f'|·h + |f''|·h²/2 = step_change·|f|, with f' and f'' along the direction from float64
    forward-mode derivatives."""
    return _spacing_from(_line_derivatives(loss_fn, theta64, direction64), dtype, points)


def _unit_directions(th64, n: int, seed: int) -> list:
    """n random unit directions (float64, on θ's device) from a CPU generator seeded `seed`."""
    import torch

    require_finite(th64, "θ", "lab.noise")
    g = torch.Generator(device="cpu").manual_seed(seed)
    out = []
    for _ in range(n):
        d = torch.randn(th64.shape, generator=g, dtype=torch.float64).to(th64.device)
        out.append(d / d.norm())
    return out


def noise_by_dtype(loss_fn, theta, dtypes, n_dirs: int = 4, points: int = 9, seed: int = 0,
                   retries: int = 4) -> dict[str, LossNoise]:
    """loss_noise for several dtypes along the same n_dirs random directions, computing each direction's float64
    derivatives (for the adaptive spacing) once. `dtypes` maps names to torch dtypes (or is a list of dtypes)."""

    items = dict(dtypes) if isinstance(dtypes, dict) else {str(dt).replace("torch.", ""): dt for dt in dtypes}
    th64 = theta.detach().double()
    dirs = [(d, _line_derivatives(loss_fn, th64, d)) for d in _unit_directions(th64, n_dirs, seed)]
    return {name: _ecnoise_along(loss_fn, th64, dirs, dt, points, None, retries, name) for name, dt in items.items()}


def _ecnoise_along(loss_fn, th64, dirs, dtype, points: int, spacing: float | None, retries: int,
                   name: str | None = None) -> LossNoise:
    """ECnoise along each (direction, derivatives) pair, retrying as Moré & Wild advise."""
    import torch

    from lab.params import batched
    from lab.probes import points_along
    sig, inf, used = [], [], []
    loss0 = None
    with torch.no_grad():
        for d, derivs in dirs:
            h = spacing or _spacing_from(derivs, dtype, points)
            for attempt in range(retries + 1):
                t = np.arange(points) * h
                vals = batched(loss_fn, points_along(th64, d, t, dtype)).double().cpu().numpy()
                require_finite(vals[0], f"the loss at θ in {name or dtype}", "lab.noise.loss_noise")
                loss0 = vals[0] if loss0 is None else loss0
                # values that overflow further along the line say "h too large", as Moré & Wild's range check does:
                # retried with a smaller spacing, never an error (ecnoise itself refuses non-finite input)
                e = ecnoise(vals) if np.all(np.isfinite(vals)) else NoiseEstimate(float("nan"), 0,
                                                                                 np.zeros(points - 1), 3)
                if e.ok or attempt == retries:
                    break
                h = h * 2 if e.inform == 2 else h / 2
            sig.append(e.sigma)
            inf.append(e.inform)
            used.append(h)
    return LossNoise(name or str(dtype).replace("torch.", ""), float(loss0), np.array(sig), float(np.median(used)),
                     inf)


def loss_noise(loss_fn, theta, dtype, n_dirs: int = 4, points: int = 9, spacing: float | None = None,
               seed: int = 0, retries: int = 4) -> LossNoise:
    """ECnoise estimate of the evaluation noise of loss_fn at theta in `dtype`, along n_dirs random unit directions.

    The spacing along each direction is `adaptive_spacing` (f changes by step_change(dtype)·|f| per step) unless
    given. As Moré & Wild advise, a table that says "h too small" (inform 2) is retried with a larger spacing and
    one that says "h too large" (inform 3) with a smaller one — by 2× (their reference steps 100×, which jumps
    over the narrow usable window of bfloat16 and float16), at most `retries` times; `informs` keeps each
    direction's final status and `sigma` is the median over the directions that succeeded.
    """

    th64 = theta.detach().double()
    dirs = [(d, None if spacing else _line_derivatives(loss_fn, th64, d)) for d in _unit_directions(th64, n_dirs, seed)]
    return _ecnoise_along(loss_fn, th64, dirs, dtype, points, spacing, retries)


@dataclass
class LossError:
    """The error of a low-precision loss against float64 at stored points, split at the final reduction: `forward`
    is what the forward pass puts in (per-sample losses in the low dtype, averaged in float64), `reduction` the rest
    (summing the per-sample losses in the low dtype and rounding L). Loss units, one value per point."""

    total: np.ndarray
    forward: np.ndarray
    reference: np.ndarray

    @property
    def reduction(self) -> np.ndarray:
        """total − forward: the error added by the low-precision mean and its final rounding."""
        return self.total - self.forward


def loss_error(loss_fn, per_sample_fn, points) -> LossError:
    """At each stored point (rows of `points`, in the working dtype): loss_fn there (the working-dtype loss), the
    float64 mean of per_sample_fn there (working-dtype forward pass, exact reduction), both against loss_fn at the
    same point in float64."""
    import torch

    tot, fwd, ref = [], [], []
    with torch.no_grad():
        for p in points:
            ref.append(float(loss_fn(p.double())))
            tot.append(float(loss_fn(p)))
            fwd.append(float(per_sample_fn(p).double().mean()))
    ref_a = np.asarray(ref)
    return LossError(np.asarray(tot) - ref_a, np.asarray(fwd) - ref_a, ref_a)


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


def scaled_fd_noise(sigma: float, f0: float, f1: np.ndarray, f2: np.ndarray) -> np.ndarray:
    """Std of FD = f0 − 2f1 + f2 when each evaluation's noise scales with its value, as the rounding model says
    (σ ∝ u·|f|): sigma is the noise measured at f0 (e.g. by ECnoise), so evaluation i has σ·|f_i|/|f0|."""
    r = sigma / abs(f0)
    return r * np.sqrt(f0**2 + 4 * np.asarray(f1, dtype=np.float64) ** 2 + np.asarray(f2, dtype=np.float64) ** 2)


def crossover_h(sigma: float, curvature: float) -> float:
    """h* where the second-difference signal |c|·h² equals the FD noise sqrt(6)·sigma.

    Example:
        >>> round(crossover_h(1e-8, 2.0), 6)
        0.000111
    """
    sigma = require_finite_float(sigma, "sigma", "lab.noise.crossover_h")
    curvature = require_finite_float(curvature, "curvature", "lab.noise.crossover_h")
    if sigma < 0:
        raise ValueError(f"lab.noise.crossover_h: parameter 'sigma' = {sigma!r} is not allowed: expected sigma >= 0")
    if curvature == 0:
        raise ValueError("lab.noise.crossover_h: parameter 'curvature' = 0 is not allowed: with zero curvature the "
                         "second difference has no signal to cross the noise (h* would be infinite)")
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
    xs, ys = np.asarray(x, dtype=float), np.atleast_2d(np.asarray(y_by_seed, dtype=float))
    for name, v in (("x", xs), ("y_by_seed", ys)):
        require_finite(v, f"parameter '{name}'", "lab.noise.fit_exponent")
        if np.any(v <= 0):
            raise ValueError(f"lab.noise.fit_exponent: parameter '{name}' has {int(np.sum(v <= 0))} value(s) <= 0: "
                             "a log-log slope needs positive values (a noise of exactly 0 has no exponent)")
    lx = np.log(xs)
    slopes = np.array([np.polyfit(lx, np.log(row), 1)[0] for row in ys])
    m = float(slopes.mean())
    if len(slopes) < 2:
        return m, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + level / 2, len(slopes) - 1) * slopes.std(ddof=1) / np.sqrt(len(slopes)))
    return m, m - half, m + half


def minibatch_loss_std(per_sample: np.ndarray, batch_sizes, n_batches: int = 200, seed: int = 0) -> np.ndarray:
    """Std of the mean loss over random minibatches (without replacement) of each size."""
    rng = np.random.default_rng(seed)
    batch_sizes = list(batch_sizes)
    per_sample = require_finite(np.asarray(per_sample, dtype=np.float64), "the per-sample losses",
                                "lab.noise.minibatch_loss_std")
    too_big = [b for b in batch_sizes if not 1 <= b <= len(per_sample)]
    if too_big:
        raise ValueError(f"lab.noise.minibatch_loss_std: batch sizes {too_big} are not allowed: expected 1 <= b <= "
                         f"{len(per_sample)} (the number of samples)")
    out = []
    for b in batch_sizes:
        means = [per_sample[rng.choice(len(per_sample), b, replace=False)].mean() for _ in range(n_batches)]
        out.append(np.std(means, ddof=1))
    return np.array(out)


def power_law(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares fit of log y = a·log x + log c: returns (a, c)."""
    a, logc = np.polyfit(np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float)), 1)
    return float(a), float(np.exp(logc))
