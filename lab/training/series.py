"""Statistics of loss series: rolling spread, detrending, autocorrelation and ringing, spikes, the intrinsic
(lr = 0) variance of log batch loss at a frozen θ."""
from __future__ import annotations

import math

import numpy as np
import torch

from lab.checks import require_finite

__all__ = ["rolling_std", "detrend", "autocorrelation", "spectral_peak", "spectral_peak_null", "intrinsic_std",
           "resampled_std", "log_error_spread", "ringing_period", "spike_count", "time_to_target"]



def rolling_std(x: np.ndarray, window: int) -> np.ndarray:
    """Std (ddof=1) over the trailing `window` values; NaN until the window is full.

    Computed from running sums in one pass (O(len(x)) for any window), so that long loss curves stay cheap.

    Args:
        x: the series, shape (n,), anything np.asarray accepts (converted to float64).
        window: the number of trailing values per std, >= 2.

    Returns:
        Array of shape (n,), float64: entry i is the std of x[i − window + 1 : i + 1]; the first window − 1
        entries (all of them when n < window) are NaN.

    Example:
        >>> import numpy as np
        >>> from lab.training.series import rolling_std
        >>> np.round(rolling_std([1.0, 2.0, 3.0, 4.0, 5.0], 3), 6).tolist()
        [nan, nan, 1.0, 1.0, 1.0]
    """
    x = np.asarray(x, dtype=np.float64)
    out = np.full(len(x), np.nan)
    if len(x) < window:
        return out
    c1 = np.concatenate([[0.0], np.cumsum(x)])
    c2 = np.concatenate([[0.0], np.cumsum(x * x)])
    s1 = c1[window:] - c1[:-window]
    s2 = c2[window:] - c2[:-window]
    var = (s2 - s1 * s1 / window) / (window - 1)
    out[window - 1:] = np.sqrt(np.maximum(var, 0.0))
    return out


def detrend(x: np.ndarray, window: int = 51) -> np.ndarray:
    """x minus its centred moving average (edges trimmed by window//2 on each side).

    Removes the slow trend of a loss curve so that what rides on it (noise, oscillation) can be analysed.

    Args:
        x: the series, shape (n,), anything np.asarray accepts (converted to float64).
        window: the moving-average width, odd and <= n.

    Returns:
        Array of shape (n − window + 1,), float64: x[h : n − h] minus the window-mean around each point,
        h = window // 2.

    Example:
        >>> import numpy as np
        >>> from lab.training.series import detrend
        >>> np.round(detrend([0.0, 2.0, 2.0, 4.0, 4.0, 6.0, 6.0], window=3), 6).tolist()
        [0.666667, -0.666667, 0.666667, -0.666667, 0.666667]
    """
    x = np.asarray(x, dtype=np.float64)
    k = np.ones(window) / window
    trend = np.convolve(x, k, mode="valid")
    h = window // 2
    return x[h:len(x) - h] - trend


def autocorrelation(x: np.ndarray, max_lag: int) -> np.ndarray:
    """Normalised autocorrelation at lags 0..max_lag.

    The series is centred on its mean; lag k is Σ x_t x_{t+k} / Σ x_t², so lag 0 is 1 (the biased estimator:
    no 1/(n − k) correction).

    Args:
        x: the series, shape (n,), anything np.asarray accepts (converted to float64); not constant.
        max_lag: the largest lag, < n.

    Returns:
        Array of shape (max_lag + 1,), float64, entries in [−1, 1].

    Example:
        >>> import numpy as np
        >>> from lab.training.series import autocorrelation
        >>> np.round(autocorrelation([1.0, -1.0, 1.0, -1.0], 2), 6).tolist()
        [1.0, -0.75, 0.5]
    """
    x = np.asarray(x, dtype=np.float64) - np.mean(x)
    d = float(x @ x)
    return np.array([float(x[: len(x) - k] @ x[k:]) / d for k in range(max_lag + 1)])


