"""Gauss-Newton and Fisher operators, output Hessians, parameter blocks, per-class averages and stack PCA.

For a mean loss L(θ) = crit(f(θ, x), y) of a model's outputs f (n samples, C outputs each):

- `ggn_operator`: the generalized Gauss-Newton G = Jᵀ H_out J (J = ∂f/∂θ, H_out = ∂²crit/∂f²), matrix-free.
- `fisher_operator`: the empirical Fisher (1/n) Σ g_i g_iᵀ of per-sample gradients, or its Monte-Carlo version
  with targets drawn from the model's predictive distribution (whose expectation is the GGN for CE and MSE).
- `output_hessian_operator`: ∇²_θ Σ_{i,k} c_ik f_k(x_i; θ); with c = ∂L/∂f it is H − G, the rest of the Hessian.
- `block` / `dense_block`: the block of any operator between two groups of parameters (names or module prefixes).
- `per_class`, `class_means`, `stack_pca`: per-class curvature of small models and the PCA of a stack of matrices.

Every operator here is a `lab.curvature.LinearOperator`, so `top_eigs`, `hutchpp_trace`, `slq_density` and the
other estimators take it. The loss functions are those of `lab.flat.make_loss_fn` (their `.parts` says how the loss
is made); `unpack_loss` gives their pure forward, inputs and targets (for `lab.behavior.behavior_jacobian`, the
output Jacobian w.r.t. the parameters: `behavior_jacobian(p.forward, θ, p.x)`).

Conventions: the per-sample loss ℓ_i is crit(f(x_i)[None], y_i[None]), so that L = (1/n) Σ ℓ_i for cross-entropy
and MSE (for MSE ℓ_i = (1/C)‖f_i − y_i‖²).
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, jvp, vjp, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from lab.checks import mode_dependent_modules, require_finite
from lab.curvature.operators import DenseOperator, HessianOperator, LinearOperator
from lab.flat import LOSSES, FlatSpec, layer_slices, unflatten

__all__ = ["LossProblem", "unpack_loss", "GGNOperator", "ggn_operator", "FisherOperator", "fisher_operator",
           "FISHER_KINDS", "output_hessian_operator", "require_independent_samples", "param_indices", "BlockOperator",
           "block", "dense_block", "to_dense", "per_class", "class_means", "StackPCA", "stack_pca"]

FISHER_KINDS = ("empirical", "mc")
_NO_FORWARD_AD = re.compile(r"forward AD|forward-mode|jvp|not implemented|not supported|does not support", re.I)


@dataclass(frozen=True)
class LossProblem:
    """What a loss function from `lab.flat.make_loss_fn` is made of, in θ's dtype and on θ's device.

    Attributes:
        forward: (θ (P,), x) ↦ outputs (n, ...), pure (`torch.func.functional_call` on the model).
        x: the inputs (n, ...), θ's dtype and device.
        y: the targets (n, ...): class indices (long) or values in θ's dtype.
        crit: (outputs, targets) ↦ scalar mean loss.
        model: the module (hooks on its submodules see the forward: `lab.curvature.activations`).
        spec: the flat layout of θ.

    Example:
        >>> import torch
        >>> from lab.flat import make_loss_fn
        >>> f, theta, _ = make_loss_fn(torch.nn.Linear(2, 1), torch.ones(3, 2), torch.zeros(3, 1), loss="mse")
        >>> p = unpack_loss(f, theta.double())
        >>> p.x.dtype, p.spec.names
        (torch.float64, ('weight', 'bias'))
    """

    forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    x: torch.Tensor
    y: torch.Tensor
    crit: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    model: nn.Module
    spec: FlatSpec


def unpack_loss(loss_fn: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor) -> LossProblem:
    """The pure forward, data and criterion of a loss function from `lab.flat.make_loss_fn`, at θ's dtype/device.

    Args:
        loss_fn: from `lab.flat.make_loss_fn` (it carries `.parts`, a `lab.flat.LossParts`).
        theta: shape (P,); sets the dtype and device of x, y and the buffers.

    Returns:
        A `LossProblem`; `p.crit(p.forward(θ, p.x), p.y)` equals `loss_fn(θ)`.

    Example:
        >>> import torch
        >>> from lab.flat import make_loss_fn
        >>> f, theta, _ = make_loss_fn(torch.nn.Linear(2, 3), torch.ones(4, 2), torch.zeros(4, dtype=torch.long))
        >>> p = unpack_loss(f, theta)
        >>> p.forward(theta, p.x).shape, bool(p.crit(p.forward(theta, p.x), p.y) == f(theta))
        (torch.Size([4, 3]), True)
    """
    parts = getattr(loss_fn, "parts", None)
    if parts is None:
        raise TypeError("parameter 'loss_fn' has no .parts: expected a loss function from lab.flat.make_loss_fn "
                        "(or build the operator from its pieces, e.g. GGNOperator(forward, θ, x, y, crit))")
    model, spec, buffers = parts.model, parts.spec, parts.buffers
    dtype, device = theta.dtype, theta.device

    def forward(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        bufs = {n: (b.to(device=t.device, dtype=t.dtype) if b.is_floating_point() else b.to(t.device))
                for n, b in buffers.items()}
        with sdpa_kernel(SDPBackend.MATH):                 # attention with second derivatives, as lab.flat
            return functional_call(model, (unflatten(t, spec), bufs), (x,))

    return LossProblem(forward, parts.x_as(dtype, device), parts.y_as(dtype, device), parts.crit, model, spec)


def require_independent_samples(model: nn.Module, where: str) -> None:
    """Refuse per-sample quantities for a model whose train-mode modules (BatchNorm with batch statistics,
    Dropout) couple or randomize the samples: sample i's loss is then not a function of sample i alone.

    Example:
        >>> import torch
        >>> require_independent_samples(torch.nn.Sequential(torch.nn.BatchNorm1d(2)).eval(), "demo")  # fine
    """
    bad = mode_dependent_modules(model)
    if bad:
        raise ValueError(f"{where}: per-sample quantities need samples that do not interact, but modules {bad} are "
                         "in train mode (batch statistics or dropout): call model.eval() before make_loss_fn")


def _is_mse(crit: Callable) -> bool:
    return crit is LOSSES["mse"] or crit is nn.functional.mse_loss


def _is_ce(crit: Callable) -> bool:              # lab.flat's (classes last) or torch's, with no options bound
    return crit is LOSSES["cross_entropy"] or crit is nn.functional.cross_entropy


class GGNOperator(LinearOperator):
    """v ↦ Jᵀ H_out J v: the generalized Gauss-Newton matrix of crit(forward(θ, x), y) at θ, matrix-free.

    J v is one forward-mode product (`torch.func.jvp`), H_out u one backward pass through the gradient of the
    criterion w.r.t. the outputs (its graph built once, any differentiable criterion), and Jᵀ w one backward pass
    through the forward's graph kept by `torch.func.vjp`. A product costs about two forward and one backward pass.
    A model without forward-mode derivatives gets J v as a second reverse pass instead (`.mode` = "double_vjp").

    Args:
        forward: (θ (P,), x) ↦ outputs (n, ...), pure.
        theta: the point (P,), finite; the operator's dtype and device.
        x: inputs that `forward` takes with θ.
        y: targets that `crit` takes with the outputs.
        crit: (outputs, targets) ↦ scalar loss.
        batched: apply `matmat`'s columns in one vmapped pass (falls back to one at a time if that fails).

    Attributes:
        outputs: f(θ, x), detached.

    Example:
        >>> import torch
        >>> op = GGNOperator(lambda t, x: x @ t, torch.zeros(2), torch.eye(2), torch.ones(2),
        ...                  lambda o, y: ((o - y) ** 2).sum())
        >>> op(torch.tensor([1.0, 3.0]))                       # Jᵀ·2I·J with J = I
        tensor([2., 6.])
    """

    def __init__(self, forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], theta: torch.Tensor,
                 x: torch.Tensor, y: torch.Tensor, crit: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 batched: bool = True):
        require_finite(theta, "θ", "lab.curvature.GGNOperator")
        super().__init__(size=theta.numel(), dtype=theta.dtype, device=theta.device)
        self.theta = theta.detach().reshape(-1)
        self._f = lambda t: forward(t, x)
        out, self._vjp = vjp(self._f, self.theta)
        self.outputs = out.detach()
        require_finite(self.outputs, "the outputs f(θ, x)", "lab.curvature.GGNOperator")
        self.batched = bool(batched)
        self.mode, self._jv_fn = "jvp", None
        with torch.enable_grad():
            self._out = self.outputs.clone().requires_grad_(True)
            self._gout = torch.autograd.grad(crit(self._out, y), self._out, create_graph=True)[0]

    def output_hvp(self, u: torch.Tensor, batched: bool = False) -> torch.Tensor:
        """H_out·u for u of the outputs' shape (a leading batch dimension when batched): the loss's Hessian in
        output space, e.g. (diag p − p pᵀ)/n per sample for cross-entropy.

        Example:
            >>> import torch
            >>> op = GGNOperator(lambda t, x: x * t, torch.ones(2), torch.ones(2), torch.zeros(2),
            ...                  lambda o, y: (o ** 3).sum())
            >>> op.output_hvp(torch.ones(2))                          # 6·o at o = (1, 1)
            tensor([6., 6.])
        """
        if not self._gout.requires_grad:                  # a criterion linear in the outputs: H_out = 0
            return torch.zeros_like(u)
        with torch.enable_grad():
            return torch.autograd.grad(self._gout, self._out, u, retain_graph=True, is_grads_batched=batched,
                                       allow_unused=True, materialize_grads=True)[0]

    def _jv(self, v: torch.Tensor) -> torch.Tensor:
        """J v: forward mode, or (for a model without forward-mode derivatives, e.g. PyTorch's fused transformer
        encoder path) the transpose of the kept Jᵀ-product, differentiated once more in reverse mode."""
        if self.mode == "jvp":
            try:
                return jvp(self._f, (self.theta,), (v,))[1]
            except (NotImplementedError, RuntimeError) as err:
                if not (isinstance(err, NotImplementedError) or _NO_FORWARD_AD.search(str(err))):
                    raise                               # anything but "no forward mode here" propagates
                self.mode = "double_vjp"
        if self._jv_fn is None:
            self._jv_fn = vjp(lambda u: self._vjp(u)[0], torch.zeros_like(self.outputs))[1]
        return self._jv_fn(v)[0]

    def _apply(self, v: torch.Tensor) -> torch.Tensor:
        return self._vjp(self.output_hvp(self._jv(v)))[0]

    def _apply_many(self, vs: torch.Tensor) -> torch.Tensor:
        if self.batched and vs.shape[1] > 1:
            try:
                self._jv(vs[:, 0])                          # settles the mode outside vmap
                jv = vmap(self._jv)(vs.T.contiguous())
                return vmap(lambda w: self._vjp(w)[0])(self.output_hvp(jv, batched=True)).T
            except (NotImplementedError, RuntimeError):
                self.batched = False
        return super()._apply_many(vs)


def ggn_operator(loss_fn: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor,
                 batched: bool = True) -> GGNOperator:
    """The generalized Gauss-Newton matrix Jᵀ H_out J of a `lab.flat.make_loss_fn` loss at θ, as an operator.

    For cross-entropy H_out is block-diagonal with blocks (diag p_i − p_i p_iᵀ)/n (p_i the softmax of sample i),
    for MSE it is 2/(n·C) times the identity; any other criterion's H_out comes from autograd. For MSE on a model
    linear in θ the GGN is the Hessian; in general H = G + Σ (∂L/∂f)·∇²f (`output_hessian_operator(weights="loss")`).

    Args:
        loss_fn: from `lab.flat.make_loss_fn` (any criterion).
        theta: the point (P,), finite; the operator's dtype and device.
        batched: see `GGNOperator`.

    Returns:
        A `GGNOperator` (symmetric positive semi-definite for a convex criterion; `.count` counts products).

    Example:
        >>> import torch
        >>> from lab.curvature import top_eigs
        >>> from lab.flat import make_loss_fn
        >>> _ = torch.manual_seed(0); x = torch.randn(20, 3, dtype=torch.float64)
        >>> f, theta, _ = make_loss_fn(torch.nn.Linear(3, 1).double(), x, x[:, :1], loss="mse")
        >>> g = ggn_operator(f, theta)                 # MSE on a linear model: the GGN is the Hessian
        >>> from lab.curvature import dense_hessian
        >>> bool(torch.allclose(to_dense(g), dense_hessian(f, theta)))
        True
        >>> top_eigs(g, k=1).values.shape
        (1,)
    """
    p = unpack_loss(loss_fn, theta)
    return GGNOperator(p.forward, theta, p.x, p.y, p.crit, batched=batched)


class FisherOperator(LinearOperator):
    """v ↦ Gᵀ(G v)/m for m stored gradients, the rows of G (m, P): a Fisher matrix from per-sample gradients.

    Args:
        grads: shape (m, P), any floating dtype and device (the operator's).

    Attributes:
        grads: the per-sample gradients.

    Example:
        >>> import torch
        >>> FisherOperator(torch.tensor([[1.0, 0.0], [1.0, 2.0]]))(torch.tensor([1.0, 0.0]))
        tensor([1., 1.])
    """

    def __init__(self, grads: torch.Tensor):
        if grads.ndim != 2 or grads.shape[0] < 1:
            raise ValueError(f"FisherOperator: expected gradients of shape (m >= 1, P), got {tuple(grads.shape)}")
        super().__init__(size=grads.shape[1], dtype=grads.dtype, device=grads.device)
        self.grads = grads.detach()

    def _apply(self, v: torch.Tensor) -> torch.Tensor:
        return self.grads.T @ (self.grads @ v) / self.grads.shape[0]

    def _apply_many(self, vs: torch.Tensor) -> torch.Tensor:
        return self.grads.T @ (self.grads @ vs) / self.grads.shape[0]


def _sample_targets(crit: Callable, out: torch.Tensor, n_samples: int,
                    generator: torch.Generator | None) -> torch.Tensor:
    """Targets drawn from the predictive distribution whose negative log-likelihood is the per-sample loss."""
    if _is_ce(crit):                                   # classes last: (n, C) or (n, T, C) logits
        probs = torch.softmax(out, dim=-1).reshape(-1, out.shape[-1])
        draws = torch.multinomial(probs, n_samples, replacement=True, generator=generator)   # (n·T, S)
        return draws.T.reshape(n_samples, *out.shape[:-1])
    c = out[0].numel()                                 # ℓ_i = (1/C)‖f_i − y‖² is −log N(y; f_i, (C/2)·I) + const
    noise = torch.randn((n_samples, *out.shape), dtype=out.dtype, device=out.device, generator=generator)
    return out.unsqueeze(0) + math.sqrt(c / 2.0) * noise


def fisher_operator(loss_fn: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor, kind: str = "empirical",
                    n_samples: int = 1, generator: torch.Generator | None = None,
                    sample: Callable[[torch.Tensor, int, torch.Generator | None], torch.Tensor] | None = None,
                    chunk_size: int | None = None) -> FisherOperator:
    """The empirical or Monte-Carlo Fisher matrix of a `lab.flat.make_loss_fn` loss at θ, as an operator.

    - "empirical": (1/n) Σ_i g_i g_iᵀ, g_i = ∇_θ ℓ_i(θ; y_i) the gradient of sample i's loss at its own target.
    - "mc": (1/(n·S)) Σ_i Σ_s g_is g_isᵀ with g_is = ∇_θ ℓ_i(θ; ŷ_is), ŷ_is drawn from the model's predictive
      distribution: categorical softmax(f_i) for cross-entropy, N(f_i, (C/2)·I) for MSE (the Gaussian whose
      negative log-likelihood is ℓ_i = (1/C)‖f_i − y‖²). Its expectation is the GGN (`ggn_operator`) exactly.

    The per-sample gradients are computed by `torch.func.vmap(grad)` (one sample at a time for a model vmap
    cannot batch, such as an nn.GRU) and stored: memory n·P (empirical) or n·S·P
    (mc) numbers; each product is then two matrix-vector products.

    Args:
        loss_fn: from `lab.flat.make_loss_fn`; ℓ_i = crit(f(x_i)[None], y_i[None]).
        theta: the point (P,), finite.
        kind: "empirical" or "mc".
        n_samples: S, targets drawn per input (mc only).
        generator: a `torch.Generator` on θ's device for the draws (mc only); None: torch's global generator.
        sample: (outputs (n, ...), S, generator) ↦ targets (S, n, ...): the draws for another criterion (mc only;
            cross-entropy and MSE have their own).
        chunk_size: samples per vmapped chunk (bounds memory; None: all at once).

    Returns:
        A `FisherOperator` (`.grads`: the (n, P) or (S·n, P) gradients, θ's dtype and device).

    Example:
        >>> import torch
        >>> from lab.flat import make_loss_fn
        >>> _ = torch.manual_seed(0); x = torch.randn(30, 2, dtype=torch.float64)
        >>> f, theta, _ = make_loss_fn(torch.nn.Linear(2, 3).double(), x, torch.randint(0, 3, (30,)))
        >>> emp = fisher_operator(f, theta)
        >>> mc = fisher_operator(f, theta, kind="mc", n_samples=4, generator=torch.Generator().manual_seed(0))
        >>> emp.grads.shape, mc.grads.shape
        (torch.Size([30, 9]), torch.Size([120, 9]))
    """
    if kind not in FISHER_KINDS:
        raise ValueError(f"parameter 'kind' = {kind!r} is not allowed: expected one of {FISHER_KINDS}")
    if n_samples < 1:
        raise ValueError(f"parameter 'n_samples' = {n_samples} is not allowed: expected n_samples >= 1")
    require_finite(theta, "θ", "lab.curvature.fisher_operator")
    p = unpack_loss(loss_fn, theta)
    require_independent_samples(p.model, "lab.curvature.fisher_operator")
    theta = theta.detach().reshape(-1)

    def one(t: torch.Tensor, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return p.crit(p.forward(t, xi.unsqueeze(0)), yi.unsqueeze(0))

    x, y = p.x, p.y
    if kind == "mc":
        if sample is None and not (_is_ce(p.crit) or _is_mse(p.crit)):
            raise ValueError("parameter 'sample' = None is not allowed for kind='mc' with this criterion: expected "
                             "a callable (outputs, n_samples, generator) -> targets (the criterion is neither "
                             "cross-entropy nor MSE)")
        with torch.no_grad():
            out = p.forward(theta, x)
        ys = (sample or (lambda o, s, g: _sample_targets(p.crit, o, s, g)))(out, n_samples, generator)
        y = ys.reshape(n_samples * len(x), *ys.shape[2:])
        x = x.repeat(n_samples, *([1] * (x.ndim - 1)))
    try:
        grads = vmap(grad(one), in_dims=(None, 0, 0), chunk_size=chunk_size)(theta, x, y)
    except (NotImplementedError, RuntimeError):          # e.g. nn.GRU under vmap: one sample at a time
        grads = torch.stack([grad(one)(theta, x[i], y[i]) for i in range(len(x))])
    require_finite(grads, "the per-sample gradients", "lab.curvature.fisher_operator")
    return FisherOperator(grads.reshape(len(x), -1))


def output_hessian_operator(loss_fn: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor,
                            weights: int | str | torch.Tensor = "loss") -> HessianOperator:
    """v ↦ ∇²_θ [Σ_{i,k} c_ik f_k(x_i; θ)]·v: the Hessian of a weighted sum of the model's outputs, as an operator.

    Args:
        loss_fn: from `lab.flat.make_loss_fn`.
        theta: the point (P,).
        weights: c, one of
            - an int k: c_ik = 1/n for output k (the Hessian of output k averaged over the n samples);
            - a tensor broadcastable to the outputs' shape (n, C): that weighting (e.g. one-hot for one f_k(x_i));
            - "loss": c = ∂L/∂f at θ, so that the loss Hessian is H = GGN + this operator.

    Returns:
        A `HessianOperator` of θ ↦ Σ c·f(θ, x) (c held fixed).

    Example:
        >>> import torch
        >>> from lab.flat import make_loss_fn
        >>> _ = torch.manual_seed(0); x = torch.randn(10, 2, dtype=torch.float64)
        >>> f, theta, _ = make_loss_fn(torch.nn.Linear(2, 2).double(), x, torch.randint(0, 2, (10,)))
        >>> bool(output_hessian_operator(f, theta, weights=0)(torch.ones(6)).abs().max() == 0)   # linear in θ
        True
    """
    p = unpack_loss(loss_fn, theta)
    theta = theta.detach().reshape(-1)
    with torch.no_grad():
        out = p.forward(theta, p.x)
    if isinstance(weights, str):
        if weights != "loss":
            raise ValueError(f"parameter 'weights' = {weights!r} is not allowed: expected 'loss', an output index "
                             "or a tensor of the outputs' shape")
        with torch.enable_grad():
            o = out.clone().requires_grad_(True)
            c = torch.autograd.grad(p.crit(o, p.y), o)[0]
    elif isinstance(weights, int):
        if out.ndim < 2 or not -out.shape[-1] <= weights < out.shape[-1]:
            raise ValueError(f"parameter 'weights' = {weights} is not allowed: expected an output index in "
                             f"[0, {out.shape[-1] if out.ndim >= 2 else 0})")
        c = torch.zeros_like(out)
        c[..., weights] = 1.0 / out.shape[0]
    else:
        c = torch.broadcast_to(torch.as_tensor(weights, dtype=out.dtype, device=out.device), out.shape)
    c = c.detach()
    return HessianOperator(lambda t: (p.forward(t, p.x) * c).sum(), theta)


def param_indices(spec: FlatSpec, group: str | Sequence[str]) -> torch.Tensor:
    """The flat indices of a group of parameters: parameter names ("0.weight") or module prefixes ("0", "net.2").

    Args:
        spec: the flat layout (`lab.flat.make_loss_fn`'s third value).
        group: a name or prefix, or a sequence of them; indices come in the flat vector's order, each once.

    Returns:
        A long tensor of indices into θ.

    Example:
        >>> import torch
        >>> from lab.flat import flatten
        >>> _, spec = flatten(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1)))
        >>> param_indices(spec, "1").tolist(), param_indices(spec, ["0.bias"]).tolist()
        ([6, 7, 8], [4, 5])
    """
    names = [group] if isinstance(group, str) else list(group)
    if not names:
        raise ValueError("parameter 'group' is empty: expected parameter names or module prefixes")
    slices = spec.slices()
    chosen: set[str] = set()
    for name in names:
        hit = [n for n in spec.names if n == name or n.startswith(name + ".")]
        if not hit:
            raise ValueError(f"parameter 'group' = {name!r} is not allowed: expected a parameter name or module "
                             f"prefix among {tuple(layer_slices(spec))} / {spec.names}")
        chosen.update(hit)
    idx = [torch.arange(slices[n].start, slices[n].stop) for n in spec.names if n in chosen]
    return torch.cat(idx)


class BlockOperator(LinearOperator):
    """v ↦ (A E_c v)[rows]: the block of an operator A between the flat indices `rows` and `cols`.

    Square (rows = cols) it is a symmetric `LinearOperator` of size len(rows) that every estimator takes; a
    rectangular block (`shape` (len(rows), len(cols))) maps vectors of len(cols) to len(rows).

    Example:
        >>> import torch
        >>> a = DenseOperator(torch.arange(9.0).reshape(3, 3))
        >>> BlockOperator(a, torch.tensor([0, 2]))(torch.ones(2))
        tensor([ 2., 14.])
    """

    def __init__(self, op: LinearOperator, rows: torch.Tensor, cols: torch.Tensor | None = None):
        rows = torch.as_tensor(rows, dtype=torch.long)
        cols = rows if cols is None else torch.as_tensor(cols, dtype=torch.long)
        super().__init__(size=len(cols), dtype=op.dtype, device=op.device)
        self.op, self.rows, self.cols = op, rows.to(op.device), cols.to(op.device)
        self.out_size = len(rows)

    @property
    def shape(self) -> tuple[int, int]:
        """(len(rows), len(cols))."""
        return self.out_size, self.size

    def _rect_input(self, v: torch.Tensor, cols: bool) -> torch.Tensor:
        v = torch.as_tensor(v).to(dtype=self.dtype, device=self.device)
        if (v.shape[0] if v.ndim else 1) != self.size or v.ndim > (2 if cols else 1):
            raise ValueError(f"lab.curvature.BlockOperator: parameter 'v' has shape {tuple(v.shape)}: expected "
                             f"({self.size},){' or (' + str(self.size) + ', n)' if cols else ''} (the columns)")
        return v

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        if self.out_size == self.size and torch.equal(self.rows, self.cols):
            return super().__call__(v)
        v = self._rect_input(v, cols=False)          # a rectangular block maps len(cols) to len(rows)
        self.count += 1
        return self._apply(v).detach()

    def matmat(self, vs: torch.Tensor) -> torch.Tensor:
        """A_block·V for V of shape (len(cols), n): (len(rows), n).

        Example:
            >>> import torch
            >>> a = DenseOperator(torch.arange(9.0).reshape(3, 3))
            >>> BlockOperator(a, torch.tensor([0, 1]), torch.tensor([2])).matmat(torch.ones(1, 2))
            tensor([[2., 2.],
                    [5., 5.]])
        """
        if self.out_size == self.size and torch.equal(self.rows, self.cols):
            return super().matmat(vs)
        vs = self._rect_input(vs, cols=True).reshape(self.size, -1)
        self.count += vs.shape[1]
        return self._apply_many(vs).detach()

    def _apply(self, v: torch.Tensor) -> torch.Tensor:
        full = torch.zeros(self.op.size, dtype=self.dtype, device=self.device)
        full[self.cols] = v
        return self.op(full)[self.rows]

    def _apply_many(self, vs: torch.Tensor) -> torch.Tensor:
        full = torch.zeros(self.op.size, vs.shape[1], dtype=self.dtype, device=self.device)
        full[self.cols] = vs
        return self.op.matmat(full)[self.rows]


def block(op: LinearOperator, spec: FlatSpec, rows: str | Sequence[str],
          cols: str | Sequence[str] | None = None) -> BlockOperator:
    """The block of an operator (Hessian, GGN, Fisher, ...) between two groups of parameters, as an operator.

    Args:
        op: any operator on θ (size P = spec.size).
        spec: θ's layout.
        rows: the row group: parameter names or module prefixes (see `param_indices`).
        cols: the column group; None: rows (a square, symmetric block for the estimators).

    Returns:
        A `BlockOperator` on the sub-vector of `cols` (each product is one product of `op`).

    Example:
        >>> import torch
        >>> from lab.curvature import hvp_operator, top_eigs
        >>> from lab.flat import make_loss_fn
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2)).double()
        >>> _ = torch.manual_seed(0); x = torch.randn(8, 2, dtype=torch.float64)
        >>> f, theta, spec = make_loss_fn(model, x, torch.randint(0, 2, (8,)))
        >>> b = block(hvp_operator(f, theta), spec, "2")           # the last layer's weight and bias
        >>> b.shape, top_eigs(b, k=1).values.shape
        ((8, 8), (1,))
    """
    if op.size != spec.size:
        raise ValueError(f"lab.curvature.block: the operator is {op.size} × {op.size} but spec has {spec.size} "
                         "parameters")
    r = param_indices(spec, rows)
    return BlockOperator(op, r, None if cols is None else param_indices(spec, cols))


def dense_block(op: LinearOperator, spec: FlatSpec, rows: str | Sequence[str],
                cols: str | Sequence[str] | None = None) -> torch.Tensor:
    """The block of an operator between two parameter groups as a dense matrix (len(cols) products; a slice for a
    `DenseOperator`).

    Args:
        op, spec, rows, cols: as `block`.

    Returns:
        The block, shape (len(rows), len(cols)), the operator's dtype and device.

    Example:
        >>> import torch
        >>> from lab.flat import flatten
        >>> _, spec = flatten(torch.nn.Linear(2, 1))                      # weight (1, 2), bias (1,)
        >>> dense_block(DenseOperator(torch.arange(9.0).reshape(3, 3)), spec, "weight", "bias")
        tensor([[2.],
                [5.]])
    """
    b = block(op, spec, rows, cols)
    if isinstance(op, DenseOperator):
        return op.matrix[b.rows][:, b.cols]
    return b.matmat(torch.eye(b.size, dtype=b.dtype, device=b.device))


def to_dense(op: LinearOperator, max_bytes: float = 2**30) -> torch.Tensor:
    """Any operator as a dense matrix, by applying it to the identity (P products; small P only).

    Example:
        >>> import torch
        >>> to_dense(LinearOperator(lambda v: 3 * v, size=2))
        tensor([[3., 0.],
                [0., 3.]])
    """
    rows, cols = op.shape
    need = rows * cols * torch.tensor([], dtype=op.dtype).element_size()
    if need > max_bytes:
        raise ValueError(f"parameter 'max_bytes' = {max_bytes:.4g}: the dense {rows} × {cols} matrix needs {need} "
                         "bytes; raise 'max_bytes' or use the operator with an estimator")
    return op.matmat(torch.eye(cols, dtype=op.dtype, device=op.device))


def _labels(y: torch.Tensor) -> torch.Tensor:
    return y if y.ndim == 1 else y.reshape(len(y), -1).argmax(-1)


def per_class(fn: Callable[[torch.Tensor, torch.Tensor], object], x: torch.Tensor, y: torch.Tensor
              ) -> dict[int, object]:
    """fn on each class's samples: {class: fn(x[y == class], y[y == class])}, classes in increasing order.

    E.g. the per-class GGN of a small model: ``per_class(lambda xc, yc: to_dense(ggn_operator(*make_loss_fn(model,
    xc, yc)[:2])), x, y)``.

    Args:
        fn: (x_c, y_c) ↦ anything.
        x: inputs (n, ...).
        y: class indices (n,), or one-hot / score targets (n, K) (the class is the argmax).

    Returns:
        A dict from each class present to fn's value on it.

    Example:
        >>> import torch
        >>> per_class(lambda xc, yc: float(xc.mean()), torch.arange(4.0), torch.tensor([1, 0, 1, 0]))
        {0: 2.0, 1: 1.0}
    """
    labels = _labels(y)
    return {int(c): fn(x[labels == c], y[labels == c]) for c in torch.unique(labels).tolist()}


def class_means(stack: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean of a per-sample stack (e.g. per-sample Hessians (n, N, N)) over each class's samples.

    Args:
        stack: shape (n, ...), any dtype and device.
        y: class indices (n,), or (n, K) targets (the class is the argmax).

    Returns:
        (classes (K,) long, means (K, ...) in the stack's dtype).

    Example:
        >>> import torch
        >>> class_means(torch.tensor([[1.0], [2.0], [4.0]]), torch.tensor([0, 1, 0]))
        (tensor([0, 1]), tensor([[2.5000],
                [2.0000]]))
    """
    labels = _labels(y).to(stack.device)
    classes = torch.unique(labels)
    return classes, torch.stack([stack[labels == c].mean(0) for c in classes])


