"""Hessian spectra from operators: extreme eigenpairs (Lanczos, power iteration) and the spectral density (SLQ)."""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal
from scipy.sparse.linalg import LinearOperator as _ScipyOperator
from scipy.sparse.linalg import eigsh

from lab.checks import not_allowed, require_finite, require_int, require_real, require_vector
from lab.curvature.operators import LinearOperator, LossFn, as_operator

__all__ = ["Eigs", "WHICH", "METHODS", "top_eigs", "power_iteration", "lanczos", "slq_density", "spectral_density"]

WHICH = ("LA", "SA")
METHODS = ("lanczos", "arpack")


def _one_blas_thread():
    """scipy's BLAS threads would fight torch's OpenMP threads for the cores inside eigsh: limit BLAS to one thread
    around the solver when threadpoolctl is installed (the workbook installs it; the library runs without it)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


@dataclass
class Eigs:
    """Eigenpairs of a symmetric operator.

    Attributes:
        values: (k,) float64, descending (algebraically for top_eigs, by magnitude for power_iteration).
        vectors: (P, k) unit columns, the operator's dtype and device.
        residuals: (k,) float64, ‖A v − λ v‖ for each pair (one product each).
        n_hvp: the operator products used, residuals included.
    """

    values: np.ndarray
    vectors: torch.Tensor
    residuals: np.ndarray
    n_hvp: int


def _residuals(op: LinearOperator, values: np.ndarray, vectors: torch.Tensor) -> np.ndarray:
    """‖Hv − λv‖ for each column, one HVP each."""
    out = []
    for lam, v in zip(values, vectors.T, strict=True):
        r = op(v).to(torch.float64) - float(lam) * v.to(torch.float64)
        out.append(float(torch.linalg.vector_norm(r)))
    return np.asarray(out, dtype=np.float64)


class _Basis:
    """Lanczos vectors as the rows of 16-row blocks: growing never copies, and memory is ~(steps taken) × P (rows
    are contiguous, so each reorthogonalisation pass is two matrix-vector products per block, no gathers).

    The rows are stored in `dtype`: float64 for a float64 operator, float32 for a float32 one. The recurrence itself
    runs in float64 on the exact current vectors; only the copies kept for reorthogonalisation are rounded, so the
    basis stays orthogonal to ~1e-7 — far inside the float32 products' own rounding, and semi-orthogonal in float32
    terms, which is all Lanczos needs for its Ritz values (Simon 1984). A float32 basis halves the memory and the
    memory traffic of reorthogonalisation, the solver's cost beyond the products on a CPU."""

    BLOCK = 16

    def __init__(self, p: int, device: torch.device, dtype: torch.dtype = torch.float64):
        self.p, self.device, self.dtype, self.n = p, device, dtype, 0
        self.blocks: list[torch.Tensor] = []

    def append(self, q: torch.Tensor) -> None:
        if self.n % self.BLOCK == 0:
            self.blocks.append(torch.empty(self.BLOCK, self.p, dtype=self.dtype, device=self.device))
        self.blocks[-1][self.n % self.BLOCK] = q
        self.n += 1

    def _rows(self):
        for i, blk in enumerate(self.blocks):
            yield i * self.BLOCK, blk[:min(self.BLOCK, self.n - i * self.BLOCK)]

    def orthogonalize(self, w: torch.Tensor) -> torch.Tensor:
        """w (float64) minus its projection on every vector: classical Gram–Schmidt, repeated once if the pass
        removed more than 1 − 1/√2 of w's norm (the DGKS criterion ARPACK uses; "twice is enough"). The second pass
        is rarely needed after the three-term recurrence, and each pass reads the whole basis (memory-bound on a
        CPU)."""
        for _ in range(2):
            before = float(torch.linalg.vector_norm(w))
            x = w.to(self.dtype)
            corr = torch.zeros_like(x)
            for _, rows in self._rows():
                corr.addmv_(rows.T, rows @ x)
            w = w - corr.to(torch.float64)
            if float(torch.linalg.vector_norm(w)) > before / np.sqrt(2):
                break
        return w

    def combine(self, s: torch.Tensor) -> torch.Tensor:
        """Σ_j basis_j s_j: (n, k) coefficients ↦ (P, k), float64."""
        out = torch.zeros(self.p, s.shape[1], dtype=torch.float64, device=self.device)
        for start, rows in self._rows():
            out += (rows.T @ s[start:start + rows.shape[0]].to(self.dtype)).to(torch.float64)
        return out


