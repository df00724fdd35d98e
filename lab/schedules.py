"""Learning-rate schedules from the seed-002 notes: a constant-variance controller, an LR range test, and the
statistics of a loss curve (rolling std, autocorrelation, spectrum)."""
from __future__ import annotations

import math
from collections import deque

import numpy as np
import torch
from torch.optim.lr_scheduler import LRScheduler

from lab.checks import require_finite


class ConstantVarianceLR(LRScheduler):
    """Multiplicative controller that steers the rolling std of log10(loss) towards `target`.

    Call `observe(loss)` with each training loss, then `step()`. Every step after the window is full:
    lr ← clip(lr · exp(gain · (target − s) / target), lr_min, lr_max), where s is the rolling std of log10 loss over
    `window` steps, minus the model's intrinsic part if `floor` is set: s = sqrt(max(std² − floor², 0)).

    Each parameter group is controlled on its own: `observe` takes one loss (shared by every group) or one per group
    (independent replicates trained side by side, lab.training.train_replicates), and `set_floor` one floor or one per
    group.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, target: float = 0.075, window: int = 500, gain: float = 0.01,
                 lr_min: float = 1e-6, lr_max: float = 1.0, last_epoch: int = -1):
        if target <= 0 or window < 2 or gain <= 0 or not 0 < lr_min < lr_max:
            raise ValueError("ConstantVarianceLR: need target > 0, window >= 2, gain > 0 and 0 < lr_min < lr_max; got "
                             f"target={target}, window={window}, gain={gain}, lr_min={lr_min}, lr_max={lr_max}")
        self.target, self.window, self.gain, self.lr_min, self.lr_max = target, window, gain, lr_min, lr_max
        n = len(optimizer.param_groups)
        self.histories: list[deque[float]] = [deque(maxlen=window) for _ in range(n)]
        self.floors = [0.0] * n
        self.measured = float("nan")
        super().__init__(optimizer, last_epoch)

    @property
    def history(self) -> deque[float]:
        """The first group's rolling window of log10 losses."""
        return self.histories[0]

    @property
    def floor(self) -> float:
        """The first group's intrinsic floor."""
        return self.floors[0]

    def _per_group(self, value, name: str) -> list[float]:
        arr = value.detach().double().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value, float)
        vals = [float(v) for v in arr.reshape(-1)]
        if len(vals) == 1:
            return vals * len(self.histories)
        if len(vals) != len(self.histories):
            raise ValueError(f"ConstantVarianceLR.{name}: got {len(vals)} values for {len(self.histories)} parameter "
                             "groups; give one value or one per group")
        return vals

    def observe(self, loss: float | torch.Tensor) -> None:
        """Record one training loss (a float or a 0-d tensor), or one per parameter group."""
        for h, v in zip(self.histories, self._per_group(loss, "observe"), strict=True):
            h.append(math.log10(max(v, 1e-300)))

    def set_floor(self, floor) -> None:
        """The model-intrinsic std of log10 loss to subtract before control (0 disables the correction), one value
        or one per parameter group."""
        self.floors = [max(0.0, v) for v in self._per_group(floor, "set_floor")]

    def controlled_std(self, group: int = 0) -> float:
        """The std the controller acts on for one parameter group (NaN until the window is full)."""
        h = self.histories[group]
        if len(h) < self.window:
            return float("nan")
        s = float(np.std(np.asarray(h), ddof=1))
        return math.sqrt(max(s * s - self.floors[group] ** 2, 0.0))

    def get_lr(self) -> list[float]:
        """Next learning rates: the multiplicative update of each group, clipped to [lr_min, lr_max]."""
        out = []
        for gi, g in enumerate(self.optimizer.param_groups):
            s = self.controlled_std(gi)
            if gi == 0:
                self.measured = s
            if not math.isfinite(s):
                out.append(g["lr"])
                continue
            factor = math.exp(self.gain * (self.target - s) / self.target)
            out.append(min(max(g["lr"] * factor, self.lr_min), self.lr_max))
        return out


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


def lr_range_suggestion(lrs: np.ndarray, losses: np.ndarray, smooth: int = 21, diverge: float = 5.0,
                        beta: float = 0.98) -> float:
    """LR at the steepest descent of the smoothed log-loss against log-lr (the LR range test's suggestion).

    As torch-lr-finder does, the sweep is cut where the exponentially smoothed loss (factor `beta`, bias-corrected)
    first exceeds `diverge` × its best value (after `smooth` warm-up steps) or stops being finite; the steepest
    descent is then found on the centred `smooth`-step moving average of log loss.
    """
    lrs = np.asarray(lrs, dtype=np.float64)
    losses = np.asarray(losses, dtype=np.float64)
    ema, avg = np.empty(len(losses)), 0.0
    for i, v in enumerate(losses):
        avg = beta * avg + (1 - beta) * v
        ema[i] = avg / (1 - beta ** (i + 1))
    finite = np.isfinite(ema)
    warm = np.arange(len(ema)) >= smooth        # the first `smooth` steps only warm the average up
    best = np.minimum.accumulate(np.where(finite & warm, ema, np.inf))
    bad = ~finite | (warm & (ema > diverge * best))
    end = int(np.argmax(bad)) if bad.any() else len(losses)
    if end < 2 * smooth:
        raise ValueError(f"lr_range_suggestion: the sweep diverged after {end} steps; lower lr_min or smooth={smooth}")
    lrs, losses = lrs[:end], losses[:end]
    y = np.convolve(np.log(losses), np.ones(smooth) / smooth, mode="same")
    lx = np.log(lrs)
    h = smooth // 2
    slope = np.gradient(y[h:-h], lx[h:-h])
    return float(lrs[h:-h][int(np.argmin(slope))])


