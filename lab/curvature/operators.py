"""Curvature operators: v ↦ H v without forming H, for a loss of the flat parameter vector.

Every estimator in `lab.curvature` (`top_eigs`, `power_iteration`, `hutchinson_trace`, `hutchpp_trace`, `xtrace`,
`slq_density`) takes one of these, or a loss function and θ to build a `HessianOperator` from. Build the operator
once per θ and pass it to every estimator: the set-up (one gradient graph) is then paid once.

- `HessianOperator` / `hvp_operator`: the Hessian of one pure loss L(θ) at θ.
- `minibatch_hvp_operator`: Σ_b (n_b/N) H_b, the Hessian of the mean loss over batches held in memory.
- `dataloader_hvp_operator`: the same over a `torch.utils.data.DataLoader` (or any iterable of (x, y)), batch by
  batch, for data that does not fit in one tensor; batches of unequal size are weighted exactly.
- `DenseOperator`: an explicit matrix, for tests and small problems; `dense_hessian` forms H (small P only).
- `LinearOperator`: any matvec with its size, dtype and device.
"""
from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterable

import torch
from torch.func import grad, jvp, linearize

from lab.checks import NonFiniteError, not_allowed, require_finite, require_int, require_real, require_vector
from lab.flat import batch_size, to_inputs

__all__ = ["LossFn", "LinearOperator", "HessianOperator", "WeightedSum", "DenseOperator", "hvp", "hvp_operator",
           "directional_curvature", "minibatch_hvp_operator", "dataloader_hvp_operator", "dense_hessian",
           "as_operator"]

LossFn = Callable[[torch.Tensor], torch.Tensor]


