"""Estimating the noise of a function evaluation: ECnoise (Moré & Wild 2011) and a rounding model.

A loss evaluated in finite precision is a smooth function plus rounding noise of some standard deviation sigma.
`ecnoise` reads sigma from a difference table of f at a few equally spaced points; `loss_noise` and
`noise_by_dtype` run it along random directions of a loss at θ; `rounding_model` predicts sigma ≈ u·|L|. The rest
turns a noise level into what a second finite difference FD = f(θ) − 2f(θ+h) + f(θ+2h) sees (`fd_noise`,
`scaled_fd_noise`, `representation_fd_noise`), into the h where the curvature signal beats the noise
(`crossover_h`, `observed_crossover`), and fits power laws to noise measurements (`fit_exponent`, `power_law`,
`minibatch_loss_std`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from math import factorial

import numpy as np

from lab.checks import not_allowed, require_finite, require_finite_float, require_int, require_level, require_real

__all__ = ["NoiseEstimate", "ecnoise", "rounding_model", "fd_noise", "LossNoise", "default_spacing", "step_change",
           "adaptive_spacing", "noise_by_dtype", "loss_noise", "LossError", "loss_error", "grad_error_by_layer",
           "representation_fd_noise", "scaled_fd_noise", "crossover_h", "observed_crossover", "fit_exponent",
           "minibatch_loss_std", "power_law"]


@dataclass
class NoiseEstimate:
    """ECnoise result: sigma, the difference order used, all levels, and a status (1 ok, 2 h too small, 3 too large).

    Produced by `ecnoise`.

    Attributes:
        sigma: the estimated standard deviation of one evaluation's noise (loss units); NaN unless inform is 1.
        order: the difference order k whose level gave sigma (0 when there is none).
        levels: sigma_k for every order k = 1..m, shape (m,), float64 (m + 1 the number of points).
        inform: status as in Moré & Wild's ecnoise.m: 1 a consistent estimate, 2 "h too small" (too many exactly
            equal values: retry with a larger spacing), 3 "h too large" (retry with a smaller spacing).

    Example:
        >>> import numpy as np
        >>> from lab.numerics import NoiseEstimate
        >>> e = NoiseEstimate(sigma=1e-7, order=2, levels=np.zeros(8), inform=1)
        >>> e.ok, e.levels.shape
        (True, (8,))
    """

    sigma: float
    order: int
    levels: np.ndarray
    inform: int

    @property
    def ok(self) -> bool:
        """True when the difference table gave a consistent estimate.

        Returns:
            bool: inform == 1 (sigma is then a finite estimate).
        """
        return self.inform == 1


def ecnoise(fvals: np.ndarray, max_ratio: float = 4.0) -> NoiseEstimate:
    """Noise level of f from values at m+1 equally spaced points: Moré & Wild's ECnoise (2011), as their
    reference ecnoise.m.

    sigma_k = sqrt(gamma_k · mean((Δ^k f)^2)), gamma_k = (k!)^2/(2k)!; the estimate is the first sigma_k whose next
    two levels agree within `max_ratio` and whose differences change sign (inform 1). As the reference does, it
    refuses with inform 2 ("h too small": try a 100× larger spacing) when at least half of the first differences are
    exactly zero — a staircase of rounded values, not noise — and with inform 3 ("h too large": try 1/100) when the
    values vary by more than 10% of their magnitude or no level qualifies.

    Args:
        fvals: f at m + 1 ≥ 7 equally spaced points x, x + h, ..., x + m·h along a line, shape (m + 1,), any
            real dtype (converted to float64); 9 points is the usual choice.
        max_ratio: how far (a factor) the three consecutive levels sigma_k, sigma_{k+1}, sigma_{k+2} may differ
            and still count as agreeing.

    Returns:
        A NoiseEstimate: sigma (NaN unless `ok`), the order used, all levels and the status `inform`.

    Raises:
        ValueError: fewer than 7 values.
        lab.checks.NonFiniteError: a value is NaN or infinite.

    Example:
        >>> import numpy as np
        >>> from lab.numerics import ecnoise
        >>> f = 1.0 + 1e-6 * np.random.default_rng(0).standard_normal(9)   # a flat function plus noise 1e-6
        >>> e = ecnoise(f)
        >>> e.ok, bool(3e-7 < e.sigma < 3e-6), ecnoise(np.ones(9)).inform
        (True, True, 2)
    """
    f = np.asarray(fvals, dtype=np.float64)
    if f.ndim != 1 or len(f) < 7:
        raise ValueError(f"lab.numerics.noise.ecnoise: parameter 'fvals' has shape {f.shape}: ecnoise needs at least "
                         "7 points, in a 1-D array")
    m = len(f) - 1
    max_ratio = require_real(max_ratio, "max_ratio", "lab.numerics.noise.ecnoise", lo=0, lo_open=True)
    require_finite(f, "parameter 'fvals'", "lab.numerics.noise.ecnoise",
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
    """Predicted noise of a loss evaluation: factor · u · |L| (u the dtype's unit roundoff).

    The rounding model: an evaluation in a dtype with unit roundoff u is off by a few roundings of its result, so
    its noise scales with |L|; `LossNoise.ratio` measures the factor.

    Args:
        u: the unit roundoff of the evaluation dtype, e.g. `unit_roundoff(torch.float32)`.
        loss: the loss value L.
        factor: the model's constant (1 by default; measured values are of order 1).

    Returns:
        The predicted standard deviation, a float in loss units.

    Example:
        >>> import torch
        >>> from lab.numerics import rounding_model, unit_roundoff
        >>> rounding_model(unit_roundoff(torch.float32), 2.0) == 2.0 ** -23
        True
    """
    where = "lab.numerics.noise.rounding_model"
    u, factor = require_real(u, "u", where, lo=0), require_real(factor, "factor", where, lo=0)
    return factor * u * abs(require_real(loss, "loss", where))


def fd_noise(sigma: float) -> float:
    """Std of f(x) - 2f(x+h) + f(x+2h) from independent evaluation noise sigma: sqrt(6)·sigma.

    The variances add with weights 1² + 2² + 1² = 6.

    Args:
        sigma: the standard deviation of one evaluation's noise (e.g. from `ecnoise`), >= 0; NaN (ecnoise found no
            estimate) gives NaN, so a missing estimate stays missing.

    Returns:
        The standard deviation of the second finite difference, a float.

    Raises:
        ValueError: sigma < 0. lab.checks.NonFiniteError: sigma is ±inf.

    Example:
        >>> from lab.numerics import fd_noise
        >>> round(fd_noise(1.0), 6)
        2.44949
    """
    if isinstance(sigma, (float, np.floating)) and math.isnan(sigma):
        return float("nan")          # a missing noise estimate (ecnoise failed) stays missing, as the chapters use it
    return float(np.sqrt(6.0) * require_real(sigma, "sigma", "lab.numerics.noise.fd_noise", lo=0))


@dataclass
class LossNoise:
    """Noise of one loss evaluation in a dtype: ECnoise sigma per direction, their median, and the loss.

    Produced by `loss_noise` and `noise_by_dtype`.

    Attributes:
        dtype: the name of the evaluation dtype, e.g. "float32".
        loss: the loss at θ evaluated in that dtype.
        sigmas: the ECnoise sigma along each direction, shape (n_dirs,), float64; NaN where ECnoise failed.
        spacing: the median over directions of the spacing h finally used.
        informs: the final ECnoise status per direction (1 ok, 2 h too small, 3 h too large).

    Example:
        >>> import numpy as np
        >>> from lab.numerics import LossNoise
        >>> n = LossNoise("float32", 2.0, np.array([1e-7, np.nan, 3e-7]), 1e-3, [1, 3, 1])
        >>> round(n.sigma * 1e7, 6), round(n.ratio, 6)
        (2.0, 1.677722)
    """

    dtype: str
    loss: float
    sigmas: np.ndarray
    spacing: float
    informs: list[int]

    @property
    def sigma(self) -> float:
        """Median ECnoise sigma over directions (NaN if none succeeded).

        Returns:
            float: the median of the finite entries of `sigmas`.
        """
        ok = self.sigmas[np.isfinite(self.sigmas)]
        return float(np.median(ok)) if len(ok) else float("nan")

    @property
    def ratio(self) -> float:
        """sigma / (u · |L|): the rounding-model factor.

        Returns:
            float: the measured `factor` of `rounding_model` (u the unit roundoff of `dtype`).
        """
        import torch

        from lab.numerics.precision import DTYPES, unit_roundoff
        return self.sigma / (unit_roundoff(DTYPES[self.dtype] if self.dtype in DTYPES else getattr(torch, self.dtype))
                             * abs(self.loss))


def default_spacing(dtype) -> float:
    """A fixed ECnoise spacing along a unit direction, 16·sqrt(u) (used when the direction's slope is unknown).

    Args:
        dtype: the evaluation dtype (a floating torch dtype).

    Returns:
        The spacing h, a float (in units of θ along a unit direction).

    Example:
        >>> import torch
        >>> from lab.numerics import default_spacing
        >>> default_spacing(torch.float32)
        0.00390625
    """
    from lab.numerics.precision import unit_roundoff
    return 16.0 * float(np.sqrt(unit_roundoff(dtype)))


def step_change(dtype, points: int = 9) -> float:
    """The relative change of f per ECnoise step: about 4 ulps (8u·|f|) — above the ulp staircase, where at least
    half of the first differences would be exactly 0, yet small enough that the smooth part's higher differences
    vanish below the noise — capped at 80% of Moré & Wild's range limit (10% over the points − 1 steps), which
    binds for bfloat16.

    Args:
        dtype: the evaluation dtype (a floating torch dtype).
        points: the number of ECnoise points per table.

    Returns:
        The target relative change of f per step, a float.

    Example:
        >>> import torch
        >>> from lab.numerics import step_change
        >>> step_change(torch.float32) == 8 * 2.0 ** -24, round(step_change(torch.bfloat16), 6)
        (True, 0.01)
    """
    from lab.numerics.precision import unit_roundoff
    points = require_int(points, "points", "lab.numerics.noise.step_change", lo=2)
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
    forward-mode derivatives.

    Falls back to `default_spacing` when f, f' and f'' give no positive root (e.g. f = 0 at θ).

    Args:
        loss_fn: θ ↦ scalar loss, a pure torch function of the flat parameters, differentiable by
            torch.func.jvp in float64.
        theta64: flat parameters, shape (P,), float64 (any device).
        direction64: a unit direction, shape (P,), on theta64's device (cast to theta64's dtype).
        dtype: the evaluation dtype whose noise will be measured.
        points: the number of ECnoise points per table.

    Returns:
        The spacing h, a float.

    Example:
        >>> import torch
        >>> from lab.numerics import adaptive_spacing
        >>> f = lambda t: t[0] * t[0] + t[1] * t[1]          # f = 1, f' = 2, f'' = 2 along e1 at (1, 0)
        >>> e1 = torch.tensor([1.0, 0.0], dtype=torch.float64)
        >>> round(adaptive_spacing(f, e1, e1, torch.float32) * 2**22, 6)     # h ≈ 8u/2 = 2⁻²²
        1.0
    """
    return _spacing_from(_line_derivatives(loss_fn, theta64, direction64), dtype, points)


def _check_noise_args(n_dirs, points, spacing, seed, where: str) -> None:
    require_int(n_dirs, "n_dirs", where, lo=1)
    require_int(points, "points", where, lo=7)             # ecnoise needs 7 points
    require_int(seed, "seed", where, lo=0)
    if spacing is not None:
        require_real(spacing, "spacing", where, lo=0, lo_open=True)


def _unit_directions(th64, n: int, seed: int) -> list:
    """n random unit directions (float64, on θ's device) from a CPU generator seeded `seed`."""
    import torch

    require_finite(th64, "θ", "lab.numerics.noise")
    g = torch.Generator(device="cpu").manual_seed(seed)
    out = []
    for _ in range(n):
        d = torch.randn(th64.shape, generator=g, dtype=torch.float64).to(th64.device)
        out.append(d / d.norm())
    return out


def noise_by_dtype(loss_fn, theta, dtypes, n_dirs: int = 4, points: int = 9, seed: int = 0,
                   retries: int = 4) -> dict[str, LossNoise]:
    """loss_noise for several dtypes along the same n_dirs random directions, computing each direction's float64
    derivatives (for the adaptive spacing) once. `dtypes` maps names to torch dtypes (or is a list of dtypes).

    Args:
        loss_fn: θ ↦ scalar loss, a pure torch function of the flat parameters that is vmappable and computes in
            θ's dtype (e.g. from `lab.flat.make_loss_fn`); differentiable by torch.func.jvp in float64.
        theta: flat parameters, shape (P,), any floating dtype and device (taken to float64 first, then rounded
            to each dtype along the line).
        dtypes: {name: torch dtype}, or a list of torch dtypes (named as "float32", ...).
        n_dirs: the number of random unit directions.
        points: ECnoise points per direction.
        seed: seed of the CPU generator that draws the directions (the same directions for every dtype).
        retries: how many times a failed table is retried with a 2× larger or smaller spacing.

    Returns:
        {name: LossNoise}, in the order of `dtypes`.

    Raises:
        lab.checks.NonFiniteError: θ is not finite, or the loss at θ is not finite in some dtype.

    Example:
        >>> import torch
        >>> from lab.numerics import noise_by_dtype
        >>> f = lambda t: t[0] * t[0] + t[1] * t[1]
        >>> theta = torch.tensor([0.6, 0.8], dtype=torch.float64)
        >>> out = noise_by_dtype(f, theta, {"float32": torch.float32, "bfloat16": torch.bfloat16}, n_dirs=3)
        >>> list(out), bool(out["bfloat16"].sigma > 1000 * out["float32"].sigma)
        (['float32', 'bfloat16'], True)
    """

    items = dict(dtypes) if isinstance(dtypes, dict) else {str(dt).replace("torch.", ""): dt for dt in dtypes}
    if not items:
        raise ValueError(not_allowed("dtypes", dtypes, "at least one dtype", "lab.numerics.noise.noise_by_dtype"))
    _check_noise_args(n_dirs, points, None, seed, "lab.numerics.noise.noise_by_dtype")
    th64 = theta.detach().double()
    dirs = [(d, _line_derivatives(loss_fn, th64, d)) for d in _unit_directions(th64, n_dirs, seed)]
    return {name: _ecnoise_along(loss_fn, th64, dirs, dt, points, None, retries, name) for name, dt in items.items()}


def _ecnoise_along(loss_fn, th64, dirs, dtype, points: int, spacing: float | None, retries: int,
                   name: str | None = None) -> LossNoise:
    """ECnoise along each (direction, derivatives) pair, retrying as Moré & Wild advise."""
    import torch

    from lab.flat import batched
    from lab.numerics.probes import points_along
    sig, inf, used = [], [], []
    loss0 = None
    with torch.no_grad():
        for d, derivs in dirs:
            h = spacing or _spacing_from(derivs, dtype, points)
            for attempt in range(retries + 1):
                t = np.arange(points) * h
                vals = batched(loss_fn, points_along(th64, d, t, dtype)).double().cpu().numpy()
                require_finite(vals[0], f"the loss at θ in {name or dtype}", "lab.numerics.noise.loss_noise")
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

    Args:
        loss_fn: θ ↦ scalar loss, a pure torch function of the flat parameters that is vmappable and computes in
            θ's dtype (e.g. from `lab.flat.make_loss_fn`); differentiable by torch.func.jvp in float64 unless
            `spacing` is given.
        theta: flat parameters, shape (P,), any floating dtype and device (taken to float64; the points along
            each line are formed in float64 and rounded to `dtype`).
        dtype: the evaluation dtype (a floating torch dtype).
        n_dirs: the number of random unit directions.
        points: ECnoise points per direction.
        spacing: a fixed initial spacing for every direction instead of the adaptive one.
        seed: seed of the CPU generator that draws the directions.
        retries: how many times a failed table is retried with a 2× larger or smaller spacing.

    Returns:
        A LossNoise: sigma per direction, their median `sigma`, the loss and the rounding-model `ratio`.

    Raises:
        lab.checks.NonFiniteError: θ is not finite, or the loss at θ is not finite in `dtype`.

    Example:
        >>> import torch
        >>> from lab.numerics import loss_noise
        >>> f = lambda t: t[0] * t[0] + t[1] * t[1]
        >>> n = loss_noise(f, torch.tensor([0.6, 0.8], dtype=torch.float64), torch.float32, n_dirs=3)
        >>> n.informs, n.sigmas.shape, bool(0.1 < n.ratio < 10)        # sigma is of order u·|L|
        ([1, 1, 1], (3,), True)
    """

    _check_noise_args(n_dirs, points, spacing, seed, "lab.numerics.noise.loss_noise")
    th64 = theta.detach().double()
    dirs = [(d, None if spacing else _line_derivatives(loss_fn, th64, d)) for d in _unit_directions(th64, n_dirs, seed)]
    return _ecnoise_along(loss_fn, th64, dirs, dtype, points, spacing, retries)


@dataclass
class LossError:
    """The error of a low-precision loss against float64 at stored points, split at the final reduction: `forward`
    is what the forward pass puts in (per-sample losses in the low dtype, averaged in float64), `reduction` the rest
    (summing the per-sample losses in the low dtype and rounding L). Loss units, one value per point.

    Produced by `loss_error`.

    Attributes:
        total: working-dtype loss − float64 loss, shape (n_points,), float64.
        forward: float64 mean of the working-dtype per-sample losses − float64 loss, shape (n_points,), float64.
        reference: the float64 loss at each point, shape (n_points,), float64.

    Example:
        >>> import numpy as np
        >>> from lab.numerics import LossError
        >>> e = LossError(total=np.array([3.0, -1.0]), forward=np.array([1.0, -1.0]), reference=np.array([5.0, 5.0]))
        >>> e.reduction.tolist()
        [2.0, 0.0]
    """

    total: np.ndarray
    forward: np.ndarray
    reference: np.ndarray

    @property
    def reduction(self) -> np.ndarray:
        """total − forward: the error added by the low-precision mean and its final rounding.

        Returns:
            np.ndarray: shape (n_points,), float64, loss units.
        """
        return self.total - self.forward


def loss_error(loss_fn, per_sample_fn, points) -> LossError:
    """At each stored point (rows of `points`, in the working dtype): loss_fn there (the working-dtype loss), the
    float64 mean of per_sample_fn there (working-dtype forward pass, exact reduction), both against loss_fn at the
    same point in float64.

    Args:
        loss_fn: θ ↦ scalar mean loss, computed in θ's dtype.
        per_sample_fn: θ ↦ per-sample losses, shape (n_samples,), computed in θ's dtype (no reduction).
        points: the stored points, an iterable of flat parameter tensors of shape (P,) in the working dtype (e.g.
            a (n_points, P) tensor); each is also evaluated after `.double()`.

    Returns:
        A LossError with one entry per point.

    Example:
        >>> import torch
        >>> from lab.numerics import loss_error
        >>> x = torch.tensor([[1.0, 2.0], [3.0, -1.0], [0.5, 0.25]])
        >>> per_sample = lambda p: (x.to(p.dtype) @ p) ** 2
        >>> loss_fn = lambda p: per_sample(p).mean()
        >>> e = loss_error(loss_fn, per_sample, torch.tensor([[0.1, 0.2], [0.3, -0.7]]))    # float32 points
        >>> e.total.shape, bool(abs(e.total).max() < 1e-6), e.reference.round(6).tolist()
        ((2,), True, [0.09, 1.256875])
    """
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
    """Relative error ‖g_dtype − g_64‖/‖g_64‖ per layer, both at the same stored point θ rounded to dtype.

    Args:
        loss_fn: θ ↦ scalar loss, computed in θ's dtype, differentiable by torch.func.grad.
        theta: flat parameters, shape (P,), any floating dtype and device (rounded to `dtype` first).
        layers: {name: slice of the flat vector}, e.g. `lab.flat.layer_slices(spec)`.
        dtype: the low-precision dtype whose gradient is compared with float64.

    Returns:
        {layer name: relative error (float)}; NaN or inf for a layer whose float64 gradient is 0.

    Example:
        >>> import torch
        >>> from lab.numerics import grad_error_by_layer
        >>> theta = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
        >>> err = grad_error_by_layer(lambda t: (t ** 3).sum(), theta, {"a": slice(0, 2), "b": slice(2, 4)},
        ...                           torch.float32)
        >>> sorted(err), all(e < 1e-6 for e in err.values())
        (['a', 'b'], True)
    """
    from torch.func import grad
    p = theta.detach().to(dtype)
    g64 = grad(loss_fn)(p.double())
    gw = grad(loss_fn)(p).double()
    return {k: float((gw[s] - g64[s]).norm() / g64[s].norm()) for k, s in layers.items()}


def representation_fd_noise(gradient, theta, direction, dtype) -> float:
    """Predicted std of FD from rounding θ+h·d to dtype alone: sqrt(6·Σ g_i² gap_i²/12) (uniform rounding).

    Storing θ + h·d in `dtype` moves coordinate i by a rounding error roughly uniform over its gap gap_i to the
    neighbouring representable value (variance gap_i²/12), which changes f by g_i times that; the three points
    of FD add up to the factor 6.

    Args:
        gradient: the loss gradient at θ, shape (P,), any floating dtype.
        theta: flat parameters, shape (P,), any floating dtype and device (rounded to `dtype`).
        direction: the probe direction, shape (P,), on θ's device; only its signs are used (the side of each
            coordinate's gap).
        dtype: the storage dtype.

    Returns:
        The predicted standard deviation of FD, a float in loss units.

    Example:
        >>> import torch
        >>> from lab.numerics import representation_fd_noise
        >>> g, theta = torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])
        >>> round(representation_fd_noise(g, theta, torch.ones(2), torch.float32) * 2**23, 6)   # sqrt(1/2) ulp
        0.707107
    """
    import torch

    from lab.numerics.precision import neighbour
    th = theta.detach().to(dtype)
    gap = (neighbour(th, torch.sign(direction.double())).double() - th.double()).abs()
    return float(np.sqrt(6.0 * float((gradient.double() ** 2 * gap ** 2).sum()) / 12.0))


def scaled_fd_noise(sigma: float, f0: float, f1: np.ndarray, f2: np.ndarray) -> np.ndarray:
    """Std of FD = f0 − 2f1 + f2 when each evaluation's noise scales with its value, as the rounding model says
    (σ ∝ u·|f|): sigma is the noise measured at f0 (e.g. by ECnoise), so evaluation i has σ·|f_i|/|f0|.

    Args:
        sigma: the noise of one evaluation at f0.
        f0: f(θ), nonzero.
        f1: f(θ + h·d) per h, shape (n,) (or a scalar).
        f2: f(θ + 2h·d) per h, the shape of f1.

    Returns:
        The standard deviation of FD per h, float64, the broadcast shape of f1 and f2.

    Example:
        >>> import numpy as np
        >>> from lab.numerics import scaled_fd_noise
        >>> (scaled_fd_noise(1e-7, 1.0, np.array([1.0, 2.0]), np.array([1.0, 3.0])) * 1e7).round(6).tolist()
        [2.44949, 5.09902]
    """
    where = "lab.numerics.noise.scaled_fd_noise"
    sigma = require_real(sigma, "sigma", where, lo=0)
    f0 = require_real(f0, "f0", where)
    if f0 == 0:
        raise ValueError(not_allowed("f0", f0, "a non-zero loss (the noise is relative to it)", where))
    for name, v in (("f1", f1), ("f2", f2)):
        require_finite(np.asarray(v, dtype=np.float64), f"parameter '{name}'", where)
    if np.shape(f1) != np.shape(f2):
        raise ValueError(f"{where}: parameters 'f1' and 'f2' have shapes {np.shape(f1)} and {np.shape(f2)}: expected "
                         "the same shape")
    r = sigma / abs(f0)
    return r * np.sqrt(f0**2 + 4 * np.asarray(f1, dtype=np.float64) ** 2 + np.asarray(f2, dtype=np.float64) ** 2)


def crossover_h(sigma: float, curvature: float) -> float:
    """h* where the second-difference signal |c|·h² equals the FD noise sqrt(6)·sigma.

    Below h* the second finite difference is dominated by evaluation noise, above it by the curvature.

    Args:
        sigma: the noise of one evaluation (≥ 0, finite), e.g. `LossNoise.sigma`.
        curvature: the second-difference coefficient c (FD ≈ c·h²; c = f'' along a unit direction), nonzero.

    Returns:
        h* = sqrt(sqrt(6)·sigma/|c|), a float.

    Raises:
        lab.checks.NonFiniteError: sigma or curvature is not a finite number.
        ValueError: sigma < 0, or curvature == 0 (no signal: h* would be infinite).

    Example:
        >>> from lab.numerics import crossover_h
        >>> round(crossover_h(1e-8, 2.0), 6)
        0.000111
    """
    sigma = require_finite_float(sigma, "sigma", "lab.numerics.noise.crossover_h")
    curvature = require_finite_float(curvature, "curvature", "lab.numerics.noise.crossover_h")
    if sigma < 0:
        raise ValueError(f"lab.numerics.noise.crossover_h: parameter 'sigma' = {sigma!r} is not allowed: "
                         "expected sigma >= 0")
    if curvature == 0:
        raise ValueError("lab.numerics.noise.crossover_h: parameter 'curvature' = 0 is not allowed: with zero "
                         "curvature the second difference has no signal to cross the noise (h* would be infinite)")
    return float(np.sqrt(fd_noise(sigma) / abs(curvature)))


def observed_crossover(h: np.ndarray, fd: np.ndarray, fd_ref: np.ndarray, window: int = 5) -> float:
    """Smallest h from which on the running median (over `window` doublings) of |fd − fd_ref|/|fd_ref| stays below 1.

    The measured counterpart of `crossover_h`: where the measured FD agrees with a reference (e.g. float64) FD to
    better than 100% from then on. Non-finite relative errors count as too large.

    Args:
        h: the probe distances, increasing, shape (n,).
        fd: the measured second differences per h, shape (n,).
        fd_ref: the reference second differences per h, shape (n,).
        window: the number of consecutive h in the running median (centred, truncated at the ends).

    Returns:
        The crossover h as a float: h[0] when the median is below 1 everywhere, NaN when it never stays below 1.

    Example:
        >>> import numpy as np
        >>> from lab.numerics import observed_crossover
        >>> h = 2.0 ** np.arange(8)
        >>> fd_ref = h ** 2
        >>> fd = fd_ref + 4.0 * (-1.0) ** np.arange(8)      # noise of size 4: relative error 4/h²
        >>> observed_crossover(h, fd, fd_ref, window=1), observed_crossover(h, fd, fd_ref)
        (4.0, 2.0)
    """
    where = "lab.numerics.noise.observed_crossover"
    h, fd, fd_ref = (np.asarray(v, dtype=np.float64) for v in (h, fd, fd_ref))
    if h.ndim != 1 or h.size == 0 or fd.shape != h.shape or fd_ref.shape != h.shape:
        raise ValueError(f"{where}: parameters 'h', 'fd' and 'fd_ref' have shapes {h.shape}, {fd.shape} and "
                         f"{fd_ref.shape}: expected three non-empty 1-D arrays of one length")
    require_finite(h, "parameter 'h'", where)
    window = require_int(window, "window", where, lo=1)
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
    """Slope of log y vs log x per seed (rows), mean and a t-interval over seeds: (mean, low, high).

    Args:
        x: positive abscissae, shape (n,).
        y_by_seed: positive values, shape (seeds, n) (a single row of shape (n,) is allowed).
        level: the confidence level of the Student-t interval.

    Returns:
        (mean slope, low, high) as floats; low and high are NaN with a single seed.

    Raises:
        lab.checks.NonFiniteError: x or y_by_seed has NaN or infinite entries.
        ValueError: x or y_by_seed has values ≤ 0.

    Example:
        >>> import numpy as np
        >>> from lab.numerics import fit_exponent
        >>> x = np.array([1.0, 2.0, 4.0, 8.0])
        >>> y = np.array([[1.0], [2.0], [3.0]]) * x ** 2          # three seeds, all y ∝ x²
        >>> tuple(round(v, 6) for v in fit_exponent(x, y))
        (2.0, 2.0, 2.0)
    """
    from scipy import stats
    level = require_level(level, "lab.numerics.noise.fit_exponent")
    xs, ys = np.asarray(x, dtype=float), np.atleast_2d(np.asarray(y_by_seed, dtype=float))
    if xs.ndim != 1 or len(xs) < 2 or ys.ndim != 2 or ys.shape[1] != len(xs):
        raise ValueError(f"lab.numerics.noise.fit_exponent: parameters 'x' and 'y_by_seed' have shapes {xs.shape} and "
                         f"{ys.shape}: expected x of n >= 2 points and y_by_seed of shape (seeds, n)")
    for name, v in (("x", xs), ("y_by_seed", ys)):
        require_finite(v, f"parameter '{name}'", "lab.numerics.noise.fit_exponent")
        if np.any(v <= 0):
            raise ValueError(f"lab.numerics.noise.fit_exponent: parameter '{name}' has {int(np.sum(v <= 0))} value(s) "
                             "<= 0: a log-log slope needs positive values (a noise of exactly 0 has no exponent)")
    lx = np.log(xs)
    slopes = np.array([np.polyfit(lx, np.log(row), 1)[0] for row in ys])
    m = float(slopes.mean())
    if len(slopes) < 2:
        return m, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + level / 2, len(slopes) - 1) * slopes.std(ddof=1) / np.sqrt(len(slopes)))
    return m, m - half, m + half


def minibatch_loss_std(per_sample: np.ndarray, batch_sizes, n_batches: int = 200, seed: int = 0) -> np.ndarray:
    """Std of the mean loss over random minibatches (without replacement) of each size.

    Args:
        per_sample: the per-sample losses, shape (n,), finite.
        batch_sizes: an iterable of batch sizes b with 1 ≤ b ≤ n.
        n_batches: the number of random batches drawn per size.
        seed: seed of the numpy generator.

    Returns:
        The standard deviation (ddof 1) of the batch means per size, shape (len(batch_sizes),), float64.

    Raises:
        lab.checks.NonFiniteError: a per-sample loss is not finite.
        ValueError: a batch size is outside 1..n.

    Example:
        >>> import numpy as np
        >>> from lab.numerics import minibatch_loss_std
        >>> s = minibatch_loss_std(np.arange(100.0), [1, 10, 100])
        >>> s.shape, bool(s[0] > s[1] > s[2]), float(s[2])   # the full batch has no minibatch noise
        ((3,), True, 0.0)
    """
    where = "lab.numerics.noise.minibatch_loss_std"
    n_batches = require_int(n_batches, "n_batches", where, lo=2)         # >= 2 for a standard deviation
    seed = require_int(seed, "seed", where, lo=0)
    rng = np.random.default_rng(seed)
    batch_sizes = [require_int(b, f"batch_sizes[{i}]", where, lo=1) for i, b in enumerate(batch_sizes)]
    per_sample = require_finite(np.asarray(per_sample, dtype=np.float64), "parameter 'per_sample'", where)
    too_big = [b for b in batch_sizes if not 1 <= b <= len(per_sample)]
    if too_big:
        raise ValueError(f"{where}: parameter 'batch_sizes' has {too_big}: expected 1 <= b <= {len(per_sample)} "
                         "(the number of samples)")
    out = []
    for b in batch_sizes:
        means = [per_sample[rng.choice(len(per_sample), b, replace=False)].mean() for _ in range(n_batches)]
        out.append(np.std(means, ddof=1))
    return np.array(out)


def power_law(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares fit of log y = a·log x + log c: returns (a, c).

    Args:
        x: positive abscissae, shape (n,).
        y: positive values, shape (n,).

    Returns:
        (a, c) as floats: y ≈ c·x^a.

    Example:
        >>> import numpy as np
        >>> from lab.numerics import power_law
        >>> x = np.array([1.0, 4.0, 16.0])
        >>> tuple(round(v, 6) for v in power_law(x, 3.0 * x ** -0.5))
        (-0.5, 3.0)
    """
    where = "lab.numerics.noise.power_law"
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if xs.ndim != 1 or xs.shape != ys.shape or len(xs) < 2:
        raise ValueError(f"{where}: parameters 'x' and 'y' have shapes {xs.shape} and {ys.shape}: expected two 1-D "
                         "arrays of one length >= 2")
    for name, v in (("x", xs), ("y", ys)):
        require_finite(v, f"parameter '{name}'", where)
        if np.any(v <= 0):
            raise ValueError(f"{where}: parameter '{name}' has {int(np.sum(v <= 0))} value(s) <= 0: a power law is fit "
                             "on log values")
    if np.all(xs == xs[0]):
        raise ValueError(f"{where}: parameter 'x' is constant: no slope to fit")
    a, logc = np.polyfit(np.log(xs), np.log(ys), 1)
    return float(a), float(np.exp(logc))