def _basis_dtype(op: LinearOperator) -> torch.dtype:
    """float64 for a float64 operator, else float32 (the products' own precision bounds what a basis can add)."""
    return torch.float64 if op.dtype == torch.float64 else torch.float32


def _lanczos_eigs(op: LinearOperator, k: int, which: str, tol: float, start_vec: np.ndarray,
                  max_steps: int, seed: int = 0) -> tuple[np.ndarray, torch.Tensor, np.ndarray, bool]:
    """Plain Lanczos with full reorthogonalisation (float64 recurrence, a basis in the operator's precision on its
    device), stopped at the first step where the k wanted Ritz pairs have residual estimates β_j·|s_ji| ≤
    tol·max(|θ_i|, ε‖T‖): (values, vectors, residual estimates, converged). One operator product per step; nothing
    else is applied.

    A breakdown (β ≈ 0) means the Krylov space is an invariant subspace: its Ritz values are exact eigenvalues, one
    per distinct eigenvalue the start vector touches — a Krylov space from one vector cannot hold two copies of an
    eigenvalue. So Lanczos is restarted there with a fresh random vector orthogonal to the basis (T becomes block
    diagonal), and, once any breakdown happened, stops only when the restarted block's top Ritz value has converged
    and cannot enter the k wanted values: on diag(1,1,1,2,2,2,3,3,3,3) with k = 4 it returns [3, 3, 3, 3], as an
    exhaustive method would. (Without a breakdown a repeated eigenvalue is found once, as by any single-vector
    Krylov method; rounding usually reveals a copy later.)"""
    p = op.size
    steps = min(max_steps, p)
    basis = _Basis(p, op.device, _basis_dtype(op))   # grows as needed: memory ~ the steps taken × P
    sign = 1.0 if which == "LA" else -1.0
    rng = np.random.default_rng([seed, 31])          # restart vectors
    q = torch.from_numpy(start_vec).to(device=op.device, dtype=torch.float64)
    q = q / torch.linalg.vector_norm(q)
    q_prev = None
    basis.append(q)
    offset = 0                                       # where the current block starts in the basis
    done: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []   # finished blocks: (offset, ritz, s, res)
    alpha: list[float] = []
    beta: list[float] = []
    eps = float(np.finfo(np.float64).eps)
    eps_op = max(eps, float(torch.finfo(op.dtype).eps))   # float32 products cannot resolve a smaller β
    scale = 0.0

    def result(vals, res, src, order, converged):
        coef = torch.zeros(basis.n, len(order), dtype=torch.float64)
        for c, i in enumerate(order):
            off, s_blk, col = src[i]
            coef[off:off + s_blk.shape[0], c] = torch.from_numpy(np.ascontiguousarray(s_blk[:, col]))
        vectors = basis.combine(coef.to(op.device))
        return vals[order], vectors, res[order], converged

    for m in range(1, steps + 1):
        w = op(q).to(torch.float64, copy=True)    # ours to change in place (an operator may return its input)
        a = float(q @ w)
        alpha.append(a)
        w.sub_(q, alpha=a)
        if q_prev is not None:
            w.sub_(q_prev, alpha=beta[-1])
        w = basis.orthogonalize(w)             # full reorthogonalisation
        b = float(torch.linalg.vector_norm(w))
        ritz, s = (eigh_tridiagonal(np.asarray(alpha), np.asarray(beta)) if len(alpha) > 1
                   else (np.asarray(alpha), np.ones((1, 1))))
        scale = max(scale, float(np.abs(ritz).max()))
        broke = b <= 100 * eps_op * scale          # β at the rounding level of the products: breakdown
        res_blk = b * np.abs(s[-1, :])
        floor = 100 * eps * max(scale, 1e-300)
        # a block that broke down spans an invariant subspace: its pairs are exact to rounding
        ok_blk = np.full(len(ritz), True) if broke else res_blk <= tol * np.maximum(np.abs(ritz), floor)
        vals = np.concatenate([*(d[1] for d in done), ritz])
        res = np.concatenate([*(d[3] for d in done), res_blk])
        ok_all = np.concatenate([*(np.full(len(d[1]), True) for d in done), ok_blk])
        src = [(d[0], d[2], j) for d in done for j in range(len(d[1]))] + [(offset, s, j) for j in range(len(ritz))]
        order = np.argsort(-sign * vals, kind="stable")[:k]
        ok = ok_all[order]
        if len(vals) >= k and ok.all():
            if not done and not broke:
                return result(vals, res, src, order, True)
            top = int(np.argmax(sign * ritz))
            kth = sign * float(vals[order[-1]])
            if done and ok_blk[top] and sign * ritz[top] <= kth + tol * max(abs(kth), floor):
                return result(vals, res, src, order, True)   # the restarted block cannot add a wanted value
        if m == steps:
            return result(vals, res, src, order, bool(len(vals) >= k and ok.all()))
        if broke:                              # an invariant subspace: restart orthogonally to it
            done.append((offset, ritz, s, res_blk))
            r = torch.from_numpy(rng.standard_normal(p)).to(device=op.device, dtype=torch.float64)
            r = basis.orthogonalize(basis.orthogonalize(r / torch.linalg.vector_norm(r)))
            nr = float(torch.linalg.vector_norm(r))
            if nr <= np.sqrt(float(torch.finfo(basis.dtype).eps)):    # the basis spans everything: all exact
                done_vals = np.concatenate([d[1] for d in done])
                order = np.argsort(-sign * done_vals, kind="stable")[:k]
                res = np.concatenate([d[3] for d in done])
                src = [(d[0], d[2], j) for d in done for j in range(len(d[1]))]
                return result(done_vals, res, src, order, len(done_vals) >= k)
            offset, alpha, beta, q_prev, q = basis.n, [], [], None, r / nr
        else:
            beta.append(b)
            q_prev, q = q, w.div_(b)
        basis.append(q)
    raise AssertionError("unreachable")  # pragma: no cover


