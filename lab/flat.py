"""A model's parameters as one flat vector, and pure loss functions of that vector (torch.func).

Inputs: wherever a builder here takes inputs x, x is a tensor of any dtype (integer and bool tensors, e.g. token
ids or masks, are never cast; floating tensors follow θ's dtype and device), a tuple or list of such tensors (the
model is called as ``model(*x)``) or a dict of them (``model(**x)``); `to_inputs` does the moving, and
`batch_size` counts the samples (the first dimension of x, or of its first tensor).

Losses: "mse" (`mse`: outputs and targets of the same shape; an (n, 1) output against an (n,) target is reshaped,
shapes that cannot match are refused) and "cross_entropy" (`cross_entropy`: logits with the class dimension LAST,
(B, C) or (B, T, C), against class indices (B,) or (B, T), with `ignore_index`), or any callable
(outputs, targets) ↦ scalar; options of a named loss go in ``loss_kwargs``. A model that returns an object or a
dict holding its logits (Hugging Face style) is wrapped with `logits_of`.

Attention: every forward built here runs under ``torch.nn.attention.sdpa_kernel(SDPBackend.MATH)``, so that
`nn.MultiheadAttention` and `F.scaled_dot_product_attention` use the math kernel, whose second derivatives exist
(the CPU flash kernel of torch 2.14.1 has none, and Hessian-vector products of a transformer would fail).
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from lab.checks import TrainModeError, require_eval_mode, require_finite

__all__ = ["mse", "cross_entropy", "LOSSES", "FlatSpec", "flatten", "unflatten", "layer_slices", "Inputs",
           "to_inputs", "batch_size", "LogitsOf", "logits_of", "make_forward", "make_loss_fn", "loss_from_forward",
           "make_batch_loss_fn", "Forward", "LossParts", "per_sample_losses", "chunk_size_for", "batched"]

# What a model is called on: a tensor (model(x)), a tuple or list of tensors (model(*x)) or a dict (model(**x)).
Inputs = torch.Tensor | tuple | list | Mapping


def mse(pred: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Mean squared error, as torch.nn.functional.mse_loss but never broadcasting: outputs and targets of the same
    number of entries are compared entry by entry (outputs reshaped to the targets' shape, e.g. (n, 1) against (n,)),
    and shapes that cannot match are refused (F.mse_loss would broadcast (n, 1) against (n,) to an (n, n) table and
    return a wrong loss).

    Written as plain tensor arithmetic: in torch 2.14.1 `torch.func.linearize` of the gradient of F.mse_loss crashes
    the process (a segmentation fault), and lab.curvature may fall back to linearizing the gradient for
    Hessian-vector products.

    Args:
        pred: outputs, any shape, floating.
        target: targets with as many entries as pred.
        reduction: "mean", "sum" or "none" (then the target's shape).

    Returns:
        A 0-d tensor ("mean", "sum") or the squared errors in the target's shape ("none").

    Raises:
        ValueError: an unknown reduction, or pred and target with different numbers of entries.

    Example:
        >>> import torch
        >>> mse(torch.tensor([[1.0], [2.0]]), torch.tensor([1.0, 4.0]))
        tensor(2.)
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"parameter 'reduction' = {reduction!r} is not allowed: expected one of 'mean', 'sum', "
                         "'none'")
    if pred.shape != target.shape:
        if pred.numel() != target.numel():
            raise ValueError(f"loss 'mse': outputs of shape {tuple(pred.shape)} cannot meet targets of shape "
                             f"{tuple(target.shape)} ({pred.numel()} against {target.numel()} entries): expected "
                             "targets with one entry per output (broadcasting would compute a different loss)")
        pred = pred.reshape(target.shape)
    sq = (pred - target).pow(2)
    if reduction == "none":
        return sq
    return sq.sum() if reduction == "sum" else sq.mean()


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, reduction: str = "mean", ignore_index: int = -100,
                  label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy of logits with the class dimension LAST, (..., C), against class indices (...) — (B, C)
    against (B,), or a language model's (B, T, C) against (B, T) (flattened to (B·T, C)) — or against class
    probabilities of the logits' shape.

    torch.nn.functional.cross_entropy on the flattened logits: tokens whose target is `ignore_index` (e.g. padding)
    count neither in the sum nor in the mean. Pass options through ``loss_kwargs`` (``make_loss_fn(...,
    loss="cross_entropy", loss_kwargs={"ignore_index": 0})``) or ``functools.partial(cross_entropy, ...)``.
    Unlike F.cross_entropy, the classes are the last dimension (as language models and Hugging Face return them),
    not the second: (B, C, T) logits must be transposed first.

    Args:
        logits: (..., C), floating.
        target: class indices (an integer tensor) of shape logits.shape[:-1], or probabilities (floating) of the
            logits' shape.
        reduction: "mean" (over the tokens not ignored), "sum" or "none" (shape logits.shape[:-1], 0 where ignored).
        ignore_index: a target value that is skipped.
        label_smoothing: as in F.cross_entropy.

    Returns:
        A 0-d tensor ("mean", "sum") or per-token losses of shape logits.shape[:-1] ("none"), logits' dtype.

    Raises:
        ValueError: the target's shape does not fit the logits'.

    Example:
        >>> import torch
        >>> logits = torch.zeros(2, 3, 5)                       # (B, T, V)
        >>> target = torch.tensor([[1, 2, -100], [0, -100, -100]])
        >>> cross_entropy(logits, target)                       # 3 tokens counted, each log 5
        tensor(1.6094)
        >>> cross_entropy(logits, target, reduction="none").shape
        torch.Size([2, 3])
    """
    if logits.ndim < 1:
        raise ValueError("loss 'cross_entropy': the logits are 0-d: expected logits (..., C) with the classes last")
    c = logits.shape[-1]
    if target.is_floating_point():
        if target.shape != logits.shape:
            raise ValueError(f"loss 'cross_entropy': probability targets of shape {tuple(target.shape)} do not fit "
                             f"logits of shape {tuple(logits.shape)}: expected the logits' shape (or integer class "
                             "indices)")
        flat_t = target.reshape(-1, c)
    else:
        if target.shape != logits.shape[:-1]:
            raise ValueError(f"loss 'cross_entropy': targets of shape {tuple(target.shape)} do not fit logits of "
                             f"shape {tuple(logits.shape)}: expected class indices of shape "
                             f"{tuple(logits.shape[:-1])} (logits with the class dimension last)")
        flat_t = target.reshape(-1)
    out = nn.functional.cross_entropy(logits.reshape(-1, c), flat_t, reduction=reduction, ignore_index=ignore_index,
                                      label_smoothing=label_smoothing)
    return out.reshape(logits.shape[:-1]) if reduction == "none" else out


LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "cross_entropy": cross_entropy,
    "mse": mse,
}


def _criterion(loss: str | Callable, loss_kwargs: Mapping[str, Any] | None, where: str
               ) -> Callable[..., torch.Tensor]:
    """The loss callable for `loss` (a name of LOSSES or a callable) with `loss_kwargs` bound, or a named error."""
    if isinstance(loss, str) and loss in LOSSES:
        fn = LOSSES[loss]
    elif callable(loss) and not isinstance(loss, str):
        fn = loss
    else:
        raise ValueError(f"{where}: parameter 'loss' = {loss!r} is not allowed: expected one of {tuple(LOSSES)} or "
                         "a callable")
    if not loss_kwargs:
        return fn
    if not isinstance(loss_kwargs, Mapping):
        raise ValueError(f"{where}: parameter 'loss_kwargs' = {loss_kwargs!r} is not allowed: expected a dict of "
                         "keyword arguments of the loss, or None")
    try:
        inspect.signature(fn).bind_partial(None, None, **loss_kwargs)
    except TypeError as err:
        raise ValueError(f"{where}: parameter 'loss_kwargs' = {dict(loss_kwargs)!r} is not allowed for loss "
                         f"{loss!r}: {err}") from None
    except ValueError:  # no signature to check (a builtin): the first call will say
        pass
    return functools.partial(fn, **loss_kwargs)


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
    return {n: theta[..., s].reshape((*theta.shape[:-1], *shape))  # a 0-d parameter: shape ()
            for (n, s), shape in zip(spec.slices().items(), spec.shapes, strict=True)}