def hvp(loss_fn: LossFn, theta: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """One Hessian-vector product H(θ)·v by forward-over-reverse differentiation (no set-up, nothing kept).

    Args:
        loss_fn: a pure function of the flat parameter vector, θ (P,) ↦ scalar tensor.
        theta: the point, shape (P,), any floating dtype and device.
        v: the vector, shape (P,); cast to θ's dtype.

    Returns:
        H(θ)·v, shape (P,), θ's dtype and device.

    Example:
        >>> import torch
        >>> hvp(lambda t: (t ** 2).sum(), torch.ones(3), torch.tensor([1.0, 0.0, 2.0]))
        tensor([2., 0., 4.])
    """
    _require_theta(theta, "lab.curvature.hvp")
    require_vector(v, "v", "lab.curvature.hvp", size=theta.numel(), finite=False)
    if v.shape != theta.shape:
        v = v.reshape(theta.shape)
    return jvp(grad(loss_fn), (theta,), (v.to(theta.dtype),))[1]


def directional_curvature(loss_fn: LossFn, theta: torch.Tensor, d: torch.Tensor) -> float:
    """dᵀ H d / dᵀ d: the second derivative of the loss along d (use float64 θ and d for a reference value).

    Args:
        loss_fn: θ (P,) ↦ scalar.
        theta: shape (P,).
        d: a non-zero direction, shape (P,), θ's dtype.

    Returns:
        The curvature as a Python float.

    Example:
        >>> import torch
        >>> directional_curvature(lambda t: 3 * t[0] ** 2 + t[1] ** 2, torch.zeros(2), torch.tensor([1.0, 0.0]))
        6.0
    """
    require_vector(d, "d", "lab.curvature.directional_curvature", size=theta.numel(), nonzero=True)
    return float(d @ hvp(loss_fn, theta, d) / (d @ d))


def _require_theta(theta: torch.Tensor, where: str) -> torch.Tensor:
    """θ when it is a non-empty, finite, floating-point tensor (any shape: it is flattened), else a named error."""
    if not isinstance(theta, torch.Tensor) or not theta.is_floating_point():
        what = f"a {theta.dtype} tensor" if isinstance(theta, torch.Tensor) else type(theta).__name__
        raise TypeError(not_allowed("theta", theta, f"a floating-point torch.Tensor θ (got {what})", where))
    if theta.numel() == 0:
        raise ValueError(not_allowed("theta", theta, "a non-empty θ", where))
    return require_finite(theta, "θ", where)


class LinearOperator:
    """A symmetric linear operator v ↦ A v on vectors of length `size`: the protocol every estimator takes.

    Subclasses set `size`, `dtype` and `device` and implement `_apply`; `count` counts applications (one per
    vector), which is how the estimators report their cost in Hessian-vector products.

    Args:
        matvec: v (size,) ↦ A v (size,), a tensor of `dtype` on `device`.
        size: the dimension P.
        dtype: the dtype vectors are cast to before `matvec`.
        device: where vectors live.

    Example:
        >>> import torch
        >>> op = LinearOperator(lambda v: 2 * v, size=3, dtype=torch.float64)
        >>> op(torch.ones(3)), op.count
        (tensor([2., 2., 2.], dtype=torch.float64), 1)
    """

    def __init__(self, matvec: Callable[[torch.Tensor], torch.Tensor] | None = None, size: int = 0,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        where = f"lab.curvature.{type(self).__name__}"
        if matvec is not None and not callable(matvec):
            raise TypeError(not_allowed("matvec", matvec, "a callable v (size,) ↦ A v (size,)", where))
        if not isinstance(dtype, torch.dtype) or not (dtype.is_floating_point or dtype.is_complex):
            raise TypeError(not_allowed("dtype", dtype, "a floating torch.dtype", where))
        self._matvec = matvec
        self.size = require_int(size, "size", where, lo=1)
        self.dtype, self.device = dtype, torch.device(device)
        self.count = 0

    # what a non-finite product most likely means, appended to the error (subclasses say more)
    _NONFINITE_HINT = "the operator (its matvec or matrix) produced NaN or inf"

    def _check_output(self, out: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """out when it is a tensor of v's shape with finite entries, else a named error: every product of every
        operator is checked here, once, so that no estimator turns a NaN product into a NaN result."""
        where = f"lab.curvature.{type(self).__name__}"
        if not isinstance(out, torch.Tensor) or out.shape != v.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"{where}: the operator's product has shape {got} for input of shape "
                             f"{tuple(v.shape)}: a matvec must return A v, of v's shape (size = {self.size})")
        if not bool(torch.isfinite(out).all()):
            raise NonFiniteError(
                f"{where}: an operator product is not finite ({int((~torch.isfinite(out)).sum())} of "
                f"{out.numel()} entries NaN or inf; input vector finite: {bool(torch.isfinite(v).all())}): "
                f"{self._NONFINITE_HINT}")
        return out

    def _input(self, v: torch.Tensor, name: str, cols: bool) -> torch.Tensor:
        v = torch.as_tensor(v)
        n = v.numel()
        if (not cols and n != self.size) or (cols and (v.ndim > 2 or (v.shape[0] if v.ndim else 1) != self.size)):
            want = (f"shape ({self.size},) or ({self.size}, n)" if cols else f"{self.size} entries") + \
                " (the operator's size)"
            raise ValueError(not_allowed(name, v, f"{want}, got shape {tuple(v.shape)}",
                                         f"lab.curvature.{type(self).__name__}"))
        return v.to(dtype=self.dtype, device=self.device)

    def _apply(self, v: torch.Tensor) -> torch.Tensor:
        if self._matvec is None:
            raise NotImplementedError("LinearOperator needs a matvec, or a subclass that implements _apply")
        return self._matvec(v)

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        v = self._input(v, "v", cols=False).reshape(self.size)
        self.count += 1
        return self._check_output(self._apply(v).detach(), v)

    def _apply_many(self, vs: torch.Tensor) -> torch.Tensor:
        """A·V for the columns of V (P, n), column by column; subclasses may batch them."""
        return torch.stack([self._apply(vs[:, j].contiguous()) for j in range(vs.shape[1])], dim=1)

    def matmat(self, vs: torch.Tensor) -> torch.Tensor:
        """A·V for the n columns of V, shape (P, n) (a (P,) vector is one column): (P, n) in the operator's dtype.
        Counts n products. The trace estimators call this with all their probes at once, so an operator that can
        apply several vectors in one pass (`HessianOperator` on small nets and on a GPU) does.

        Example:
            >>> import torch
            >>> op = DenseOperator(torch.diag(torch.tensor([1.0, 2.0])))
            >>> op.matmat(torch.ones(2, 3)), op.count
            (tensor([[1., 1., 1.],
                    [2., 2., 2.]]), 3)
        """
        vs = self._input(vs, "vs", cols=True).reshape(self.size, -1)
        self.count += vs.shape[1]
        if vs.shape[1] == 0:
            return vs.clone()
        return self._check_output(self._apply_many(vs).detach(), vs)

    @property
    def shape(self) -> tuple[int, int]:
        """(P, P)."""
        return self.size, self.size


# RuntimeErrors that mean "this differentiation mode is not supported for this function" — the only ones a fallback
# to another mode may swallow. Anything else (CUDA out of memory, shape errors, a bug in the loss) propagates.
_UNSUPPORTED = re.compile(r"not implemented|not supported|does not support|unsupported|does not require grad|"
                          r"does not have a grad_fn|not have been used in the graph|differentiated tensors|"
                          r"forward-mode|forward AD|double backward|functorch|vmap|jvp", re.IGNORECASE)


def _unsupported(err: BaseException) -> bool:
    if isinstance(err, torch.OutOfMemoryError):
        return False
    if isinstance(err, NotImplementedError):
        return True
    return isinstance(err, RuntimeError) and bool(_UNSUPPORTED.search(str(err)))


class HessianOperator(LinearOperator):
    """v ↦ H(θ)·v for a pure loss L(θ), at a fixed θ.

    Reverse-over-reverse by default: the gradient's graph is built once at θ (create_graph) and every product is
    one backward pass through it, about 0.7× a gradient on a CPU, with a set-up of about one gradient — the graph
    reuse PyHessian uses. `torch.func.linearize` (as fast per product, but ~0.8 s to trace) and plain jvp-of-grad are
    fallbacks, each taken only when the mode before it raises an error that means "unsupported" (e.g. a function
    that supports only forward mode). Any other error — a CUDA out-of-memory error among them — propagates.
    `.mode` says which mode ran; `.count` counts the products.

    Args:
        loss_fn: θ (P,) ↦ scalar tensor, pure (no hidden state; see `lab.flat.make_loss_fn`).
        theta: the point, shape (P,), finite; its dtype and device are the operator's.

    Raises:
        NonFiniteError: θ is not finite, or a product is not finite.

    Example:
        >>> import torch
        >>> op = HessianOperator(lambda t: (t ** 3).sum(), torch.tensor([1.0, 2.0]))
        >>> op(torch.tensor([1.0, 1.0])), op.count, op.mode
        (tensor([ 6., 12.]), 1, 'double_backward')
    """

    MODES = ("double_backward", "linearize", "jvp")
    BATCH_MAX_P = 16_384

    def __init__(self, loss_fn: LossFn, theta: torch.Tensor, batched: bool | None = None, batch: int = 32):
        _require_theta(theta, "lab.curvature.HessianOperator")
        if not callable(loss_fn):
            raise TypeError(not_allowed("loss_fn", loss_fn, "a callable θ (P,) ↦ scalar tensor",
                                        "lab.curvature.HessianOperator"))
        super().__init__(size=theta.numel(), dtype=theta.dtype, device=theta.device)
        require_int(batch, "batch", "lab.curvature.HessianOperator", lo=1)
        self.loss_fn, self.theta = loss_fn, theta.detach().reshape(-1)
        self.mode = self.MODES[0]
        self.batched = (self.device.type == "cuda" or self.size <= self.BATCH_MAX_P) if batched is None \
            else bool(batched)
        self.batch = int(batch)
        self.batch_mode: str | None = self.BATCH_MODES[0]
        self._vmapped: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._lin: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._leaf: torch.Tensor | None = None
        self._grad: torch.Tensor | None = None

    def _double_backward(self, v: torch.Tensor) -> torch.Tensor:
        if self._grad is None:  # build the gradient graph once and reuse it for every product
            with torch.enable_grad():
                self._leaf = self.theta.clone().requires_grad_(True)
                self._grad = torch.autograd.grad(self.loss_fn(self._leaf), self._leaf, create_graph=True)[0]
        with torch.enable_grad():
            return torch.autograd.grad(self._grad, self._leaf, v, retain_graph=True)[0]

    def _linearize(self, v: torch.Tensor) -> torch.Tensor:
        if self._lin is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _, self._lin = linearize(grad(self.loss_fn), self.theta)
        return self._lin(v)

    def _jvp(self, v: torch.Tensor) -> torch.Tensor:
        return hvp(self.loss_fn, self.theta, v)

    BATCH_MODES = ("vmap_jvp", "grads_batched")

    def _vmap_jvp(self, vs: torch.Tensor) -> torch.Tensor:
        if self._vmapped is None:
            self._vmapped = torch.func.vmap(lambda v: hvp(self.loss_fn, self.theta, v))
        return self._vmapped(vs.T.contiguous()).T

    def _grads_batched(self, vs: torch.Tensor) -> torch.Tensor:
        self._double_backward(vs[:, 0])            # builds the gradient graph if it is not there yet
        with torch.enable_grad():
            return torch.autograd.grad(self._grad, self._leaf, vs.T.contiguous(), retain_graph=True,
                                       is_grads_batched=True)[0].T

    def _apply_many(self, vs: torch.Tensor) -> torch.Tensor:
        """Batched: vmapped forward-over-reverse (fastest where it works), else the gradient graph's backward pass
        vmapped over the vectors, else one product at a time. A mode that raises any error but running out of
        memory is dropped for good (e.g. F.mse_loss's "ZeroTensors are immutable" under forward-over-reverse): the
        one-at-a-time products then raise any error that is the loss's own."""
        while self.batched and vs.shape[1] > 1 and self.batch_mode is not None:
            try:
                out = torch.cat([getattr(self, "_" + self.batch_mode)(vs[:, j:j + self.batch])
                                 for j in range(0, vs.shape[1], self.batch)], dim=1)
            except torch.OutOfMemoryError:
                raise
            except (NotImplementedError, RuntimeError):
                i = self.BATCH_MODES.index(self.batch_mode) + 1
                self.batch_mode = self.BATCH_MODES[i] if i < len(self.BATCH_MODES) else None
                continue
            return out                  # checked for non-finite entries by LinearOperator.matmat
        return super()._apply_many(vs)

    _NONFINITE_HINT = ("a Hessian-vector product at θ is not finite: the loss or its derivatives overflow at this θ "
                       "(is the loss finite there? a diverged run?)")

    def _apply(self, v: torch.Tensor) -> torch.Tensor:
        for mode in self.MODES[self.MODES.index(self.mode):]:
            try:
                out = getattr(self, "_" + mode)(v)
            except (NotImplementedError, RuntimeError) as err:
                if mode == self.MODES[-1] or not _unsupported(err):
                    raise
                self._grad = self._leaf = None
                continue
            self.mode = mode
            return out                  # checked for non-finite entries by LinearOperator.__call__
        raise AssertionError("unreachable")  # pragma: no cover


class WeightedSum(LinearOperator):
    """v ↦ Σ_b w_b A_b v over operators of one size; `.count` counts applications of the whole sum.

    Example:
        >>> import torch
        >>> a = DenseOperator(torch.eye(2)); b = DenseOperator(3 * torch.eye(2))
        >>> WeightedSum([a, b], [0.5, 0.5])(torch.ones(2))
        tensor([2., 2.])
    """

    def __init__(self, ops: list[LinearOperator], weights: list[float]):
        ops, weights = list(ops), list(weights)
        if not ops or len(ops) != len(weights):
            raise ValueError(f"lab.curvature.WeightedSum: parameters 'ops' and 'weights' have {len(ops)} operators "
                             f"and {len(weights)} weights: expected one weight per operator, at least one")
        for i, op in enumerate(ops):
            if not isinstance(op, LinearOperator):
                raise TypeError(not_allowed(f"ops[{i}]", op, "a LinearOperator", "lab.curvature.WeightedSum"))
            if op.size != ops[0].size:
                raise ValueError(not_allowed(f"ops[{i}]", op, f"an operator of size {ops[0].size} like ops[0], got "
                                             f"{op.size}", "lab.curvature.WeightedSum"))
        weights = [require_real(w, f"weights[{i}]", "lab.curvature.WeightedSum") for i, w in enumerate(weights)]
        super().__init__(size=ops[0].size, dtype=ops[0].dtype, device=ops[0].device)
        self.ops, self.weights = ops, list(weights)

    def _apply(self, v: torch.Tensor) -> torch.Tensor:
        out = None
        for op, w in zip(self.ops, self.weights, strict=True):
            hv = w * op(v)
            out = hv if out is None else out + hv
        return out

    def _apply_many(self, vs: torch.Tensor) -> torch.Tensor:
        out = None
        for op, w in zip(self.ops, self.weights, strict=True):
            hv = w * op.matmat(vs)
            out = hv if out is None else out + hv
        return out


class DenseOperator(LinearOperator):
    """An explicit symmetric matrix as an operator (tests, small problems, a float64 reference).

    Args:
        matrix: shape (P, P), any dtype and device (products are computed in its dtype).

    Example:
        >>> import torch
        >>> DenseOperator(torch.diag(torch.tensor([1.0, 2.0])))(torch.ones(2))
        tensor([1., 2.])
    """

    def __init__(self, matrix: torch.Tensor):
        if not isinstance(matrix, torch.Tensor) or not (matrix.is_floating_point() or matrix.is_complex()):
            raise TypeError(not_allowed("matrix", matrix, "a floating-point torch.Tensor",
                                        "lab.curvature.DenseOperator"))
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
            raise ValueError(f"lab.curvature.DenseOperator: parameter 'matrix' has shape {tuple(matrix.shape)}: "
                             "expected a non-empty square matrix")
        require_finite(matrix, "parameter 'matrix'", "lab.curvature.DenseOperator")
        super().__init__(size=matrix.shape[0], dtype=matrix.dtype, device=matrix.device)
        self.matrix = matrix

    def _apply(self, v: torch.Tensor) -> torch.Tensor:
        return self.matrix @ v

    def _apply_many(self, vs: torch.Tensor) -> torch.Tensor:
        return self.matrix @ vs


def hvp_operator(loss_fn: LossFn, theta: torch.Tensor, batched: bool | None = None,
                 batch: int = 32) -> HessianOperator:
    """The Hessian of loss_fn at θ as an operator (a `HessianOperator`): build it once, pass it to every estimator.

    Args:
        loss_fn: θ (P,) ↦ scalar tensor.
        theta: shape (P,), finite.
        batched, batch: how `matmat` applies several vectors (see `HessianOperator`; None: auto).

    Returns:
        A `HessianOperator` (θ's dtype and device; `.count` counts products).

    Example:
        >>> import torch
        >>> hvp_operator(lambda t: (t ** 2).sum(), torch.zeros(2))(torch.tensor([1.0, -1.0]))
        tensor([ 2., -2.])
    """
    return HessianOperator(loss_fn, theta, batched=batched, batch=batch)


def minibatch_hvp_operator(loss_on_batch: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
                           theta: torch.Tensor, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> WeightedSum:
    """v ↦ Σ_b (n_b/N) H_b v: the Hessian of the mean loss over all N samples, from per-batch mean losses.

    One gradient graph per batch is kept (fast products; memory grows with the number of batches). For data that
    does not fit in memory use `dataloader_hvp_operator`.

    Args:
        loss_on_batch: (θ (P,), x (n_b, ...), y (n_b, ...)) ↦ the batch's MEAN loss (scalar).
        theta: shape (P,).
        batches: a non-empty list of (x, y) pairs, on θ's device.

    Returns:
        A `WeightedSum` operator.

    Example:
        >>> import torch
        >>> f = lambda t, x, y: ((x @ t - y) ** 2).mean()
        >>> x, y = torch.eye(3), torch.zeros(3)
        >>> op = minibatch_hvp_operator(f, torch.zeros(3), [(x[:1], y[:1]), (x[1:], y[1:])])
        >>> op(torch.ones(3))          # the full-batch Hessian (2/3)·I applied to ones
        tensor([0.6667, 0.6667, 0.6667])
    """
    batches = list(batches)
    if not batches:
        raise ValueError("parameter 'batches' is empty: expected a non-empty list of (x, y) pairs")
    sizes = [batch_size(x, "batches' x") for x, _ in batches]  # samples, for tensors, tuples and dicts of inputs
    if min(sizes) < 1:
        raise ValueError(f"parameter 'batches' has batch sizes {sizes}: every batch needs at least one sample")
    total = sum(sizes)

    def bind(x: torch.Tensor, y: torch.Tensor) -> LossFn:
        return lambda t: loss_on_batch(t, x, y)

    return WeightedSum([HessianOperator(bind(x, y), theta) for x, y in batches], [n / total for n in sizes])


class DataLoaderOperator(LinearOperator):
    """v ↦ Σ_b (n_b/N) H_b v over an iterable of (x, y) batches, re-iterated for every product.

    Each batch's gradient graph is built, used and freed, so memory is one batch's; a product costs one pass over
    the data (a gradient and a backward pass per batch). Batches of unequal size (a last, smaller batch) are weighted
    by their size, so this is exactly the Hessian of the mean loss over the dataset. Batches are moved to θ's device.
    The loader must yield the same batches, in any order, every pass (no shuffling augmentation).
    """

    def __init__(self, loss_on_batch: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
                 theta: torch.Tensor, loader: Iterable):
        require_finite(theta, "θ", "lab.curvature.dataloader_hvp_operator")
        super().__init__(size=theta.numel(), dtype=theta.dtype, device=theta.device)
        self.loss_on_batch, self.theta, self.loader = loss_on_batch, theta.detach().reshape(-1), loader
        self.n_samples = None

    def _batches(self):
        for batch in self.loader:
            x, y = batch[0], batch[1]
            yield to_inputs(x, device=self.device), y.to(self.device)

    def _apply(self, v: torch.Tensor) -> torch.Tensor:
        total, out = 0, torch.zeros_like(self.theta)
        for x, y in self._batches():
            n = batch_size(x, "the loader's x")
            if n == 0:
                continue
            op = HessianOperator(lambda t, x=x, y=y: self.loss_on_batch(t, x, y), self.theta)
            out = out + n * op(v)
            total += n
        if total == 0:
            raise ValueError("lab.curvature.dataloader_hvp_operator: the loader yielded no samples")
        if self.n_samples is not None and total != self.n_samples:
            raise ValueError(f"lab.curvature.dataloader_hvp_operator: the loader yielded {total} samples on this "
                             f"pass and {self.n_samples} before: it must yield the same data every pass")
        self.n_samples = total
        return out / total


def dataloader_hvp_operator(loss_on_batch: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
                            theta: torch.Tensor, loader: Iterable) -> DataLoaderOperator:
    """The Hessian of the mean loss over a DataLoader's dataset as an operator, one batch in memory at a time.

    Args:
        loss_on_batch: (θ (P,), x, y) ↦ the batch's MEAN loss (scalar); e.g. `lab.flat.make_batch_loss_fn(model)`.
        theta: shape (P,); batches are moved to its device.
        loader: a `torch.utils.data.DataLoader` or any re-iterable of (x, y, ...) batches (extra items ignored).

    Returns:
        A `DataLoaderOperator` (each product is one pass over the loader).

    Example:
        >>> import torch
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> x, y = torch.eye(3), torch.zeros(3)
        >>> loader = DataLoader(TensorDataset(x, y), batch_size=2)       # batches of 2 and 1
        >>> op = dataloader_hvp_operator(lambda t, xb, yb: ((xb @ t - yb) ** 2).mean(), torch.zeros(3), loader)
        >>> op(torch.ones(3))
        tensor([0.6667, 0.6667, 0.6667])
    """
    return DataLoaderOperator(loss_on_batch, theta, loader)


def dense_hessian(loss_fn: LossFn, theta: torch.Tensor, max_bytes: float = 2**30) -> torch.Tensor:
    """The full P × P Hessian by reverse-over-reverse autodiff (torch.func.jacrev of torch.func.grad), refused when
    it would exceed max_bytes.

    Args:
        loss_fn: θ (P,) ↦ scalar.
        theta: shape (P,); the result has its dtype and device.
        max_bytes: the largest Hessian allowed (default 1 GiB).

    Returns:
        H(θ), shape (P, P).

    Example:
        >>> import torch
        >>> dense_hessian(lambda t: t[0] * t[1], torch.zeros(2))
        tensor([[0., 1.],
                [1., 0.]])
    """
    p = theta.numel()
    need = p * p * theta.element_size()
    if need > max_bytes:
        raise ValueError(f"parameter 'max_bytes' = {max_bytes:.4g}: the dense Hessian of P = {p} parameters needs "
                         f"{need} bytes ({need / 2**30:.3g} GiB); raise 'max_bytes' or use top_eigs (Lanczos on "
                         f"Hessian-vector products) instead")
    # reverse over reverse with grad: torch.func.hessian (jacfwd(jacrev(f))) drops mixed weight × input terms of
    # F.layer_norm in torch 2.14.1 (non-symmetric, 0.35 off on a residual block); jacfwd(grad(f)) agrees with
    # autograd and finite differences (tests/test_zoo.py), and jacrev(grad(f)) also works where forward mode
    # fails (a ZeroTensor error in some batched graphs)
    return torch.func.jacrev(torch.func.grad(loss_fn))(theta.detach()).detach()


def as_operator(op_or_loss: LinearOperator | LossFn, theta: torch.Tensor | None = None,
                where: str = "lab.curvature") -> LinearOperator:
    """The operator an estimator works on: `op_or_loss` itself if it is a `LinearOperator`, else the Hessian of the
    loss function `op_or_loss` at `theta` (then required).

    Example:
        >>> import torch
        >>> as_operator(lambda t: (t ** 2).sum(), torch.zeros(2)).size
        2
    """
    if theta is not None and not isinstance(theta, torch.Tensor):
        raise TypeError(not_allowed("theta", theta, "a torch.Tensor θ (P,), or None with an operator", where))
    if isinstance(op_or_loss, LinearOperator):
        if theta is not None and theta.numel() != op_or_loss.size:
            raise ValueError(f"{where}: θ has {theta.numel()} entries but the operator is {op_or_loss.size} × "
                             f"{op_or_loss.size}")
        return op_or_loss
    if theta is None:
        raise TypeError(f"{where}: pass an operator (lab.curvature.hvp_operator(loss_fn, θ), ...) or a loss function "
                        "and θ")
    if not callable(op_or_loss):
        raise TypeError(f"{where}: expected an operator or a loss function, got {type(op_or_loss).__name__}")
    return HessianOperator(op_or_loss, theta)