def top_eigs(op_or_loss: LinearOperator | LossFn, theta: torch.Tensor | None = None, k: int = 5, which: str = "LA",
             tol: float = 1e-8, seed: int = 0, v0: torch.Tensor | np.ndarray | None = None,
             ncv: int | None = None, method: str = "lanczos", max_steps: int | None = None,
             exact_residuals: bool = False) -> Eigs:
    """The k largest ("LA") or smallest ("SA") algebraic eigenpairs of a Hessian, from operator products alone.

    The default method is plain Lanczos with full reorthogonalisation, checked after every product and stopped as
    soon as the k wanted Ritz pairs have converged: it needs no restarts and no more products than the Krylov space
    that holds them (for the top eigenvalue of a network Hessian, typically 6–20). A breakdown (β ≈ 0: the Krylov
    space is an invariant subspace, e.g. for a zero Hessian, a multiple of the identity or a low-rank one) is an exact
    answer, not an error: Lanczos restarts there from a random vector orthogonal to the basis until no further copy
    of a wanted eigenvalue can appear, so repeated eigenvalues come out with their multiplicity. `method="arpack"`
    runs scipy's eigsh (implicitly restarted Lanczos, a Krylov size of `ncv`) instead, for comparison.

    Args:
        op_or_loss: an operator (`hvp_operator`, `minibatch_hvp_operator`, `dataloader_hvp_operator`,
            `DenseOperator`, ...) or a loss function θ (P,) ↦ scalar (then `theta` is required).
        theta: shape (P,); only needed with a loss function.
        k: how many eigenpairs, an integer, 1 <= k < P.
        which: "LA" (largest algebraic) or "SA" (smallest algebraic).
        tol: the relative residual at which a pair has converged: ‖Hv − λv‖ ≤ tol·|λ| (eigsh's meaning of tol).
        seed: seeds the random start vector (unless v0) and the restart vectors, an integer >= 0.
        v0: a finite, non-zero start vector (P,), e.g. the previous top eigenvector when tracking sharpness during
            training.
        ncv: ARPACK's Krylov subspace size (method="arpack" only; default max(2k + 1, 20)).
        method: "lanczos" or "arpack".
        max_steps: the most Lanczos steps (products) before giving up, an integer >= k (default
            min(P, max(300, 30k))); a run that does not converge in them warns and returns what it has.
        exact_residuals: compute ‖Hv − λv‖ with one more product per pair; otherwise Lanczos's own estimate
            β_m·|s_mi|, which full reorthogonalisation keeps exact to rounding.

    Returns:
        `Eigs`: values (k,) descending, vectors (P, k) in the operator's dtype/device, residuals, n_hvp (every
        product, residual products included).

    Raises:
        ValueError / TypeError: a bad k, which, method, tol, seed, ncv, max_steps or v0, named in the message.
        lab.checks.NonFiniteError: an operator product is not finite (checked by the operator itself).

    Example:
        >>> import torch
        >>> from lab.curvature import DenseOperator
        >>> e = top_eigs(DenseOperator(torch.diag(torch.arange(1.0, 7.0, dtype=torch.float64))), k=2)
        >>> e.values.round(8).tolist(), bool(e.residuals.max() < 1e-6)
        ([6.0, 5.0], True)
    """
    if which not in WHICH:
        raise ValueError(f"parameter 'which' = {which!r} is not allowed: expected one of {WHICH} (largest / smallest "
                         f"algebraic); largest magnitude is not offered, as it mixes the two ends of the spectrum")
    if method not in METHODS:
        raise ValueError(f"parameter 'method' = {method!r} is not allowed: expected one of {METHODS}")
    where = "lab.curvature.top_eigs"
    op = as_operator(op_or_loss, theta, where)
    p = op.size
    if isinstance(k, (int, np.integer)) and not isinstance(k, bool) and not 1 <= k < p:
        raise ValueError(f"{where}: parameter 'k' = {k} is not allowed: expected 1 <= k < P = {p} (use "
                         "dense_hessian for all)")
    k = require_int(k, "k", where, lo=1, hi=p - 1)
    tol = require_real(tol, "tol", where, lo=0, lo_open=True)
    seed = require_int(seed, "seed", where, lo=0)
    if ncv is not None:
        ncv = require_int(ncv, "ncv", where, lo=1)
    if max_steps is not None:
        max_steps = require_int(max_steps, "max_steps", where, lo=k)
    start = op.count
    if v0 is None:
        start_vec = np.random.default_rng(seed).standard_normal(p)
    else:
        try:
            v0t = torch.as_tensor(v0).detach().to(device="cpu", dtype=torch.float64).reshape(-1)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(not_allowed("v0", v0, f"a vector of P = {p} numbers ({err})", where)) from None
        require_vector(v0t, "v0", where, size=p, nonzero=True)
        start_vec = v0t.numpy().copy()
    if method == "lanczos":
        steps = max_steps if max_steps is not None else min(p, max(300, 30 * k))
        with _one_blas_thread():
            vals, vecs, res, converged = _lanczos_eigs(op, k, which, tol, start_vec, steps, seed)
        if not converged:
            warnings.warn(f"lab.curvature.top_eigs: {k} {which} eigenpairs not converged to tol={tol:g} in {steps} "
                          f"products (residuals {np.array2string(res, precision=2)}); raise max_steps or tol",
                          RuntimeWarning, stacklevel=2)
        order = np.argsort(vals)[::-1]
        vals, vecs, res = vals[order], vecs[:, order.copy()], res[order]
        vectors = (vecs / torch.linalg.vector_norm(vecs, dim=0)).to(dtype=op.dtype)
    else:
        def matvec(x: np.ndarray) -> np.ndarray:
            v = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64).reshape(-1))
            return op(v).to(device="cpu", dtype=torch.float64).numpy()

        lin = _ScipyOperator((p, p), matvec=matvec, dtype=np.float64)
        with _one_blas_thread():
            vals, vecs = eigsh(lin, k=k, which=which, tol=tol, v0=start_vec,
                               ncv=None if ncv is None else int(min(max(ncv, 2 * k + 1), p)))
        order = np.argsort(vals)[::-1]
        vals, vecs = vals[order], vecs[:, order]
        vectors = torch.from_numpy(vecs / np.linalg.norm(vecs, axis=0)).to(device=op.device, dtype=op.dtype)
        exact_residuals = True
    if exact_residuals:
        with _one_blas_thread():
            res = _residuals(op, vals, vectors)
    return Eigs(values=np.asarray(vals, dtype=np.float64), vectors=vectors, residuals=np.asarray(res, np.float64),
                n_hvp=op.count - start)


