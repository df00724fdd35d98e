"""Sharpness measures of a minimum, and the reparameterization that tests them.

Each measure is a number of the loss around θ; they differ in what they are invariant to. A ReLU network computes
the same function after a layer's weights and bias are multiplied by α > 0 and the next layer's weights by 1/α
(Dinh et al. 2017, "Sharp minima can generalize"): `rescale` applies that map to a flat vector. The Hessian's λmax
and trace, and Keskar et al.'s ε-sharpness, change under it; Li et al.'s filter-normalized curvature and the
adaptive (|θ|-scaled) curvature do not.

- `filter_normalized_curvature`: dᵀHd averaged over filter-normalized random directions d (Li et al. 2018): the
  second derivative at 0 of their 1D plot. Invariant to any rescaling of ReLU filters.
- `epsilon_sharpness`: Keskar et al. (2017): 100 · (max over the box |δ_i| ≤ ε(|θ_i| + 1) of L(θ + δ) − L(θ)) /
  (1 + L(θ)), the maximum found by scipy's L-BFGS-B as in the paper.
- `AdaptiveOperator`: D H D with D = diag(|θ|), the Hessian in the coordinates of relative changes (the quadratic
  form of Kwon et al.'s 2021 adaptive sharpness; Petzka et al.'s 2021 relative flatness uses the same scaling per
  layer). Any positive diagonal rescaling T maps H to T⁻¹HT⁻¹ and |θ| to T|θ|, so its λmax and trace are exactly
  invariant.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from lab.checks import require_finite
from lab.curvature.operators import LinearOperator, LossFn, as_operator
from lab.flat import FlatSpec

__all__ = ["rescale", "layer_pairs", "filter_normalized_curvature", "epsilon_sharpness", "AdaptiveOperator",
           "adaptive_operator", "MEASURES", "sharpness_measures"]

# name → what it is (the keys of sharpness_measures' results)
MEASURES = {
    "lambda_max": "λmax(H), the Hessian's largest eigenvalue (Lanczos)",
    "trace": "tr(H) (Hutchinson, Rademacher probes)",
    "fn_curvature": "filter-normalized curvature dᵀHd (Li et al. 2018)",
    "eps_sharpness": "ε-sharpness (Keskar et al. 2017), %",
    "adaptive_lambda_max": "λmax(|θ|H|θ|), adaptive (Kwon et al. 2021)",
}


def layer_pairs(spec: FlatSpec) -> list[tuple[str, str | None]]:
    """The (weight, bias) parameter names of each layer, in order ("<layer>.weight" with "<layer>.bias" or None).

    Args:
        spec: a FlatSpec (from `lab.flat.flatten` or `make_loss_fn`).

    Returns:
        A list of (weight name, bias name or None), one per parameter whose name ends in "weight".

    Example:
        >>> from lab.flat import flatten
        >>> from lab.models import SimpleMLP
        >>> layer_pairs(flatten(SimpleMLP(width=4, depth=1, in_dim=3, out_dim=2))[1])
        [('0.weight', '0.bias'), ('2.weight', '2.bias')]
    """
    names = set(spec.names)
    out = []
    for n in spec.names:
        if n.endswith("weight"):
            b = n[: -len("weight")] + "bias"
            out.append((n, b if b in names else None))
    return out


def rescale(theta: torch.Tensor, spec: FlatSpec, alpha: float, layer: int = 0) -> torch.Tensor:
    """Dinh et al.'s reparameterization: layer `layer`'s weight and bias × α, the next layer's weight × 1/α.

    For a positively homogeneous activation between the two layers (ReLU: relu(αz) = α·relu(z) for α > 0) the
    network computes the same function, up to rounding. The map is linear and diagonal: θ ↦ Tθ.

    Args:
        theta: flat parameters (P,), any floating dtype and device.
        spec: θ's layout; its layers are found by `layer_pairs`.
        alpha: the factor, > 0.
        layer: index of the layer scaled by α (0-based, among `layer_pairs`); layer + 1 must exist.

    Returns:
        Tθ, shape (P,), θ's dtype and device (computed in float64, then rounded).

    Raises:
        ValueError: alpha <= 0 or not finite, or no layer after `layer`.

    Example:
        >>> import torch
        >>> from lab.flat import flatten, make_forward
        >>> from lab.models import SimpleMLP
        >>> torch.manual_seed(0); net = SimpleMLP(width=4, depth=1, in_dim=3, out_dim=2)  # doctest: +ELLIPSIS
        <...>
        >>> forward, theta, spec = make_forward(net)
        >>> x = torch.randn(5, 3)
        >>> bool(torch.allclose(forward(rescale(theta, spec, 10.0), x), forward(theta, x), atol=1e-5))
        True
    """
    if not (isinstance(alpha, (int, float)) and np.isfinite(alpha) and alpha > 0):
        raise ValueError(f"parameter 'alpha' = {alpha!r} is not allowed: expected a finite number > 0")
    pairs = layer_pairs(spec)
    if not (isinstance(layer, int) and 0 <= layer < len(pairs) - 1):
        raise ValueError(f"parameter 'layer' = {layer!r} is not allowed: expected an integer in "
                         f"[0, {len(pairs) - 2}] (a layer followed by another)")
    sl = spec.slices()
    scale = torch.ones(theta.numel(), dtype=torch.float64)
    w, b = pairs[layer]
    scale[sl[w]] = alpha
    if b is not None:
        scale[sl[b]] = alpha
    scale[sl[pairs[layer + 1][0]]] = 1.0 / alpha
    return (theta.detach().double() * scale.to(theta.device)).to(theta.dtype)


def filter_normalized_curvature(loss_fn: LossFn, theta: torch.Tensor, spec: FlatSpec, n_dirs: int = 10,
                                generator: torch.Generator | None = None,
                                op: LinearOperator | None = None) -> tuple[float, float]:
    """Li et al.'s sharpness: the curvature dᵀHd of the loss along filter-normalized random directions d (biases
    zero), i.e. the second derivative at t = 0 of the 1D plot L(θ + t·d); mean and standard error over `n_dirs`.

    d is not of unit norm (each filter of d has its filter's norm in θ), so this is the curvature per unit of
    relative change of the weights: invariant to rescaling ReLU filters, for the same random draw.

    Args:
        loss_fn: θ (P,) ↦ scalar.
        theta: the minimum (P,).
        spec: θ's layout (for the filters).
        n_dirs: random directions, >= 2.
        generator: a CPU generator for the draws (default: torch's global one).
        op: the Hessian operator at θ if already built (saves its set-up; its products are counted there).

    Returns:
        (mean, standard error) of dᵀHd over the directions, floats.

    Example:
        >>> import torch
        >>> from lab.flat import make_loss_fn
        >>> from lab.models import SimpleMLP
        >>> torch.manual_seed(0); net = SimpleMLP(width=4, depth=1, in_dim=3, out_dim=2)  # doctest: +ELLIPSIS
        <...>
        >>> f, theta, spec = make_loss_fn(net, torch.randn(8, 3), torch.randint(0, 2, (8,)))
        >>> a = filter_normalized_curvature(f, theta, spec, 4, torch.Generator().manual_seed(0))[0]
        >>> b = filter_normalized_curvature(f, rescale(theta, spec, 5.0), spec, 4, torch.Generator().manual_seed(0))[0]
        >>> abs(a - b) < 1e-4 * abs(a)
        True
    """
    from lab.landscape.directions import filter_normalized

    if not (isinstance(n_dirs, int) and n_dirs >= 2):
        raise ValueError(f"parameter 'n_dirs' = {n_dirs!r} is not allowed: expected an integer >= 2")
    op = op if op is not None else as_operator(loss_fn, theta)
    ds = torch.stack([filter_normalized(theta, spec, generator, bias="zero") for _ in range(n_dirs)], dim=1)
    hd = op.matmat(ds.to(op.dtype)).double()
    vals = (ds.double().to(hd.device) * hd).sum(0).cpu().numpy()
    require_finite(vals, "dᵀHd along filter-normalized directions", "lab.curvature.filter_normalized_curvature")
    return float(vals.mean()), float(vals.std(ddof=1) / np.sqrt(n_dirs))


def epsilon_sharpness(loss_fn: LossFn, theta: torch.Tensor, eps: float = 1e-3, maxiter: int = 10, seed: int = 0
                      ) -> float:
    """Keskar et al.'s (2017) ε-sharpness in the full space: 100·(max_{|δ_i| ≤ ε(|θ_i|+1)} L(θ+δ) − L(θ))/(1+L(θ)).

    The maximum is sought, as in the paper, by scipy's L-BFGS-B on −L over the box for `maxiter` iterations (a lower
    bound of the true maximum; each iteration costs about one loss and gradient). It starts from a random point at
    1% of the box (drawn from `seed`), not from δ = 0, where the gradient of an exact minimum would stop it at once.

    Args:
        loss_fn: θ (P,) ↦ scalar, differentiable.
        theta: the point (P,).
        eps: the box's relative size, > 0 (Keskar et al. use 1e-3 and 5e-4).
        maxiter: L-BFGS-B iterations, >= 1.
        seed: seed of the starting point.

    Returns:
        The sharpness, a float >= 0 (in percent of 1 + L(θ)).

    Example:
        >>> import torch
        >>> s = epsilon_sharpness(lambda t: (t ** 2).sum(), torch.zeros(3, dtype=torch.float64), eps=0.1)
        >>> round(s, 6)   # the corner δ = ±0.1 of each coordinate: 100 · 0.03 / 1
        3.0
    """
    from scipy.optimize import minimize

    if not (isinstance(eps, (int, float)) and eps > 0):
        raise ValueError(f"parameter 'eps' = {eps!r} is not allowed: expected a number > 0")
    th = theta.detach()
    base = float(loss_fn(th))
    require_finite(base, "the loss at θ", "lab.curvature.epsilon_sharpness")
    half = (eps * (th.double().abs() + 1)).cpu().numpy()

    def neg(delta: np.ndarray) -> tuple[float, np.ndarray]:
        p = (th + torch.as_tensor(delta, dtype=th.dtype, device=th.device)).requires_grad_(True)
        val = loss_fn(p)
        (g,) = torch.autograd.grad(val, p)
        return -float(val.detach()), -g.double().cpu().numpy()

    start = 0.01 * half * np.random.default_rng(seed).uniform(-1.0, 1.0, th.numel())
    res = minimize(neg, start, jac=True, method="L-BFGS-B",
                   bounds=np.stack([-half, half], axis=1), options={"maxiter": int(maxiter)})
    top = max(-float(res.fun), base)
    return 100.0 * (top - base) / (1.0 + base)


class AdaptiveOperator(LinearOperator):
    """D H D with D = diag(|θ|): the Hessian in relative coordinates, invariant to positive diagonal rescalings.

    Args:
        op: the Hessian operator at θ (any `LinearOperator`).
        theta: θ (P,); |θ| is taken in the operator's dtype.

    Example:
        >>> import torch
        >>> from lab.curvature import DenseOperator
        >>> AdaptiveOperator(DenseOperator(torch.eye(2)), torch.tensor([2.0, -3.0]))(torch.ones(2))
        tensor([4., 9.])
    """

    def __init__(self, op: LinearOperator, theta: torch.Tensor):
        super().__init__(size=op.size, dtype=op.dtype, device=op.device)
        self.op = op
        self.scale = theta.detach().abs().to(dtype=op.dtype, device=op.device)

    def _apply(self, v: torch.Tensor) -> torch.Tensor:
        return self.scale * self.op(self.scale * v)

    def _apply_many(self, vs: torch.Tensor) -> torch.Tensor:
        return self.scale[:, None] * self.op.matmat(self.scale[:, None] * vs)


def adaptive_operator(op_or_loss: LinearOperator | Callable, theta: torch.Tensor) -> AdaptiveOperator:
    """diag(|θ|)·H·diag(|θ|) as an operator, for `top_eigs`, `hutchinson_trace` and the other estimators.

    Args:
        op_or_loss: the Hessian operator at θ, or loss_fn (the operator is built).
        theta: θ (P,).

    Returns:
        An `AdaptiveOperator`.

    Example:
        >>> import torch
        >>> from lab.curvature import top_eigs
        >>> f = lambda t: (t ** 2).sum()
        >>> theta = torch.tensor([1.0, 2.0], dtype=torch.float64)
        >>> round(float(top_eigs(adaptive_operator(f, theta), k=1).values[0]), 6)   # 2·max θ_i²
        8.0
    """
    op = op_or_loss if isinstance(op_or_loss, LinearOperator) else as_operator(op_or_loss, theta)
    return AdaptiveOperator(op, theta)


def sharpness_measures(loss_fn: LossFn, theta: torch.Tensor, spec: FlatSpec, seed: int = 0, n_dirs: int = 10,
                       n_probes: int = 20, eps: float = 1e-3, eps_iters: int = 10, tol: float = 1e-4
                       ) -> tuple[dict[str, float], dict[str, tuple[float, int]]]:
    """Every measure of MEASURES at one point, with what each cost.

    Args:
        loss_fn: θ (P,) ↦ scalar (the full training loss).
        theta: the point (P,).
        spec: θ's layout (filter normalization).
        seed: seed of the random directions and probes.
        n_dirs: filter-normalized directions; n_probes: Hutchinson probes.
        eps, eps_iters: ε-sharpness's box size and L-BFGS-B iterations.
        tol: Lanczos tolerance of the two λmax.

    Returns:
        (values, costs): name → value (float), and name → (seconds, Hessian-vector products; for ε-sharpness the
        loss-and-gradient evaluations of L-BFGS-B).

    Example:
        >>> import torch
        >>> from lab.flat import make_loss_fn
        >>> from lab.models import SimpleMLP
        >>> torch.manual_seed(0); net = SimpleMLP(width=4, depth=1, in_dim=3, out_dim=2)  # doctest: +ELLIPSIS
        <...>
        >>> f, theta, spec = make_loss_fn(net, torch.randn(8, 3), torch.randint(0, 2, (8,)))
        >>> values, costs = sharpness_measures(f, theta, spec, n_dirs=2, n_probes=2, eps_iters=2)
        >>> sorted(values) == sorted(MEASURES), all(c[0] >= 0 for c in costs.values())
        (True, True)
    """
    from lab.curvature.operators import HessianOperator
    from lab.curvature.spectrum import top_eigs
    from lab.curvature.trace import hutchinson_trace

    values: dict[str, float] = {}
    costs: dict[str, tuple[float, int]] = {}

    def timed(name: str, op: LinearOperator | None, fn: Callable[[], float]) -> None:
        before, t0 = (op.count if op is not None else 0), time.perf_counter()
        values[name] = float(fn())
        costs[name] = (time.perf_counter() - t0, (op.count - before) if op is not None else 0)

    op = HessianOperator(loss_fn, theta)
    timed("lambda_max", op, lambda: top_eigs(op, k=1, tol=tol, seed=seed).values[0])
    timed("trace", op, lambda: hutchinson_trace(op, n=n_probes, seed=seed)[0])
    timed("fn_curvature", op, lambda: filter_normalized_curvature(loss_fn, theta, spec, n_dirs,
                                                                  torch.Generator().manual_seed(seed), op=op)[0])
    calls = [0]

    def counted(p: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        return loss_fn(p)

    t0 = time.perf_counter()
    values["eps_sharpness"] = epsilon_sharpness(counted, theta, eps, eps_iters, seed)
    costs["eps_sharpness"] = (time.perf_counter() - t0, calls[0])
    aop = AdaptiveOperator(op, theta)
    timed("adaptive_lambda_max", op, lambda: top_eigs(aop, k=1, tol=tol, seed=seed).values[0])
    return values, costs
