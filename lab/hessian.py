"""Hessian-vector products, eigenpairs, traces and spectral densities of a pure loss of the flat parameter vector."""
from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal
from scipy.sparse.linalg import LinearOperator, eigsh
from threadpoolctl import threadpool_limits
from torch.func import grad, jvp, linearize

from lab.checks import NonFiniteError, require_finite


def hvp(loss_fn: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """H(θ)·v by forward-mode differentiation of the gradient."""
    return jvp(grad(loss_fn), (theta,), (v.to(theta.dtype),))[1]


def directional_curvature(loss_fn: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor,
                          d: torch.Tensor) -> float:
    """dᵀ H d / dᵀd: the second derivative of the loss along d (float64 recommended)."""
    return float(d @ hvp(loss_fn, theta, d) / (d @ d))


# ---------------------------------------------------------------------------------------------------------------------
# Operators: v ↦ H v without forming H.

LossFn = Callable[[torch.Tensor], torch.Tensor]
Operator = Callable[[torch.Tensor], torch.Tensor]


class _HVP:
    """v ↦ H(θ)·v. Reverse-over-reverse by default: the gradient's graph is built once at θ (create_graph) and every
    product is one backward pass through it, about 0.7× a gradient on a CPU, with a set-up of about one gradient —
    the graph reuse PyHessian uses. `torch.func.linearize` is as fast per product but costs ~0.8 s to trace (tens of
    products' worth), so it is only the fallback, then plain jvp-of-grad, each the first time the former fails
    (e.g. for a function that supports only forward mode). `.count` counts applications, `.mode` says which ran."""

    MODES = ("double_backward", "linearize", "jvp")

    def __init__(self, loss_fn: LossFn, theta: torch.Tensor):
        require_finite(theta, "θ", "lab.hessian.hvp_operator")
        self.loss_fn, self.theta = loss_fn, theta.detach()
        self.count = 0
        self.mode = self.MODES[0]
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

    def _linearized(self, v: torch.Tensor) -> torch.Tensor:
        if self._lin is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _, self._lin = linearize(grad(self.loss_fn), self.theta)
        return self._lin(v)

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        v = torch.as_tensor(v).to(dtype=self.theta.dtype, device=self.theta.device).reshape(self.theta.shape)
        self.count += 1
        run = {"double_backward": self._double_backward, "linearize": self._linearized,
               "jvp": lambda w: hvp(self.loss_fn, self.theta, w)}
        for mode in self.MODES[self.MODES.index(self.mode):]:
            try:
                out = run[mode](v).detach()
                self.mode = mode
                if not bool(torch.isfinite(out).all()):
                    raise NonFiniteError(
                        f"lab.hessian: a Hessian-vector product at θ is not finite "
                        f"({int((~torch.isfinite(out)).sum())} of {out.numel()} entries NaN or inf; "
                        f"input vector finite: {bool(torch.isfinite(v).all())}): the loss or its derivatives "
                        f"overflow at this θ (is the loss finite there? a diverged run?)")
                return out
            except (NotImplementedError, RuntimeError):
                if mode == self.MODES[-1]:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover


class _WeightedSum:
    """v ↦ Σ_b w_b H_b v over per-batch operators; `.count` counts applications of the whole sum."""

    def __init__(self, ops: list[_HVP], weights: list[float]):
        self.ops, self.weights = ops, weights
        self.count = 0

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        self.count += 1
        out = None
        for op, w in zip(self.ops, self.weights, strict=True):
            hv = w * op(v)
            out = hv if out is None else out + hv
        return out


def hvp_operator(loss_fn: LossFn, theta: torch.Tensor) -> Operator:
    """v ↦ H(θ)·v at a fixed θ, the gradient's graph built once and reused (see _HVP for the fallbacks);
    `.count` counts the products."""
    return _HVP(loss_fn, theta)


def minibatch_hvp_operator(loss_on_batch: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
                           theta: torch.Tensor, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> Operator:
    """v ↦ Σ_b (n_b/N) H_b v: the Hessian of the mean loss over all N samples, from per-batch mean losses."""
    batches = list(batches)
    if not batches:
        raise ValueError("parameter 'batches' is empty: expected a non-empty list of (x, y) pairs")
    sizes = [len(x) for x, _ in batches]
    if min(sizes) < 1:
        raise ValueError(f"parameter 'batches' has batch sizes {sizes}: every batch needs at least one sample")
    total = sum(sizes)

    def bind(x: torch.Tensor, y: torch.Tensor) -> LossFn:
        return lambda t: loss_on_batch(t, x, y)

    return _WeightedSum([_HVP(bind(x, y), theta) for x, y in batches], [n / total for n in sizes])


def dense_hessian(loss_fn: LossFn, theta: torch.Tensor, max_bytes: float = 2**30) -> torch.Tensor:
    """The full P × P Hessian by torch.func.hessian, refused when it would exceed max_bytes."""
    p = theta.numel()
    need = p * p * theta.element_size()
    if need > max_bytes:
        raise ValueError(f"parameter 'max_bytes' = {max_bytes:.4g}: the dense Hessian of P = {p} parameters needs "
                         f"{need} bytes ({need / 2**30:.3g} GiB); raise 'max_bytes' or use top_eigs (Lanczos on "
                         f"Hessian-vector products) instead")
    return torch.func.hessian(loss_fn)(theta.detach()).detach()


# ---------------------------------------------------------------------------------------------------------------------
# Extreme eigenpairs.

@dataclass
class Eigs:
    """Eigenpairs: values descending (algebraic for top_eigs, by magnitude for power_iteration), unit vector columns."""

    values: np.ndarray
    vectors: torch.Tensor
    residuals: np.ndarray
    n_hvp: int


WHICH = ("LA", "SA")


def _counted(op: Operator) -> int:
    return int(getattr(op, "count", 0))


def _residuals(op: Operator, values: np.ndarray, vectors: torch.Tensor) -> np.ndarray:
    """‖Hv − λv‖ for each column, one HVP each."""
    out = []
    for lam, v in zip(values, vectors.T, strict=True):
        r = op(v).to(torch.float64) - float(lam) * v.to(torch.float64)
        out.append(float(torch.linalg.vector_norm(r)))
    return np.asarray(out, dtype=np.float64)


def top_eigs(loss_fn: LossFn, theta: torch.Tensor, k: int = 5, which: str = "LA", tol: float = 1e-8, seed: int = 0,
             operator: Operator | None = None, v0: torch.Tensor | np.ndarray | None = None,
             ncv: int | None = None) -> Eigs:
    """k largest ("LA") or smallest ("SA") algebraic Hessian eigenpairs by Lanczos (scipy eigsh) on HVPs.

    n_hvp counts every product, including the k used for the residuals. v0 warm-starts Lanczos (e.g. the previous
    top eigenvector when tracking sharpness during training); by default a seeded random vector. ARPACK builds at
    least max(2k + 1, 20) Lanczos vectors, so a warm start saves products only when restarts would be needed.
    `ncv` sets the Krylov subspace size (ARPACK's default, max(2k + 1, 20), when None): the smallest eigenvalues of
    a Hessian sit in a dense cluster near 0 and converge far faster with ~60–100 vectors than with 20.
    """
    if which not in WHICH:
        raise ValueError(f"parameter 'which' = {which!r} is not allowed: expected one of {WHICH} (largest / smallest "
                         f"algebraic); largest magnitude is not offered, as it mixes the two ends of the spectrum")
    p = theta.numel()
    if not 1 <= k < p:
        raise ValueError(f"parameter 'k' = {k} is not allowed: expected 1 <= k < P = {p} (use dense_hessian for all)")
    op = operator if operator is not None else hvp_operator(loss_fn, theta)
    start = _counted(op)
    calls = 0

    def matvec(x: np.ndarray) -> np.ndarray:
        nonlocal calls
        calls += 1
        v = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64).reshape(-1)).to(theta.device)
        return op(v.to(theta.dtype)).detach().to(device="cpu", dtype=torch.float64).numpy()

    lin = LinearOperator((p, p), matvec=matvec, dtype=np.float64)
    start_vec = (np.random.default_rng(seed).standard_normal(p) if v0 is None
                 else np.asarray(torch.as_tensor(v0).detach().double().cpu()).reshape(-1))
    if start_vec.shape != (p,) or not np.any(start_vec):
        raise ValueError(f"parameter 'v0' must be a non-zero vector of length P = {p}")
    with threadpool_limits(limits=1, user_api="blas"):  # scipy's BLAS threads would fight torch's for the cores
        vals, vecs = eigsh(lin, k=k, which=which, tol=tol, v0=start_vec,
                           ncv=None if ncv is None else int(min(max(ncv, 2 * k + 1), p)))
    order = np.argsort(vals)[::-1]
    vals, vecs = vals[order], vecs[:, order]
    vectors = torch.from_numpy(vecs / np.linalg.norm(vecs, axis=0)).to(device=theta.device, dtype=theta.dtype)
    res = _residuals(op, vals, vectors)
    n = _counted(op) - start if hasattr(op, "count") else calls + k
    return Eigs(values=np.asarray(vals, dtype=np.float64), vectors=vectors, residuals=res, n_hvp=n)


