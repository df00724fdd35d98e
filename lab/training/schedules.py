"""Learning-rate schedules: torch's own by name (`make_schedule`), the notes' ConstantVarianceLR controller, and the
LR range test's suggestion rule.

Attributes:
    SCHEDULES: the names `make_schedule` accepts, a tuple of str: "constant", "exp", "step", "cosine",
        "onecycle", "plateau", "constvar".
"""
from __future__ import annotations

import math
from collections import deque

import numpy as np
import torch
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["ConstantVarianceLR", "lr_range_suggestion", "SCHEDULES", "make_schedule"]



class ConstantVarianceLR(LRScheduler):
    """Multiplicative controller that steers the rolling std of log10(loss) towards `target`.

    Call `observe(loss)` with each training loss, then `step()`. Every step after the window is full:
    lr ← clip(lr · exp(gain · (target − s) / target), lr_min, lr_max), where s is the rolling std of log10 loss over
    `window` steps, minus the model's intrinsic part if `floor` is set: s = sqrt(max(std² − floor², 0)).

    Each parameter group is controlled on its own: `observe` takes one loss (shared by every group) or one per group
    (independent replicates trained side by side, lab.training.train_replicates), and `set_floor` one floor or one per
    group.

    Until the window is full (the first `window` observations) the lr stays where it is. After that each step
    multiplies it by exp(gain · (target − s) / target), so it drifts smoothly: with gain 0.01 and s = 2 × target,
    by about 0.99.

    Args:
        optimizer: the torch optimizer whose learning rates are controlled (one or more parameter groups).
        target: the rolling std of log10 loss to steer towards, in decades (0.075: loss noise of about ±19 %).
        window: the number of recent steps in the rolling std, >= 2.
        gain: the controller's gain (log-lr change per step per unit of relative error), > 0.
        lr_min: the smallest lr allowed, > 0.
        lr_max: the largest lr allowed, > lr_min.
        last_epoch: as for every torch LRScheduler (-1: a fresh run).

    Attributes:
        target, window, gain, lr_min, lr_max: the constructor's arguments.
        histories: one deque (maxlen window) of observed log10 losses per parameter group.
        floors: the intrinsic floor of each group (0.0 until `set_floor`).
        measured: the first group's controlled std at the last step (NaN until the window is full).

    Raises:
        ValueError: unless target > 0, window >= 2, gain > 0 and 0 < lr_min < lr_max.

    Example:
        >>> import torch
        >>> from lab.training.schedules import ConstantVarianceLR
        >>> p = torch.zeros(1, requires_grad=True)
        >>> opt = torch.optim.SGD([p], lr=0.1)
        >>> sched = ConstantVarianceLR(opt, target=0.1, window=3)
        >>> for loss in (1.0, 10.0, 1.0):  # log10 losses 0, 1, 0: far noisier than the target
        ...     opt.step(); sched.observe(loss); sched.step()
        >>> round(sched.controlled_std(), 6), round(opt.param_groups[0]["lr"], 6)  # the lr is lowered
        (0.57735, 0.095339)
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
        """Record one training loss (a float or a 0-d tensor), or one per parameter group.

        Call it once per training step, before `step()`. Losses are stored as log10(max(loss, 1e-300)).

        Args:
            loss: a float or 0-d tensor (shared by every group), or a sequence / 1-d tensor of shape (n_groups,),
                any device (copied to the CPU: one sync per call).

        Raises:
            ValueError: when the number of losses is neither 1 nor the number of parameter groups.
        """
        for h, v in zip(self.histories, self._per_group(loss, "observe"), strict=True):
            h.append(math.log10(max(v, 1e-300)))

    def set_floor(self, floor) -> None:
        """The model-intrinsic std of log10 loss to subtract before control (0 disables the correction), one value
        or one per parameter group.

        Typically handed over by `lab.training.VarianceProbe(set_floor=True)` during training.

        Args:
            floor: a float or 0-d tensor (for every group), or a sequence / 1-d tensor of shape (n_groups,);
                negative values are clipped to 0.

        Raises:
            ValueError: when the number of floors is neither 1 nor the number of parameter groups.
        """
        self.floors = [max(0.0, v) for v in self._per_group(floor, "set_floor")]

    def controlled_std(self, group: int = 0) -> float:
        """The std the controller acts on for one parameter group (NaN until the window is full).

        Args:
            group: the parameter group's index.

        Returns:
            sqrt(max(std² − floor², 0)) with std the ddof=1 std of the group's window of log10 losses, a float.
        """
        h = self.histories[group]
        if len(h) < self.window:
            return float("nan")
        s = float(np.std(np.asarray(h), ddof=1))
        return math.sqrt(max(s * s - self.floors[group] ** 2, 0.0))

    def get_lr(self) -> list[float]:
        """Next learning rates: the multiplicative update of each group, clipped to [lr_min, lr_max].

        Called by torch's `step()`; not meant to be called directly. Also sets `measured`.

        Returns:
            One lr per parameter group (unchanged for a group whose window is not full yet).
        """
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


def lr_range_suggestion(lrs: np.ndarray, losses: np.ndarray, smooth: int = 21, diverge: float = 5.0,
                        beta: float = 0.98) -> float:
    """LR at the steepest descent of the smoothed log-loss against log-lr (the LR range test's suggestion).

    As torch-lr-finder does, the sweep is cut where the exponentially smoothed loss (factor `beta`, bias-corrected)
    first exceeds `diverge` × its best value (after `smooth` warm-up steps) or stops being finite; the steepest
    descent is then found on the centred `smooth`-step moving average of log loss.

    Args:
        lrs: the sweep's learning rates, shape (n,), positive and increasing (e.g. `RangeTest.lr`).
        losses: the training loss at each lr, shape (n,); may turn inf/NaN once the sweep diverges.
        smooth: the moving-average width (>= 2), also the number of warm-up steps before the divergence check.
        diverge: the factor over the best smoothed loss at which the sweep is cut.
        beta: the exponential smoothing factor of the divergence check.

    Returns:
        The suggested lr, one of the entries of lrs, a float.

    Raises:
        ValueError: when the sweep diverges before 2 × smooth steps (too little left to find a descent).

    Example:
        >>> import numpy as np
        >>> from lab.training.schedules import lr_range_suggestion
        >>> lrs = np.logspace(-5, 0, 200)
        >>> losses = 1 / (1 + (lrs / 1e-3) ** 2) + 0.01 + (lrs > 0.1) * (lrs / 0.1) ** 4  # drop, floor, blow-up
        >>> bool(1e-3 < lr_range_suggestion(lrs, losses, smooth=9) < 1e-2)
        True
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

    Args:
        name: one of SCHEDULES.
        optimizer: the torch optimizer to schedule; its first group's current lr is the starting (or peak) lr.
        steps: the length of the run in scheduler steps (one per training step).
        lr_end: the final lr of "exp" (default: lr / 100) and "cosine" (default: 0); ignored by the others.
        **kw: for "constvar", ConstantVarianceLR's keyword arguments (target, window, gain, lr_min, lr_max); for
            "plateau", `patience` (default 5); ignored by the others.

    Returns:
        The scheduler; call its `step()` once per training step (ReduceLROnPlateau: `step(metric)`).

    Raises:
        ValueError: for a name not in SCHEDULES.

    Example:
        >>> import torch
        >>> from lab.training.schedules import make_schedule
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        >>> sched = make_schedule("exp", opt, steps=10, lr_end=1e-3)
        >>> for _ in range(9):
        ...     opt.step(); sched.step()
        >>> type(sched).__name__, round(opt.param_groups[0]["lr"], 6)
        ('ExponentialLR', 0.001)
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
