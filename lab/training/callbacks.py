"""Callbacks for the training loops: `callback(step, θ, optimizer, scheduler)` measures at the current θ.

`VarianceProbe` decomposes the loss variance at a frozen θ (and can hand the floor to ConstantVarianceLR);
`SharpnessProbe` tracks λ_max of the Hessian by warm-started Lanczos."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from lab.checks import require_finite
from lab.training.loops import squared_errors

__all__ = ["Callback", "VarianceProbe", "SharpnessProbe"]



class Callback(Protocol):
    """What `train`, `train_stream` and `train_replicates` call every `callback_every` steps: the step, the current
    θ (a detached view, (P,) or (R, P) for replicates; never modify it), the optimizer and the scheduler (or None).

    Any callable with this signature is a callback: a plain function, a lambda, or an object with ``__call__``
    (like `VarianceProbe` and `SharpnessProbe`, which keep what they measure in a `records` list). Nothing needs to
    subclass this protocol; it only documents the signature for type checkers and readers.

    A loop run with ``callback=cb, callback_every=k`` calls ``cb(step, theta, optimizer, scheduler)`` before steps
    0, k, 2k, ... and once more after the last step (with step = steps), always at the θ of that moment:

    - step (int): the number of optimizer steps taken so far.
    - theta (torch.Tensor): the current parameters, shape (P,) (shape (R, P) in `train_replicates`: row r is
      replicate r), the run's dtype and device. It is a detached view of the live parameters: read it, or
      ``theta.clone()`` it to keep it, but never modify it in place.
    - optimizer (torch.optim.Optimizer): the run's optimizer, e.g. for ``optimizer.param_groups[0]["lr"]``; in
      `train_replicates` it has one parameter group per replicate.
    - scheduler: the run's LR scheduler (what `schedule(optimizer)` built), or None (always None in `train`); a
      callback may call its methods, e.g. ``scheduler.set_floor`` of ConstantVarianceLR.

    The return value is ignored.

    Example:
        >>> import torch
        >>> from lab.training import train
        >>> seen = []
        >>> def record(step, theta, optimizer, scheduler):
        ...     seen.append((step, tuple(theta.shape), scheduler))
        >>> _ = train(lambda t: (t ** 2).sum(), torch.ones(2), steps=4, lr=0.1, progress=False, callback=record,
        ...           callback_every=2)
        >>> seen
        [(0, (2,), None), (2, (2,), None), (4, (2,), None)]
    """

    def __call__(self, step: int, theta: torch.Tensor, optimizer: torch.optim.Optimizer, scheduler: object) -> None:
        ...  # pragma: no cover


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

    The model is the one `train_stream` trains: forward(θ, x) against target_fn(x) on x ~ N(0, I) of `dim`
    features, drawn in θ's dtype and on its device from the probe's own generator (so probing does not change
    the training stream).

    Attributes:
        forward: forward(θ, x) as for `lab.training.train_stream`, predictions of shape (n,) or (n, 1).
        target_fn: x (n, dim) ↦ y (n,), as for `train_stream`.
        batch: the training batch size: the floor is the std of log10 loss of batches of this size.
        n_batches: K, the fresh batches per probe of the intrinsic std (K × batch samples).
        n_spread: the size of the separate sample for the bootstrap and the spread.
        seed: seed of the probe's generator (replicate r of (R, P) parameters uses seed + r).
        set_floor: hand the floor to ``scheduler.set_floor`` at each call (when there is a scheduler).
        average_over: the number of recent steps whose probes the floor averages (root mean square); 0: the
            latest probe only.
        keep_theta: keep a detached copy of each probed θ in `thetas`.
        dim: input features of the fresh samples (3, as train_stream draws).
        records: one dict per probe and replicate, filled by the calls, with keys "step", "rep" (the replicate,
            0 for a single run), "intrinsic" (`intrinsic_std`), "resampled" (`resampled_std`), "spread"
            (`log_error_spread`) and "lr" (the replicate's learning rate at that step).
        thetas: the kept θs, each of shape (P,) (empty unless keep_theta).

    Example:
        >>> import torch
        >>> from lab.training import VarianceProbe, train_stream
        >>> w = torch.tensor([1.0, -2.0, 0.5])
        >>> forward, target_fn = (lambda th, x: x @ th), (lambda x: x @ w)
        >>> probe = VarianceProbe(forward, target_fn, batch=64, n_batches=8, n_spread=1000)
        >>> _ = train_stream(forward, torch.zeros(3), target_fn, steps=20, batch=64, lr=0.1, callback=probe,
        ...                  callback_every=10)
        >>> [r["step"] for r in probe.records], sorted(probe.records[0]), bool(probe.records[0]["intrinsic"] > 0)
        ([0, 10, 20], ['intrinsic', 'lr', 'rep', 'resampled', 'spread', 'step'], True)
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
        'rep', each replicate with its own generator seeded seed + r).

        Args:
            step: the training step (see `Callback`).
            theta: the current parameters, shape (P,) or (R, P), any floating dtype and device; not modified.
            optimizer: the run's optimizer; the lr of group r (or of the last group) is recorded.
            scheduler: the run's scheduler or None; with set_floor it must have a `set_floor` method
                (ConstantVarianceLR), which gets one floor, or a list of R floors for (R, P) parameters.
        """
        from lab.training.series import intrinsic_std, log_error_spread, resampled_std

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
    each call, by Lanczos (`lab.curvature.top_eigs`) warm-started from the previous top eigenvector.

    The sharpness λ_max is the largest Hessian eigenvalue; full-batch gradient descent at learning rate η is stable
    on a quadratic only while λ_max < 2/η (the edge of stability). Each call costs Hessian-vector products (counted
    in the records' "n_hvp"; the warm start keeps them few). Single runs only: θ must be of shape (P,), P >= 2.

    Attributes:
        loss_fn: θ (P,) ↦ 0-d tensor, twice differentiable (e.g. `lab.flat.make_loss_fn`).
        tol: Lanczos' relative tolerance (`top_eigs`).
        records: one dict per call, with keys "step", "lam" (λ_max, a float), "n_hvp" (Hessian-vector products
            used), "loss" (loss_fn(θ)) and "lr" (the first parameter group's learning rate).

    Example:
        >>> import torch
        >>> from lab.training import SharpnessProbe, train
        >>> A = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
        >>> loss_fn = lambda t: 0.5 * t @ A @ t  # Hessian A: λ_max = 3
        >>> probe = SharpnessProbe(loss_fn)
        >>> _ = train(loss_fn, torch.ones(3, dtype=torch.float64), steps=10, opt="sgd", lr=0.1, progress=False,
        ...           callback=probe, callback_every=5)
        >>> [(r["step"], round(r["lam"], 3)) for r in probe.records]
        [(0, 3.0), (5, 3.0), (10, 3.0)]
    """

    loss_fn: Callable[[torch.Tensor], torch.Tensor]
    tol: float = 1e-4

    def __post_init__(self) -> None:
        self.records: list[dict] = []
        self._v: torch.Tensor | None = None

    def __call__(self, step: int, theta: torch.Tensor, optimizer, scheduler) -> None:
        """Measure λ_max at θ and append a record.

        Args:
            step: the training step (see `Callback`).
            theta: the current parameters, shape (P,), any floating dtype and device; not modified.
            optimizer: the run's optimizer (its first group's lr is recorded).
            scheduler: unused.

        Raises:
            NonFiniteError: when θ is not finite (the run diverged before this measurement).
        """
        from lab.curvature.spectrum import top_eigs

        require_finite(theta, f"θ at step {step}", "lab.training.SharpnessProbe",
                       "the training run diverged before this measurement; try a smaller learning rate")
        e = top_eigs(self.loss_fn, theta, k=1, tol=self.tol, v0=self._v)
        self._v = e.vectors[:, 0]
        with torch.no_grad():
            loss = float(self.loss_fn(theta))
        self.records.append({"step": step, "lam": float(e.values[0]), "n_hvp": e.n_hvp, "loss": loss,
                             "lr": optimizer.param_groups[0]["lr"]})