def spectral_peak(x: np.ndarray) -> tuple[float, float]:
    """(period in steps, peak power / median power) of the periodogram's largest non-zero-frequency peak.

    A large ratio (≫ 1) means a clear oscillation; a ratio of a few is what noise alone gives.

    Args:
        x: the series, shape (n,), n >= 3, evenly spaced in steps (converted to float64).

    Returns:
        (period, ratio): the period 1/f of the strongest frequency, in steps (a float, 2 <= period <= n), and its
        power divided by the median power of all non-zero frequencies.

    Example:
        >>> import numpy as np
        >>> from lab.training.series import spectral_peak
        >>> t = np.arange(64)
        >>> x = np.sin(2 * np.pi * t / 8) + 0.1 * np.random.default_rng(0).standard_normal(64)
        >>> period, ratio = spectral_peak(x)
        >>> round(period, 6), bool(ratio > 10)
        (8.0, True)
    """
    from scipy.signal import periodogram
    f, p = periodogram(np.asarray(x, dtype=np.float64))
    f, p = f[1:], p[1:]
    i = int(np.argmax(p))
    return float(1 / f[i]), float(p[i] / np.median(p))


def spectral_peak_null(x: np.ndarray, n_shuffles: int = 200, q: float = 0.99, seed: int = 0) -> float:
    """The q-quantile of `spectral_peak`'s ratio over random shuffles of x: what the largest peak reaches when the
    same values carry no order (the null of "periodic"). A series whose own ratio exceeds it has a peak that
    white noise with its distribution would give with probability below 1 − q.

    Args:
        x: the series, shape (n,), n >= 3 (converted to float64).
        n_shuffles: random permutations, >= 10.
        q: the quantile, in (0, 1).
        seed: seed of the permutations.

    Returns:
        The quantile of the shuffled series' peak ratios, a float.

    Example:
        >>> import numpy as np
        >>> from lab.training.series import spectral_peak, spectral_peak_null
        >>> t = np.arange(128)
        >>> x = np.sin(2 * np.pi * t / 8) + np.random.default_rng(0).standard_normal(128)
        >>> bool(spectral_peak(x)[1] > spectral_peak_null(x, n_shuffles=100))
        True
        >>> noise = np.random.default_rng(1).standard_normal(128)
        >>> bool(spectral_peak(noise)[1] > spectral_peak_null(noise, n_shuffles=100))
        False
    """
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if a.size < 3:
        raise ValueError(f"parameter 'x' has {a.size} values: expected at least 3")
    if isinstance(n_shuffles, bool) or not isinstance(n_shuffles, (int, np.integer)) or n_shuffles < 10:
        raise ValueError(f"parameter 'n_shuffles' = {n_shuffles!r} is not allowed: expected an integer >= 10")
    if not 0 < q < 1:
        raise ValueError(f"parameter 'q' = {q!r} is not allowed: expected a number in (0, 1)")
    require_finite(a, "x", "lab.training.spectral_peak_null")
    rng = np.random.default_rng(seed)
    return float(np.quantile([spectral_peak(rng.permutation(a))[1] for _ in range(int(n_shuffles))], q))


def intrinsic_std(errors: torch.Tensor, batch: int) -> float:
    """The model-intrinsic std of log10(batch-mean loss): per-sample errors of K·batch fresh samples at a frozen θ,
    split into K batches; std (ddof=1) of log10 of their means. What the loss curve would show with lr = 0.

    Args:
        errors: per-sample losses at one θ (e.g. `lab.training.squared_errors`), any shape (flattened), positive,
            any floating dtype and device; computed in float64. Trailing errors that do not fill a batch are
            dropped.
        batch: the batch size of the training run whose loss curve this is the floor of.

    Returns:
        The std of log10 of the K = errors.numel() // batch batch means, a float.

    Raises:
        ValueError: when there are fewer than 2 batches.

    Example:
        >>> import torch
        >>> from lab.training.series import intrinsic_std
        >>> round(intrinsic_std(torch.tensor([1.0, 1.0, 10.0, 10.0]), batch=2), 6)  # log10 means 0 and 1
        0.707107
    """
    k = errors.numel() // batch
    if k < 2:
        raise ValueError(f"intrinsic_std: need at least 2 batches of {batch} errors, got {errors.numel()}")
    means = errors.reshape(-1)[: k * batch].reshape(k, batch).double().mean(1)
    return float(torch.log10(means).std())


def resampled_std(errors: torch.Tensor, batch: int, n: int = 200, seed: int = 0) -> float:
    """Bootstrap estimate of intrinsic_std from one sample of errors: n batches drawn with replacement.

    Args:
        errors: per-sample losses at one θ, any shape (flattened), positive, any floating dtype and device.
        batch: the batch size of each resampled batch.
        n: the number of resampled batches.
        seed: seed of the resampling generator (on errors' device).

    Returns:
        The std (ddof=1) of log10 of the n resampled batch means, a float.

    Example:
        >>> import torch
        >>> from lab.training.series import resampled_std
        >>> two = torch.tensor([1.0, 100.0]).repeat(50)  # half the errors 1, half 100
        >>> round(resampled_std(torch.ones(100), 10), 6), bool(resampled_std(two, 10) > 0)
        (0.0, True)
    """
    gen = torch.Generator(device=errors.device).manual_seed(seed)
    idx = torch.randint(errors.numel(), (n, batch), generator=gen, device=errors.device)
    return float(torch.log10(errors.reshape(-1)[idx].double().mean(1)).std())