@dataclass(frozen=True)
class StackPCA:
    """The PCA of a stack of m matrices, each flattened.

    Attributes:
        mean: the mean matrix (a, b) (zeros when not centred).
        components: the principal matrices (k, a, b), orthonormal as vectors.
        singular_values: (k,).
        explained_variance_ratio: each component's share of the total squared deviation, (k,).
        scores: each matrix's coordinates on the components, (m, k).

    Example:
        >>> import numpy as np
        >>> pca = stack_pca(np.stack([np.eye(2), -np.eye(2)]))
        >>> pca.mean.tolist(), pca.scores.shape
        ([[0.0, 0.0], [0.0, 0.0]], (2, 2))
    """

    mean: np.ndarray
    components: np.ndarray
    singular_values: np.ndarray
    explained_variance_ratio: np.ndarray
    scores: np.ndarray


def stack_pca(mats: torch.Tensor | np.ndarray, k: int | None = None, center: bool = True) -> StackPCA:
    """The principal components of a stack of matrices (e.g. per-sample or per-class Hessians), by numpy's SVD.

    Args:
        mats: shape (m, ...) (each item flattened), any real dtype; computed in float64.
        k: components kept (default all, min(m, a·b)).
        center: subtract the mean matrix first.

    Returns:
        A `StackPCA`.

    Example:
        >>> import numpy as np
        >>> mats = np.stack([s * np.eye(2) for s in (1.0, 2.0, 3.0)])
        >>> pca = stack_pca(mats, k=1)
        >>> pca.explained_variance_ratio.round(6).tolist(), np.abs(pca.components[0]).round(4).tolist()
        ([1.0], [[0.7071, 0.0], [0.0, 0.7071]])
    """
    a = mats.detach().cpu().double().numpy() if isinstance(mats, torch.Tensor) else np.asarray(mats, np.float64)
    if a.ndim < 2 or a.shape[0] < 1:
        raise ValueError(f"parameter 'mats' has shape {a.shape}: expected a stack (m >= 1, ...)")
    shape = a.shape[1:]
    flat = a.reshape(a.shape[0], -1)
    mean = flat.mean(0) if center else np.zeros(flat.shape[1])
    u, s, vt = np.linalg.svd(flat - mean, full_matrices=False)
    k = len(s) if k is None else int(k)
    if not 1 <= k <= len(s):
        raise ValueError(f"parameter 'k' = {k} is not allowed: expected 1 <= k <= {len(s)}")
    total = float((s ** 2).sum())
    ratio = s[:k] ** 2 / total if total > 0 else np.zeros(k)
    return StackPCA(mean.reshape(shape), vt[:k].reshape(k, *shape), s[:k], ratio, u[:, :k] * s[:k])
