"""Training on the flat parameter vector with torch optimizers (the caller's model is never touched)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop}


@dataclass
class History:
    """Loss before each step, the length ‖Δθ‖ of each step, and the last step Δθ itself."""

    loss: np.ndarray
    step_norm: np.ndarray
    last_step: torch.Tensor | None = None


def train(loss_fn: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor, steps: int, opt: str = "adam",
          lr: float = 1e-3, progress: bool = True, **opt_kwargs) -> tuple[torch.Tensor, History]:
    """Full-batch training of loss_fn from theta; returns the final flat vector (detached) and the history."""
    if opt not in OPTIMIZERS:
        raise ValueError(f"parameter 'opt' = {opt!r} is not allowed: expected one of {tuple(OPTIMIZERS)}")
    p = theta.detach().clone().requires_grad_(True)
    o = OPTIMIZERS[opt]([p], lr=lr, **opt_kwargs)
    losses, norms, last = [], [], None
    for _ in tqdm(range(steps), desc=f"train ({opt}, lr={lr:g})", disable=not progress, leave=False):
        o.zero_grad()
        loss = loss_fn(p)
        loss.backward()
        before = p.detach().clone()
        o.step()
        losses.append(float(loss.detach()))
        last = p.detach() - before
        norms.append(float(last.norm()))
    return p.detach(), History(np.array(losses), np.array(norms), last)


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
                 opt_kwargs: dict | None = None, observe: bool = False, plateau_every: int = 0) -> StreamRun:
    """MSE training of forward(θ, x) against target_fn(x) on fresh N(0, I) batches (or the fixed set `fixed_x`, used
    whole every step). `schedule(optimizer)` builds an LR scheduler; losses stay on the device (no per-step sync)
    unless the scheduler must see them (`observe` for ConstantVarianceLR, `plateau_every` for ReduceLROnPlateau).
    """
    if opt not in OPTIMIZERS:
        raise ValueError(f"parameter 'opt' = {opt!r} is not allowed: expected one of {tuple(OPTIMIZERS)}")
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
    held_arr = torch.stack(held).double().cpu().numpy() if held else np.array([])
    return StreamRun(losses.double().cpu().numpy(), lrs.numpy(), np.array(held_steps), held_arr, p.detach())