def layer_slices(spec: FlatSpec) -> dict[str, slice]:
    """Slices of the flat vector grouped by module (weight and bias of one layer together)."""
    out: dict[str, slice] = {}
    for n, s in spec.slices().items():
        mod = n.rsplit(".", 1)[0] if "." in n else n
        out[mod] = slice(out[mod].start, s.stop) if mod in out else s
    return out


def to_inputs(x: Inputs, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> Inputs:
    """Model inputs moved to a device, their floating tensors cast to a dtype; integer and bool tensors (token ids,
    masks) keep their dtype.

    Args:
        x: a tensor, a tuple or list of tensors, or a dict of tensors (nested containers are followed; entries that
            are not tensors, e.g. None or a flag, are passed through).
        dtype: the floating dtype for floating tensors (None: unchanged).
        device: where every tensor goes (None: unchanged).

    Returns:
        x's structure (tensor, tuple, list or dict) with the moved tensors; a tensor already in place is returned
        as is, not copied.

    Raises:
        ValueError: x is not a tensor, tuple, list or dict.

    Example:
        >>> import torch
        >>> x = {"ids": torch.tensor([[1, 2]]), "scale": torch.ones(1, 2)}
        >>> {k: v.dtype for k, v in to_inputs(x, torch.float64).items()}
        {'ids': torch.int64, 'scale': torch.float64}
    """
    if not isinstance(x, torch.Tensor | tuple | list | Mapping):
        raise ValueError(f"parameter 'x' of type {type(x).__name__} is not allowed: expected a tensor, a tuple or "
                         "list of tensors (model(*x)) or a dict of tensors (model(**x))")
    return _move(x, dtype, device)


def _move(x: Any, dtype: torch.dtype | None, device: torch.device | str | None) -> Any:
    if isinstance(x, torch.Tensor):
        if x.is_floating_point() and dtype is not None:
            return x.to(device=device, dtype=dtype)
        return x if device is None else x.to(device)
    if isinstance(x, Mapping):
        return {k: _move(v, dtype, device) for k, v in x.items()}
    if isinstance(x, tuple | list):
        return type(x)(_move(v, dtype, device) for v in x) if type(x) in (tuple, list) else \
            tuple(_move(v, dtype, device) for v in x)
    return x


def _copy(x: Any) -> Any:
    """A detached copy of every tensor of x (so later in-place changes by the caller never leak in)."""
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    if isinstance(x, Mapping):
        return {k: _copy(v) for k, v in x.items()}
    if isinstance(x, tuple | list):
        return type(x)(_copy(v) for v in x) if type(x) in (tuple, list) else tuple(_copy(v) for v in x)
    return x


def _tensors(x: Any) -> list[torch.Tensor]:
    """The tensors of x (a tensor, or nested tuples, lists, dicts and objects with tensor attributes), in order."""
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, Mapping):
        return [t for v in x.values() for t in _tensors(v)]
    if isinstance(x, tuple | list):
        return [t for v in x for t in _tensors(v)]
    return []


