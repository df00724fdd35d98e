"""Automatic regime labels for a roughness curve: noise, quadratic (constant curvature) and structure.

The labels are the strings NOISE = "noise", QUADRATIC = "quadratic" and STRUCTURE = "structure"; `label_regimes`
explains what each means.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lab.checks import require_finite, require_int, require_real

__all__ = ["NOISE", "QUADRATIC", "STRUCTURE", "Regimes", "local_slope", "label_regimes"]

NOISE, QUADRATIC, STRUCTURE = "noise", "quadratic", "structure"


@dataclass
class Regimes:
    """Per-h labels and the characteristic scales where the regime changes.

    Produced by `label_regimes`.

    Attributes:
        h: the probe distances, shape (n,), float64.
        labels: NOISE, QUADRATIC or STRUCTURE per h, shape (n,), dtype object.
        slope: the local log-log slope d log|FD/h| / d log h per h, shape (n,) (see `local_slope`): +1 in the
            quadratic regime, about −1 where noise dominates.
        h_quadratic: the first h of the quadratic regime; NaN if there is none.
        h_structure: the first h where the curvature stops being constant; NaN if it never does.
        curvature: the median FD/h² over the quadratic regime (≈ f'' along d); NaN if there is none.

    Example:
        >>> import numpy as np
        >>> from lab.numerics import NOISE, QUADRATIC, Regimes
        >>> r = Regimes(h=np.array([1e-6, 1e-3]), labels=np.array([NOISE, QUADRATIC], dtype=object),
        ...             slope=np.array([-1.0, 1.0]), h_quadratic=1e-3, h_structure=float("nan"), curvature=2.0)
        >>> r.labels.tolist(), r.h_quadratic
        (['noise', 'quadratic'], 0.001)
    """

    h: np.ndarray
    labels: np.ndarray
    slope: np.ndarray
    h_quadratic: float   # first h of the quadratic regime (the noise → signal crossover); NaN if there is none
    h_structure: float   # first h where the curvature stops being constant (NaN if the curve stays quadratic)
    curvature: float     # the common curvature FD/h² of the quadratic regime (NaN if there is none)


def _curve(h, y, yname: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    """h (positive, finite, 1-D, >= 2 points) and y of the same length, as float64 arrays; else a named error."""
    h, y = np.asarray(h, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if h.ndim != 1 or len(h) < 2 or y.shape != h.shape:
        raise ValueError(f"{where}: parameters 'h' and '{yname}' have shapes {h.shape} and {y.shape}: expected two 1-D "
                         "arrays of one length >= 2")
    require_finite(h, "parameter 'h'", where)
    if np.any(h <= 0):
        raise ValueError(f"{where}: parameter 'h' has {int(np.sum(h <= 0))} value(s) <= 0: expected step sizes > 0")
    return h, y


def local_slope(h: np.ndarray, y: np.ndarray) -> np.ndarray:
    """d log|y| / d log h by central differences (NaN where y is 0).

    One-sided differences at the two ends (numpy.gradient). On a doubling probe's roughness FD/h the slope is +1
    where the loss is quadratic and about −1 where noise dominates.

    Args:
        h: positive abscissae, shape (n,), n ≥ 2.
        y: values, shape (n,) (their sign is ignored).

    Returns:
        np.ndarray: the slope per h, shape (n,), float64; NaN next to a zero of y.

    Example:
        >>> import numpy as np
        >>> from lab.numerics import local_slope
        >>> h = np.array([1.0, 2.0, 4.0, 8.0])
        >>> local_slope(h, h ** 2).round(6).tolist()
        [2.0, 2.0, 2.0, 2.0]
    """
    h, y = _curve(h, y, "y", "lab.numerics.local_slope")
    with np.errstate(divide="ignore", invalid="ignore"):
        ly = np.log(np.abs(y))
    ly[~np.isfinite(ly)] = np.nan
    return np.gradient(ly, np.log(h))


def label_regimes(h: np.ndarray, fd: np.ndarray, fd_noise: float, snr: float = 10.0, tol: float = 0.05,
          min_points: int = 3, widen: float = 10.0) -> Regimes:
    """Label each h of a doubling probe as noise, quadratic or structure.

    What the labels mean. A doubling probe (`lab.numerics.doubling_probe`) measures the second finite difference
    FD(h) = f(θ) − 2f(θ+h·d) + f(θ+2h·d) at h = h_min·2^k. If the loss were exactly a parabola along d, FD would be
    f''·h² and FD/h² the curvature at every h. A real loss, evaluated in floating point, shows three regimes from
    small to large h:

    - noise: at tiny h the true FD (∝ h²) is smaller than the rounding noise of the three loss evaluations
      (`fd_noise`, e.g. sqrt(6)·sigma from ECnoise); the measured FD is then mostly random and says nothing about
      the landscape.
    - quadratic: once |FD| clears the noise (by the factor `snr`), FD/h² settles on one value: at these scales the
      loss looks like a parabola along d and that value (`curvature`) is f'' along d. `h_quadratic` is where this
      starts.
    - structure: at larger h the loss is no longer quadratic over [θ, θ + 2h·d] (higher-order terms, ReLU kinks,
      other basins) and FD/h² drifts away from the constant. `h_structure` is where this starts.

    The precise rules:

    Noise: |FD| < snr·fd_noise. The quadratic regime starts at the first signal point (the noise crossover) and
    runs as long as every curvature FD/h² in it agrees with one common value to within `tol`, each widened by its
    own noise (widen·fd_noise/|FD| relative: the measurement model), so that the curvature is constant to tol
    across the whole regime — a ReLU kink that moves it by more than 2·tol ends the regime, however gradually it
    comes on. Fewer than `min_points` such points make no regime (h_quadratic NaN), but h_structure is still where
    the constant curvature first breaks. Everything after the regime is structure, except
    points below the noise threshold (an FD crossing zero), which stay labelled noise. The defaults (snr 10,
    widen 10: about 3 standard deviations of noise) allow for a noise estimate that is 3× too low, as ECnoise's
    median over a few directions can be.

    Args:
        h: the probe distances, increasing, shape (n,) (e.g. `DoublingProbe.h`).
        fd: the second finite differences per h, shape (n,) (e.g. `DoublingProbe.fd`).
        fd_noise: the standard deviation of FD from evaluation noise (e.g. `fd_noise(loss_noise(...).sigma)`).
        snr: how many fd_noise |FD| must exceed to count as signal.
        tol: the relative tolerance within which the curvature counts as constant.
        min_points: the fewest consecutive signal points that make a quadratic regime.
        widen: how many fd_noise each point's curvature interval is widened by (relative to |FD|).

    Returns:
        A Regimes with the labels per h, the local slope of FD/h, h_quadratic, h_structure and the curvature.

    Example:
        >>> import numpy as np
        >>> from lab.numerics import label_regimes
        >>> h = 2.0 ** np.arange(-24, 0)
        >>> noise = 1e-12 * (-1.0) ** np.arange(len(h))            # evaluation noise of FD
        >>> fd = 2 * h ** 2 * (1 + (h / 0.05) ** 2) + noise          # f'' = 2, with structure near h = 0.05
        >>> r = label_regimes(h, fd, fd_noise=1e-12)
        >>> "".join(label[0] for label in r.labels)                  # n(oise), q(uadratic), s(tructure) per h
        'nnnnnnqqqqqqqqqqqqqsssss'
        >>> float(np.log2(r.h_quadratic)), float(np.log2(r.h_structure)), round(r.curvature, 2)
        (-18.0, -5.0, 2.0)
    """
    where = "lab.numerics.label_regimes"
    h, fd = _curve(h, fd, "fd", where)
    fd_noise = require_real(fd_noise, "fd_noise", where, lo=0)
    snr = require_real(snr, "snr", where, lo=0, lo_open=True)
    tol = require_real(tol, "tol", where, lo=0)
    widen = require_real(widen, "widen", where, lo=0)
    min_points = require_int(min_points, "min_points", where, lo=1)
    slope = local_slope(h, fd / h)
    signal = np.abs(fd) >= snr * fd_noise
    labels = np.where(signal, STRUCTURE, NOISE).astype(object)
    h_q = h_s = kappa = float("nan")
    first = np.flatnonzero(signal)
    if len(first):
        i0 = int(first[0])
        curv = fd / h**2
        lo, hi, end = -np.inf, np.inf, i0
        for j in range(i0, len(h)):
            if not signal[j]:
                break
            w = tol + widen * fd_noise / abs(fd[j])
            a, b = sorted((curv[j] * (1 - w), curv[j] * (1 + w)))
            if max(lo, a) > min(hi, b):
                break
            lo, hi, end = max(lo, a), min(hi, b), j + 1
        if end - i0 >= min_points:
            labels[i0:end] = QUADRATIC
            h_q = float(h[i0])
            kappa = float(np.median(curv[i0:end]))
        h_s = float(h[end]) if end < len(h) else float("nan")   # where the constant curvature breaks
    return Regimes(h, labels, slope, h_q, h_s, kappa)
