"""Automatic regime labels for a roughness curve: noise, quadratic (constant curvature) and structure."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NOISE, QUADRATIC, STRUCTURE = "noise", "quadratic", "structure"


@dataclass
class Regimes:
    """Per-h labels and the characteristic scales where the regime changes."""

    h: np.ndarray
    labels: np.ndarray
    slope: np.ndarray
    h_quadratic: float   # first h of the quadratic regime (the noise → signal crossover); NaN if there is none
    h_structure: float   # first h where the curvature stops being constant (NaN if the curve stays quadratic)
    curvature: float     # the common curvature FD/h² of the quadratic regime (NaN if there is none)


def local_slope(h: np.ndarray, y: np.ndarray) -> np.ndarray:
    """d log|y| / d log h by central differences (NaN where y is 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ly = np.log(np.abs(y))
    ly[~np.isfinite(ly)] = np.nan
    return np.gradient(ly, np.log(h))


def label(h: np.ndarray, fd: np.ndarray, fd_noise: float, snr: float = 10.0, tol: float = 0.05,
          min_points: int = 3, widen: float = 10.0) -> Regimes:
    """Label each h of a doubling probe as noise, quadratic or structure.

    Noise: |FD| < snr·fd_noise. The quadratic regime starts at the first signal point (the noise crossover) and
    runs as long as every curvature FD/h² in it agrees with one common value to within `tol`, each widened by its
    own noise (widen·fd_noise/|FD| relative: the measurement model), so that the curvature is constant to tol
    across the whole regime — a ReLU kink that moves it by more than 2·tol ends the regime, however gradually it
    comes on. Fewer than `min_points` such points make no regime (h_quadratic NaN), but h_structure is still where
    the constant curvature first breaks. Everything after the regime is structure, except
    points below the noise threshold (an FD crossing zero), which stay labelled noise. The defaults (snr 10,
    widen 10: about 3 standard deviations of noise) allow for a noise estimate that is 3× too low, as ECnoise's
    median over a few directions can be.
    """
    h = np.asarray(h, dtype=np.float64)
    fd = np.asarray(fd, dtype=np.float64)
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