def power_iteration(op_or_loss: LinearOperator | LossFn, theta: torch.Tensor | None = None, k: int = 1,
                    iters: int = 100, seed: int = 0) -> Eigs:
    """Deflated power iteration: the k largest-MAGNITUDE eigenpairs (a negative one wins if it is largest in size).

    Unlike top_eigs(which="LA") this finds max |λ|, so values come out by descending |λ|, not algebraically sorted.

    Args:
        op_or_loss: an operator, or a loss function θ (P,) ↦ scalar with `theta`.
        theta: shape (P,); only needed with a loss function.
        k: how many, 1 <= k <= P.
        iters: products per eigenpair.
        seed: seeds the start vectors.

    Returns:
        `Eigs` (values by descending magnitude; vectors (P, k) in the operator's dtype).

    Example:
        >>> import torch
        >>> from lab.curvature import DenseOperator
        >>> op = DenseOperator(torch.diag(torch.tensor([1.0, -4.0, 2.0], dtype=torch.float64)))
        >>> round(float(power_iteration(op, iters=200).values[0]), 6)
        -4.0
    """
    where = "lab.curvature.power_iteration"
    op = as_operator(op_or_loss, theta, where)
    p = op.size
    k = require_int(k, "k", where, lo=1, hi=p)
    iters = require_int(iters, "iters", where, lo=1)
    seed = require_int(seed, "seed", where, lo=0)
    start = op.count
    gen = torch.Generator().manual_seed(seed)
    found: list[torch.Tensor] = []
    vals: list[float] = []
    res: list[float] = []

    def deflate(x: torch.Tensor) -> torch.Tensor:
        for q in found:
            x = x - (q @ x) * q
        return x

    for _ in range(k):
        v = deflate(torch.randn(p, generator=gen, dtype=torch.float64).to(op.device))
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
    vectors = torch.stack(found, dim=1).to(dtype=op.dtype) if found else torch.empty(p, 0, dtype=op.dtype)
    return Eigs(values=np.asarray(vals), vectors=vectors, residuals=np.asarray(res), n_hvp=op.count - start)


