"""Training on the flat parameter vector with torch optimizers (the caller's model is never touched): full-batch
`train`, streaming `train_stream`, R replicates side by side `train_replicates`, and the LR range test.

θ is always a flat 1-d tensor of shape (P,) (see `lab.flat.flatten`); the loops clone it, so the caller's tensor
is never modified. Two ways to give the objective:

- `train` takes `loss_fn(θ) -> scalar tensor` (e.g. `lab.flat.make_loss_fn`): full-batch training.
- `train_stream`, `train_replicates` and `lr_range_test` take `forward(θ, x) -> predictions` (e.g. from
  `lab.flat.make_forward`) and `target_fn(x) -> targets of shape (n,)`, and minimise the mean squared error on
  batches x of shape (batch, dim).

Attributes:
    OPTIMIZERS: the optimizer names every loop accepts (`opt=`) → the torch.optim class: "sgd", "adam", "rmsprop".
    DIVERGED: the divergence threshold, 1e6: a loss more than DIVERGED × its starting value gives a
        DivergenceWarning (a NaN or inf loss raises NonFiniteError instead).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from lab._progress import progress_bar
from lab.checks import NonFiniteError, require_finite

__all__ = ["OPTIMIZERS", "DIVERGED", "DivergenceWarning", "History", "train", "StreamRun", "train_stream",
           "train_replicates", "RangeTest", "lr_range_test", "lr_range_test_model", "squared_errors"]


OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop}


DIVERGED = 1e6  # a loss this many times its starting value is reported as divergence (a DivergenceWarning)


class DivergenceWarning(RuntimeWarning):
    """Training's loss grew by more than DIVERGED× its starting value: the learning rate is probably too large.

    Issued at most once per run (a RuntimeWarning subclass: filter it with the `warnings` module); the run goes on
    and returns its results.

    Example:
        >>> import torch, warnings
        >>> from lab.training.loops import DivergenceWarning, train
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     _ = train(lambda t: (t ** 2).sum(), torch.ones(1), steps=4, opt="sgd", lr=10.0, progress=False)
        >>> [w.category is DivergenceWarning for w in caught]
        [True]
    """


def _diverging(where: str, loss: float, first: float, step: int, lr: float) -> None:
    """Warn once that a run diverges (loss ≫ its starting value), naming the step and the learning rate."""
    warnings.warn(f"{where}: the loss grew from {first:.3g} to {loss:.3g} by step {step} (lr={lr:g}): the run "
                  f"diverges; try a smaller learning rate", DivergenceWarning, stacklevel=3)


@dataclass
class History:
    """Loss before each step, the length ‖Δθ‖ of each step, the last step Δθ itself, and the snapshots
    [(step, θ)] kept every `snapshot_every` steps (θ before that step; the final θ last).

    Returned by `train`.

    Attributes:
        loss: loss_fn(θ) before each step, shape (steps,), float64 numpy.
        step_norm: the Euclidean length of each step's update, shape (steps,), float64 numpy.
        last_step: the last update θ_steps − θ_{steps−1}, shape (P,), θ's dtype and device; None after 0 steps.
        snapshots: [(step, θ)] with θ of shape (P,) (detached copies); empty unless snapshot_every > 0.

    Example:
        >>> import torch
        >>> from lab.training.loops import train
        >>> _, hist = train(lambda t: (t ** 2).sum(), torch.ones(2), steps=4, lr=0.1, progress=False, snapshot_every=2)
        >>> hist.loss.shape, hist.step_norm.shape, hist.last_step.shape, [step for step, _ in hist.snapshots]
        ((4,), (4,), torch.Size([2]), [0, 2, 4])
    """

    loss: np.ndarray
    step_norm: np.ndarray
    last_step: torch.Tensor | None = None
    snapshots: list[tuple[int, torch.Tensor]] = field(default_factory=list)


def train(loss_fn: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor, steps: int, opt: str = "adam",
          lr: float = 1e-3, progress: bool = True, snapshot_every: int = 0,
          callback: Callable[[int, torch.Tensor, torch.optim.Optimizer, object], None] | None = None,
          callback_every: int = 0, **opt_kwargs) -> tuple[torch.Tensor, History]:
    """Full-batch training of loss_fn from theta; returns the final flat vector (detached) and the history.

    One optimizer for the whole run (its moments are never restarted). `snapshot_every` keeps θ every that many
    steps (and at the end) in History.snapshots; `callback(step, θ, optimizer, None)` runs before step 0, after
    every `callback_every` steps and at the end (measurements such as lab.training.SharpnessProbe).

    A non-finite θ or loss raises NonFiniteError (naming the step and lr); a loss that grows more than DIVERGED×
    its starting value gives one DivergenceWarning.

    Args:
        loss_fn: the objective, θ (P,) ↦ a 0-d tensor differentiable in θ (e.g. `lab.flat.make_loss_fn`).
        theta: the starting point, flat parameters of shape (P,), any floating dtype and device (loss_fn's); it is
            cloned, never modified.
        steps: the number of optimizer steps.
        opt: a key of OPTIMIZERS.
        lr: the learning rate (constant: `train` has no scheduler).
        progress: show a progress bar.
        snapshot_every: keep a copy of θ every that many steps (0: none).
        callback: called as callback(step, θ, optimizer, None) (see `lab.training.Callback`).
        callback_every: call the callback every that many steps (0: never, even if a callback is given).
        **opt_kwargs: passed to the optimizer (momentum, betas, weight_decay, ...).

    Returns:
        (θ, history): the final parameters, shape (P,), theta's dtype and device, detached; and a `History`.

    Raises:
        ValueError: for an unknown opt, or snapshot_every / callback_every that is not an integer >= 0.
        NonFiniteError: when the starting θ, a loss or the final θ is NaN or inf.

    Example:
        >>> import torch
        >>> from lab.training.loops import train
        >>> theta, hist = train(lambda t: ((t - 1) ** 2).sum(), torch.zeros(3), steps=50, opt="sgd", lr=0.1,
        ...                     progress=False)
        >>> theta.shape, hist.loss.shape, round(float(theta.mean()), 3), bool(hist.loss[-1] < hist.loss[0])
        (torch.Size([3]), (50,), 1.0, True)
    """
    if opt not in OPTIMIZERS:
        raise ValueError(f"parameter 'opt' = {opt!r} is not allowed: expected one of {tuple(OPTIMIZERS)}")
    for name, v in (("snapshot_every", snapshot_every), ("callback_every", callback_every)):
        if not isinstance(v, int) or v < 0:
            raise ValueError(f"parameter '{name}' = {v!r} is not allowed: expected an integer >= 0")
    require_finite(theta, "the starting θ", "lab.training.train")
    p = theta.detach().clone().requires_grad_(True)
    o = OPTIMIZERS[opt]([p], lr=lr, **opt_kwargs)
    losses, norms, last, snaps = [], [], None, []
    warned = False
    for i in progress_bar(range(steps), desc=f"train ({opt}, lr={lr:g})", disable=not progress, leave=False):
        if snapshot_every and i % snapshot_every == 0:
            snaps.append((i, p.detach().clone()))
        if callback is not None and callback_every and i % callback_every == 0:
            callback(i, p.detach(), o, None)
        o.zero_grad()
        loss = loss_fn(p)
        loss.backward()
        before = p.detach().clone()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise NonFiniteError(f"lab.training.train: the loss is {value} at step {i} ({opt}, lr={lr:g}"
                                 f"{'' if i == 0 else f', after starting at {losses[0]:.3g}'}): "
                                 + ("the starting point's loss is not finite" if i == 0 else
                                    "the run diverged; try a smaller learning rate"))
        if not warned and losses and abs(value) > DIVERGED * max(abs(losses[0]), 1e-300):
            warned = True
            _diverging("lab.training.train", value, losses[0], i, lr)
        o.step()
        losses.append(value)
        last = p.detach() - before
        norms.append(float(last.norm()))
    require_finite(p.detach(), f"θ after {steps} steps ({opt}, lr={lr:g})", "lab.training.train",
                   "the last step diverged; try a smaller learning rate")
    if snapshot_every:
        snaps.append((steps, p.detach().clone()))
    if callback is not None and callback_every:
        callback(steps, p.detach(), o, None)
    return p.detach(), History(np.array(losses), np.array(norms), last, snaps)


@dataclass
class StreamRun:
    """A training run on a stream of batches: per-step loss and lr (kept on the device until the end), held-out loss.

    Returned by `train_stream` (one) and `train_replicates` (one per replicate).

    Attributes:
        loss: the training loss of each step's batch, before that step's update, shape (steps,), float64 numpy.
        lr: the learning rate each step was taken with, shape (steps,), float64 numpy.
        held_steps: the steps after whose update the held-out loss was measured, shape (n_eval,), int numpy
            (every eval_every-th step and the last; empty without x_held).
        held_loss: the held-out MSE at those steps, shape (n_eval,), float64 numpy.
        theta: the final parameters, shape (P,), the starting θ's dtype and device, detached.

    Example:
        >>> import torch
        >>> from lab.training.loops import train_stream
        >>> w = torch.tensor([1.0, -2.0, 0.5])
        >>> x_held = torch.randn(64, 3, generator=torch.Generator().manual_seed(1))
        >>> run = train_stream(lambda th, x: x @ th, torch.zeros(3), lambda x: x @ w, steps=30, batch=16, lr=0.1,
        ...                    x_held=x_held, eval_every=10)
        >>> run.loss.shape, run.lr.shape, run.held_steps.tolist(), run.held_loss.shape, run.theta.shape
        ((30,), (30,), [0, 10, 20, 29], (4,), torch.Size([3]))
    """

    loss: np.ndarray
    lr: np.ndarray
    held_steps: np.ndarray
    held_loss: np.ndarray
    theta: torch.Tensor


def train_stream(forward, theta: torch.Tensor, target_fn, steps: int, batch: int = 1000, opt: str = "adam",
                 lr: float = 1e-3, schedule=None, fixed_x: torch.Tensor | None = None,
                 x_held: torch.Tensor | None = None, eval_every: int = 100, seed: int = 0, progress: bool = False,
                 opt_kwargs: dict | None = None, observe: bool = False, plateau_every: int = 0,
                 callback: Callable[[int, torch.Tensor, torch.optim.Optimizer, object], None] | None = None,
                 callback_every: int = 0, allow_nonfinite: bool = False) -> StreamRun:
    """MSE training of forward(θ, x) against target_fn(x) on fresh N(0, I) batches (or the fixed set `fixed_x`, used
    whole every step). `schedule(optimizer)` builds an LR scheduler; losses stay on the device (no per-step sync)
    unless the scheduler must see them (`observe` for ConstantVarianceLR, `plateau_every` for ReduceLROnPlateau).
    `callback(step, θ, optimizer, scheduler)` runs before step 0 and after every `callback_every` steps (measurements
    such as sharpness, or a scheduler's intrinsic-variance floor); θ is a detached view, not to be modified.

    A run that ends with a non-finite θ or loss raises NonFiniteError (naming the first bad step) unless
    `allow_nonfinite` (an LR range test runs into divergence on purpose); a loss that grows more than DIVERGED× its
    starting value gives one DivergenceWarning.

    Args:
        forward: the model as a function forward(θ, x) of flat parameters θ (P,) and inputs x (n, dim), returning
            predictions of shape (n,) or (n, 1) (e.g. `lab.flat.make_forward`, or any torch function).
        theta: the starting point, shape (P,), any floating dtype and device; batches are drawn in its dtype and on
            its device. Cloned, never modified.
        target_fn: the regression target, x (n, dim) ↦ y (n,) (e.g. `lab.data.ratio_target`).
        steps: the number of optimizer steps.
        batch: fresh samples per step (ignored with fixed_x).
        opt: a key of OPTIMIZERS.
        lr: the starting learning rate.
        schedule: None (constant lr) or a function optimizer ↦ scheduler, e.g.
            ``lambda o: make_schedule("cosine", o, steps)``; stepped once per step unless plateau_every.
        fixed_x: a fixed training set, shape (n, dim), θ's dtype and device, used whole every step instead of fresh
            N(0, I) batches (which have dim = 3).
        x_held: held-out inputs, shape (n_held, dim), θ's dtype and device; their MSE is measured every eval_every
            steps and after the last.
        eval_every: the held-out evaluation interval, in steps.
        seed: seed of the batch generator (on θ's device): the same seed draws the same stream.
        progress: show a progress bar.
        opt_kwargs: keyword arguments for the optimizer (momentum, betas, ...).
        observe: call schedule.observe(loss) every step (needed by ConstantVarianceLR; costs one device sync per
            step).
        plateau_every: for ReduceLROnPlateau: step it every that many steps with the mean loss over them (0: call
            step() without a metric every step).
        callback: called as callback(step, θ, optimizer, scheduler) (see `lab.training.Callback`).
        callback_every: call the callback every that many steps, and after the last (0: never).
        allow_nonfinite: return a run that went NaN/inf instead of raising.

    Returns:
        A `StreamRun`.

    Raises:
        ValueError: for an unknown opt.
        NonFiniteError: when the starting θ is not finite, or (unless allow_nonfinite) a loss or the final θ is.

    Example:
        >>> import torch
        >>> from lab.training.loops import train_stream
        >>> w = torch.tensor([1.0, -2.0, 0.5])
        >>> run = train_stream(lambda th, x: x @ th, torch.zeros(3), lambda x: x @ w, steps=50, batch=64, lr=0.1)
        >>> run.loss.shape, run.theta.shape, bool(run.loss[-5:].mean() < 0.1 * run.loss[:5].mean())
        ((50,), torch.Size([3]), True)
    """
    if opt not in OPTIMIZERS:
        raise ValueError(f"parameter 'opt' = {opt!r} is not allowed: expected one of {tuple(OPTIMIZERS)}")
    require_finite(theta, "the starting θ", "lab.training.train_stream")
    dev = theta.device
    p = theta.detach().clone().requires_grad_(True)
    o = OPTIMIZERS[opt]([p], lr=lr, **(opt_kwargs or {}))
    sched = schedule(o) if schedule is not None else None
    gen = torch.Generator(device=dev).manual_seed(seed)
    dim = fixed_x.shape[1] if fixed_x is not None else 3
    losses = torch.empty(steps, dtype=theta.dtype, device=dev)
    lrs = torch.empty(steps, dtype=torch.float64)
    held_steps, held = [], []
    y_fixed = target_fn(fixed_x) if fixed_x is not None else None
    y_held = target_fn(x_held) if x_held is not None else None
    for i in progress_bar(range(steps), desc=f"train ({opt})", disable=not progress, leave=False):
        if callback is not None and callback_every and i % callback_every == 0:
            callback(i, p.detach(), o, sched)
        if fixed_x is None:
            x = torch.randn(batch, dim, generator=gen, device=dev, dtype=theta.dtype)
            y = target_fn(x)
        else:
            x, y = fixed_x, y_fixed
        o.zero_grad(set_to_none=True)
        loss = ((forward(p, x).reshape(-1) - y) ** 2).mean()
        loss.backward()
        o.step()
        losses[i] = loss.detach()
        lrs[i] = o.param_groups[0]["lr"]
        if sched is not None:
            if observe:
                sched.observe(loss.detach())
            if plateau_every:
                if (i + 1) % plateau_every == 0:
                    sched.step(float(losses[i + 1 - plateau_every:i + 1].mean()))
            else:
                sched.step()
        if x_held is not None and (i % eval_every == 0 or i == steps - 1):
            with torch.no_grad():
                held.append(((forward(p.detach(), x_held).reshape(-1) - y_held) ** 2).mean())
            held_steps.append(i)
    if callback is not None and callback_every:
        callback(steps, p.detach(), o, sched)
    held_arr = torch.stack(held).double().cpu().numpy() if held else np.array([])
    loss_np = losses.double().cpu().numpy()
    if not allow_nonfinite:
        _check_run("lab.training.train_stream", loss_np[:, None], lrs.numpy()[:, None], p.detach()[None], opt)
    return StreamRun(loss_np, lrs.numpy(), np.array(held_steps), held_arr, p.detach())


def _check_run(where: str, losses: np.ndarray, lrs: np.ndarray, thetas: torch.Tensor, opt: str) -> None:
    """Raise NonFiniteError when any replicate (column) ended with a non-finite θ or has a non-finite loss; warn
    once when one diverged by more than DIVERGED× its starting loss."""
    for r in range(losses.shape[1]):
        bad = np.flatnonzero(~np.isfinite(losses[:, r]))
        rep = f" (replicate {r})" if losses.shape[1] > 1 else ""
        if len(bad) or not bool(torch.isfinite(thetas[r]).all()):
            i = int(bad[0]) if len(bad) else len(losses) - 1
            raise NonFiniteError(f"{where}: the run{rep} went non-finite at step {i} ({opt}, lr={lrs[i, r]:g}, "
                                 f"loss {losses[i, r]}): it diverged; try a smaller learning rate")
        if len(losses) and abs(losses[:, r]).max() > DIVERGED * max(abs(losses[0, r]), 1e-300):
            i = int(np.argmax(abs(losses[:, r]) > DIVERGED * max(abs(losses[0, r]), 1e-300)))
            _diverging(where + rep, float(losses[i, r]), float(losses[0, r]), i, float(lrs[i, r]))
            return


def train_replicates(forward, thetas: torch.Tensor, target_fn, steps: int, seeds: list[int], batch: int = 1000,
                     opt: str = "adam", lr: float = 1e-3, schedule=None, fixed_x: torch.Tensor | None = None,
                     x_held: torch.Tensor | None = None, eval_every: int = 100, progress: bool = False,
                     opt_kwargs: dict | None = None, observe: bool = False,
                     callback: Callable[[int, torch.Tensor, torch.optim.Optimizer, object], None] | None = None,
                     callback_every: int = 0) -> list[StreamRun]:
    """R independent runs of `train_stream` side by side, vmapped: replicate r starts from thetas[r], draws its
    batches from its own generator seeded seeds[r] (the same stream train_stream(seed=seeds[r]) would draw), and has
    its own parameter group — so its own optimizer state and learning rate (a ConstantVarianceLR controls each group
    on its own). `fixed_x` and `x_held` are (R, n, dim) per replicate or (n, dim) shared. `callback` gets the (R, P)
    parameters. ReduceLROnPlateau is not offered: it steps every group from one shared metric.

    Returns one StreamRun per replicate. On a CPU the batched step costs about 2× one run's for 5 replicates.

    Args:
        forward: forward(θ, x) as for `train_stream`, with θ (P,) and x (n, dim); it is vmapped over replicates,
            so it must be a pure torch function (no .item(), no in-place changes of its inputs, no data-dependent
            Python control flow).
        thetas: the R starting points, shape (R, P), any floating dtype and device. Cloned, never modified.
        target_fn: x (n, dim) ↦ y (n,), as for `train_stream`.
        steps: the number of optimizer steps.
        seeds: one batch-generator seed per replicate, a list of R ints.
        batch: fresh samples per step and replicate (ignored with fixed_x).
        opt: a key of OPTIMIZERS.
        lr: the starting learning rate of every replicate.
        schedule: None or a function optimizer ↦ scheduler; the optimizer has R parameter groups, one per
            replicate. Not ReduceLROnPlateau.
        fixed_x: fixed training inputs, (R, n, dim) per replicate or (n, dim) shared.
        x_held: held-out inputs, (R, n_held, dim) per replicate or (n_held, dim) shared.
        eval_every: the held-out evaluation interval, in steps.
        progress: show a progress bar.
        opt_kwargs: keyword arguments for the optimizer.
        observe: call schedule.observe(losses) every step with the (R,) per-replicate losses.
        callback: called as callback(step, θs, optimizer, scheduler) with θs of shape (R, P).
        callback_every: call the callback every that many steps, and after the last (0: never).

    Returns:
        A list of R `StreamRun`s, replicate r's at index r.

    Raises:
        ValueError: for an unknown opt, thetas not of shape (R, P) with R = len(seeds), or a ReduceLROnPlateau
            schedule.
        NonFiniteError: when a starting θ, a replicate's loss or final θ is NaN or inf.

    Example:
        >>> import torch
        >>> from lab.training.loops import train_replicates
        >>> w = torch.tensor([1.0, -2.0, 0.5])
        >>> runs = train_replicates(lambda th, x: x @ th, torch.zeros(2, 3), lambda x: x @ w, steps=20, seeds=[0, 1],
        ...                         batch=16, lr=0.1)
        >>> len(runs), runs[0].loss.shape, runs[1].theta.shape
        (2, (20,), torch.Size([3]))
    """
    from torch.func import vmap

    if opt not in OPTIMIZERS:
        raise ValueError(f"parameter 'opt' = {opt!r} is not allowed: expected one of {tuple(OPTIMIZERS)}")
    if thetas.ndim != 2 or len(seeds) != len(thetas):
        raise ValueError(f"parameters 'thetas' {tuple(thetas.shape)} and 'seeds' ({len(seeds)}): expected thetas of "
                         "shape (replicates, parameters) and one seed per replicate")
    require_finite(thetas, "the starting θs", "lab.training.train_replicates")
    n_rep, dev = len(thetas), thetas.device
    leaves = [t.detach().clone().requires_grad_(True) for t in thetas]
    o = OPTIMIZERS[opt]([{"params": [leaf]} for leaf in leaves], lr=lr, **(opt_kwargs or {}))
    sched = schedule(o) if schedule is not None else None
    if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
        raise ValueError("parameter 'schedule': ReduceLROnPlateau steps every replicate from one metric; train "
                         "replicates one at a time with train_stream for it")
    gens = [torch.Generator(device=dev).manual_seed(int(sd)) for sd in seeds]

    def per_rep(x: torch.Tensor | None) -> torch.Tensor | None:
        if x is None:
            return None
        return x if x.ndim == 3 else x[None].expand(n_rep, *x.shape)

    fx, xh = per_rep(fixed_x), per_rep(x_held)
    dim = fx.shape[2] if fx is not None else 3
    y_fixed = target_fn(fx.reshape(-1, dim)).reshape(n_rep, -1) if fx is not None else None
    y_held = target_fn(xh.reshape(-1, dim)).reshape(n_rep, -1) if xh is not None else None
    f_all = vmap(forward)
    losses = torch.empty(steps, n_rep, dtype=thetas.dtype, device=dev)
    lrs = torch.empty(steps, n_rep, dtype=torch.float64)
    held_steps, held = [], []
    for i in progress_bar(range(steps), desc=f"train {n_rep} replicates ({opt})", disable=not progress, leave=False):
        if callback is not None and callback_every and i % callback_every == 0:
            callback(i, torch.stack([leaf.detach() for leaf in leaves]), o, sched)
        if fx is None:
            x = torch.stack([torch.randn(batch, dim, generator=g, device=dev, dtype=thetas.dtype) for g in gens])
            y = target_fn(x.reshape(-1, dim)).reshape(n_rep, batch)
        else:
            x, y = fx, y_fixed
        o.zero_grad(set_to_none=True)
        loss = ((f_all(torch.stack(leaves), x).reshape(n_rep, -1) - y) ** 2).mean(1)
        loss.sum().backward()                     # each replicate's gradient is its own: the runs stay independent
        o.step()
        losses[i] = loss.detach()
        lrs[i] = torch.tensor([g["lr"] for g in o.param_groups], dtype=torch.float64)
        if sched is not None:
            if observe:
                sched.observe(loss.detach())
            sched.step()
        if xh is not None and (i % eval_every == 0 or i == steps - 1):
            with torch.no_grad():
                held.append(((f_all(torch.stack(leaves).detach(), xh).reshape(n_rep, -1) - y_held) ** 2).mean(1))
            held_steps.append(i)
    if callback is not None and callback_every:
        callback(steps, torch.stack([leaf.detach() for leaf in leaves]), o, sched)
    loss_np = losses.double().cpu().numpy()
    held_np = torch.stack(held).double().cpu().numpy() if held else np.zeros((0, n_rep))
    _check_run("lab.training.train_replicates", loss_np, lrs.numpy(), torch.stack([leaf.detach() for leaf in leaves]),
               opt)
    return [StreamRun(loss_np[:, r], lrs[:, r].numpy(), np.array(held_steps), held_np[:, r], leaves[r].detach())
            for r in range(n_rep)]


@dataclass
class RangeTest:
    """An LR range test: the lr and training loss of each step, and the suggested lr.

    Returned by `lr_range_test`.

    Attributes:
        lr: the learning rate of each step, exponentially increasing, shape (steps,), float64 numpy.
        loss: the training loss of each step, shape (steps,), float64 numpy; may be inf/NaN after divergence.
        suggestion: the suggested learning rate (`lr_range_suggestion`), one of the entries of lr.

    Example:
        >>> import torch
        >>> from lab.training.loops import lr_range_test
        >>> w = torch.tensor([1.0, -2.0, 0.5])
        >>> rt = lr_range_test(lambda th, x: x @ th, torch.zeros(3), lambda x: x @ w, steps=60, batch=16, smooth=5)
        >>> rt.lr.shape, rt.loss.shape, bool(rt.suggestion in rt.lr)
        ((60,), (60,), True)
    """

    lr: np.ndarray
    loss: np.ndarray
    suggestion: float


def lr_range_test(forward, theta: torch.Tensor, target_fn, lr_min: float = 1e-5, lr_max: float = 1.0,
                  steps: int = 300, batch: int = 1000, opt: str = "adam", seed: int = 0, smooth: int = 21,
                  opt_kwargs: dict | None = None) -> RangeTest:
    """Exponential LR sweep from lr_min to lr_max over `steps` (Smith 2017; torch-lr-finder's "exp" mode) on fresh
    batches; the suggestion is the lr at the steepest descent of the smoothed log loss, before divergence.

    Args:
        forward: forward(θ, x) as for `train_stream`.
        theta: the starting point, shape (P,), any floating dtype and device. Cloned, never modified.
        target_fn: x (n, dim) ↦ y (n,), as for `train_stream`.
        lr_min: the first learning rate of the sweep, > 0.
        lr_max: the last learning rate, > lr_min.
        steps: the number of steps of the sweep (each lr is used once).
        batch: fresh samples per step.
        opt: a key of OPTIMIZERS.
        seed: seed of the batch generator.
        smooth: the moving-average width of `lr_range_suggestion`.
        opt_kwargs: keyword arguments for the optimizer.

    Returns:
        A `RangeTest`.

    Raises:
        ValueError: unless 0 < lr_min < lr_max; for an unknown opt; or when the sweep diverges before 2 × smooth
            steps (from `lr_range_suggestion`).

    Example:
        >>> import torch
        >>> from lab.training.loops import lr_range_test
        >>> w = torch.tensor([1.0, -2.0, 0.5])
        >>> rt = lr_range_test(lambda th, x: x @ th, torch.zeros(3), lambda x: x @ w, lr_min=1e-4, lr_max=1.0,
        ...                    steps=100, batch=64, smooth=5)
        >>> rt.lr.shape, bool(1e-4 <= rt.suggestion <= 1.0)
        ((100,), True)
    """
    from lab.training.schedules import lr_range_suggestion

    if not 0 < lr_min < lr_max:
        raise ValueError(f"lr_range_test: need 0 < lr_min < lr_max, got lr_min={lr_min}, lr_max={lr_max}")
    gamma = (lr_max / lr_min) ** (1 / max(steps - 1, 1))
    run = train_stream(forward, theta, target_fn, steps, batch=batch, opt=opt, lr=lr_min, seed=seed,
                       opt_kwargs=opt_kwargs, allow_nonfinite=True,
                       schedule=lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma))
    return RangeTest(run.lr, run.loss, lr_range_suggestion(run.lr, run.loss, smooth=smooth))


def lr_range_test_model(model: torch.nn.Module, batches, criterion: Callable = torch.nn.functional.cross_entropy,
                        lr_min: float = 1e-5, lr_max: float = 1.0, steps: int = 300, opt: str = "adam",
                        smooth: int = 21, opt_kwargs: dict | None = None,
                        allow_train_mode: bool = False) -> RangeTest:
    """The LR range test on a model and its data, as torch-lr-finder runs it, without touching the model.

    Trains a deep copy of the model (the model, its parameters, buffers and optimizer state are never changed, so
    nothing needs resetting afterwards; the copy is trained as a module: a flat-vector indirection cost ~30% more
    per step at batch 128 on a CPU) with an exponentially increasing
    learning rate from lr_min to lr_max, one batch per step, cycling through `batches`; the suggestion is the same
    rule as `lr_range_test`'s (steepest descent of the smoothed log loss before divergence).

    Args:
        model: any nn.Module (eval mode unless allow_train_mode; see make_forward).
        batches: a DataLoader or any re-iterable of (x, y, ...) batches, or a function i ↦ (x, y) for step i.
        criterion: (outputs, targets) ↦ scalar mean loss.
        lr_min, lr_max: the sweep's ends, 0 < lr_min < lr_max.
        steps: optimizer steps.
        opt: "adam", "sgd" or "rmsprop".
        smooth: the smoothing window of the suggestion.
        opt_kwargs: extra optimizer arguments.

    Returns:
        A `RangeTest` (lr and loss per step, the suggested lr).

    Example:
        >>> import torch
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(256, 4, generator=g)
        >>> y = (x[:, 0] > 0).long()
        >>> model = torch.nn.Linear(4, 2)
        >>> before = model.weight.clone()
        >>> rt = lr_range_test_model(model, DataLoader(TensorDataset(x, y), batch_size=32), steps=60, smooth=5)
        >>> rt.lr.shape, bool(torch.equal(model.weight, before))
        ((60,), True)
    """
    import copy

    from lab.checks import require_eval_mode
    from lab.training.schedules import lr_range_suggestion

    if opt not in OPTIMIZERS:
        raise ValueError(f"parameter 'opt' = {opt!r} is not allowed: expected one of {tuple(OPTIMIZERS)}")
    if not 0 < lr_min < lr_max:
        raise ValueError(f"lr_range_test_model: need 0 < lr_min < lr_max, got lr_min={lr_min}, lr_max={lr_max}")
    require_eval_mode(model, "lab.training.lr_range_test_model", allow_train_mode)
    net = copy.deepcopy(model)
    params = list(net.parameters())
    for q in params:
        q.requires_grad_(True)
        q.grad = None
    device = params[0].device if params else torch.device("cpu")
    o = OPTIMIZERS[opt](params, lr=lr_min, **(opt_kwargs or {}))
    sched = torch.optim.lr_scheduler.ExponentialLR(o, (lr_max / lr_min) ** (1 / max(steps - 1, 1)))

    def stream():
        while True:
            n = 0
            for batch in batches:
                n += 1
                yield batch[0], batch[1]
            if n == 0:
                raise ValueError("lr_range_test_model: parameter 'batches' yielded no batch")

    it = None if callable(batches) else stream()
    lrs, losses = np.empty(steps), np.empty(steps)
    for i in range(steps):
        x, y = batches(i) if it is None else next(it)
        o.zero_grad(set_to_none=True)
        loss = criterion(net(x.to(device)), y.to(device))
        lrs[i], losses[i] = o.param_groups[0]["lr"], float(loss.detach())
        if not np.isfinite(losses[i]):
            lrs, losses = lrs[:i + 1], losses[:i + 1]
            break
        loss.backward()
        o.step()
        sched.step()
    return RangeTest(lrs, losses, lr_range_suggestion(lrs, losses, smooth=smooth))


def squared_errors(forward, theta: torch.Tensor, x: torch.Tensor, target_fn) -> torch.Tensor:
    """Per-sample squared errors (forward(θ, x) − target_fn(x))², without autograd.

    Args:
        forward: forward(θ, x) as for `train_stream`, predictions of shape (n,) or (n, 1).
        theta: flat parameters, shape (P,), any floating dtype and device.
        x: inputs, shape (n, dim), θ's dtype and device.
        target_fn: x (n, dim) ↦ y (n,).

    Returns:
        The n squared errors, shape (n,), in forward's dtype and device, detached (no graph).

    Example:
        >>> import torch
        >>> from lab.training.loops import squared_errors
        >>> x = torch.tensor([[1.0, 2.0], [0.0, 1.0]])
        >>> squared_errors(lambda th, x: x @ th, torch.ones(2), x, lambda x: torch.zeros(len(x)))
        tensor([9., 1.])
    """
    with torch.no_grad():
        return (forward(theta, x).reshape(-1) - target_fn(x)) ** 2
