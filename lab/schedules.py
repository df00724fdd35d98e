"""Learning-rate schedules from the seed-002 notes: a constant-variance controller, an LR range test, and the
statistics of a loss curve (rolling std, autocorrelation, spectrum)."""
from __future__ import annotations

import math
from collections import deque

import numpy as np
import torch
from torch.optim.lr_scheduler import LRScheduler


class ConstantVarianceLR(LRScheduler):
    """Multiplicative controller that steers the rolling std of log10(loss) towards `target`.

    Call `observe(loss)` with each training loss, then `step()`. Every step after the window is full:
    lr ← clip(lr · exp(gain · (target − s) / target), lr_min, lr_max), where s is the rolling std of log10 loss over
    `window` steps, minus the model's intrinsic part if `floor` is set: s = sqrt(max(std² − floor², 0)).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, target: float = 0.075, window: int = 500, gain: float = 0.01,
                 lr_min: float = 1e-6, lr_max: float = 1.0, last_epoch: int = -1):
        if target <= 0 or window < 2 or gain <= 0 or not 0 < lr_min < lr_max:
            raise ValueError("ConstantVarianceLR: need target > 0, window >= 2, gain > 0 and 0 < lr_min < lr_max; got "
                             f"target={target}, window={window}, gain={gain}, lr_min={lr_min}, lr_max={lr_max}")
        self.target, self.window, self.gain, self.lr_min, self.lr_max = target, window, gain, lr_min, lr_max
        self.history: deque[float] = deque(maxlen=window)
        self.floor = 0.0
        self.measured = float("nan")
        super().__init__(optimizer, last_epoch)

    def observe(self, loss: float | torch.Tensor) -> None:
        """Record one training loss (a float or a 0-d tensor)."""
        self.history.append(math.log10(max(float(loss), 1e-300)))

    def set_floor(self, floor: float) -> None:
        """The model-intrinsic std of log10 loss to subtract before control (0 disables the correction)."""
        self.floor = max(0.0, float(floor))

    def controlled_std(self) -> float:
        """The std the controller acts on (NaN until the window is full)."""
        if len(self.history) < self.window:
            return float("nan")
        s = float(np.std(np.asarray(self.history), ddof=1))
        return math.sqrt(max(s * s - self.floor**2, 0.0))

    def get_lr(self) -> list[float]:
        """Next learning rates: the multiplicative update, clipped to [lr_min, lr_max]."""
        lrs = [g["lr"] for g in self.optimizer.param_groups]
        s = self.controlled_std()
        self.measured = s
        if not math.isfinite(s):
            return lrs
        factor = math.exp(self.gain * (self.target - s) / self.target)
        return [min(max(lr * factor, self.lr_min), self.lr_max) for lr in lrs]


def rolling_std(x: np.ndarray, window: int) -> np.ndarray:
    """Std (ddof=1) over the trailing `window` values; NaN until the window is full."""
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
    """x minus its centred moving average (edges trimmed by window//2 on each side)."""
    x = np.asarray(x, dtype=np.float64)
    k = np.ones(window) / window
    trend = np.convolve(x, k, mode="valid")
    h = window // 2
    return x[h:len(x) - h] - trend


def autocorrelation(x: np.ndarray, max_lag: int) -> np.ndarray:
    """Normalised autocorrelation at lags 0..max_lag."""
    x = np.asarray(x, dtype=np.float64) - np.mean(x)
    d = float(x @ x)
    return np.array([float(x[: len(x) - k] @ x[k:]) / d for k in range(max_lag + 1)])


def spectral_peak(x: np.ndarray) -> tuple[float, float]:
    """(period in steps, peak power / median power) of the periodogram's largest non-zero-frequency peak."""
    from scipy.signal import periodogram
    f, p = periodogram(np.asarray(x, dtype=np.float64))
    f, p = f[1:], p[1:]
    i = int(np.argmax(p))
    return float(1 / f[i]), float(p[i] / np.median(p))


def lr_range_suggestion(lrs: np.ndarray, losses: np.ndarray, smooth: int = 21) -> float:
    """LR at the steepest descent of the smoothed log-loss against log-lr (the LR range test's suggestion)."""
    y = np.convolve(np.log(np.asarray(losses, dtype=np.float64)), np.ones(smooth) / smooth, mode="same")
    lx = np.log(np.asarray(lrs, dtype=np.float64))
    h = smooth // 2
    slope = np.gradient(y[h:-h], lx[h:-h])
    return float(np.asarray(lrs)[h:-h][int(np.argmin(slope))])
