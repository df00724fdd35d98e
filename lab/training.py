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
