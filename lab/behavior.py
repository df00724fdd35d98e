"""Behavior manifolds: the Jacobian G of a model's outputs on its training inputs, its rank, null space, the
Gauss-Newton matrix, and a walk along the set of parameters with unchanged training outputs."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import jacrev, jvp

from lab.linalg import numerical_rank

Forward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def behavior_jacobian(forward: Forward, theta: torch.Tensor, x: torch.Tensor, chunk_size: int = 256) -> torch.Tensor:
    """G: the (k·m) × P Jacobian of the outputs on the k inputs (m outputs each) w.r.t. the flat parameters."""
    rows = [jacrev(lambda th, xc=x[i:i + chunk_size]: forward(th, xc).reshape(-1))(theta)
            for i in range(0, len(x), chunk_size)]           # samples are independent: one jacrev per chunk
    return torch.cat(rows).reshape(-1, theta.numel())


def null_space(g: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Orthonormal basis (P × (P − rank)) of null(g): directions that keep the outputs fixed to first order."""
    _, s, vh = torch.linalg.svd(g.double(), full_matrices=True)
    r = numerical_rank(s, dtype, size=max(g.shape)).rank
    return vh[r:].T.contiguous()


def gauss_newton(g: torch.Tensor) -> torch.Tensor:
    """(2/n)·GᵀG: the Hessian of the mean squared error over the n rows of G at a perfect fit."""
    return 2.0 * g.T @ g / g.shape[0]