SCHEDULES = ("constant", "exp", "step", "cosine", "onecycle", "plateau", "constvar")


def make_schedule(name: str, optimizer: torch.optim.Optimizer, steps: int, lr_end: float | None = None,
                  **kw) -> LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau:
    """torch's own scheduler for `name`, configured for a run of `steps` from the optimizer's current lr.

    constant · exp (ExponentialLR to lr_end) · step (StepLR, ×0.1 at 1/3 and 2/3 of the run) · cosine
    (CosineAnnealingLR to lr_end or 0) · onecycle (OneCycleLR peaking at the current lr) · plateau (ReduceLROnPlateau,
    factor 0.5; step it with a metric) · constvar (ConstantVarianceLR; keyword arguments pass through).
    """
    sch = torch.optim.lr_scheduler
    lr0 = optimizer.param_groups[0]["lr"]
    if name == "constant":
        return sch.ConstantLR(optimizer, factor=1.0, total_iters=0)
    if name == "exp":
        end = lr_end if lr_end is not None else lr0 / 100
        return sch.ExponentialLR(optimizer, gamma=(end / lr0) ** (1 / max(steps - 1, 1)))
    if name == "step":
        return sch.StepLR(optimizer, step_size=max(steps // 3, 1), gamma=0.1)
    if name == "cosine":
        return sch.CosineAnnealingLR(optimizer, T_max=steps, eta_min=lr_end or 0.0)
    if name == "onecycle":
        return sch.OneCycleLR(optimizer, max_lr=lr0, total_steps=steps)
    if name == "plateau":
        return sch.ReduceLROnPlateau(optimizer, factor=0.5, patience=kw.get("patience", 5))
    if name == "constvar":
        return ConstantVarianceLR(optimizer, **kw)
    raise ValueError(f"schedule {name!r} is not allowed: expected one of {SCHEDULES}")


def intrinsic_std(errors: torch.Tensor, batch: int) -> float:
    """The model-intrinsic std of log10(batch-mean loss): per-sample errors of K·batch fresh samples at a frozen θ,
    split into K batches; std (ddof=1) of log10 of their means. What the loss curve would show with lr = 0."""
    k = errors.numel() // batch
    if k < 2:
        raise ValueError(f"intrinsic_std: need at least 2 batches of {batch} errors, got {errors.numel()}")
    means = errors.reshape(-1)[: k * batch].reshape(k, batch).double().mean(1)
    return float(torch.log10(means).std())


def resampled_std(errors: torch.Tensor, batch: int, n: int = 200, seed: int = 0) -> float:
    """Bootstrap estimate of intrinsic_std from one sample of errors: n batches drawn with replacement."""
    gen = torch.Generator(device=errors.device).manual_seed(seed)
    idx = torch.randint(errors.numel(), (n, batch), generator=gen, device=errors.device)
    return float(torch.log10(errors.reshape(-1)[idx].double().mean(1)).std())


def log_error_spread(errors: torch.Tensor) -> float:
    """The notes' "model variance": std of log10 of the per-sample squared errors (zeros dropped)."""
    e = errors.reshape(-1).double()
    return float(torch.log10(e[e > 0]).std())


def ringing_period(x: np.ndarray, detrend_window: int = 15, max_lag: int = 60) -> tuple[int, float]:
    """(lag, height) of the first autocorrelation peak of the detrended series after its first negative lobe:
    the period of the oscillation that rides on the trend. (0, 0.0) when there is none."""
    ac = autocorrelation(detrend(x, detrend_window), max_lag)
    neg = np.flatnonzero(ac < 0)
    if len(neg) == 0:
        return 0, 0.0
    for k in range(max(int(neg[0]), 1), max_lag):
        if ac[k] > 0 and ac[k] >= ac[k - 1] and ac[k] >= ac[k + 1]:
            return k, float(ac[k])
    return 0, 0.0


def spike_count(log_loss: np.ndarray, rise: float = 0.3) -> int:
    """Number of loss spikes: onsets where log10 loss rises more than `rise` above its running minimum."""
    x = np.asarray(log_loss, dtype=np.float64)
    if x.size == 0:
        return 0
    require_finite(x, "the log losses", "lab.schedules.spike_count", "a run that diverged has no spike count")
    above = x - np.minimum.accumulate(x) > rise
    return int(np.sum(above[1:] & ~above[:-1]) + above[0])


def time_to_target(steps: np.ndarray, loss: np.ndarray, target: float) -> float:
    """First step at which `loss` (evaluated at `steps`) is ≤ target; inf if never."""
    hit = np.flatnonzero(np.asarray(loss) <= target)
    return float(np.asarray(steps)[hit[0]]) if len(hit) else math.inf