def batch_size(x: Inputs, name: str = "x") -> int:
    """The number of samples in model inputs: the first dimension of x, or of its first tensor for a tuple, list or
    dict.

    Args:
        x: a tensor, or a tuple, list or dict of tensors.
        name: the parameter's name for the error message.

    Returns:
        The number of samples (0 for an empty batch).

    Raises:
        ValueError: x holds no tensor with a first dimension.

    Example:
        >>> import torch
        >>> batch_size({"ids": torch.zeros(4, 7, dtype=torch.long)}), batch_size((torch.zeros(3, 2), torch.zeros(3)))
        (4, 3)
    """
    for t in _tensors(x):
        if t.ndim >= 1:
            return int(t.shape[0])
    raise ValueError(f"parameter '{name}' holds no tensor with a batch dimension: expected a tensor (n, ...), or a "
                     "tuple, list or dict of them")


def _require_samples(x: Inputs, y: torch.Tensor | None, where: str) -> int:
    """n, the samples of x; a named error for an empty batch or for y of another length."""
    n = batch_size(x)
    if n == 0:
        raise ValueError(f"{where}: parameter 'x' has no samples (a batch of 0): the mean loss of an empty batch is "
                         "NaN; expected at least one sample")
    if y is not None:
        m = int(y.shape[0]) if y.ndim >= 1 else None
        if m != n:
            raise ValueError(f"{where}: parameters 'x' and 'y' have different numbers of samples ({n} inputs, "
                             f"{'a 0-d target' if m is None else f'{m} targets'}): expected one target per input")
    return n


def _slice(x: Any, n: int, k: int) -> Any:
    """The first k samples of every tensor of x whose first dimension is n."""
    if isinstance(x, torch.Tensor):
        return x[:k] if x.ndim >= 1 and x.shape[0] == n else x
    if isinstance(x, Mapping):
        return {key: _slice(v, n, k) for key, v in x.items()}
    if isinstance(x, tuple | list):
        return type(x)(_slice(v, n, k) for v in x) if type(x) in (tuple, list) else tuple(_slice(v, n, k) for v in x)
    return x


def _call_args(x: Inputs) -> tuple[tuple, dict]:
    """(args, kwargs) to call a model on x: model(x), model(*x) or model(**x)."""
    if isinstance(x, Mapping):
        return (), dict(x)
    if isinstance(x, tuple | list):
        return tuple(x), {}
    return (x,), {}


def _same_outputs(a: Any, b: Any) -> bool:
    """Whether two outputs of the same call agree: exactly on a CPU (NaN equal to NaN), to 1e-3 elsewhere."""
    ta, tb = _tensors(a), _tensors(b)
    if len(ta) != len(tb):
        return False
    for u, v in zip(ta, tb, strict=True):
        if u.shape != v.shape:
            return False
        if not (u.is_floating_point() or u.is_complex()):
            if not torch.equal(u, v):
                return False
            continue
        if u.device.type == "cpu":
            same = (u == v) | (torch.isnan(u) & torch.isnan(v))
        else:  # GPU kernels may sum in another order from call to call
            scale = float(u.abs().nan_to_num().max()) if u.numel() else 0.0
            same = torch.isclose(u, v, rtol=1e-3, atol=1e-3 * scale, equal_nan=True)
        if not bool(same.all()):
            return False
    return True


def _plain(*xs: Any) -> bool:
    """True when no tensor of xs is wrapped by a torch.func transform (vmap, grad, jvp)."""
    wrapped = torch._C._functorch.is_functorch_wrapped_tensor
    return not any(wrapped(t) for x in xs for t in _tensors(x))


def _require_deterministic(forward: Callable, theta: torch.Tensor, x: Inputs, model: nn.Module, where: str) -> None:
    """Evaluate the model twice at θ on (at most 4 samples of) x and raise TrainModeError when the outputs differ."""
    n = batch_size(x)
    with torch.no_grad():
        try:
            xs = _slice(x, n, min(n, 4))
            a = forward(theta.detach(), xs)
        except Exception:  # a model that needs the whole batch (a fixed batch size): check on all of x
            xs = x
            a = forward(theta.detach(), xs)
        b = forward(theta.detach(), xs)
    if not _same_outputs(a, b):
        mode = "train" if model.training else "eval"
        raise TrainModeError(
            f"{where}: the model ({type(model).__name__}, in {mode} mode) gave different outputs in two calls at the "
            f"same θ on the same inputs: something in its forward is random, e.g. a functional dropout "
            f"F.dropout(x, p, self.training) that require_eval_mode cannot see, so its loss is not a function of θ "
            f"alone; call model.eval() first (or remove the randomness), or pass allow_train_mode=True if that is "
            f"what you mean to measure")


