"""Automatic regime labels for a roughness curve: noise, quadratic (grit ∝ h) and structure."""
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
    h_quadratic: float   # first h of the quadratic regime (the noise → signal crossover)
    h_structure: float   # first h where the curve departs from quadratic for good (NaN if never)


def local_slope(h: np.ndarray, y: np.ndarray) -> np.ndarray:
    """d log|y| / d log h by central differences (NaN where y is 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ly = np.log(np.abs(y))
    ly[~np.isfinite(ly)] = np.nan
    return np.gradient(ly, np.log(h))


def label(h: np.ndarray, fd: np.ndarray, fd_noise: float, snr: float = 3.0, tol: float = 0.3,
          run: int = 2) -> Regimes:
    """Label each h: noise where |FD| < snr·fd_noise; else quadratic where grit's log-log slope is 1 ± tol;
    else structure. h_structure is the first h after the quadratic regime from which `run` structure labels follow.
    """
    grit = fd / h
    slope = local_slope(h, grit)
    labels = np.where(np.abs(fd) < snr * fd_noise, NOISE,
                      np.where(np.abs(slope - 1) <= tol, QUADRATIC, STRUCTURE)).astype(object)
    quad = np.where(labels == QUADRATIC)[0]
    h_q = float(h[quad[0]]) if len(quad) else float("nan")
    h_s = float("nan")
    if len(quad):
        for i in range(quad[0], len(h) - run + 1):
            if np.all(labels[i:i + run] == STRUCTURE):
                h_s = float(h[i])
                break
    return Regimes(h, labels, slope, h_q, h_s)