def log_error_spread(errors: torch.Tensor) -> float:
    """The notes' "model variance": std of log10 of the per-sample squared errors (zeros dropped).

    Args:
        errors: per-sample squared errors, any shape (flattened), non-negative, any floating dtype and device.

    Returns:
        The std (ddof=1) of log10 of the positive errors, a float (computed in float64).

    Example:
        >>> import torch
        >>> from lab.training.series import log_error_spread
        >>> round(log_error_spread(torch.tensor([1.0, 10.0, 100.0, 0.0])), 6)  # log10: 0, 1, 2; the zero dropped
        1.0
    """
    e = errors.reshape(-1).double()
    return float(torch.log10(e[e > 0]).std())


def ringing_period(x: np.ndarray, detrend_window: int = 15, max_lag: int = 60) -> tuple[int, float]:
    """(lag, height) of the first autocorrelation peak of the detrended series after its first negative lobe:
    the period of the oscillation that rides on the trend. (0, 0.0) when there is none.

    Args:
        x: the series (e.g. log10 loss per step), shape (n,), n well above detrend_window + max_lag.
        detrend_window: the moving-average width of `detrend`.
        max_lag: the largest lag searched.

    Returns:
        (lag, height): the lag in steps (an int) and the autocorrelation there (a float in (0, 1]).

    Example:
        >>> import numpy as np
        >>> from lab.training.series import ringing_period
        >>> t = np.arange(200)
        >>> lag, height = ringing_period(0.01 * t + np.sin(2 * np.pi * t / 10))
        >>> lag, bool(height > 0.9)
        (10, True)
    """
    ac = autocorrelation(detrend(x, detrend_window), max_lag)
    neg = np.flatnonzero(ac < 0)
    if len(neg) == 0:
        return 0, 0.0
    for k in range(max(int(neg[0]), 1), max_lag):
        if ac[k] > 0 and ac[k] >= ac[k - 1] and ac[k] >= ac[k + 1]:
            return k, float(ac[k])
    return 0, 0.0


def spike_count(log_loss: np.ndarray, rise: float = 0.3) -> int:
    """Number of loss spikes: onsets where log10 loss rises more than `rise` above its running minimum.

    A spike that stays up counts once (at its onset); the series must come back within `rise` of its running
    minimum before a new spike can start.

    Args:
        log_loss: log10 loss per step, shape (n,) (converted to float64); all finite.
        rise: the rise, in decades, that counts as a spike.

    Returns:
        The number of onsets, an int (0 for an empty series).

    Raises:
        NonFiniteError: when log_loss contains NaN or inf (a diverged run).

    Example:
        >>> import numpy as np
        >>> from lab.training.series import spike_count
        >>> spike_count(np.array([0.0, -0.5, -1.0, -0.5, -1.0, -1.2, 0.0]))
        2
    """
    x = np.asarray(log_loss, dtype=np.float64)
    if x.size == 0:
        return 0
    require_finite(x, "the log losses", "lab.training.series.spike_count", "a run that diverged has no spike count")
    above = x - np.minimum.accumulate(x) > rise
    return int(np.sum(above[1:] & ~above[:-1]) + above[0])


def time_to_target(steps: np.ndarray, loss: np.ndarray, target: float) -> float:
    """First step at which `loss` (evaluated at `steps`) is ≤ target; inf if never.

    Args:
        steps: the steps at which loss was measured, shape (n,).
        loss: the losses there, shape (n,).
        target: the loss to reach.

    Returns:
        steps[i] of the first i with loss[i] <= target, as a float; math.inf when the target is never reached.

    Example:
        >>> from lab.training.series import time_to_target
        >>> time_to_target([0, 10, 20, 30], [1.0, 0.5, 0.2, 0.1], 0.25), time_to_target([0, 1], [1.0, 1.0], 0.5)
        (20.0, inf)
    """
    hit = np.flatnonzero(np.asarray(loss) <= target)
    return float(np.asarray(steps)[hit[0]]) if len(hit) else math.inf