class LogitsOf(nn.Module):
    """A model whose output is an object or a dict holding its logits (Hugging Face style: ``out.logits`` or
    ``out["logits"]``), as a module that returns the logits tensor; built by `logits_of`.

    Args:
        model: the wrapped module (held, not copied: its parameters are this module's, named "model.<name>").
        key: the attribute or key of the logits.

    Attributes:
        model, key: the constructor's arguments.
    """

    def __init__(self, model: nn.Module, key: str = "logits"):
        super().__init__()
        self.model, self.key = model, key
        self.training = model.training  # this wrapper's own flag only: the caller's modules keep their modes

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The wrapped model's logits on the same arguments.

        Returns:
            The tensor under `key` (an attribute or a dict key); a plain tensor output is returned as it is, and
            the first entry of a tuple output.
        """
        out = self.model(*args, **kwargs)
        if isinstance(out, torch.Tensor):
            return out
        if isinstance(out, Mapping) and self.key in out:
            return out[self.key]
        if hasattr(out, self.key):
            return getattr(out, self.key)
        if isinstance(out, tuple | list) and out and isinstance(out[0], torch.Tensor):
            return out[0]
        raise TypeError(f"lab.flat.logits_of: the model returned a {type(out).__name__} with no {self.key!r} "
                        f"attribute or key: pass key=<the name of its logits>")


def logits_of(model: nn.Module, key: str = "logits") -> LogitsOf:
    """Adapt a model that returns an object or dict with logits (Hugging Face style) to one returning the tensor.

    No import of transformers is needed: any output with a `key` attribute or key works. The wrapper holds the
    model itself (parameters named "model.<name>"; the caller's model is not copied or switched between modes).

    Args:
        model: an nn.Module whose forward returns ``out.logits``, ``out["logits"]``, a tuple (logits first) or a
            tensor.
        key: the name of the logits.

    Returns:
        A `LogitsOf` module, for `make_loss_fn` / `make_forward` / `make_batch_loss_fn`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> class HF(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.emb = nn.Embedding(5, 5)
        ...     def forward(self, input_ids):
        ...         return {"logits": self.emb(input_ids), "hidden_states": None}
        >>> ids = torch.tensor([[1, 2, 3]])
        >>> f, theta, _ = make_loss_fn(logits_of(HF()), {"input_ids": ids}, torch.tensor([[2, 3, 4]]))
        >>> f(theta).shape
        torch.Size([])
    """
    return LogitsOf(model, key)


Forward = Callable[[torch.Tensor, Inputs], Any]


def make_forward(model: nn.Module, allow_train_mode: bool = False) -> tuple[Forward, torch.Tensor, FlatSpec]:
    """forward(θ, x): the model as a pure function of its flat parameters (model left untouched).

    x is a tensor (model(x)), a tuple or list (model(*x)) or a dict (model(**x)); floating tensors are cast to θ's
    dtype and every tensor is moved to θ's device (`to_inputs`), integer and bool tensors keep their dtype. The call
    runs under ``sdpa_kernel(SDPBackend.MATH)`` so that attention has second derivatives. Parameters shared by
    several modules (tied weights) appear once in θ and stay tied (functional_call's tie_weights).

    A model in train mode with Dropout, BatchNorm or other mode-dependent modules raises TrainModeError (its
    output would be random or batch-dependent): call model.eval(), or pass allow_train_mode=True deliberately. The
    first call outside torch.func transforms also evaluates the model a second time on (at most 4 samples of) its
    inputs and raises TrainModeError if the outputs differ (randomness require_eval_mode cannot see, such as a
    functional dropout), unless allow_train_mode.

    Args:
        model: any nn.Module.
        allow_train_mode: skip both checks.

    Returns:
        (forward, theta0, spec): forward(θ (P,), x) ↦ the model's output; theta0 (P,) a detached copy of the
        parameters (their dtype and device); spec their layout.

    Example:
        >>> import torch
        >>> forward, theta0, spec = make_forward(torch.nn.Linear(2, 1))
        >>> forward(theta0.double(), torch.ones(3, 2)).dtype, spec.size
        (torch.float64, 3)
    """
    require_eval_mode(model, "lab.flat.make_forward", allow_train_mode)
    theta0, spec = flatten(model)
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}  # never the caller's
    checked = [allow_train_mode]

    def run(theta: torch.Tensor, x: Inputs) -> Any:
        bufs = {n: (b.to(theta.dtype) if b.is_floating_point() else b) for n, b in buffers.items()}
        args, kwargs = _call_args(to_inputs(x, theta.dtype, theta.device))
        with sdpa_kernel(SDPBackend.MATH):
            return functional_call(model, (unflatten(theta, spec), bufs), args, kwargs)

    def forward(theta: torch.Tensor, x: Inputs) -> Any:
        if not checked[0] and _plain(theta, x):
            checked[0] = True
            if batch_size(x) > 0:
                _require_deterministic(run, theta, x, model, "lab.flat.make_forward")
        return run(theta, x)

    forward.checked = checked  # type: ignore[attr-defined]
    forward.run = run  # type: ignore[attr-defined]
    return forward, theta0, spec


@dataclass(frozen=True)
class LossParts:
    """What a loss function from `make_loss_fn` is made of, for evaluators that exploit the model's structure
    (`lab.landscape.plane`'s first-layer-affine path); `loss_fn.parts` holds it, for tensor inputs x only.

    Attributes:
        model: the module (its parameters are never read after `make_loss_fn`: θ supplies them).
        spec: the flat layout of θ.
        crit: (outputs, targets) ↦ scalar mean loss (the named loss with its loss_kwargs bound).
        x_as: (dtype, device) ↦ the inputs, a cached copy (`to_inputs`).
        y_as: (dtype, device) ↦ the targets.
        buffers: the model's buffers, copied.
    """

    model: nn.Module
    spec: FlatSpec
    crit: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    x_as: Callable[[torch.dtype, torch.device], Inputs]
    y_as: Callable[[torch.dtype, torch.device], torch.Tensor]
    buffers: dict


def _target_as(y: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    return y.to(device=theta.device, dtype=theta.dtype) if y.is_floating_point() else y.to(theta.device)


def make_loss_fn(model: nn.Module, x: Inputs, y: torch.Tensor, loss: str | Callable = "cross_entropy",
                 allow_train_mode: bool = False, loss_kwargs: Mapping[str, Any] | None = None
                 ) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor, FlatSpec]:
    """loss_fn(θ): mean loss over (x, y) as a pure function of the flat vector, computed in θ's dtype.

    x and y are copied once here, so later in-place changes to the caller's tensors never change the loss (in any
    dtype). A model in train mode with mode-dependent modules raises TrainModeError (see make_forward), and so does
    one whose output differs between two calls at θ0 on the first samples of x (e.g. a functional dropout),
    unless allow_train_mode. `loss_fn.parts` (a `LossParts`, for a tensor x) says what the loss is made of.

    Args:
        model: any nn.Module (left untouched).
        x: inputs, n samples: a tensor (n, ...) of any dtype, a tuple or list of tensors (model(*x)) or a dict of
            tensors (model(**x)); see `to_inputs`.
        y: targets, first dimension n: class indices for "cross_entropy" ((n,) against (n, C) logits, (n, T)
            against (n, T, C)), one value per output for "mse".
        loss: "cross_entropy" (`cross_entropy`, classes last), "mse" (`mse`) or a callable (outputs, targets) ↦
            scalar mean.
        allow_train_mode: measure a train-mode model on purpose (skips the mode and determinism checks).
        loss_kwargs: keyword arguments of the loss, e.g. ``{"ignore_index": 0}`` for "cross_entropy".

    Returns:
        (loss_fn, theta0, spec): loss_fn θ (P,) ↦ 0-d tensor in θ's dtype; theta0 (P,) a detached copy of the
        model's parameters.

    Raises:
        ValueError: an unknown loss, bad loss_kwargs, an empty x, or x and y with different numbers of samples.
        TrainModeError: see above.

    Example:
        >>> import torch
        >>> f, theta0, spec = make_loss_fn(torch.nn.Linear(5, 1), torch.randn(8, 5), torch.randn(8), loss="mse")
        >>> f(theta0).shape, spec.size
        (torch.Size([]), 6)
    """
    crit = _criterion(loss, loss_kwargs, "lab.flat.make_loss_fn")
    _require_samples(x, y, "lab.flat.make_loss_fn")
    forward, theta0, spec = make_forward(model, allow_train_mode)
    x, y = _copy(x), y.detach().clone()  # the loss is a function of θ alone: never of the caller's x
    if not allow_train_mode:
        forward.checked[0] = True  # type: ignore[attr-defined]
        _require_deterministic(forward.run, theta0, x, model, "lab.flat.make_loss_fn")  # type: ignore[attr-defined]
    cache: dict[tuple, Inputs] = {}

    def x_as(dtype: torch.dtype, device: torch.device) -> Inputs:
        key = (dtype, device)
        if key not in cache:
            cache[key] = to_inputs(x, dtype, device)
        return cache[key]

    def y_as(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        return y.to(device) if not y.is_floating_point() else y.to(device=device, dtype=dtype)

    def loss_fn(theta: torch.Tensor) -> torch.Tensor:
        out = forward(theta, x_as(theta.dtype, theta.device))
        return crit(out, y_as(theta.dtype, theta.device))

    if isinstance(x, torch.Tensor):  # plane's first-layer-affine path reads a tensor x
        loss_fn.parts = LossParts(model, spec, crit, x_as, y_as,  # type: ignore[attr-defined]
                                  {n: b.detach().clone() for n, b in model.named_buffers()})
    return loss_fn, theta0, spec


def loss_from_forward(forward: Forward, x: Inputs, y: torch.Tensor, loss: str | Callable = "mse",
                      loss_kwargs: Mapping[str, Any] | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """θ ↦ loss(forward(θ, x), y): a pure loss of the flat vector from a pure forward (so that no chapter writes
    its own MSE lambda). x and y are copied once; the loss is computed in θ's dtype and on θ's device.

    Args:
        forward: (θ (P,), x) ↦ outputs, e.g. from `make_forward`.
        x: inputs with n samples: a tensor (n, ...), a tuple, list or dict of tensors (moved by `to_inputs`:
            floating tensors to θ's dtype, integer ones kept).
        y: targets, first dimension n; the same number of entries as the outputs for "mse" (an (n,) target against
            (n, 1) outputs is reshaped to match), class indices for "cross_entropy".
        loss: "mse", "cross_entropy" or a callable (outputs, targets) ↦ scalar.
        loss_kwargs: keyword arguments of the loss.

    Returns:
        loss_fn: θ (P,) ↦ scalar tensor.

    Raises:
        ValueError: an unknown loss, an empty x, or x and y of different lengths.

    Example:
        >>> import torch
        >>> f = loss_from_forward(lambda t, x: x @ t, torch.eye(2), torch.tensor([1.0, 3.0]))
        >>> f(torch.zeros(2))
        tensor(5.)
    """
    crit = _criterion(loss, loss_kwargs, "lab.flat.loss_from_forward")
    _require_samples(x, y, "lab.flat.loss_from_forward")
    x, y = _copy(x), y.detach().clone()

    def loss_fn(theta: torch.Tensor) -> torch.Tensor:
        out = forward(theta, to_inputs(x, theta.dtype, theta.device))
        return crit(out, _target_as(y, theta))

    return loss_fn


def make_batch_loss_fn(model: nn.Module, loss: str | Callable = "cross_entropy", allow_train_mode: bool = False,
                       loss_kwargs: Mapping[str, Any] | None = None
                       ) -> tuple[Callable[[torch.Tensor, Inputs, torch.Tensor], torch.Tensor], torch.Tensor,
                                  FlatSpec]:
    """(θ, x, y) ↦ the mean loss of a batch, a pure function: what `lab.curvature.minibatch_hvp_operator` and
    `dataloader_hvp_operator` take.

    Args:
        model: any nn.Module (left untouched; eval mode unless allow_train_mode; see `make_forward`, whose
            determinism check runs on the first batch).
        loss: "cross_entropy", "mse" or a callable (outputs, targets) ↦ scalar mean.
        allow_train_mode: measure a train-mode model on purpose.
        loss_kwargs: keyword arguments of the loss, e.g. ``{"ignore_index": 0}``.

    Returns:
        (loss_on_batch, theta0, spec): loss_on_batch(θ (P,), x, y) with x a tensor, tuple, list or dict (see
        `to_inputs`) and y its targets; theta0 (P,) a detached copy of the model's parameters. An empty batch or
        x and y of different lengths raise ValueError.

    Example:
        >>> import torch
        >>> f, theta0, _ = make_batch_loss_fn(torch.nn.Linear(2, 3))
        >>> f(theta0, torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)).shape
        torch.Size([])
    """
    crit = _criterion(loss, loss_kwargs, "lab.flat.make_batch_loss_fn")
    forward, theta0, spec = make_forward(model, allow_train_mode)

    def loss_on_batch(theta: torch.Tensor, x: Inputs, y: torch.Tensor) -> torch.Tensor:
        _require_samples(x, y, "lab.flat.make_batch_loss_fn")
        return crit(forward(theta, x), _target_as(y, theta))

    return loss_on_batch, theta0, spec


def per_sample_losses(model: nn.Module, theta: torch.Tensor, x: Inputs, y: torch.Tensor,
                      loss: str = "cross_entropy", allow_train_mode: bool = False,
                      loss_kwargs: Mapping[str, Any] | None = None) -> torch.Tensor:
    """Each sample's loss at the flat parameters θ (no reduction), e.g. for minibatch-noise estimates.

    Args:
        model: the nn.Module θ belongs to.
        theta: flat parameters (P,), finite.
        x: inputs with n samples (a tensor, tuple, list or dict; see `to_inputs`).
        y: targets, first dimension n.
        loss: "cross_entropy" or "mse" (a name of LOSSES).
        allow_train_mode: measure a train-mode model on purpose.
        loss_kwargs: keyword arguments of the loss, e.g. ``{"ignore_index": 0}``.

    Returns:
        The unreduced losses in θ's dtype: (n,) for (n, C) logits or (n,) targets; the target's shape otherwise,
        e.g. (n, T) per-token losses for a language model (0 at ignored tokens).

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(2, 3)
        >>> per_sample_losses(net, flatten(net)[0], torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)).shape
        torch.Size([4])
    """
    if not isinstance(loss, str):
        raise ValueError(f"lab.flat.per_sample_losses: parameter 'loss' = {loss!r} is not allowed: expected one of "
                         f"{tuple(LOSSES)}")
    crit = _criterion(loss, loss_kwargs, "lab.flat.per_sample_losses")
    _require_samples(x, y, "lab.flat.per_sample_losses")
    forward, _, _ = make_forward(model, allow_train_mode)
    require_finite(theta, "θ", "lab.flat.per_sample_losses")
    with torch.no_grad():
        return crit(forward(theta, x), _target_as(y, theta), reduction="none")


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
