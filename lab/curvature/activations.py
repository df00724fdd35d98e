"""Curvature w.r.t. a layer's activations: the Hessian of the loss in activation space, per sample or averaged,
between two layers, as an operator for wide layers, and the output Jacobian w.r.t. the activations.

A forward hook on the named module adds a perturbation δ to its output, a_i ↦ a_i + δ_i, and the derivatives are
taken w.r.t. δ at δ = 0. The hook lives on the loss function's model only while the loss is evaluated (it is removed
in a `finally`); the model's parameters and mode are never touched.

Per-sample quantities use ℓ_i = n·(sample i's share of the mean loss L) — for cross-entropy and MSE exactly
crit(f(x_i)[None], y_i[None]), the loss of sample i alone — and assume that sample i's loss depends on sample i's
activations only (true in eval mode without batch statistics). The Hessian of Σ_i ℓ_i w.r.t. the per-sample δ is
then block-diagonal over samples, so all n blocks H_i come from N_l products (one per activation coordinate), not n·N_l.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

from lab.checks import require_finite
from lab.curvature.ggn import LossProblem, require_independent_samples, unpack_loss
from lab.curvature.operators import HessianOperator

__all__ = ["REDUCE", "layer_shapes", "activation_hessian", "activation_hessian_operator", "activation_jacobian"]

REDUCE = ("mean", "none")


def _module(model: nn.Module, layer: str) -> nn.Module:
    try:
        return model.get_submodule(layer)
    except AttributeError:
        names = tuple(n for n, _ in model.named_modules() if n)
        raise ValueError(f"parameter 'layer' = {layer!r} is not allowed: expected a module name among {names}") \
            from None


@contextmanager
def _perturbed(model: nn.Module, deltas: Mapping[str, torch.Tensor], shared: bool) -> Iterator[dict[str, int]]:
    """Forward hooks that add deltas[name] to each named module's output: shared (broadcast over samples, δ of
    shape (N,)) or per sample (δ (n, N)). Yields the number of calls per module."""
    calls = dict.fromkeys(deltas, 0)
    handles = []

    def make(name: str) -> Callable:
        def hook(_mod: nn.Module, _inp: tuple, out: torch.Tensor) -> torch.Tensor:
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"lab.curvature.activations: module {name!r} returns a {type(out).__name__}: "
                                "expected a tensor output (n, ...)")
            calls[name] += 1
            d = deltas[name]
            return out + (d.reshape(out.shape[1:]) if shared else d.reshape(out.shape))
        return hook

    try:
        for name in deltas:
            handles.append(_module(model, name).register_forward_hook(make(name)))
        yield calls
    finally:
        for h in handles:
            h.remove()


def _loss(p: LossProblem, theta: torch.Tensor, deltas: Mapping[str, torch.Tensor], shared: bool) -> torch.Tensor:
    """The mean loss (shared δ) or n × the mean loss = Σ_i ℓ_i (per-sample δ) with the layers perturbed."""
    with _perturbed(p.model, deltas, shared) as calls:
        out = p.forward(theta, p.x)
    bad = {k: c for k, c in calls.items() if c != 1}
    if bad:
        raise ValueError(f"lab.curvature.activations: modules {bad} ran a number of times other than once in one "
                         "forward (unused, or shared between several places): their activations are not one tensor")
    loss = p.crit(out, p.y)
    return loss if shared else loss * len(p.x)


def layer_shapes(loss_fn: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor,
                 layers: str | list[str]) -> dict[str, torch.Size]:
    """The output shape (n, ...) of each named module in one forward pass of a `lab.flat.make_loss_fn` loss.

    Example:
        >>> import torch
        >>> from lab.flat import make_loss_fn
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))
        >>> f, theta, _ = make_loss_fn(model, torch.ones(5, 2), torch.zeros(5, dtype=torch.long))
        >>> layer_shapes(f, theta, ["1", "2"])
        {'1': torch.Size([5, 4]), '2': torch.Size([5, 3])}
    """
    p = unpack_loss(loss_fn, theta)
    names = list(dict.fromkeys([layers] if isinstance(layers, str) else layers))
    shapes: dict[str, torch.Size] = {}

    def make(name: str) -> Callable:
        def hook(_mod: nn.Module, _inp: tuple, out: torch.Tensor) -> None:
            if isinstance(out, torch.Tensor):
                shapes.setdefault(name, out.shape)
        return hook

    handles = [_module(p.model, n).register_forward_hook(make(n)) for n in names]
    try:
        with torch.no_grad():
            p.forward(theta.detach(), p.x)
    finally:
        for h in handles:
            h.remove()
    missing = [n for n in names if n not in shapes]
    if missing:
        raise ValueError(f"lab.curvature.activations: modules {missing} did not run in the forward pass or returned "
                         "no tensor (a tuple, as nn.GRU, or a module whose weights are used without calling it, as "
                         "MultiheadAttention's out_proj): expected a module whose output is one tensor (n, ...)")
    return {n: shapes[n] for n in names}


def _second(gb: torch.Tensor, da: torch.Tensor, tangents: torch.Tensor) -> torch.Tensor:
    """∂/∂da ⟨gb, t⟩ for each tangent t (the rows of `tangents`): shape (len(tangents), *da.shape)."""
    if not gb.requires_grad:                                   # the loss is linear in the second layer's δ
        return torch.zeros(len(tangents), *da.shape, dtype=da.dtype, device=da.device)
    kw = {"retain_graph": True, "allow_unused": True, "materialize_grads": True}
    try:
        return torch.autograd.grad(gb, da, tangents, is_grads_batched=True, **kw)[0]
    except (NotImplementedError, RuntimeError):
        return torch.stack([torch.autograd.grad(gb, da, t, **kw)[0] for t in tangents])


def activation_hessian(loss_fn: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor, layer: str,
                       other: str | None = None, reduce: str = "mean") -> torch.Tensor:
    """The Hessian of the loss w.r.t. a layer's output (or the cross block between two layers), dense.

    With a_i ∈ R^{N_l} sample i's output of module `layer` (flattened) and ℓ_i sample i's own loss:

    - reduce="none": H_i = ∂²ℓ_i / ∂a_i ∂b_iᵀ for every sample, shape (n, N_l, N_l'); b_i the output of `other`
      (default `layer`: the per-sample activation Hessians ∂²ℓ_i/∂a_i²).
    - reduce="mean": (1/n) Σ_i H_i, shape (N_l, N_l'). This is the Hessian of the MEAN loss L = (1/n) Σ ℓ_i w.r.t.
      one perturbation δ added to every sample's activation (a_i + δ); it is NOT the Hessian of L w.r.t. all the
      activations at once, which is block-diagonal with blocks H_i / n (the 1/n of the mean loss).

    With two layers, the mixed derivative treats both perturbations as inputs: if `layer` is upstream of `other`,
    ∂ℓ/∂δ_layer includes the path through `other`'s activations.

    Args:
        loss_fn: from `lab.flat.make_loss_fn`; its model has a module named `layer` (e.g. "1", "net.2") that runs
            once per forward and returns a tensor (n, ...).
        theta: the point (P,), finite; the result has its dtype and device.
        layer: the row layer (`model.named_modules()` names).
        other: the column layer; None: `layer`.
        reduce: "mean" or "none".

    Returns:
        (N_l, N_l') for "mean", (n, N_l, N_l') for "none"; N the number of entries per sample.

    Example:
        >>> import torch
        >>> from lab.flat import make_loss_fn
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3)).double()
        >>> _ = torch.manual_seed(0); x = torch.randn(6, 2, dtype=torch.float64)
        >>> f, theta, _ = make_loss_fn(model, x, torch.randint(0, 3, (6,)))
        >>> per = activation_hessian(f, theta, "2", reduce="none")           # logits: diag(p) − p pᵀ
        >>> per.shape, bool(torch.allclose(per.mean(0), activation_hessian(f, theta, "2")))
        (torch.Size([6, 3, 3]), True)
        >>> activation_hessian(f, theta, "1", "2").shape                     # hidden × logits, mean
        torch.Size([4, 3])
    """
    if reduce not in REDUCE:
        raise ValueError(f"parameter 'reduce' = {reduce!r} is not allowed: expected one of {REDUCE}")
    require_finite(theta, "θ", "lab.curvature.activation_hessian")
    other = layer if other is None else other
    theta = theta.detach().reshape(-1)
    p = unpack_loss(loss_fn, theta)
    if reduce == "none":
        require_independent_samples(p.model, "lab.curvature.activation_hessian")
    shapes = layer_shapes(loss_fn, theta, [layer, other])
    n = shapes[layer][0]
    na, nb = shapes[layer][1:].numel(), shapes[other][1:].numel()
    shared = reduce == "mean"
    lead = () if shared else (n,)
    with torch.enable_grad():
        da = torch.zeros(*lead, na, dtype=theta.dtype, device=theta.device, requires_grad=True)
        db = da if other == layer else torch.zeros(*lead, nb, dtype=theta.dtype, device=theta.device,
                                                     requires_grad=True)
        deltas = {layer: da} if other == layer else {layer: da, other: db}
        gb = torch.autograd.grad(_loss(p, theta, deltas, shared), db, create_graph=True)[0]
        eye = torch.eye(nb, dtype=theta.dtype, device=theta.device)
        tangents = eye if shared else eye[:, None, :].expand(nb, n, nb).contiguous()
        rows = _second(gb, da, tangents)                       # (N_l', [n,] N_l)
    out = rows.T if shared else rows.permute(1, 2, 0)
    return require_finite(out.detach().contiguous(), "the activation Hessian", "lab.curvature.activation_hessian")


def activation_hessian_operator(loss_fn: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor,
                                layer: str) -> HessianOperator:
    """v ↦ (1/n) Σ_i H_i v: the mean per-sample activation Hessian of a layer (`activation_hessian(...,
    reduce="mean")`) as an operator of size N_l, for layers too wide for the dense matrix.

    It is the Hessian of the mean loss w.r.t. one perturbation δ (N_l,) added to every sample's activation, so every
    estimator (`top_eigs`, `hutchpp_trace`, `slq_density`) takes it; each product is one backward pass.

    Args:
        loss_fn: from `lab.flat.make_loss_fn`.
        theta: the point (P,), finite; the operator's dtype and device.
        layer: a module name of the loss function's model.

    Returns:
        A `HessianOperator` of δ ↦ L(δ) at δ = 0.

    Example:
        >>> import torch
        >>> from lab.curvature import top_eigs
        >>> from lab.flat import make_loss_fn
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
        >>> _ = torch.manual_seed(0); x = torch.randn(6, 2, dtype=torch.float64)
        >>> f, theta, _ = make_loss_fn(model, x, torch.randint(0, 3, (6,)))
        >>> op = activation_hessian_operator(f, theta, "1")
        >>> dense = activation_hessian(f, theta, "1")
        >>> bool(abs(top_eigs(op, k=1).values[0] - torch.linalg.eigvalsh(dense)[-1]) < 1e-10)
        True
    """
    require_finite(theta, "θ", "lab.curvature.activation_hessian_operator")
    theta = theta.detach().reshape(-1)
    p = unpack_loss(loss_fn, theta)
    na = layer_shapes(loss_fn, theta, layer)[layer][1:].numel()
    zero = torch.zeros(na, dtype=theta.dtype, device=theta.device)
    return HessianOperator(lambda d: _loss(p, theta, {layer: d}, shared=True), zero)


def activation_jacobian(loss_fn: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor,
                        layer: str) -> torch.Tensor:
    """Each sample's output Jacobian w.r.t. its own activations at a layer: J_i = ∂f(x_i)/∂a_i.

    (For the Jacobian of the outputs w.r.t. the parameters use `lab.behavior.behavior_jacobian(p.forward, θ, p.x)`
    with `p = lab.curvature.unpack_loss(loss_fn, θ)`.)

    Args:
        loss_fn: from `lab.flat.make_loss_fn` (only its model and inputs are used).
        theta: the point (P,); the result has its dtype and device.
        layer: a module name of the model.

    Returns:
        Shape (n, C, N_l): C the outputs per sample, N_l the layer's entries per sample (both flattened).

    Example:
        >>> import torch
        >>> from lab.flat import make_loss_fn
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
        >>> f, theta, _ = make_loss_fn(model, torch.ones(5, 2), torch.zeros(5, dtype=torch.long))
        >>> j = activation_jacobian(f, theta, "1")                    # the last layer is linear: J_i = W
        >>> j.shape, bool(torch.allclose(j[0], model[2].weight))
        (torch.Size([5, 3, 4]), True)
    """
    require_finite(theta, "θ", "lab.curvature.activation_jacobian")
    theta = theta.detach().reshape(-1)
    p = unpack_loss(loss_fn, theta)
    require_independent_samples(p.model, "lab.curvature.activation_jacobian")
    shape = layer_shapes(loss_fn, theta, layer)[layer]
    n, na = shape[0], shape[1:].numel()
    with torch.enable_grad():
        d = torch.zeros(n, na, dtype=theta.dtype, device=theta.device, requires_grad=True)
        with _perturbed(p.model, {layer: d}, shared=False):
            out = p.forward(theta, p.x)
        out = out.reshape(n, -1)
        c = out.shape[1]
        eye = torch.eye(c, dtype=out.dtype, device=out.device)
        tangents = eye[:, None, :].expand(c, n, c).contiguous()
        rows = _second(out, d, tangents)                        # (C, n, N_l)
    return rows.permute(1, 0, 2).detach().contiguous()