def lanczos(op: LinearOperator, q0: torch.Tensor, m: int) -> tuple[np.ndarray, np.ndarray]:
    """m-step Lanczos with full reorthogonalization from a unit vector q0 (a float64 recurrence; the basis kept for
    reorthogonalisation in the operator's precision, float64 or float32).

    Args:
        op: the operator (products in its dtype).
        q0: start vector, shape (P,), finite and non-zero, on the operator's device (normalised here).
        m: the number of steps, >= 1 (at most P); stops early at breakdown.

    Returns:
        (alpha, beta): the tridiagonal's diagonal (j,) and off-diagonal (j − 1,), float64.

    Example:
        >>> import torch
        >>> from lab.curvature import DenseOperator
        >>> a, b = lanczos(DenseOperator(torch.eye(3, dtype=torch.float64)), torch.tensor([1.0, 0, 0]).double(), 3)
        >>> a.tolist(), b.tolist()          # breakdown at once: q0 is an eigenvector
        ([1.0], [])
    """
    where = "lab.curvature.lanczos"
    if not isinstance(op, LinearOperator):
        raise TypeError(not_allowed("op", op, "a lab.curvature.LinearOperator", where))
    m = require_int(m, "m", where, lo=1)
    require_vector(q0, "q0", where, size=op.size, nonzero=True)
    p = q0.numel()
    steps = min(m, p)
    basis = _Basis(p, q0.device, _basis_dtype(op))
    q, q_prev = q0.to(torch.float64), None
    q = q / torch.linalg.vector_norm(q)            # a unit vector, whatever the caller's scale
    basis.append(q)
    alpha: list[float] = []
    beta: list[float] = []
    scale = 0.0
    eps = torch.finfo(op.dtype).eps
    for j in range(steps):
        w = op(q).to(torch.float64, copy=True)    # ours to change in place (an operator may return its input)
        a = float(q @ w)
        alpha.append(a)
        w.sub_(q, alpha=a)
        if q_prev is not None:
            w.sub_(q_prev, alpha=beta[-1])
        w = basis.orthogonalize(w)             # full reorthogonalisation
        b = float(torch.linalg.vector_norm(w))
        scale = max(scale, abs(a) + b + (beta[-1] if beta else 0.0))
        if j + 1 == steps or b <= scale * np.sqrt(eps):
            break
        beta.append(b)
        q_prev, q = q, w.div_(b)
        basis.append(q)
    return np.asarray(alpha), np.asarray(beta)


