"""A model's parameters as one flat vector, and pure loss functions of that vector (torch.func)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, vmap

from lab.checks import require_eval_mode, require_finite

__all__ = ["mse", "LOSSES", "FlatSpec", "flatten", "unflatten", "layer_slices", "make_forward", "make_loss_fn",
           "loss_from_forward", "make_batch_loss_fn", "Forward", "LossParts", "per_sample_losses", "chunk_size_for",
           "batched"]


def mse(pred: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Mean squared error, as torch.nn.functional.mse_loss, written as plain tensor arithmetic: in torch 2.14.1
    `torch.func.linearize` of the gradient of F.mse_loss crashes the process (a segmentation fault), and
    lab.curvature may fall back to linearizing the gradient for Hessian-vector products."""
    sq = (pred - target).pow(2)
    if reduction == "none":
        return sq
    if reduction == "sum":
        return sq.sum()
    if reduction == "mean":
        return sq.mean()
    raise ValueError(f"parameter 'reduction' = {reduction!r} is not allowed: expected one of 'mean', 'sum', 'none'")


LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "cross_entropy": nn.functional.cross_entropy,
    "mse": mse,
}


@dataclass(frozen=True)
class FlatSpec:
    """How a flat vector maps onto a model's named parameters."""

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]

    @property
    def numels(self) -> tuple[int, ...]:
        """Number of entries of each parameter."""
        return tuple(int(torch.Size(s).numel()) for s in self.shapes)

    @property
    def size(self) -> int:
        """Total number of parameters P."""
        return sum(self.numels)

    def slices(self) -> dict[str, slice]:
        """Each parameter's slice of the flat vector."""
        out, i = {}, 0
        for n, k in zip(self.names, self.numels, strict=True):
            out[n] = slice(i, i + k)
            i += k
        return out


def flatten(model: nn.Module, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, FlatSpec]:
    """A detached copy of the model's parameters as one flat vector, and the spec to map it back."""
    named = [(n, p) for n, p in model.named_parameters()]
    spec = FlatSpec(tuple(n for n, _ in named), tuple(p.shape for _, p in named))
    theta = torch.cat([p.detach().reshape(-1) for _, p in named]).clone()
    return (theta.to(dtype) if dtype is not None else theta), spec


def unflatten(theta: torch.Tensor, spec: FlatSpec) -> dict[str, torch.Tensor]:
    """Views of a flat vector shaped as the model's named parameters."""
    if theta.shape[-1] != spec.size:
        raise ValueError(f"theta has {theta.shape[-1]} entries, the model has {spec.size} parameters")
    return {n: theta[..., s].reshape(*theta.shape[:-1], *shape)
            for (n, s), shape in zip(spec.slices().items(), spec.shapes, strict=True)}


def layer_slices(spec: FlatSpec) -> dict[str, slice]:
    """Slices of the flat vector grouped by module (weight and bias of one layer together)."""
    out: dict[str, slice] = {}
    for n, s in spec.slices().items():
        mod = n.rsplit(".", 1)[0] if "." in n else n
        out[mod] = slice(out[mod].start, s.stop) if mod in out else s
    return out