def power_iteration(loss_fn: LossFn, theta: torch.Tensor, k: int = 1, iters: int = 100, seed: int = 0) -> Eigs:
    """Deflated power iteration: the k largest-MAGNITUDE eigenpairs (a negative one wins if it is largest in size).

    Unlike top_eigs(which="LA") this finds max |λ|, so values come out by descending |λ|, not algebraically sorted.
    """
    p = theta.numel()
    if not 1 <= k <= p:
        raise ValueError(f"parameter 'k' = {k} is not allowed: expected 1 <= k <= P = {p}")
    if iters < 1:
        raise ValueError(f"parameter 'iters' = {iters} is not allowed: expected iters >= 1")
    op = hvp_operator(loss_fn, theta)
    gen = torch.Generator().manual_seed(seed)
    found: list[torch.Tensor] = []
    vals: list[float] = []
    res: list[float] = []

    def deflate(x: torch.Tensor) -> torch.Tensor:
        for q in found:
            x = x - (q @ x) * q
        return x

    for _ in range(k):
        v = deflate(torch.randn(p, generator=gen, dtype=torch.float64).to(theta.device))
        v = v / torch.linalg.vector_norm(v)
        for _ in range(iters):
            w = deflate(op(v).to(torch.float64))
            norm = torch.linalg.vector_norm(w)
            if norm == 0:  # v lies in the null space of the deflated operator
                break
            v = w / norm
        v = deflate(v)
        v = v / torch.linalg.vector_norm(v)
        hv = op(v).to(torch.float64)
        lam = float(v @ hv)
        res.append(float(torch.linalg.vector_norm(hv - lam * v)))
        vals.append(lam)
        found.append(v)
    vectors = torch.stack(found, dim=1).to(dtype=theta.dtype) if found else torch.empty(p, 0, dtype=theta.dtype)
    return Eigs(values=np.asarray(vals), vectors=vectors, residuals=np.asarray(res), n_hvp=op.count)


