"""Minibatch SGD on the flat parameter vector, run to a matched training loss.

Comparing minima reached with different batch sizes or weight decay is only fair when they fit the training set
equally well: `sgd_to_loss` trains until the full-batch training loss first falls to `target` (checked after every
epoch), so that differences in test loss are differences in generalization, not in how far training went.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from lab._progress import progress_bar
from lab.checks import NonFiniteError, require_finite

__all__ = ["STOPS", "MinibatchRun", "sgd_to_loss"]


@dataclass
class MinibatchRun:
    """A run of `sgd_to_loss`.

    Attributes:
        theta: the final flat parameters (P,), detached, the starting point's dtype and device.
        steps: optimizer steps taken.
        epochs: epochs taken (passes over the training set).
        reached: whether the full-batch training loss reached the target.
        epoch_loss: the full-batch training loss at each check (after each epoch, or every `check_every` steps),
            float64; its last entry is the final point's.
    """

    theta: torch.Tensor
    steps: int
    epochs: int
    reached: bool
    epoch_loss: np.ndarray

    @property
    def train_loss(self) -> float:
        """The full-batch training loss at the end."""
        return float(self.epoch_loss[-1]) if len(self.epoch_loss) else math.nan


STOPS = ("first", "nearest")


def sgd_to_loss(loss_on_batch: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
                theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, batch_size: int, lr: float, target: float,
                max_steps: int, momentum: float = 0.9, weight_decay: float = 0.0, seed: int = 0,
                progress: bool = False, check_every: int | None = None, stop: str = "first") -> MinibatchRun:
    """SGD (torch.optim.SGD, heavy-ball momentum, coupled L2 weight decay) on shuffled minibatches until the
    full-batch loss (without the weight-decay term) falls to `target`, checked after every epoch (or every
    `check_every` steps), or until `max_steps` steps have been taken (then `reached` is False).

    Args:
        loss_on_batch: (θ, x, y) ↦ mean loss of a batch (`lab.flat.make_batch_loss_fn`).
        theta: the starting point (P,); cloned, never modified.
        x, y: the training set (n, ...) and its targets (n,), on θ's device.
        batch_size: samples per step, 1 <= batch_size <= n (n: full batch, one step per epoch). The last, partial
            batch of an epoch is dropped, so every step averages batch_size samples.
        lr: learning rate, > 0.
        target: the full-batch training loss to reach.
        max_steps: the budget of steps, >= 1.
        momentum: heavy-ball momentum in [0, 1).
        weight_decay: L2 coefficient (added to the gradient), >= 0.
        seed: seed of the shuffling generator.
        progress: show a progress bar over epochs.
        check_every: steps between checks of the full-batch loss, >= 1; None checks after every epoch. A run
            matched to a training loss should check often (1: every step), so that a small batch, with many steps
            per epoch, does not overshoot the target by a whole epoch's progress.
        stop: one of STOPS. "first": return the first checked point at or below the target. "nearest": return
            whichever of that point and the check before it has the full-batch loss nearer the target, so that
            one large step across the target does not end the run far below it (the earlier point's loss is then
            appended to `epoch_loss` and `steps` counts to it; `reached` still says the target was crossed).

    Returns:
        A `MinibatchRun`.

    Raises:
        ValueError: a parameter out of range (named).
        NonFiniteError: the loss became NaN or inf (the run diverged).

    Example:
        >>> import torch
        >>> from lab.flat import make_batch_loss_fn
        >>> torch.manual_seed(0); net = torch.nn.Linear(4, 2)  # doctest: +ELLIPSIS
        <...>
        >>> f, theta0, _ = make_batch_loss_fn(net)
        >>> x = torch.randn(64, 4); y = (x[:, 0] > 0).long()
        >>> run = sgd_to_loss(f, theta0, x, y, batch_size=16, lr=0.5, target=0.2, max_steps=2000)
        >>> run.reached, run.train_loss <= 0.2, run.steps == 4 * run.epochs
        (True, True, True)
    """
    n = int(x.shape[0])
    for name, v, ok, allowed in (
            ("batch_size", batch_size, isinstance(batch_size, int) and 1 <= batch_size <= n, f"an integer in [1, {n}]"),
            ("lr", lr, isinstance(lr, (int, float)) and lr > 0, "a number > 0"),
            ("max_steps", max_steps, isinstance(max_steps, int) and max_steps >= 1, "an integer >= 1"),
            ("momentum", momentum, isinstance(momentum, (int, float)) and 0 <= momentum < 1, "a number in [0, 1)"),
            ("weight_decay", weight_decay, isinstance(weight_decay, (int, float)) and weight_decay >= 0,
             "a number >= 0"),
            ("check_every", check_every, check_every is None or (isinstance(check_every, int)
                                                                 and not isinstance(check_every, bool)
                                                                 and check_every >= 1), "None or an integer >= 1"),
            ("stop", stop, isinstance(stop, str) and stop in STOPS, f"one of {STOPS}")):
        if not ok:
            raise ValueError(f"parameter '{name}' = {v!r} is not allowed: expected {allowed}")
    require_finite(theta, "the starting θ", "lab.training.sgd_to_loss")
    p = theta.detach().clone().requires_grad_(True)
    opt = torch.optim.SGD([p], lr=lr, momentum=momentum, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    per_epoch = n // batch_size
    max_epochs = math.ceil(max_steps / per_epoch)
    steps, losses, reached, epochs = 0, [], False, 0
    prev: tuple[torch.Tensor, int] | None = None  # the last checked point above the target and its step


    def full_loss(where: str) -> float:
        with torch.no_grad():
            full = float(loss_on_batch(p, x, y))
        if not math.isfinite(full):
            raise NonFiniteError(f"lab.training.sgd_to_loss: the training loss is {full} {where} "
                                 f"(B={batch_size}, lr={lr:g}): the run diverged; try a smaller learning rate")
        losses.append(full)
        return full

    for epoch in progress_bar(range(max_epochs), desc=f"SGD B={batch_size}", disable=not progress, leave=False):
        order = torch.randperm(n, generator=gen).to(x.device)
        epochs = epoch + 1
        for i in range(per_epoch):
            if steps >= max_steps:
                break
            idx = order[i * batch_size:(i + 1) * batch_size]
            opt.zero_grad()
            loss_on_batch(p, x[idx], y[idx]).backward()
            opt.step()
            steps += 1
            if check_every is not None and steps % check_every == 0:
                if full_loss(f"after step {steps}") <= target:
                    reached = True
                    break
                prev = (p.detach().clone(), steps) if stop == "nearest" else None
        if reached:
            break
        if check_every is None:
            if full_loss(f"after epoch {epoch}") <= target:
                reached = True
                break
            prev = (p.detach().clone(), steps) if stop == "nearest" else None
        if steps >= max_steps:
            break
    if check_every is not None and (not losses or steps % check_every):
        reached = full_loss(f"after step {steps}") <= target  # the final point is always measured
    theta = p.detach()
    if reached and prev is not None and len(losses) >= 2 and abs(losses[-2] - target) < abs(losses[-1] - target):
        theta, steps = prev
        losses.append(losses[-2])                          # the returned point's loss is the last entry
    return MinibatchRun(theta, steps, epochs, reached, np.array(losses, dtype=np.float64))