Forward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def make_forward(model: nn.Module, allow_train_mode: bool = False) -> tuple[Forward, torch.Tensor, FlatSpec]:
    """forward(theta, x): the model as a pure function of its flat parameters (model left untouched).

    A model in train mode with Dropout, BatchNorm or other mode-dependent modules raises TrainModeError (its
    output would be random or batch-dependent): call model.eval(), or pass allow_train_mode=True deliberately.
    """
    require_eval_mode(model, "lab.flat.make_forward", allow_train_mode)
    theta0, spec = flatten(model)
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}  # never the caller's

    def forward(theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        bufs = {n: (b.to(theta.dtype) if b.is_floating_point() else b) for n, b in buffers.items()}
        return functional_call(model, (unflatten(theta, spec), bufs), (x,))

    return forward, theta0, spec


@dataclass(frozen=True)
class LossParts:
    """What a loss function from `make_loss_fn` is made of, for evaluators that exploit the model's structure
    (`lab.landscape.plane`'s first-layer-affine path); `loss_fn.parts` holds it.

    Attributes:
        model: the module (its parameters are never read after `make_loss_fn`: θ supplies them).
        spec: the flat layout of θ.
        crit: (outputs, targets) ↦ scalar mean loss.
        x_as: (dtype, device) ↦ the inputs, a cached copy.
        y_as: (dtype, device) ↦ the targets.
        buffers: the model's buffers, copied.
    """

    model: nn.Module
    spec: FlatSpec
    crit: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    x_as: Callable[[torch.dtype, torch.device], torch.Tensor]
    y_as: Callable[[torch.dtype, torch.device], torch.Tensor]
    buffers: dict


def make_loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str | Callable = "cross_entropy",
                 allow_train_mode: bool = False
                 ) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor, FlatSpec]:
    """loss_fn(theta): mean loss over (x, y) as a pure function of the flat vector, computed in theta's dtype.

    Returns (loss_fn, theta0, spec); theta0 is a detached copy of the model's current parameters. x and y are
    copied once here, so later in-place changes to the caller's tensors never change the loss (in any dtype).
    A model in train mode with mode-dependent modules raises TrainModeError (see make_forward). `loss_fn.parts`
    (a `LossParts`) says what the loss is made of.
    """
    if isinstance(loss, str) and loss not in LOSSES:
        raise ValueError(f"parameter 'loss' = {loss!r} is not allowed: expected one of {tuple(LOSSES)} or a callable")
    crit = LOSSES[loss] if isinstance(loss, str) else loss
    forward, theta0, spec = make_forward(model, allow_train_mode)
    x, y = x.detach().clone(), y.detach().clone()  # the loss is a function of θ alone: never of the caller's x
    cache: dict[tuple, torch.Tensor] = {}

    def x_as(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        key = (dtype, device)
        if key not in cache:
            cache[key] = x.to(device=device, dtype=dtype)
        return cache[key]

    def y_as(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        return y.to(device) if not y.is_floating_point() else y.to(device=device, dtype=dtype)

    def loss_fn(theta: torch.Tensor) -> torch.Tensor:
        out = forward(theta, x_as(theta.dtype, theta.device))
        return crit(out, y_as(theta.dtype, theta.device))

    loss_fn.parts = LossParts(model, spec, crit, x_as, y_as,  # type: ignore[attr-defined]
                              {n: b.detach().clone() for n, b in model.named_buffers()})
    return loss_fn, theta0, spec


def loss_from_forward(forward: Forward, x: torch.Tensor, y: torch.Tensor, loss: str | Callable = "mse"
                      ) -> Callable[[torch.Tensor], torch.Tensor]:
    """θ ↦ loss(forward(θ, x), y): a pure loss of the flat vector from a pure forward (so that no chapter writes
    its own MSE lambda). x and y are copied once; the loss is computed in θ's dtype and on θ's device.

    Args:
        forward: (θ (P,), x (n, ...)) ↦ outputs, e.g. from `make_forward`.
        x: inputs, shape (n, ...).
        y: targets; the same shape as the outputs for "mse" (an (n,) target against (n, 1) outputs is flattened
            to match), class indices (n,) for "cross_entropy".
        loss: "mse", "cross_entropy" or a callable (outputs, targets) ↦ scalar.

    Returns:
        loss_fn: θ (P,) ↦ scalar tensor.

    Example:
        >>> import torch
        >>> f = loss_from_forward(lambda t, x: x @ t, torch.eye(2), torch.tensor([1.0, 3.0]))
        >>> f(torch.zeros(2))
        tensor(5.)
    """
    if isinstance(loss, str) and loss not in LOSSES:
        raise ValueError(f"parameter 'loss' = {loss!r} is not allowed: expected one of {tuple(LOSSES)} or a callable")
    crit = LOSSES[loss] if isinstance(loss, str) else loss
    x, y = x.detach().clone(), y.detach().clone()

    def loss_fn(theta: torch.Tensor) -> torch.Tensor:
        out = forward(theta, x.to(device=theta.device, dtype=theta.dtype))
        tgt = y.to(device=theta.device, dtype=theta.dtype) if y.is_floating_point() else y.to(theta.device)
        if crit is mse and out.shape != tgt.shape and out.numel() == tgt.numel():
            out = out.reshape(tgt.shape)
        return crit(out, tgt)

    return loss_fn


def make_batch_loss_fn(model: nn.Module, loss: str | Callable = "cross_entropy", allow_train_mode: bool = False
                       ) -> tuple[Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], torch.Tensor,
                                  FlatSpec]:
    """(θ, x, y) ↦ the mean loss of a batch, a pure function: what `lab.curvature.minibatch_hvp_operator` and
    `dataloader_hvp_operator` take.

    Args:
        model: any nn.Module (left untouched; eval mode unless allow_train_mode).
        loss: "cross_entropy", "mse" or a callable (outputs, targets) ↦ scalar mean.

    Returns:
        (loss_on_batch, theta0, spec): theta0 (P,) a detached copy of the model's parameters.

    Example:
        >>> import torch
        >>> f, theta0, _ = make_batch_loss_fn(torch.nn.Linear(2, 3))
        >>> f(theta0, torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)).shape
        torch.Size([])
    """
    if isinstance(loss, str) and loss not in LOSSES:
        raise ValueError(f"parameter 'loss' = {loss!r} is not allowed: expected one of {tuple(LOSSES)} or a callable")
    crit = LOSSES[loss] if isinstance(loss, str) else loss
    forward, theta0, spec = make_forward(model, allow_train_mode)

    def loss_on_batch(theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = forward(theta, x.to(device=theta.device, dtype=theta.dtype))
        tgt = y.to(device=theta.device, dtype=theta.dtype) if y.is_floating_point() else y.to(theta.device)
        return crit(out, tgt)

    return loss_on_batch, theta0, spec


def per_sample_losses(model: nn.Module, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                      loss: str = "cross_entropy", allow_train_mode: bool = False) -> torch.Tensor:
    """Each sample's loss at the flat parameters θ (no reduction), e.g. for minibatch-noise estimates."""
    if loss not in LOSSES:
        raise ValueError(f"parameter 'loss' = {loss!r} is not allowed: expected one of {tuple(LOSSES)}")
    forward, _, _ = make_forward(model, allow_train_mode)
    require_finite(theta, "θ", "lab.flat.per_sample_losses")
    with torch.no_grad():
        out = forward(theta, x.to(device=theta.device, dtype=theta.dtype))
        target = y.to(theta.device) if not y.is_floating_point() else y.to(device=theta.device, dtype=theta.dtype)
        return LOSSES[loss](out, target, reduction="none")


def chunk_size_for(model: nn.Module, n_samples: int, itemsize: int, budget_bytes: float = 2**30) -> int:
    """Points per vmap chunk so that activations of one chunk stay within budget_bytes."""
    acts = sum(m.out_features for m in model.modules() if isinstance(m, nn.Linear)) or 1
    p = sum(p.numel() for p in model.parameters())
    per_point = itemsize * (3 * n_samples * acts + 2 * p)
    return max(1, int(budget_bytes // per_point))


def batched(loss_fn: Callable[[torch.Tensor], torch.Tensor], thetas: torch.Tensor, chunk_size: int = 64
            ) -> torch.Tensor:
    """loss_fn over many parameter points (rows of thetas), vmapped in chunks."""
    if thetas.ndim != 2:
        raise ValueError(f"thetas must be 2-D (points × parameters), got shape {tuple(thetas.shape)}")
    f = vmap(loss_fn)
    return torch.cat([f(thetas[i:i + chunk_size]) for i in range(0, thetas.shape[0], chunk_size)])