# ---------------------------------------------------------------------------------------------------------------------
# Trace estimators.

def _rademacher(p: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """A p × n matrix of ±1 entries (float64, CPU)."""
    return torch.randint(0, 2, (p, n), generator=gen).to(torch.float64).mul_(2).sub_(1)


def _mean_se(samples: list[float]) -> tuple[float, float]:
    a = np.asarray(samples, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1) / np.sqrt(len(a))) if len(a) > 1 else float("nan")


def hutchinson_trace(loss_fn: LossFn, theta: torch.Tensor, n: int = 100, seed: int = 0) -> tuple[float, float]:
    """tr H ≈ mean of zᵀHz over n Rademacher probes z: (estimate, standard error)."""
    if n < 2:
        raise ValueError(f"parameter 'n' = {n} is not allowed: expected n >= 2 (for a standard error)")
    op = hvp_operator(loss_fn, theta)
    z = _rademacher(theta.numel(), n, torch.Generator().manual_seed(seed)).to(theta.device)
    return _mean_se([float(z[:, i] @ op(z[:, i]).to(torch.float64)) for i in range(n)])


def hutchpp_trace(loss_fn: LossFn, theta: torch.Tensor, n: int = 99, seed: int = 0) -> tuple[float, float]:
    """Hutch++ (Meyer et al. 2021) with n HVPs: exact trace on a sketched top subspace + Hutchinson on the rest.

    Returns (estimate, standard error); the error is the complement's sample std / √(#probes), as the subspace
    part is exact given the sketch.
    """
    if n < 4:
        raise ValueError(f"parameter 'n' = {n} is not allowed: expected n >= 4 (n // 3 sketch columns, >= 2 probes)")
    p = theta.numel()
    op = hvp_operator(loss_fn, theta)
    gen = torch.Generator().manual_seed(seed)
    m = min(n // 3, p)
    s = _rademacher(p, m, gen).to(theta.device)
    g = _rademacher(p, n - 2 * m, gen).to(theta.device)
    hs = torch.stack([op(s[:, j]).to(torch.float64) for j in range(m)], dim=1)
    q = torch.linalg.qr(hs).Q
    top = sum(float(q[:, j] @ op(q[:, j]).to(torch.float64)) for j in range(m))
    g = g - q @ (q.T @ g)
    est, se = _mean_se([float(g[:, i] @ op(g[:, i]).to(torch.float64)) for i in range(g.shape[1])])
    return top + est, se


# ---------------------------------------------------------------------------------------------------------------------
# Spectral density (stochastic Lanczos quadrature).

def _lanczos(op: Operator, q0: torch.Tensor, m: int, dtype: torch.dtype) -> tuple[np.ndarray, np.ndarray]:
    """m-step Lanczos with full reorthogonalization from unit q0: (alpha, beta), stopping early at breakdown."""
    p = q0.numel()
    steps = min(m, p)
    basis = torch.zeros(p, steps, dtype=torch.float64, device=q0.device)
    basis[:, 0] = q0
    alpha: list[float] = []
    beta: list[float] = []
    scale = 0.0
    for j in range(steps):
        q = basis[:, j]
        w = op(q.to(dtype)).to(torch.float64)
        a = float(q @ w)
        alpha.append(a)
        w = w - a * q - (beta[-1] * basis[:, j - 1] if j > 0 else 0.0)
        for _ in range(2):  # full reorthogonalization, twice is enough
            w = w - basis[:, :j + 1] @ (basis[:, :j + 1].T @ w)
        b = float(torch.linalg.vector_norm(w))
        scale = max(scale, abs(a) + b + (beta[-1] if beta else 0.0))
        if j + 1 == steps or b <= scale * np.sqrt(torch.finfo(dtype).eps):
            break
        beta.append(b)
        basis[:, j + 1] = w / b
    return np.asarray(alpha), np.asarray(beta)


def slq_density(loss_fn: LossFn, theta: torch.Tensor, n_runs: int = 10, m: int = 60, seed: int = 0
                ) -> tuple[np.ndarray, np.ndarray]:
    """Stochastic Lanczos quadrature: (nodes, weights), each (n_runs, m); all weights sum to 1.

    Runs that stop early (Lanczos breakdown, or m > P) are padded with zero-weight nodes at their largest Ritz value.
    """
    if n_runs < 1 or m < 1:
        raise ValueError(f"parameters 'n_runs' = {n_runs}, 'm' = {m} are not allowed: expected both >= 1")
    p = theta.numel()
    op = hvp_operator(loss_fn, theta)
    gen = torch.Generator().manual_seed(seed)
    nodes = np.zeros((n_runs, m))
    weights = np.zeros((n_runs, m))
    for r in range(n_runs):
        q0 = _rademacher(p, 1, gen)[:, 0].to(theta.device) / np.sqrt(p)
        alpha, beta = _lanczos(op, q0, m, theta.dtype)
        ritz, vecs = eigh_tridiagonal(alpha, beta) if len(alpha) > 1 else (alpha, np.ones((1, 1)))
        j = len(ritz)
        nodes[r, :j], nodes[r, j:] = ritz, ritz[-1]
        weights[r, :j] = vecs[0, :] ** 2 / n_runs
    return nodes, weights / weights.sum()


def spectral_density(nodes: np.ndarray, weights: np.ndarray, grid: np.ndarray, sigma: float) -> np.ndarray:
    """Σ w·N(grid; node, σ²): the SLQ density broadened by Gaussians of width sigma (integrates to ~1)."""
    if not sigma > 0:
        raise ValueError(f"parameter 'sigma' = {sigma} is not allowed: expected sigma > 0")
    t = np.asarray(grid, dtype=np.float64)
    x, w = np.asarray(nodes, dtype=np.float64).ravel(), np.asarray(weights, dtype=np.float64).ravel()
    keep = w > 0
    x, w = x[keep], w[keep]
    out = np.zeros(t.shape, dtype=np.float64)
    for i in range(0, len(x), 256):  # chunks keep the grid × nodes block small
        d = (t.reshape(-1, 1) - x[i:i + 256]) / sigma
        out += (np.exp(-0.5 * d**2) @ w[i:i + 256]).reshape(t.shape)
    return out / (sigma * np.sqrt(2 * np.pi))