def output_second_derivative(forward: Forward, theta: torch.Tensor, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """d²/ds² f(θ + s·v) at s = 0 for every output (forward-over-forward)."""
    def first(th: torch.Tensor) -> torch.Tensor:
        return jvp(lambda t: forward(t, x).reshape(-1), (th,), (v,))[1]

    return jvp(first, (theta,), (v,))[1]


@dataclass
class Walk:
    """A walk along the behavior manifold: distances, output changes, and orthogonality of its tangent."""

    distance: np.ndarray        # ‖θ_t − θ_0‖ after each step
    path_length: np.ndarray     # cumulated step lengths
    pre_projection: np.ndarray  # max |f(θ + s·v) − f(θ)| on training inputs before re-projection
    predicted: np.ndarray       # ½ s² max|d²f/ds²| along v: the second-order prediction of pre_projection
    train_change: np.ndarray    # max |f_train(θ_t) − f_train(θ_0)| after re-projection
    test_change: np.ndarray     # rms change of the outputs on held-out inputs
    tangent_dot: np.ndarray     # ‖G(θ_t)·v‖/(‖G‖·‖v‖) for the sampled null-space direction v (0 by construction)
    chord_dot: np.ndarray       # ‖G(θ_t)·Δθ‖/(‖G‖·‖Δθ‖) for the step actually taken, Δθ = θ_{t+1} − θ_t: O(step)
    theta: torch.Tensor


def manifold_walk(forward: Forward, theta: torch.Tensor, x: torch.Tensor, steps: int = 20, step: float = 0.1,
                  x_test: torch.Tensor | None = None, seed: int = 0, newton_iters: int = 5) -> Walk:
    """Random steps in null(G), each re-projected onto {θ: f(θ, x) = f(θ0, x)} by Gauss-Newton (least squares)."""
    gen = torch.Generator().manual_seed(seed)
    th0 = theta.detach().double()
    th = th0.clone()
    f0 = forward(th0, x).reshape(-1).detach()
    t0 = forward(th0, x_test).reshape(-1).detach() if x_test is not None else None
    out = {k: [] for k in ("distance", "path", "pre", "pred", "train", "test", "dot", "chord")}
    path = 0.0
    for _ in range(steps):
        g = behavior_jacobian(forward, th, x)
        n = null_space(g)
        if n.shape[1] == 0:
            break
        v = n @ torch.randn(n.shape[1], generator=gen, dtype=torch.float64).to(n.device)
        v = v / v.norm()
        g_norm = torch.linalg.matrix_norm(g, 2)
        out["dot"].append(float((g @ v).norm() / (g_norm * v.norm())))
        d2 = output_second_derivative(forward, th, x, v)
        new = th + step * v
        out["pre"].append(float((forward(new, x).reshape(-1) - forward(th, x).reshape(-1)).abs().max()))
        out["pred"].append(float(0.5 * step**2 * d2.abs().max()))
        for _ in range(newton_iters):
            r = forward(new, x).reshape(-1) - f0
            gn = behavior_jacobian(forward, new, x)
            new = new - torch.linalg.lstsq(gn, r[:, None], driver="gelsd").solution[:, 0]
        delta = new - th
        path += float(delta.norm())
        out["chord"].append(float((g @ delta).norm() / (g_norm * delta.norm())))
        th = new.detach()
        out["distance"].append(float((th - th0).norm()))
        out["path"].append(path)
        out["train"].append(float((forward(th, x).reshape(-1) - f0).abs().max()))
        if t0 is not None:
            out["test"].append(float((forward(th, x_test).reshape(-1) - t0).pow(2).mean().sqrt()))
    a = {k: np.array(v) for k, v in out.items()}
    return Walk(a["distance"], a["path"], a["pre"], a["pred"], a["train"], a["test"], a["dot"], a["chord"], th)


def fit_interpolate(forward: Forward, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, iters: int = 50,
                    damping: float = 1e-3, tol: float = 1e-24) -> tuple[torch.Tensor, float]:
    """Levenberg-Marquardt on the mean squared error until it interpolates (float64); returns (θ, final MSE)."""
    th = theta.detach().double().clone()
    target = y.double().reshape(-1)
    lam = damping
    mse = float(((forward(th, x).reshape(-1) - target) ** 2).mean())
    for _ in range(iters):
        if mse <= tol:
            break
        r = forward(th, x).reshape(-1) - target
        g = behavior_jacobian(forward, th, x)
        a = g.T @ g
        step = torch.linalg.solve(a + lam * torch.eye(len(a), dtype=a.dtype, device=a.device), g.T @ r)
        cand = th - step
        new = float(((forward(cand, x).reshape(-1) - target) ** 2).mean())
        if new < mse:
            th, mse, lam = cand, new, max(lam / 3, 1e-12)
        else:
            lam *= 4
            if lam > 1e12:                                   # stalled: not an interpolating basin
                break
    return th, mse


def fit_interpolate_batch(forward: Forward, thetas: torch.Tensor, x: torch.Tensor, y: torch.Tensor, iters: int = 50,
                          damping: float = 1e-3, tol: float = 1e-24) -> tuple[torch.Tensor, torch.Tensor]:
    """fit_interpolate for many initial points at once (rows of thetas, float64), vmapped: each row runs its own
    Levenberg-Marquardt with its own damping. The step solves the k×k system (JJᵀ + λI)·z = r and takes Jᵀz, which
    equals (JᵀJ + λI)⁻¹Jᵀr (push-through identity) and is cheap when there are fewer outputs k than parameters.
    Returns (θ per row, final MSE per row)."""
    from torch.func import vmap

    if thetas.ndim != 2:
        raise ValueError(f"parameter 'thetas' has shape {tuple(thetas.shape)}: expected (points, parameters)")
    th = thetas.detach().double().clone()
    target = y.double().reshape(-1)
    k = target.numel()

    def resid(t: torch.Tensor) -> torch.Tensor:
        return forward(t, x).reshape(-1) - target

    residuals = vmap(resid)
    jac = vmap(jacrev(resid))
    lam = torch.full((len(th),), float(damping), dtype=torch.float64, device=th.device)
    r = residuals(th)
    mse = (r**2).mean(1)
    eye = torch.eye(k, dtype=torch.float64, device=th.device)
    for _ in range(iters):
        active = (mse > tol) & (lam <= 1e12)
        if not bool(active.any()):
            break
        j = jac(th)                                                    # (B, k, P)
        z = torch.linalg.solve(j @ j.transpose(1, 2) + lam[:, None, None] * eye, r[:, :, None])
        cand = th - (j.transpose(1, 2) @ z)[:, :, 0]
        r_c = residuals(cand)
        mse_c = (r_c**2).mean(1)
        better = active & (mse_c < mse)
        th = torch.where(better[:, None], cand, th)
        r = torch.where(better[:, None], r_c, r)
        mse = torch.where(better, mse_c, mse)
        lam = torch.where(better, torch.clamp(lam / 3, min=1e-12), torch.where(active, lam * 4, lam))
    return th, mse
