"""Training in low precision: the gradient's numerical error against its minibatch noise, and lost updates.

`grad_error` measures how far a gradient computed in a low dtype (float32, TF32 on CUDA, bfloat16, float16) lies
from the float64 gradient at the same stored point. `batch_noise` gives the minibatch noise of the gradient in
closed form from the per-sample gradients (`BatchNoise.rel_std`, with the finite-population correction), and
`sampled_batch_noise` checks it by drawing batches; `crossover_batch` is the batch size at which the two noises are
equal. `round_stochastic` rounds to a low dtype stochastically (unbiased), `lost_updates` predicts which coordinates
an update cannot move (|Δθ_i| below half the gap to the neighbour of θ_i: chapter 01's ulp threshold, per step), and
`train_lowprec` runs SGD, momentum or Adam with the parameters kept in float32, in a low dtype with round-to-nearest,
in float32 master weights with low-precision compute, or in a low dtype with stochastic rounding.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from lab.checks import not_allowed, require_finite, require_int, require_real
from lab.numerics.precision import neighbour

__all__ = ["GradError", "grad_error", "fit_law", "BatchNoise", "batch_noise", "sampled_batch_noise", "crossover_batch",
           "round_stochastic", "round_to", "lost_updates", "predicted_lost_share", "MODES", "OPTIMIZERS", "LowPrecRun",
           "train_lowprec", "float64_minimum", "rounding_floor", "tail_excess", "sgd_excess_prediction"]

MODES = ("float32", "rtn", "master", "sr")
OPTIMIZERS = ("sgd", "momentum", "adam")
_LOW = (torch.float32, torch.bfloat16, torch.float16)


@dataclass(frozen=True)
class GradError:
    """The error of a low-precision gradient against float64 at the same stored point.

    Produced by `grad_error`.

    Attributes:
        rel: ‖g_low − g_64‖ / ‖g_64‖, a float.
        err_norm: ‖g_low − g_64‖ (gradient units).
        grad_norm: ‖g_64‖ (gradient units).

    Example:
        >>> from lab.numerics import GradError
        >>> GradError(rel=0.01, err_norm=0.02, grad_norm=2.0).rel
        0.01
    """

    rel: float
    err_norm: float
    grad_norm: float


@contextlib.contextmanager
def _tf32(on: bool):
    """Allow TF32 matmuls and convolutions on CUDA inside the block (restored after)."""
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def grad_error(loss_fn: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor, dtype: torch.dtype,
               tf32: bool = False) -> GradError:
    """Relative error of the gradient computed in `dtype` against float64, both at θ rounded to `dtype`.

    The loss must compute in θ's dtype (data included), as `lab.flat.make_loss_fn`'s does; comparing at the same
    stored point measures the error of the computation, not of storing θ.

    Args:
        loss_fn: θ ↦ scalar loss, differentiable by torch.func.grad, computed in θ's dtype.
        theta: flat parameters, shape (P,), any floating dtype and device.
        dtype: the working dtype: torch.float32, torch.bfloat16 or torch.float16.
        tf32: compute with TF32 matmuls (float32 inputs, a 10-bit mantissa inside the products); only on CUDA and
            with dtype float32.

    Returns:
        A GradError (relative error, error norm, float64 gradient norm).

    Raises:
        ValueError: `dtype` is not one of the allowed working dtypes, or tf32 is asked for off CUDA or with another
            dtype.
        lab.checks.NonFiniteError: the gradient in `dtype` is not finite (overflow).

    Example:
        >>> import torch
        >>> from lab.numerics import grad_error
        >>> theta = torch.linspace(-1, 1, 50, dtype=torch.float64)
        >>> f = lambda t: (torch.sin(t) ** 2).sum()
        >>> e32, e16 = grad_error(f, theta, torch.float32), grad_error(f, theta, torch.bfloat16)
        >>> bool(e32.rel < 1e-6 < 1e-3 < e16.rel < 1e-1)
        True
    """
    from torch.func import grad
    if dtype not in _LOW:
        raise ValueError(f"parameter 'dtype' = {dtype} is not allowed: expected one of {_LOW}")
    if tf32 and (dtype != torch.float32 or theta.device.type != "cuda"):
        raise ValueError(f"parameter 'tf32' = True is not allowed with dtype {dtype} on {theta.device.type}: "
                         "expected dtype torch.float32 on a CUDA device")
    p = theta.detach().to(dtype)
    g64 = grad(loss_fn)(p.double())
    with _tf32(tf32) if tf32 else contextlib.nullcontext():
        gw = grad(loss_fn)(p)
    require_finite(gw, f"the gradient in {dtype}", "lab.numerics.lowprec.grad_error",
                   "the working dtype overflows: scale the loss or use a wider dtype")
    err = float((gw.double() - g64).norm())
    norm = float(g64.norm())
    rel = err / norm if norm > 0 else (0.0 if err == 0 else float("inf"))     # both zero: no error at all
    return GradError(rel, err, norm)


def fit_law(widths, depths, errors) -> tuple[float, float, float]:
    """Least-squares fit of the law e = c · width^a · depth^b in logs.

    Args:
        widths: hidden widths, shape (n,), positive.
        depths: hidden depths, shape (n,), positive.
        errors: the measured errors, shape (n,), positive.

    Returns:
        (a, b, c) as floats: the width exponent, the depth exponent and the prefactor.

    Raises:
        ValueError: a value is not positive, or fewer than 3 points.

    Example:
        >>> from lab.numerics import fit_law
        >>> w, d = [32, 64, 32, 64], [1, 1, 3, 3]
        >>> tuple(round(v, 6) for v in fit_law(w, d, [2e-3 * wi ** 0.5 * di for wi, di in zip(w, d)]))
        (0.5, 1.0, 0.002)
    """
    w, d, e = (np.asarray(v, dtype=np.float64) for v in (widths, depths, errors))
    if not (w.ndim == d.ndim == e.ndim == 1 and len(w) == len(d) == len(e)):
        raise ValueError(f"lab.numerics.fit_law: parameters 'widths', 'depths', 'errors' have shapes {w.shape}, "
                         f"{d.shape}, {e.shape}: expected three 1-D arrays of one length")
    if len(e) < 3 or np.any(w <= 0) or np.any(d <= 0) or np.any(e <= 0) or not np.all(np.isfinite(e)):
        raise ValueError("parameters 'widths', 'depths', 'errors': expected at least 3 points, all positive and finite")
    a_mat = np.column_stack([np.log(w), np.log(d), np.ones_like(w)])
    if np.linalg.matrix_rank(a_mat) < 3:
        raise ValueError("lab.numerics.fit_law: parameters 'widths' and 'depths' do not vary independently (log "
                         "width, log depth and 1 are linearly dependent): the two exponents cannot be told apart")
    (a, b, logc), *_ = np.linalg.lstsq(a_mat, np.log(e), rcond=None)
    return float(a), float(b), float(np.exp(logc))


@dataclass(frozen=True)
class BatchNoise:
    """The minibatch noise of a gradient, from its per-sample gradients at one θ (float64).

    Produced by `batch_noise`. With per-sample gradients g_i (i = 1..n) of mean g and total variance
    trace = (1/n) Σ‖g_i − g‖², the mean gradient of a batch of b distinct samples drawn without replacement has
    E‖g_b − g‖² = trace · (n − b) / (b (n − 1)).

    Attributes:
        grad: the full-batch gradient g, shape (P,), float64.
        trace: the total per-sample variance tr Σ (squared gradient units).
        n: the number of samples.

    Example:
        >>> import torch
        >>> from lab.numerics import BatchNoise
        >>> bn = BatchNoise(grad=torch.tensor([3.0, 4.0], dtype=torch.float64), trace=25.0, n=101)
        >>> round(bn.rel_std(1), 6), bn.rel_std(101)
        (1.0, 0.0)
    """

    grad: torch.Tensor
    trace: float
    n: int

    def rel_std(self, b) -> np.ndarray | float:
        """sqrt(E‖g_b − g‖²) / ‖g‖ for batch size(s) b (without replacement).

        Args:
            b: a batch size or an array of them, 1 ≤ b ≤ n.

        Returns:
            The relative RMS minibatch noise, a float (or float64 array for an array b).
        """
        bb = np.asarray(b, dtype=np.float64)
        out = np.sqrt(self.trace * (self.n - bb) / (bb * (self.n - 1))) / float(self.grad.norm())
        return float(out) if out.ndim == 0 else out


def batch_noise(batch_loss_fn: Callable, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                batch: int | None = None, n_batches: int = 32, seed: int = 0, chunk: int = 64) -> BatchNoise:
    """Full-batch gradient and total per-sample gradient variance tr Σ at θ, in float64.

    Exact from the per-sample gradients (batch None; vmapped, slow for wide nets on a CPU), or estimated without
    bias from `n_batches` random batches of size b: tr Σ ≈ mean ‖g_b − g‖² · b (n − 1) / (n − b).

    Args:
        batch_loss_fn: (θ, x, y) ↦ mean loss of a batch, computed in θ's dtype (e.g. from
            `lab.flat.make_batch_loss_fn`).
        theta: flat parameters, shape (P,), any floating dtype and device (taken to float64).
        x: all n inputs, shape (n, ...), on θ's device.
        y: all n targets, shape (n, ...).
        batch: None for the exact per-sample computation, else the batch size b of the estimator, 1 ≤ b < n.
        n_batches: batches drawn by the estimator.
        seed: seed of the numpy generator that draws the batches.
        chunk: samples per vmapped chunk of per-sample gradients (memory: chunk × P float64).

    Returns:
        A BatchNoise with the full gradient, tr Σ and n.

    Raises:
        ValueError: `batch` is outside 1..n − 1.

    Example:
        >>> import torch
        >>> from lab.numerics import batch_noise
        >>> f = lambda t, x, y: ((x @ t - y) ** 2).mean()
        >>> x, y = torch.eye(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
        >>> bn = batch_noise(f, torch.ones(3), x, y)
        >>> bn.grad.tolist(), round(bn.trace, 6)
        ([0.6666666666666666, 0.6666666666666666, 0.6666666666666666], 2.666667)
        >>> x = torch.randn(400, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> exact = batch_noise(f, torch.ones(3), x, y[:1].expand(400))
        >>> est = batch_noise(f, torch.ones(3), x, y[:1].expand(400), batch=20, n_batches=400)
        >>> bool(abs(est.trace / exact.trace - 1) < 0.2)
        True
    """
    from torch.func import grad, vmap
    th = theta.detach().double()
    x64 = x.double() if x.is_floating_point() else x
    y64 = y.double() if y.is_floating_point() else y
    n = len(x)
    if batch is not None and not 1 <= batch < n:
        raise ValueError(f"parameter 'batch' = {batch} is not allowed: expected None or 1 <= batch < {n}")
    if batch is not None:
        require_int(batch, "batch", "lab.numerics.batch_noise", lo=1)
        require_int(n_batches, "n_batches", "lab.numerics.batch_noise", lo=1)
    if batch is not None:
        gf = grad(batch_loss_fn)
        g = gf(th, x64, y64)
        rng = np.random.default_rng(seed)
        sq = [float(((gf(th, x64[idx], y64[idx]) - g) ** 2).sum())
              for idx in (torch.as_tensor(rng.choice(n, batch, replace=False), device=x.device)
                          for _ in range(n_batches))]
        return BatchNoise(g, float(np.mean(sq)) * batch * (n - 1) / (n - batch), n)
    one = vmap(grad(lambda t, xi, yi: batch_loss_fn(t, xi[None], yi[None])), in_dims=(None, 0, 0))
    g = torch.zeros_like(th)
    for i in range(0, n, chunk):
        g += one(th, x64[i:i + chunk], y64[i:i + chunk]).sum(0)
    g /= n
    tr = 0.0
    for i in range(0, n, chunk):
        tr += float(((one(th, x64[i:i + chunk], y64[i:i + chunk]) - g) ** 2).sum())
    return BatchNoise(g, tr / n, n)


def sampled_batch_noise(batch_loss_fn: Callable, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                        batch_sizes, n_batches: int = 50, seed: int = 0) -> np.ndarray:
    """Relative RMS noise sqrt(mean ‖g_b − g‖²) / ‖g‖ of the gradient of random batches, in float64, by sampling.

    A check of `BatchNoise.rel_std` (which needs no sampling).

    Args:
        batch_loss_fn: (θ, x, y) ↦ mean loss of a batch, computed in θ's dtype.
        theta: flat parameters, shape (P,).
        x: all n inputs, shape (n, ...).
        y: all n targets.
        batch_sizes: batch sizes b, 1 ≤ b ≤ n.
        n_batches: batches drawn (without replacement within a batch) per size.
        seed: seed of the numpy generator that draws them.

    Returns:
        The relative RMS noise per batch size, shape (len(batch_sizes),), float64.

    Raises:
        ValueError: a batch size is outside 1..n.

    Example:
        >>> import torch
        >>> from lab.numerics import sampled_batch_noise
        >>> f = lambda t, x, y: ((x @ t - y) ** 2).mean()
        >>> x, y = torch.randn(20, 3, dtype=torch.float64), torch.randn(20, dtype=torch.float64)
        >>> s = sampled_batch_noise(f, torch.ones(3), x, y, [1, 20])
        >>> bool(s[0] > 0.1), bool(s[1] < 1e-12)          # the full batch has no minibatch noise
        (True, True)
    """
    from torch.func import grad
    n = len(x)
    sizes = [int(b) for b in batch_sizes]
    bad = [b for b in sizes if not 1 <= b <= n]
    if bad:
        raise ValueError(f"parameter 'batch_sizes' has {bad}: expected 1 <= b <= {n} (the number of samples)")
    th = theta.detach().double()
    x64 = x.double() if x.is_floating_point() else x
    y64 = y.double() if y.is_floating_point() else y
    gf = grad(batch_loss_fn)
    g = gf(th, x64, y64)
    rng = np.random.default_rng(seed)
    out = []
    for b in sizes:
        sq = [float(((gf(th, x64[idx], y64[idx]) - g) ** 2).sum())
              for idx in (torch.as_tensor(rng.choice(n, b, replace=False), device=x.device) for _ in range(n_batches))]
        out.append(np.sqrt(np.mean(sq)) / float(g.norm()))
    return np.array(out)


def crossover_batch(trace: float, err_norm: float) -> float:
    """The batch size B* at which minibatch noise equals numerical noise: trace / err_norm².

    With unlimited samples the minibatch noise of the gradient has E‖g_B − g‖² = tr Σ / B; it equals the squared
    numerical error ‖δg‖² at B* = tr Σ / ‖δg‖². Below B* batch noise dominates; above it, numerical noise. Both
    scale as 1/‖g‖ in relative terms, so B* does not depend on how small the mean gradient is.

    Args:
        trace: tr Σ, the total per-sample gradient variance (e.g. `BatchNoise.trace`).
        err_norm: ‖δg‖, the numerical error of the full gradient (e.g. `GradError.err_norm`).

    Returns:
        B* as a float (inf when err_norm is 0).

    Example:
        >>> from lab.numerics import crossover_batch
        >>> crossover_batch(4.0, 0.01)
        40000.0
    """
    trace = require_real(trace, "trace", "lab.numerics.crossover_batch", lo=0)
    err_norm = require_real(err_norm, "err_norm", "lab.numerics.crossover_batch", lo=0)
    return trace / err_norm ** 2 if err_norm > 0 else float("inf")


def round_stochastic(x: torch.Tensor, dtype: torch.dtype, generator: torch.Generator | None = None) -> torch.Tensor:
    """Stochastic rounding of x to `dtype`: to one of the two neighbouring values, up with probability equal to the
    distance from the lower one over the gap, so E[round(x)] = x.

    bfloat16 from float32 uses the bit trick (add a uniform random 16-bit integer to the float32 pattern, truncate
    the low 16 bits); every other pair (float16, or from float64) brackets x between its round-to-nearest value and
    that value's neighbour and draws the side in float64. Values already representable are returned unchanged.

    Args:
        x: values, any shape, float32 or float64, any device.
        dtype: the target: torch.bfloat16, torch.float16 or torch.float32 (from float64).
        generator: a torch.Generator on x's device for the random draws (None: the global one).

    Returns:
        A tensor of x's shape in `dtype` on x's device.

    Raises:
        ValueError: `dtype` is not narrower than x's dtype.

    Example:
        >>> import torch
        >>> from lab.numerics import round_stochastic
        >>> x = torch.full((100_000,), 1.0 + 2.0 ** -10)       # a quarter of the way from 1 to the next bfloat16
        >>> r = round_stochastic(x, torch.bfloat16, torch.Generator().manual_seed(0))
        >>> sorted(set(r.float().tolist())), round(float(r.double().mean()), 4)
        ([1.0, 1.0078125], 1.001)
    """
    widths = {torch.float64: 8, torch.float32: 4, torch.bfloat16: 2, torch.float16: 2}
    if dtype not in (torch.bfloat16, torch.float16, torch.float32) or widths[dtype] >= widths.get(x.dtype, 0):
        raise ValueError(f"parameter 'dtype' = {dtype} is not allowed for x of {x.dtype}: expected a narrower one "
                         "of (torch.float32, torch.bfloat16, torch.float16)")
    if x.dtype == torch.float32 and dtype == torch.bfloat16:
        bits = x.view(torch.int32)
        noise = torch.randint(0, 1 << 16, x.shape, generator=generator, device=x.device, dtype=torch.int32)
        out = ((bits + noise) & ~0xFFFF).view(torch.float32).to(torch.bfloat16)   # exact: low 16 bits are zero
        return torch.where(torch.isfinite(x), out, x.to(torch.bfloat16))
    r = x.to(dtype)
    xd = x.double()
    up = r.double() < xd                                       # x lies above its nearest value: bracket upwards
    other = neighbour(r, torch.where(up, 1.0, -1.0).to(x.device))
    lo = torch.where(up, r, other)
    hi = torch.where(up, other, r)
    gap = hi.double() - lo.double()
    p = torch.where(gap > 0, (xd - lo.double()) / gap, torch.zeros_like(xd))
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=torch.float64)
    out = torch.where(u < p, hi, lo)
    return torch.where((r.double() == xd) | ~torch.isfinite(xd), r, out)


def round_to(x: torch.Tensor, dtype: torch.dtype, stochastic: bool = False,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """x in `dtype`, rounded to nearest (torch's cast) or stochastically (`round_stochastic`).

    Args:
        x: values, any shape, float32 or float64.
        dtype: the target dtype.
        stochastic: stochastic rounding instead of round-to-nearest-even.
        generator: the generator for stochastic rounding.

    Returns:
        A tensor of x's shape in `dtype`.

    Example:
        >>> import torch
        >>> from lab.numerics import round_to
        >>> round_to(torch.tensor([1.001]), torch.bfloat16).item()
        1.0
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(not_allowed("dtype", dtype, "a floating torch.dtype", "lab.numerics.round_to"))
    if x.dtype == dtype:
        return x.clone()
    return round_stochastic(x, dtype, generator) if stochastic else x.to(dtype)


def lost_updates(theta: torch.Tensor, update: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Which coordinates a step θ ← round(θ + Δ) to nearest in `dtype` leaves unchanged: |Δ_i| below half the gap
    from θ_i to its neighbour in the direction of Δ_i (ulp(θ_i)/2, halved where θ_i is a power of two stepping
    towards zero). Ties (exactly half) are counted as lost, as round-half-to-even does for half of them.

    Args:
        theta: the stored parameters, shape (P,), any floating dtype (rounded to `dtype` first).
        update: the step Δ added to θ, shape (P,), any floating dtype.
        dtype: the storage dtype (default: θ's).

    Returns:
        A bool tensor of shape (P,): True where the update is lost (Δ_i = 0 included).

    Example:
        >>> import torch
        >>> from lab.numerics import lost_updates
        >>> theta = torch.tensor([1.0, 1.0, 1.0, 1.0])
        >>> lost_updates(theta, torch.tensor([0.003, 0.005, -0.0019, -0.0021]), torch.bfloat16).tolist()
        [True, False, True, False]
    """
    where = "lab.numerics.lost_updates"
    if not isinstance(theta, torch.Tensor) or not isinstance(update, torch.Tensor) or theta.shape != update.shape:
        raise ValueError(f"{where}: parameters 'theta' and 'update' have shapes {tuple(getattr(theta, 'shape', ()))} "
                         f"and {tuple(getattr(update, 'shape', ()))}: expected tensors of one shape")
    require_finite(update, "parameter 'update'", where)
    st = theta.detach().to(dtype or theta.dtype)
    d = update.detach().double().to(st.device)
    half_gap = (neighbour(st, torch.sign(d)).double() - st.double()).abs() / 2
    return (d.abs() <= half_gap) | (d == 0)


def predicted_lost_share(batch_loss_fn: Callable, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, lr: float,
                         dtype: torch.dtype, batch: int | None = None, n_batches: int = 8, seed: int = 0) -> float:
    """Share of the updated coordinates an SGD step −lr·g of minibatch gradients at θ would lose when θ is stored in
    `dtype` with round-to-nearest (`lost_updates`), averaged over `n_batches` batches: a prediction made before any
    low-precision training (gradients in float32).

    Args:
        batch_loss_fn: (θ, x, y) ↦ mean loss of a batch, computed in θ's dtype.
        theta: flat parameters, shape (P,).
        x: the n training inputs.
        y: the n targets.
        lr: the SGD learning rate.
        dtype: the storage dtype.
        batch: the batch size (None: the full batch, one gradient).
        n_batches: random batches averaged.
        seed: seed of the batch draws.

    Returns:
        The predicted lost share, a float in [0, 1].

    Example:
        >>> import torch
        >>> from lab.numerics import predicted_lost_share
        >>> f = lambda t, x, y: ((x @ t - y) ** 2).mean()
        >>> x, y = torch.eye(2), torch.tensor([1.01, 2.0])
        >>> predicted_lost_share(f, torch.ones(2), x, y, 0.1, torch.bfloat16)   # steps 0.001 (lost) and 0.1
        0.5
    """
    from torch.func import grad
    th = theta.detach().float()
    n = len(x)
    rng = np.random.default_rng(seed)
    shares = []
    for _ in range(1 if batch is None else n_batches):
        idx = slice(None) if batch is None else torch.as_tensor(rng.choice(n, batch, replace=False), device=x.device)
        g = grad(batch_loss_fn)(th, x[idx], y[idx])
        moving = g != 0
        shares.append(float((lost_updates(th, -lr * g, dtype) & moving).sum()) / max(int(moving.sum()), 1))
    return float(np.mean(shares))


@dataclass
class LowPrecRun:
    """One low-precision training run: the losses, the predicted and measured lost updates, the end point.

    Produced by `train_lowprec`.

    Attributes:
        loss: the batch loss at each step as computed in the working dtype, shape (steps,), float64.
        eval_steps: the steps at which the full training loss was evaluated in float64, shape (n_eval,), int.
        full_loss: the float64 full-data loss at those steps, shape (n_eval,), float64.
        lost_pred: share of the updated coordinates (Δ_i ≠ 0) predicted lost at each step (`lost_updates` of the
            stored θ and the update, round-to-nearest), shape (steps,), float64.
        lost_meas: share of the updated coordinates (Δ_i ≠ 0) that the step left unchanged in the stored θ,
            shape (steps,), float64.
        theta: the final parameters in float32 (the master weights, or the stored ones), shape (P,).
        mode: the storage mode, one of MODES.

    Example:
        >>> import numpy as np, torch
        >>> from lab.numerics import LowPrecRun
        >>> r = LowPrecRun(np.ones(3), np.array([0, 2]), np.ones(2), np.zeros(3), np.zeros(3), torch.zeros(2), "rtn")
        >>> r.mode, r.loss.shape
        ('rtn', (3,))
    """

    loss: np.ndarray
    eval_steps: np.ndarray
    full_loss: np.ndarray
    lost_pred: np.ndarray
    lost_meas: np.ndarray
    theta: torch.Tensor
    mode: str


def train_lowprec(batch_loss_fn: Callable, theta0: torch.Tensor, x: torch.Tensor, y: torch.Tensor, steps: int,
                  lr: float, mode: str = "float32", dtype: torch.dtype = torch.bfloat16, opt: str = "sgd",
                  batch: int | None = None, beta: float = 0.9, betas: tuple[float, float] = (0.9, 0.999),
                  eps: float = 1e-8, seed: int = 0, eval_every: int = 10, progress: bool = False) -> LowPrecRun:
    """SGD, heavy-ball momentum or Adam on a pure batch loss, with the parameters kept in one of four ways.

    Modes: "float32" (parameters and compute in float32: the reference), "rtn" (parameters stored in `dtype`,
    compute in `dtype`, each update computed in float32 and rounded to nearest into `dtype`), "master" (float32
    master weights, compute in `dtype`: mixed precision), "sr" (as "rtn" with stochastic rounding). Optimizer
    states (momentum, Adam moments) are float32 in every mode. The update Δ is formed in float32; the stored θ
    becomes round(θ + Δ).

    Args:
        batch_loss_fn: (θ, x, y) ↦ mean loss of a batch, computed in θ's dtype (e.g. `lab.flat.make_batch_loss_fn`).
        theta0: the initial flat parameters, shape (P,), any floating dtype and device.
        x: the n training inputs, shape (n, ...), on θ0's device (cast to the working dtype inside the loss).
        y: the n targets.
        steps: the number of steps, >= 1.
        lr: the learning rate, > 0.
        mode: one of MODES.
        dtype: the low dtype of "rtn", "master" and "sr" (torch.bfloat16 or torch.float16).
        opt: one of OPTIMIZERS: "sgd", "momentum" (v ← βv + g, Δ = −lr·v) or "adam".
        batch: minibatch size (samples drawn without replacement each step); None for the full batch.
        beta: the momentum coefficient.
        betas: Adam's (β₁, β₂).
        eps: Adam's ε.
        seed: seed of the batch draws and of the stochastic rounding.
        eval_every: steps between float64 evaluations of the full training loss (and at the last step).
        progress: show a progress bar.

    Returns:
        A LowPrecRun.

    Raises:
        ValueError: an unknown mode, optimizer or dtype, steps < 1, lr ≤ 0 or a batch outside 1..n.
        lab.checks.NonFiniteError: the loss became non-finite.

    Example:
        >>> import torch
        >>> from lab.numerics import train_lowprec
        >>> f = lambda t, x, y: ((x.to(t.dtype) @ t - y.to(t.dtype)) ** 2).mean()
        >>> x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
        >>> y = x @ torch.full((4,), 1.001)                   # the optimum is 1.001: within ulp/2 of 1 in bfloat16
        >>> runs = {m: train_lowprec(f, torch.ones(4), x, y, 50, 0.1, mode=m) for m in ("float32", "rtn")}
        >>> rtn = runs["rtn"]                                   # every update lost, as predicted: bfloat16 stalls at 1
        >>> bool(runs["float32"].full_loss[-1] < 1e-9), float(rtn.lost_pred.mean()), float(rtn.lost_meas.mean())
        (True, 1.0, 1.0)
    """
    from torch.func import grad

    from lab._progress import progress_bar
    if mode not in MODES:
        raise ValueError(f"parameter 'mode' = {mode!r} is not allowed: expected one of {MODES}")
    if opt not in OPTIMIZERS:
        raise ValueError(f"parameter 'opt' = {opt!r} is not allowed: expected one of {OPTIMIZERS}")
    if dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(f"parameter 'dtype' = {dtype} is not allowed: expected torch.bfloat16 or torch.float16")
    n = len(x)
    if steps < 1 or not lr > 0 or (batch is not None and not 1 <= batch <= n):
        raise ValueError(f"parameters 'steps' = {steps}, 'lr' = {lr}, 'batch' = {batch}: expected steps >= 1, "
                         f"lr > 0 and batch None or in 1..{n}")
    store = torch.float32 if mode in ("float32", "master") else dtype
    work = torch.float32 if mode == "float32" else dtype
    dev = theta0.device
    theta = theta0.detach().to(torch.float32).to(store)
    gen = torch.Generator(device=dev).manual_seed(seed)
    rng = np.random.default_rng(seed)
    x64 = x.double() if x.is_floating_point() else x
    y64 = y.double() if y.is_floating_point() else y
    gfun = grad(batch_loss_fn)
    state = [torch.zeros_like(theta, dtype=torch.float32), torch.zeros_like(theta, dtype=torch.float32)]
    losses, lp, lm, ev, fl = [], [], [], [], []
    for t in progress_bar(range(steps), desc=f"{mode} {opt}", disable=not progress):
        if t % eval_every == 0:
            with torch.no_grad():
                ev.append(t)
                fl.append(float(batch_loss_fn(theta.double(), x64, y64)))
        if batch is None:
            xb, yb = x, y
        else:
            idx = torch.as_tensor(rng.choice(n, batch, replace=False), device=dev)
            xb, yb = x[idx], y[idx]
        tw = theta.to(work)
        with torch.no_grad():
            losses.append(float(batch_loss_fn(tw, xb, yb)))
        g = gfun(tw, xb, yb).to(torch.float32)
        require_finite(g, f"the gradient at step {t}", "lab.numerics.lowprec.train_lowprec",
                       "lower the lr, or the working dtype overflows")
        if opt == "sgd":
            delta = -lr * g
        elif opt == "momentum":
            state[0].mul_(beta).add_(g)
            delta = -lr * state[0]
        else:
            b1, b2 = betas
            state[0].mul_(b1).add_(g, alpha=1 - b1)
            state[1].mul_(b2).addcmul_(g, g, value=1 - b2)
            mh = state[0] / (1 - b1 ** (t + 1))
            vh = state[1] / (1 - b2 ** (t + 1))
            delta = -lr * mh / (vh.sqrt() + eps)
        moving = delta != 0                                    # dead units and exact zeros are not updates
        k = max(int(moving.sum()), 1)
        lp.append(float((lost_updates(theta, delta, store) & moving).sum()) / k)
        new = round_to(theta.float() + delta, store, stochastic=(mode == "sr"), generator=gen)
        lm.append(float(((new == theta) & moving).sum()) / k)
        theta = new
    with torch.no_grad():
        ev.append(steps)
        fl.append(float(batch_loss_fn(theta.double(), x64, y64)))
    require_finite(np.asarray(fl), "the training loss", "lab.numerics.lowprec.train_lowprec", "lower the lr")
    return LowPrecRun(np.asarray(losses), np.asarray(ev), np.asarray(fl), np.asarray(lp), np.asarray(lm),
                      theta.float(), mode)


def float64_minimum(loss_fn: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor, max_iter: int = 500,
                    tol: float = 1e-12) -> tuple[torch.Tensor, float, float]:
    """A float64 minimum of loss_fn from θ by L-BFGS with a strong-Wolfe line search: the reference point against
    which low-precision training's excess loss is measured (use a strictly convex loss, e.g. with weight decay).

    Args:
        loss_fn: θ ↦ scalar loss, computed in θ's dtype, differentiable by autograd.
        theta: the starting point, shape (P,), any floating dtype and device.
        max_iter: L-BFGS iterations at most.
        tol: stop when the gradient's largest entry is below this.

    Returns:
        (θ*, L*, ‖∇L(θ*)‖): θ* float64 (P,), the loss there and its gradient norm (floats).

    Example:
        >>> import torch
        >>> from lab.numerics import float64_minimum
        >>> th, loss, gnorm = float64_minimum(lambda t: ((t - 3.0) ** 2).sum() + 1.0, torch.zeros(3))
        >>> [round(v, 9) for v in th.tolist()], round(loss, 9), gnorm < 1e-9
        ([3.0, 3.0, 3.0], 1.0, True)
    """
    p = theta.detach().double().clone().requires_grad_(True)
    opt = torch.optim.LBFGS([p], lr=1, max_iter=max_iter, tolerance_grad=tol, tolerance_change=1e-18,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        val = loss_fn(p)
        val.backward()
        return val

    opt.step(closure)
    th = p.detach()
    from torch.func import grad
    return th, float(loss_fn(th)), float(grad(loss_fn)(th).norm())


def rounding_floor(loss_fn: Callable[[torch.Tensor], torch.Tensor], theta_star: torch.Tensor,
                   dtype: torch.dtype) -> float:
    """L(round(θ*)) − L(θ*), both in float64: the loss a model stored in `dtype` pays at best near the minimum θ*.

    Args:
        loss_fn: θ ↦ scalar loss, computed in θ's dtype.
        theta_star: a (float64) minimum, shape (P,).
        dtype: the storage dtype θ* is rounded to (to nearest).

    Returns:
        The excess loss of the rounded point, a float (≥ 0 at a true minimum).

    Example:
        >>> import torch
        >>> from lab.numerics import rounding_floor
        >>> f = rounding_floor(lambda t: ((t - 1.001) ** 2).sum(), torch.tensor([1.001], dtype=torch.float64),
        ...                    torch.bfloat16)                # 1.001 rounds to 1.0 in bfloat16
        >>> round(f, 12)
        1e-06
    """
    th = theta_star.detach().double()
    with torch.no_grad():
        return float(loss_fn(th.to(dtype).double())) - float(loss_fn(th))


def tail_excess(run: LowPrecRun, l_star: float, fraction: float = 0.5) -> tuple[float, float]:
    """Mean and standard deviation of the full training loss above l_star over the last `fraction` of a run's
    evaluations: the stationary excess loss and its fluctuation.

    Args:
        run: a LowPrecRun (its float64 `full_loss`).
        l_star: the reference minimum loss L*.
        fraction: the share of the evaluations, counted from the end, in (0, 1].

    Returns:
        (mean excess, std of the excess) as floats.

    Raises:
        ValueError: fraction outside (0, 1].

    Example:
        >>> import numpy as np, torch
        >>> from lab.numerics import LowPrecRun, tail_excess
        >>> r = LowPrecRun(np.ones(4), np.arange(4), np.array([9.0, 1.5, 1.25, 1.75]), np.zeros(4), np.zeros(4),
        ...                torch.zeros(1), "float32")
        >>> tail_excess(r, 1.0)
        (0.5, 0.25)
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"parameter 'fraction' = {fraction} is not allowed: expected 0 < fraction <= 1")
    l_star = require_real(l_star, "l_star", "lab.numerics.tail_excess")
    k = max(1, int(round(len(run.full_loss) * fraction)))
    tail = np.asarray(run.full_loss[-k:], dtype=np.float64) - l_star
    return float(tail.mean()), float(tail.std())


def sgd_excess_prediction(batch_loss_fn: Callable, theta_star: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                          lr: float, batch: int, at_steps: np.ndarray | list[int], max_params: int = 20_000
                          ) -> np.ndarray:
    """The expected excess loss E[L(θ_t)] − L* of SGD started at a minimum θ*, at the given steps, in the
    quadratic model with the minibatch noise of θ*: the theory a measured stationary excess is checked against.

    Near θ* the update is δθ_{t+1} = (I − ηH)·δθ_t − η·ξ_t, with H the float64 Hessian at θ* and ξ_t the minibatch
    gradient's noise (batches of `batch` drawn without replacement from the n samples: covariance Σ_B =
    Σ₁·(n − B)/(B·(n − 1)), Σ₁ the per-sample gradients' covariance). So C_t = E[δθ_t δθ_tᵀ] obeys
    C_{t+1} = A·C_t·A + η²·Σ_B with A = I − ηH and C_0 = 0, and the excess is ½·tr(H·C_t). In H's eigenbasis
    (λ_k, v_k) only the diagonal of Σ_B enters: excess(t) = ½·Σ_k λ_k·η²·s_k·(1 − a_k^{2t})/(1 − a_k²), with
    a_k = 1 − ηλ_k and s_k = v_kᵀ·Σ_B·v_k. For large t it tends to the Langevin value (η/4)·Σ_k s_k/(1 − ηλ_k/2),
    ∝ η for small η (a ratio 4 for 4× the lr); a mode with t·ηλ_k ≪ 1 has not settled and grows like t·η² instead
    (a ratio 16), so a finite run lies in between. Left out: the noise's change with θ (multiplicative noise,
    (x xᵀ − H)·δθ in least squares), which raises the excess by a share that grows with η, and the loss's terms
    beyond the quadratic. Dense: H (P × P) and the n per-sample gradients are formed in float64.

    Args:
        batch_loss_fn: (θ, x, y) ↦ mean loss of a batch (e.g. `lab.flat.make_batch_loss_fn`, plus any penalty);
            the per-sample losses must be independent (no batch statistics).
        theta_star: a float64 minimum (e.g. from `float64_minimum`), shape (P,).
        x, y: the n training samples the batches are drawn from.
        lr: the constant learning rate η > 0, with η·λmax < 2 (else SGD leaves θ*).
        batch: the minibatch size B, 1 ≤ B ≤ n (B = n: full batch, no noise).
        at_steps: the steps t ≥ 0 to predict at (e.g. `LowPrecRun.eval_steps`).
        max_params: refuse a θ* with more entries than this (the Hessian is dense).

    Returns:
        np.ndarray: the predicted excess at each step, shape (len(at_steps),), float64.

    Raises:
        ValueError: lr, batch, at_steps or the size of θ* out of range, or η·λmax ≥ 2.

    Example:
        >>> import numpy as np, torch
        >>> from lab.numerics import sgd_excess_prediction
        >>> f = lambda t, xb, yb: 0.5 * ((t - xb) ** 2).sum(1).mean()    # H = I, per-sample gradient t − x_i
        >>> x = torch.tensor([[-1.0], [1.0]], dtype=torch.float64)
        >>> ex = sgd_excess_prediction(f, torch.zeros(1, dtype=torch.float64), x, x, lr=0.5, batch=1,
        ...                            at_steps=[0, 1, 100])
        >>> ex.round(6).tolist()                         # ½·η²·1·(1 − 0.25^t)/(1 − 0.25) → 1/6
        [0.0, 0.125, 0.166667]
    """
    from torch.func import grad, hessian, vmap
    where = "lab.numerics.sgd_excess_prediction"
    lr = require_real(lr, "lr", where, lo=0.0, lo_open=True)
    n = len(x)
    if len(y) != n:
        raise ValueError(not_allowed("y", f"{len(y)} samples", f"as many samples as x ({n})", where))
    batch = require_int(batch, "batch", where, lo=1, hi=n)
    steps = np.asarray(at_steps)
    if steps.ndim != 1 or not len(steps) or not np.issubdtype(steps.dtype, np.integer) or (steps < 0).any():
        raise ValueError(not_allowed("at_steps", at_steps, "a non-empty 1-D list of integer steps >= 0", where))
    th = require_finite(theta_star.detach().double(), "theta_star", where)
    if th.ndim != 1 or th.numel() > max_params:
        raise ValueError(not_allowed("theta_star", f"a tensor of shape {tuple(th.shape)}",
                                     f"a flat vector of at most max_params = {max_params} entries (dense Hessian)",
                                     where))
    x64 = x.double() if x.is_floating_point() else x
    y64 = y.double() if y.is_floating_point() else y
    h = hessian(lambda t: batch_loss_fn(t, x64, y64))(th)
    lam, vec = torch.linalg.eigh(require_finite(h, "the Hessian at theta_star", where))
    if float(lam.min()) < -1e-10 * max(float(lam.max()), 0.0):
        raise ValueError(not_allowed("theta_star", f"a point with λmin = {float(lam.min()):.3g}",
                                     "a minimum (a positive semi-definite Hessian)", where))
    if lr * float(lam.max()) >= 2:
        raise ValueError(not_allowed("lr", lr, f"lr·λmax < 2 (λmax = {float(lam.max()):.4g} at theta_star: SGD "
                                     "leaves the minimum, there is no stationary excess)", where))
    one = vmap(grad(lambda t, xi, yi: batch_loss_fn(t, xi[None], yi[None])), in_dims=(None, 0, 0))
    proj = torch.cat([one(th, x64[i:i + 256], y64[i:i + 256]) for i in range(0, n, 256)]) @ vec   # (n, P)
    var1 = ((proj - proj.mean(0)) ** 2).mean(0)                  # population variance along each v_k
    s_b = var1 * (n - batch) / (batch * (n - 1)) if n > 1 else torch.zeros_like(var1)
    lam_n, s_n = lam.numpy(force=True), s_b.numpy(force=True)
    a2 = (1 - lr * lam_n) ** 2
    one_minus = 1 - a2
    out = []
    for t in steps:
        # (1 − a^{2t})/(1 − a²), and its limit t where a² = 1 (a zero eigenvalue)
        geo = np.where(np.abs(one_minus) > 1e-15, -np.expm1(t * np.log(np.maximum(a2, 1e-300))) /
                       np.where(np.abs(one_minus) > 1e-15, one_minus, 1.0), float(t))
        out.append(0.5 * float(np.sum(lam_n * lr**2 * s_n * geo)))
    return np.asarray(out)

