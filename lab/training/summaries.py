"""Summaries of training runs: a series' median over a phase of the run, a run's final train and held-out losses,
and the intrinsic (lr = 0) floor of the log batch loss over snapshots of θ."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from lab.training.loops import StreamRun, squared_errors
from lab.training.series import intrinsic_std

__all__ = ["phase_median", "tail_medians", "intrinsic_floor"]


def phase_median(series: np.ndarray, lo: float, hi: float, start: int = 0) -> float:
    """The median (NaN ignored) of `series` between fractions lo and hi of its length, never before index `start`
    (e.g. the first full window of a rolling statistic).

    Args:
        series: shape (T,).
        lo, hi: fractions of T, 0 <= lo < hi <= 1.
        start: the first index that counts.

    Returns:
        The median as a float.

    Example:
        >>> phase_median(np.arange(10.0), 0.0, 0.5, start=2)
        3.0
    """
    if not 0 <= lo < hi <= 1:
        raise ValueError(f"phase_median: need 0 <= lo < hi <= 1, got lo={lo}, hi={hi}")
    a, b = max(int(lo * len(series)), start), int(hi * len(series))
    return float(np.nanmedian(np.asarray(series, dtype=np.float64)[a:b]))


def tail_medians(run: StreamRun, fraction: float = 0.1) -> tuple[float, float]:
    """(median training loss, median held-out loss) over the last `fraction` of a run's steps and of its
    held-out evaluations (at least one of each).

    Example:
        >>> r = StreamRun(np.arange(20.0), np.ones(20), np.arange(4), np.array([4.0, 3.0, 2.0, 1.0]), torch.zeros(1))
        >>> tail_medians(r)
        (18.5, 1.0)
    """
    n = max(math.floor(len(run.loss) * fraction + 1e-9), 1)
    m = max(math.floor(len(run.held_loss) * fraction + 1e-9), 1)
    return float(np.median(run.loss[-n:])), float(np.median(run.held_loss[-m:]))


def intrinsic_floor(forward: Callable, thetas: Sequence[torch.Tensor], target_fn: Callable, batch: int,
                    n_batches: int, generator: torch.Generator, dim: int = 3) -> float:
    """The root-mean-square over snapshots θ of `intrinsic_std`: at each θ, `n_batches` fresh N(0, I) batches of
    `batch` samples (drawn from `generator`, snapshot after snapshot), the std of log10 of their mean squared error.

    Args:
        forward: (θ, x (n, dim)) ↦ predictions (n,) or (n, 1).
        thetas: the snapshots, each (P,), on the generator's device.
        target_fn: x (n, dim) ↦ targets (n,).
        batch, n_batches: the batch size and how many batches per snapshot (>= 2).
        generator: draws the inputs.
        dim: input dimension.

    Returns:
        The floor, a float (std of log10 batch loss).

    Example:
        >>> f = lambda t, x: x @ t
        >>> g = torch.Generator().manual_seed(0)
        >>> v = intrinsic_floor(f, [torch.zeros(3)], lambda x: x[:, 0], batch=50, n_batches=8, generator=g)
        >>> 0.05 < v < 0.5
        True
    """
    if not thetas:
        raise ValueError("intrinsic_floor: need at least one snapshot θ")
    dev = thetas[0].device
    return math.sqrt(np.mean([intrinsic_std(squared_errors(forward, th, torch.randn(n_batches * batch, dim,
                                                                                   generator=generator, device=dev),
                                                           target_fn), batch) ** 2 for th in thetas]))
