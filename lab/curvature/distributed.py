"""Data-parallel curvature operators on `torch.distributed`: every rank holds a shard of the data, and a product is
the ranks' shard products weighted by their sample counts, all-reduced and divided by the total count.

For a mean loss L(θ) = (1/N) Σ_i ℓ_i(θ) over N samples split into shards of n_r samples, each rank's shard loss
L_r is the mean over its own samples, so H v = Σ_r (n_r / N) H_r v: the full-data Hessian product, exactly (to
rounding), also for shards of unequal size. The operators are `LinearOperator`s, so every estimator of
`lab.curvature` (`top_eigs`, `power_iteration`, `hutchpp_trace`, `xtrace`, `slq_density`, ...) runs on them
unchanged.

How to run an estimator on several ranks (SPMD): call the same estimator with the same arguments (the same `seed`)
on every rank. Every rank then draws the same random vectors, receives the same (all-reduced) products and so
takes the same steps and calls the operator the same number of times; each collective waits for all ranks. By
default (``sync="broadcast"``) every product also applies rank 0's input vector on every rank, so rank 0's answer
is the full-data answer even if another rank's vectors drifted by rounding; ``sync="check"`` instead verifies that
the ranks' vectors are bitwise equal (and raises on every rank if not); ``sync="none"`` trusts the caller.

- `DistributedOperator`: the sample-weighted mean over ranks of any local operator (e.g. a shard's GGN).
- `DistributedHessianOperator` / `distributed_hvp_operator`: the Hessian of the mean loss over all shards.
- `shard`: rank r's contiguous slice of (x, y) (tensor, tuple or dict inputs), for data every rank can load.

Backends: "gloo" for θ on a CPU, "nccl" for θ on a GPU (`backend_for(theta.device)`; `torchrun` sets up the
process group's environment; see `torch.distributed.init_process_group`). An error inside one rank's product
(e.g. a non-finite product) is reported on every rank instead of leaving the others waiting in the all-reduce.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.distributed as dist

from lab.checks import not_allowed, require_int, require_real
from lab.curvature.operators import HessianOperator, LinearOperator
from lab.flat import batch_size, to_inputs

__all__ = ["SYNC", "DistributedOperator", "DistributedHessianOperator", "distributed_hvp_operator", "shard",
           "backend_for"]

SYNC = ("broadcast", "check", "none")

Inputs = Any


def _group(group: Any, where: str) -> tuple[int, int, str]:
    """(rank in the group, world size, backend name) of an initialised process group, else a named error."""
    if not dist.is_available():
        raise RuntimeError(f"{where}: this torch build has no torch.distributed")
    if not dist.is_initialized():
        raise RuntimeError(f"{where}: torch.distributed is not initialised: call torch.distributed."
                           "init_process_group('gloo' for CPU tensors, 'nccl' for GPU tensors) on every rank first "
                           "(torchrun sets RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT)")
    return dist.get_rank(group), dist.get_world_size(group), str(dist.get_backend(group))


def backend_for(device: torch.device | str) -> str:
    """The torch.distributed backend for tensors on `device`: "nccl" for a CUDA device (where NCCL is built in),
    else "gloo".

    Args:
        device: θ's device, e.g. ``theta.device``.

    Returns:
        "nccl" or "gloo", for `torch.distributed.init_process_group`.

    Example:
        >>> backend_for("cpu")
        'gloo'
    """
    cuda = torch.device(device).type == "cuda"
    return "nccl" if cuda and dist.is_available() and dist.is_nccl_available() else "gloo"


def _fingerprint(t: torch.Tensor) -> torch.Tensor:
    """Two int64 sums of t's raw bits (plain and position-weighted): equal for bitwise-equal tensors, whatever the
    order of summation (integer sums wrap exactly), and different for almost any two different tensors."""
    t = t.detach().contiguous().reshape(-1)
    bits = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
    b = t.view(bits).to(torch.int64)
    w = torch.arange(b.numel(), device=b.device, dtype=torch.int64) % 1_000_003 + 1
    return torch.stack([b.sum(), (b * w).sum()])


class DistributedOperator(LinearOperator):
    """v ↦ (Σ_r w_r A_r v) / Σ_r w_r over the ranks of a process group: the weighted mean of each rank's local
    operator, one all-reduce (SUM) per product or per block of products (`matmat`).

    Construction is collective (every rank of the group must construct its operator, in the same order): the ranks
    exchange their weights, operator sizes and, where given, a fingerprint of θ, and every rank raises the same
    named error when they disagree. Every product is collective too (see the module's docstring for how to run
    estimators on every rank, and `sync`).

    Args:
        local: this rank's operator (e.g. the Hessian or GGN of the mean loss over its shard); its dtype and device
            are the operator's. With "nccl" it must live on this rank's GPU.
        weight: this rank's weight, >= 0: its shard's sample count for a mean loss (0 for an empty shard).
        group: the process group (None: the default group).
        sync: "broadcast" (default: rank 0 of the group broadcasts the input vectors, so every rank applies rank
            0's), "check" (the ranks' input vectors must be bitwise equal, else every rank raises) or "none".
        theta: the point, (P,), optional: checked to be bitwise equal on every rank.

    Attributes:
        rank, world_size, backend: this rank, the group's size and its backend.
        weights: every rank's weight (a list, in rank order); total: their sum.

    Raises:
        RuntimeError: torch.distributed is not initialised, or the ranks disagree (sizes, θ, no weight at all).
        ValueError: a bad weight, sync, or a CPU operator on an "nccl" group.

    Example:
        >>> import os, tempfile, torch, torch.distributed as dist
        >>> from lab.curvature import DenseOperator
        >>> path = os.path.join(tempfile.mkdtemp(), "rendezvous")
        >>> dist.init_process_group("gloo", init_method=f"file://{path}", rank=0, world_size=1)
        >>> op = DistributedOperator(DenseOperator(torch.diag(torch.tensor([1.0, 2.0]))), weight=5)
        >>> op(torch.ones(2)), op.weights, op.total
        (tensor([1., 2.]), [5.0], 5.0)
        >>> dist.destroy_process_group()
    """

    _NONFINITE_HINT = "the all-reduced product is not finite: some rank's shard product overflowed"

    def __init__(self, local: LinearOperator, weight: float, group: Any = None, sync: str = "broadcast",
                 theta: torch.Tensor | None = None):
        where = f"lab.curvature.{type(self).__name__}"
        if not isinstance(local, LinearOperator):
            raise TypeError(not_allowed("local", local, "a lab.curvature.LinearOperator", where))
        if sync not in SYNC:
            raise ValueError(not_allowed("sync", sync, f"one of {SYNC}", where))
        weight = require_real(weight, "weight", where, lo=0)
        self.rank, self.world_size, self.backend = _group(group, where)
        super().__init__(size=local.size, dtype=local.dtype, device=local.device)
        if self.backend == "nccl" and self.device.type != "cuda":
            raise ValueError(not_allowed("theta", f"on {self.device}", "a CUDA θ and shard with an 'nccl' process "
                                         "group (NCCL reduces GPU tensors), or a 'gloo' group for CPU tensors", where))
        self.local, self.group, self.sync = local, group, sync
        self._src = 0 if group is None else dist.get_global_rank(group, 0)
        # small exchanges (weights, sizes, fingerprints) on the device the backend gathers: NCCL's GPU, else the CPU
        self._meta = self.device if self.backend == "nccl" else torch.device("cpu")
        # two all-gathers: every rank's weight and size (float64), and its θ fingerprint (int64, compared exactly)
        fp = _fingerprint(theta.to(self._meta)) if theta is not None else torch.zeros(2, dtype=torch.int64,
                                                                                       device=self._meta)
        mine = torch.tensor([float(weight), float(self.size)], dtype=torch.float64, device=self._meta)
        gathered = [torch.empty_like(mine) for _ in range(self.world_size)]
        fps = [torch.empty_like(fp) for _ in range(self.world_size)]
        dist.all_gather(gathered, mine, group=group)
        dist.all_gather(fps, fp, group=group)
        self.weights = [float(g[0]) for g in gathered]
        sizes = [int(g[1]) for g in gathered]
        if len(set(sizes)) != 1:
            raise RuntimeError(f"{where}: the ranks' operators have sizes {sizes} (rank order): every rank must hold "
                               "the same model (the same P)")
        if theta is not None and any(not torch.equal(f, fps[0]) for f in fps):
            bad = [r for r, f in enumerate(fps) if not torch.equal(f, fps[0])]
            raise RuntimeError(f"{where}: θ differs between rank 0 and rank(s) {bad}: every rank must pass the same "
                               "θ (broadcast it from rank 0, or load the same checkpoint)")
        self.total = float(sum(self.weights))
        if self.total <= 0:
            raise RuntimeError(f"{where}: the ranks' weights {self.weights} sum to 0: no rank holds data")

    def _synced(self, vs: torch.Tensor) -> torch.Tensor:
        """The input vector(s) every rank applies: rank 0's (broadcast), checked equal (check), or as given."""
        vs = vs.detach()
        if self.sync == "broadcast":
            vs = vs.contiguous() if self.rank == 0 else vs.clone(memory_format=torch.contiguous_format)
            dist.broadcast(vs, src=self._src, group=self.group)      # in place: never into the caller's tensor
        elif self.sync == "check":
            fp = _fingerprint(vs).to(self._meta)
            fps = [torch.empty_like(fp) for _ in range(self.world_size)]
            dist.all_gather(fps, fp, group=self.group)
            bad = [r for r, f in enumerate(fps) if not torch.equal(f, fps[0])]
            if bad:
                raise RuntimeError(f"lab.curvature.{type(self).__name__}: sync='check': the input vector of rank(s) "
                                   f"{bad} differs from rank 0's: run the estimator with the same arguments and seed "
                                   "on every rank, or use sync='broadcast'")
        return vs

    def _reduced(self, vs: torch.Tensor, product: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Σ_r w_r A_r V / Σ_r w_r: this rank's product, weighted, in one all-reduce with an error count appended,
        so that a rank whose product fails makes every rank raise (none is left waiting)."""
        vs = self._synced(vs)
        err: BaseException | None = None
        try:
            out = product(vs) if self.weights[self.rank] > 0 else torch.zeros_like(vs)
        except Exception as e:  # noqa: BLE001 — re-raised below, after the all-reduce the other ranks wait in
            err, out = e, torch.zeros_like(vs)
        buf = torch.cat([(out.reshape(-1) * self.weights[self.rank]).to(self.dtype),
                         torch.tensor([1.0 if err is not None else 0.0], dtype=self.dtype, device=self.device)])
        dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=self.group)
        failed = int(round(float(buf[-1].real)))
        if err is not None:
            raise err
        if failed:
            raise RuntimeError(f"lab.curvature.{type(self).__name__}: the product failed on {failed} other rank(s) "
                               "(their errors say why)")
        return buf[:-1].reshape(vs.shape) / self.total

    def _apply(self, v: torch.Tensor) -> torch.Tensor:
        return self._reduced(v, self.local)

    def _apply_many(self, vs: torch.Tensor) -> torch.Tensor:
        return self._reduced(vs, self.local.matmat)


class _Zero(LinearOperator):
    """The zero operator (an empty shard's)."""

    def _apply(self, v: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(v)


class DistributedHessianOperator(DistributedOperator):
    """v ↦ H v for the mean loss over the union of the ranks' shards: (Σ_r n_r H_r v) / Σ_r n_r, with H_r the
    Hessian of rank r's mean loss over its n_r samples at θ — the full-data mean-loss Hessian product, exactly.

    Each rank builds its shard's gradient graph once (a `HessianOperator`, reverse-over-reverse) and reuses it for
    every product; a product costs one backward pass over the shard and one all-reduce of P numbers (a block of n
    vectors from `matmat`: one all-reduce of P·n). Construction and products are collective (see the module).

    Args:
        loss_on_batch: (θ (P,), x, y) ↦ the batch's MEAN loss, e.g. `lab.flat.make_batch_loss_fn(model)[0]`.
        theta: the point, (P,), the same on every rank (checked); its dtype and device are the operator's ("gloo"
            for a CPU θ, "nccl" for a GPU θ).
        x_shard: this rank's inputs: a tensor (n_r, ...), or a tuple or dict of tensors (`lab.flat.to_inputs`);
            moved to θ's device. May be empty (n_r = 0) on some ranks.
        y_shard: this rank's targets, first dimension n_r; moved to θ's device.
        group: the process group (None: the default group).
        weight: this rank's weight (default n_r, the sample count, for a loss that is a mean over samples; pass the
            shard's token count for a loss averaged over tokens, e.g. with ignored positions).
        sync: "broadcast", "check" or "none" (see `DistributedOperator`).
        batched, batch: how the local operator applies blocks of vectors (see `HessianOperator`).

    Attributes:
        local: this rank's `HessianOperator` (a zero operator for an empty shard); n_samples: n_r.

    Example:
        >>> import os, tempfile, torch, torch.distributed as dist
        >>> from lab.curvature import hvp_operator, top_eigs
        >>> path = os.path.join(tempfile.mkdtemp(), "rendezvous")
        >>> dist.init_process_group("gloo", init_method=f"file://{path}", rank=0, world_size=1)
        >>> f = lambda t, x, y: ((x @ t - y) ** 2).mean()
        >>> x, y = torch.randn(10, 3, dtype=torch.float64), torch.zeros(10, dtype=torch.float64)
        >>> op = DistributedHessianOperator(f, torch.zeros(3, dtype=torch.float64), x, y)  # one rank, all data
        >>> bool(torch.allclose(op(torch.ones(3)), 2 * x.T @ x @ torch.ones(3, dtype=torch.float64) / 10))
        True
        >>> top_eigs(op, k=1).values.shape
        (1,)
        >>> dist.destroy_process_group()
    """

    def __init__(self, loss_on_batch: Callable[[torch.Tensor, Inputs, torch.Tensor], torch.Tensor],
                 theta: torch.Tensor, x_shard: Inputs, y_shard: torch.Tensor, group: Any = None,
                 weight: float | None = None, sync: str = "broadcast", batched: bool | None = None, batch: int = 32):
        where = f"lab.curvature.{type(self).__name__}"
        if not callable(loss_on_batch):
            raise TypeError(not_allowed("loss_on_batch", loss_on_batch, "a callable (θ, x, y) ↦ the batch's mean "
                                        "loss", where))
        if not isinstance(theta, torch.Tensor) or not theta.is_floating_point() or theta.numel() == 0:
            raise TypeError(not_allowed("theta", theta, "a non-empty floating-point torch.Tensor θ (P,)", where))
        if not isinstance(y_shard, torch.Tensor):
            raise TypeError(not_allowed("y_shard", y_shard, "a torch.Tensor of targets (n_r, ...)", where))
        theta = theta.detach().reshape(-1)
        x = to_inputs(x_shard, device=theta.device)
        y = y_shard.to(theta.device)
        n = batch_size(x, "x_shard")
        if (int(y.shape[0]) if y.ndim else -1) != n:
            raise ValueError(f"{where}: parameters 'x_shard' and 'y_shard' have {n} inputs and "
                             f"{tuple(y.shape)} targets: expected one target per input")
        self.n_samples = n
        weight = n if weight is None else weight
        if n == 0:
            if weight != 0:
                raise ValueError(not_allowed("weight", weight, "0 for an empty shard", where))
            local: LinearOperator = _Zero(size=theta.numel(), dtype=theta.dtype, device=theta.device)
        else:
            local = HessianOperator(lambda t: loss_on_batch(t, x, y), theta, batched=batched,
                                    batch=require_int(batch, "batch", where, lo=1))
        super().__init__(local, weight, group=group, sync=sync, theta=theta)


def distributed_hvp_operator(loss_on_batch: Callable[[torch.Tensor, Inputs, torch.Tensor], torch.Tensor],
                             theta: torch.Tensor, x_shard: Inputs, y_shard: torch.Tensor, group: Any = None,
                             weight: float | None = None, sync: str = "broadcast") -> DistributedHessianOperator:
    """The Hessian of the mean loss over every rank's shard, as an operator (collective: call it on every rank).

    Args:
        loss_on_batch: (θ (P,), x, y) ↦ the batch's MEAN loss, e.g. `lab.flat.make_batch_loss_fn(model)[0]`.
        theta: (P,), the same on every rank; CPU with "gloo", this rank's GPU with "nccl".
        x_shard, y_shard: this rank's samples (x a tensor, tuple or dict; see `shard`).
        group: the process group (None: the default group).
        weight: this rank's weight (default: its sample count).
        sync: "broadcast" (rank 0's vectors everywhere), "check" or "none".

    Returns:
        A `DistributedHessianOperator` (θ's dtype and device; `.count` counts this rank's products).

    Example:
        >>> import os, tempfile, torch, torch.distributed as dist
        >>> path = os.path.join(tempfile.mkdtemp(), "rendezvous")
        >>> dist.init_process_group("gloo", init_method=f"file://{path}", rank=0, world_size=1)
        >>> f = lambda t, x, y: ((x @ t - y) ** 2).mean()
        >>> op = distributed_hvp_operator(f, torch.zeros(2), torch.eye(2), torch.zeros(2))
        >>> op(torch.ones(2))
        tensor([1., 1.])
        >>> dist.destroy_process_group()
    """
    return DistributedHessianOperator(loss_on_batch, theta, x_shard, y_shard, group=group, weight=weight, sync=sync)


def _take(x: Any, n: int, lo: int, hi: int) -> Any:
    """Samples lo:hi of every tensor of x whose first dimension is n."""
    if isinstance(x, torch.Tensor):
        return x[lo:hi] if x.ndim >= 1 and x.shape[0] == n else x
    if isinstance(x, Mapping):
        return {k: _take(v, n, lo, hi) for k, v in x.items()}
    if isinstance(x, tuple | list):
        return type(x)(_take(v, n, lo, hi) for v in x) if type(x) in (tuple, list) else \
            tuple(_take(v, n, lo, hi) for v in x)
    return x


def shard(x: Inputs, y: torch.Tensor, rank: int | None = None, world_size: int | None = None,
          group: Any = None) -> tuple[Inputs, torch.Tensor]:
    """Rank r's contiguous share of (x, y): samples [⌊rN/W⌋, ⌊(r+1)N/W⌋) of N, so shard sizes differ by at most one.

    Args:
        x: inputs, N samples: a tensor, or a tuple, list or dict of tensors (each tensor whose first dimension is
            N is sliced; others are passed through).
        y: targets, first dimension N.
        rank, world_size: the share to take (default: this process's rank and size in `group`).
        group: the process group whose rank and size are the defaults.

    Returns:
        (x_r, y_r): views of x's and y's samples, x's structure kept.

    Example:
        >>> import torch
        >>> x, y = {"ids": torch.arange(10).reshape(5, 2)}, torch.arange(5)
        >>> [shard(x, y, r, 2)[1].tolist() for r in range(2)]
        [[0, 1], [2, 3, 4]]
    """
    where = "lab.curvature.shard"
    if rank is None or world_size is None:
        r, w, _ = _group(group, where)
        rank, world_size = (r if rank is None else rank), (w if world_size is None else world_size)
    world_size = require_int(world_size, "world_size", where, lo=1)
    rank = require_int(rank, "rank", where, lo=0, hi=world_size - 1)
    n = batch_size(x)
    if not isinstance(y, torch.Tensor) or y.ndim == 0 or int(y.shape[0]) != n:
        raise ValueError(f"{where}: parameters 'x' and 'y' have {n} inputs and "
                         f"{tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__} targets: expected "
                         "one target per input")
    lo, hi = rank * n // world_size, (rank + 1) * n // world_size
    return _take(x, n, lo, hi), y[lo:hi]