def slq_density(op_or_loss: LinearOperator | LossFn, theta: torch.Tensor | None = None, n_runs: int = 10,
                m: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stochastic Lanczos quadrature of the spectral density: (nodes, weights), each (n_runs, m); weights sum to 1.

    Runs that stop early (Lanczos breakdown, or m > P) are padded with zero-weight nodes at their largest Ritz value.

    Args:
        op_or_loss: an operator, or a loss function θ (P,) ↦ scalar with `theta`.
        theta: shape (P,); only needed with a loss function.
        n_runs: independent Rademacher start vectors.
        m: Lanczos steps per run.
        seed: seeds the start vectors.

    Returns:
        (nodes, weights): float64 arrays of shape (n_runs, m); see `spectral_density` to broaden them.

    Example:
        >>> import torch
        >>> from lab.curvature import DenseOperator
        >>> nodes, w = slq_density(DenseOperator(torch.diag(torch.tensor([1.0, 3.0]).double())), n_runs=2, m=2)
        >>> sorted(set(nodes.round(6).ravel().tolist())), float(w.sum())
        ([1.0, 3.0], 1.0)
    """
    from lab.curvature.trace import _rademacher

    where = "lab.curvature.slq_density"
    n_runs = require_int(n_runs, "n_runs", where, lo=1)
    m = require_int(m, "m", where, lo=1)
    seed = require_int(seed, "seed", where, lo=0)
    op = as_operator(op_or_loss, theta, where)
    p = op.size
    gen = torch.Generator().manual_seed(seed)
    nodes = np.zeros((n_runs, m))
    weights = np.zeros((n_runs, m))
    for r in range(n_runs):
        q0 = _rademacher(p, 1, gen)[:, 0].to(op.device) / np.sqrt(p)
        with _one_blas_thread():
            alpha, beta = lanczos(op, q0, m)
            ritz, vecs = eigh_tridiagonal(alpha, beta) if len(alpha) > 1 else (alpha, np.ones((1, 1)))
        j = len(ritz)
        nodes[r, :j], nodes[r, j:] = ritz, ritz[-1]
        weights[r, :j] = vecs[0, :] ** 2 / n_runs
    return nodes, weights / weights.sum()


def spectral_density(nodes: np.ndarray, weights: np.ndarray, grid: np.ndarray, sigma: float) -> np.ndarray:
    """Σ w·N(grid; node, σ²): the SLQ density broadened by Gaussians of width sigma (integrates to ~1).

    Args:
        nodes, weights: from `slq_density`, any matching shapes.
        grid: where to evaluate, any shape.
        sigma: the Gaussian width (> 0), in the eigenvalues' units.

    Returns:
        The density at grid, float64, grid's shape.

    Example:
        >>> import numpy as np
        >>> grid = np.linspace(-5, 5, 2001)
        >>> round(float(spectral_density(np.array([0.0]), np.array([1.0]), grid, 0.5).sum() * 0.005), 4)
        1.0
    """
    where = "lab.curvature.spectral_density"
    sigma = require_real(sigma, "sigma", where, lo=0, lo_open=True)
    t = np.asarray(grid, dtype=np.float64)
    x, w = np.asarray(nodes, dtype=np.float64), np.asarray(weights, dtype=np.float64)
    if x.shape != w.shape:
        raise ValueError(f"{where}: parameters 'nodes' and 'weights' have shapes {x.shape} and {w.shape}: expected "
                         "the same shape (as slq_density returns them)")
    for name, v in (("nodes", x), ("weights", w), ("grid", t)):
        require_finite(v, f"parameter '{name}'", where)
    if np.any(w < 0):
        raise ValueError(f"{where}: parameter 'weights' has {int(np.sum(w < 0))} negative entries: expected weights "
                         ">= 0")
    x, w = x.ravel(), w.ravel()
    keep = w > 0
    x, w = x[keep], w[keep]
    out = np.zeros(t.shape, dtype=np.float64)
    for i in range(0, len(x), 256):  # chunks keep the grid × nodes block small
        d = (t.reshape(-1, 1) - x[i:i + 256]) / sigma
        out += (np.exp(-0.5 * d**2) @ w[i:i + 256]).reshape(t.shape)
    return out / (sigma * np.sqrt(2 * np.pi))
