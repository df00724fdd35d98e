"""Training on the flat parameter vector with torch optimizers (the caller's model is never touched)."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from lab.checks import NonFiniteError, require_finite

OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop}
DIVERGED = 1e6  # a loss this many times its starting value is reported as divergence (a DivergenceWarning)


class DivergenceWarning(RuntimeWarning):
    """Training's loss grew by more than DIVERGED× its starting value: the learning rate is probably too large."""


def _diverging(where: str, loss: float, first: float, step: int, lr: float) -> None:
    """Warn once that a run diverges (loss ≫ its starting value), naming the step and the learning rate."""
    import warnings

    warnings.warn(f"{where}: the loss grew from {first:.3g} to {loss:.3g} by step {step} (lr={lr:g}): the run "
                  f"diverges; try a smaller learning rate", DivergenceWarning, stacklevel=3)


@dataclass
class History:
    """Loss before each step, the length ‖Δθ‖ of each step, the last step Δθ itself, and the snapshots
    [(step, θ)] kept every `snapshot_every` steps (θ before that step; the final θ last)."""

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
    for i in tqdm(range(steps), desc=f"train ({opt}, lr={lr:g})", disable=not progress, leave=False):
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
    """A training run on a stream of batches: per-step loss and lr (kept on the device until the end), held-out loss."""

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
    for i in tqdm(range(steps), desc=f"train ({opt})", disable=not progress, leave=False):
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
    for i in tqdm(range(steps), desc=f"train {n_rep} replicates ({opt})", disable=not progress, leave=False):
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
    """An LR range test: the lr and training loss of each step, and the suggested lr."""

    lr: np.ndarray
    loss: np.ndarray
    suggestion: float


def lr_range_test(forward, theta: torch.Tensor, target_fn, lr_min: float = 1e-5, lr_max: float = 1.0,
                  steps: int = 300, batch: int = 1000, opt: str = "adam", seed: int = 0, smooth: int = 21,
                  opt_kwargs: dict | None = None) -> RangeTest:
    """Exponential LR sweep from lr_min to lr_max over `steps` (Smith 2017; torch-lr-finder's "exp" mode) on fresh
    batches; the suggestion is the lr at the steepest descent of the smoothed log loss, before divergence."""
    from lab.schedules import lr_range_suggestion

    if not 0 < lr_min < lr_max:
        raise ValueError(f"lr_range_test: need 0 < lr_min < lr_max, got lr_min={lr_min}, lr_max={lr_max}")
    gamma = (lr_max / lr_min) ** (1 / max(steps - 1, 1))
    run = train_stream(forward, theta, target_fn, steps, batch=batch, opt=opt, lr=lr_min, seed=seed,
                       opt_kwargs=opt_kwargs, allow_nonfinite=True,
                       schedule=lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma))
    return RangeTest(run.lr, run.loss, lr_range_suggestion(run.lr, run.loss, smooth=smooth))


def squared_errors(forward, theta: torch.Tensor, x: torch.Tensor, target_fn) -> torch.Tensor:
    """Per-sample squared errors (forward(θ, x) − target_fn(x))², without autograd."""
    with torch.no_grad():
        return (forward(theta, x).reshape(-1) - target_fn(x)) ** 2


@dataclass
class VarianceProbe:
    """Callback for `train_stream`: at each call, the loss-variance decomposition at the current frozen θ.

    Records the step, the intrinsic std of log10 batch loss over `n_batches` fresh batches (`intrinsic_std`), an
    independent bootstrap of it from one separate sample of `n_spread` errors (`resampled_std`), and the notes'
    per-sample spread of that sample (`log_error_spread`). With `set_floor` it also hands the intrinsic std to the
    scheduler (ConstantVarianceLR.set_floor): the notes' proposed fix, in the units the controller sees. The floor
    handed over is the root-mean-square of the probes of the last `average_over` steps (0: the latest probe only), so
    that it covers the same steps as the controller's rolling window. `keep_theta` keeps a copy of each probed θ in
    `thetas` (for later measurements at the same points).
    """

    forward: Callable
    target_fn: Callable
    batch: int
    n_batches: int = 32
    n_spread: int = 40_000
    seed: int = 0
    set_floor: bool = False
    average_over: int = 0
    keep_theta: bool = False
    dim: int = 3

    def __post_init__(self) -> None:
        self.records: list[dict] = []
        self._gen: torch.Generator | None = None
        self.thetas: list[torch.Tensor] = []

    def __call__(self, step: int, theta: torch.Tensor, optimizer, scheduler) -> None:
        """Measure at θ (shape (P,), or (R, P) for replicates trained side by side: one record per replicate, key
        'rep', each replicate with its own generator seeded seed + r)."""
        from lab.schedules import intrinsic_std, log_error_spread, resampled_std

        thetas = theta[None] if theta.ndim == 1 else theta
        if self._gen is None:
            self._gen = [torch.Generator(device=theta.device).manual_seed(self.seed + r) for r in range(len(thetas))]
        floors = []
        for r, th in enumerate(thetas):
            kw = {"generator": self._gen[r], "device": theta.device, "dtype": theta.dtype}
            x = torch.randn(self.n_batches * self.batch, self.dim, **kw)
            floor = intrinsic_std(squared_errors(self.forward, th, x, self.target_fn), self.batch)
            x2 = torch.randn(self.n_spread, self.dim, **kw)
            e2 = squared_errors(self.forward, th, x2, self.target_fn)
            if self.keep_theta:
                self.thetas.append(th.detach().clone())
            self.records.append({"step": step, "rep": r, "intrinsic": floor,
                                 "resampled": resampled_std(e2, self.batch, seed=step), "spread": log_error_spread(e2),
                                 "lr": optimizer.param_groups[min(r, len(optimizer.param_groups) - 1)]["lr"]})
            recent = [q["intrinsic"] ** 2 for q in self.records
                      if q["rep"] == r and q["step"] > step - self.average_over]
            floors.append(math.sqrt(sum(recent) / len(recent)) if recent else floor)
        if self.set_floor and scheduler is not None:
            scheduler.set_floor(floors if len(floors) > 1 else floors[0])


@dataclass
class SharpnessProbe:
    """Callback for `train` and `train_stream`: λ_max of `loss_fn` (a pure function of θ, e.g. the full-batch loss) at
    each call, by Lanczos (`lab.hessian.top_eigs`) warm-started from the previous top eigenvector."""

    loss_fn: Callable[[torch.Tensor], torch.Tensor]
    tol: float = 1e-4

    def __post_init__(self) -> None:
        self.records: list[dict] = []
        self._v: torch.Tensor | None = None

    def __call__(self, step: int, theta: torch.Tensor, optimizer, scheduler) -> None:
        from lab.hessian import top_eigs

        require_finite(theta, f"θ at step {step}", "lab.training.SharpnessProbe",
                       "the training run diverged before this measurement; try a smaller learning rate")
        e = top_eigs(self.loss_fn, theta, k=1, tol=self.tol, v0=self._v)
        self._v = e.vectors[:, 0]
        with torch.no_grad():
            loss = float(self.loss_fn(theta))
        self.records.append({"step": step, "lam": float(e.values[0]), "n_hvp": e.n_hvp, "loss": loss,
                             "lr": optimizer.param_groups[0]["lr"]})
