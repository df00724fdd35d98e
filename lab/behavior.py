"""Behavior manifolds: the Jacobian G of a model's outputs on its training inputs, its rank, null space, the
Gauss-Newton matrix, and a walk along the set of parameters with unchanged training outputs.

A `Forward` (lab.flat) is a pure function (θ, x) ↦ outputs of the flat parameters θ, shape (P,), e.g. from
`lab.flat.make_forward`; outputs of any shape are flattened to the k·m entries (k inputs, m outputs each). The
walks and fits here run in float64, so pass float64 inputs (or a forward that casts x to θ's dtype).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.func import jacrev, jvp

from lab.curvature.rank import numerical_rank
from lab.flat import Forward

__all__ = ["behavior_jacobian", "null_space", "gauss_newton", "output_second_derivative", "Walk", "manifold_walk",
           "fit_interpolate", "fit_interpolate_batch", "ReluActivity", "relu_activity"]



def behavior_jacobian(forward: Forward, theta: torch.Tensor, x: torch.Tensor, chunk_size: int = 256) -> torch.Tensor:
    """G: the (k·m) × P Jacobian of the outputs on the k inputs (m outputs each) w.r.t. the flat parameters.

    Row i·m + j is the gradient of output j on input i (row-major flattening of forward(θ, x)).

    Args:
        forward: the pure forward (θ, x) ↦ outputs, shape (k, m) (or any shape with k·m entries).
        theta: flat parameters, shape (P,), any floating dtype and device.
        x: inputs, shape (k, ...), in a dtype and on a device `forward` accepts with θ.
        chunk_size: inputs per jacrev call (bounds memory; samples are independent).

    Returns:
        torch.Tensor: G, shape (k·m, P), in the outputs' dtype, on θ's device.

    Example:
        >>> import torch
        >>> from lab.behavior import behavior_jacobian
        >>> forward = lambda t, x: x @ t[:2] + t[2]                    # a linear model: G = [x, 1]
        >>> x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype=torch.float64)
        >>> behavior_jacobian(forward, torch.zeros(3, dtype=torch.float64), x).tolist()
        [[1.0, 2.0, 1.0], [3.0, 4.0, 1.0], [5.0, 6.0, 1.0]]
    """
    rows = [jacrev(lambda th, xc=x[i:i + chunk_size]: forward(th, xc).reshape(-1))(theta)
            for i in range(0, len(x), chunk_size)]           # samples are independent: one jacrev per chunk
    return torch.cat(rows).reshape(-1, theta.numel())


def null_space(g: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Orthonormal basis (P × (P − rank)) of null(g): directions that keep the outputs fixed to first order.

    The rank is the numerical rank of g at the resolution of `dtype` (`lab.curvature.rank.numerical_rank`), read
    from a full float64 SVD (P × P: mind the cost for large P).

    Args:
        g: a Jacobian, shape (n, P), any floating dtype and device (e.g. from `behavior_jacobian`).
        dtype: the dtype g was computed in; it sets the rank tolerance.

    Returns:
        torch.Tensor: the basis as columns, shape (P, P − rank), float64, on g's device.

    Example:
        >>> import torch
        >>> from lab.behavior import null_space
        >>> g = torch.tensor([[1.0, 0.0, 0.0]])
        >>> n = null_space(g)
        >>> n.shape, bool((g.double() @ n).abs().max() < 1e-12)
        (torch.Size([3, 2]), True)
    """
    _, s, vh = torch.linalg.svd(g.double(), full_matrices=True)
    r = numerical_rank(s, dtype, size=max(g.shape)).rank
    return vh[r:].T.contiguous()


def gauss_newton(g: torch.Tensor) -> torch.Tensor:
    """(2/n)·GᵀG: the Hessian of the mean squared error over the n rows of G at a perfect fit.

    Away from a perfect fit the MSE Hessian adds the residual-weighted output curvatures; at zero residual only
    this Gauss-Newton term remains.

    Args:
        g: the Jacobian of the n outputs, shape (n, P), any floating dtype and device.

    Returns:
        torch.Tensor: shape (P, P), g's dtype and device.

    Example:
        >>> import torch
        >>> from lab.behavior import gauss_newton
        >>> gauss_newton(torch.tensor([[1.0, 0.0], [0.0, 2.0]])).tolist()
        [[1.0, 0.0], [0.0, 4.0]]
    """
    return 2.0 * g.T @ g / g.shape[0]


def output_second_derivative(forward: Forward, theta: torch.Tensor, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """d²/ds² f(θ + s·v) at s = 0 for every output (forward-over-forward).

    Along a null-space direction v the outputs do not change to first order; this second derivative is what bends
    them away (see `Walk.predicted`).

    Args:
        forward: the pure forward (θ, x) ↦ outputs.
        theta: flat parameters, shape (P,), any floating dtype and device.
        x: inputs, shape (k, ...), that `forward` accepts with θ.
        v: the direction, shape (P,), θ's dtype and device.

    Returns:
        torch.Tensor: one second derivative per output, shape (k·m,), in the outputs' dtype.

    Example:
        >>> import torch
        >>> from lab.behavior import output_second_derivative
        >>> forward = lambda t, x: x[:, 0] * t[0] ** 2                 # d²/ds² x·(1 + s)² = 2x
        >>> output_second_derivative(forward, torch.tensor([1.0, 0.0]), torch.tensor([[1.0], [3.0]]),
        ...                          torch.tensor([1.0, 0.0])).tolist()
        [2.0, 6.0]
    """
    def first(th: torch.Tensor) -> torch.Tensor:
        return jvp(lambda t: forward(t, x).reshape(-1), (th,), (v,))[1]

    return jvp(first, (theta,), (v,))[1]


@dataclass
class Walk:
    """A walk along the behavior manifold: distances, output changes, and orthogonality of its tangent.

    Produced by `manifold_walk`; every array has one float64 entry per step taken, shape (steps,).

    Attributes:
        distance: ‖θ_t − θ_0‖ after each step.
        path_length: the cumulated step lengths.
        pre_projection: max |f(θ + s·v) − f(θ)| on the training inputs before re-projection.
        predicted: ½ s² max|d²f/ds²| along v: the second-order prediction of pre_projection.
        train_change: max |f_train(θ_t) − f_train(θ_0)| after re-projection (≈ 0: the walk stays on the manifold).
        test_change: the rms change of the outputs on held-out inputs (empty without held-out inputs).
        tangent_dot: ‖G(θ_t)·v‖/(‖G‖·‖v‖) for the sampled null-space direction v (0 by construction).
        chord_dot: ‖G(θ_t)·Δθ‖/(‖G‖·‖Δθ‖) for the step actually taken, Δθ = θ_{t+1} − θ_t: O(step).
        theta: the final point, shape (P,), float64.

    Example:
        >>> import numpy as np
        >>> import torch
        >>> from lab.behavior import Walk
        >>> w = Walk(*[np.zeros(3)] * 8, theta=torch.zeros(2))
        >>> w.distance.shape, w.theta.shape
        ((3,), torch.Size([2]))
    """

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
    """Random steps in null(G), each re-projected onto {θ: f(θ, x) = f(θ0, x)} by Gauss-Newton (least squares).

    Each step draws a random unit direction v in the null space of the current Jacobian G, moves by step·v, and
    pulls the point back onto the set of parameters with the original training outputs by `newton_iters`
    least-squares Gauss-Newton corrections. The walk stops early if the null space becomes empty.

    Args:
        forward: the pure forward (θ, x) ↦ outputs; it is called with float64 θ.
        theta: the start θ_0, flat parameters of shape (P,), any floating dtype and device (taken to float64).
        x: the training inputs, shape (k, ...), float64 (unless `forward` casts them), on θ's device.
        steps: the number of steps.
        step: the length s of each step along v, before re-projection.
        x_test: held-out inputs whose output change is recorded (optional), like x.
        seed: seed of the CPU generator that draws the null-space directions.
        newton_iters: Gauss-Newton corrections per step.

    Returns:
        A Walk with one entry per step taken.

    Example:
        >>> import torch
        >>> from lab.behavior import manifold_walk
        >>> forward = lambda t, x: x[:, 0] * t[0] * t[1] + t[2]       # outputs depend on t0·t1 and t2 only
        >>> x = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
        >>> w = manifold_walk(forward, torch.tensor([1.0, 2.0, 0.5]), x, steps=3)
        >>> w.distance.shape, bool(w.train_change.max() < 1e-12), bool(w.tangent_dot.max() < 1e-12)
        ((3,), True, True)
    """
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
    """Levenberg-Marquardt on the mean squared error until it interpolates (float64); returns (θ, final MSE).

    The damping λ is divided by 3 after an accepted step and multiplied by 4 after a rejected one; the fit stops
    when the MSE reaches `tol`, after `iters` iterations, or when λ exceeds 1e12 (stalled: no interpolating basin
    nearby).

    Args:
        forward: the pure forward (θ, x) ↦ outputs; it is called with float64 θ.
        theta: the starting point, flat parameters of shape (P,), any floating dtype and device.
        x: the inputs, shape (k, ...), float64 (unless `forward` casts them), on θ's device.
        y: the targets, as many entries as outputs (flattened), any dtype (taken to float64).
        iters: the largest number of iterations.
        damping: the initial λ.
        tol: the MSE at which the fit counts as interpolating.

    Returns:
        (θ, mse): the final point, shape (P,), float64, and its MSE as a float.

    Example:
        >>> import torch
        >>> from lab.behavior import fit_interpolate
        >>> x = torch.eye(2, dtype=torch.float64)
        >>> theta, mse = fit_interpolate(lambda t, x: x @ t, torch.zeros(2), x, torch.tensor([1.0, 3.0]))
        >>> [round(v, 6) for v in theta.tolist()], mse <= 1e-24
        ([1.0, 3.0], True)
    """
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
    Returns (θ per row, final MSE per row).

    Args:
        forward: the pure forward (θ, x) ↦ outputs, vmappable over θ; it is called with float64 θ.
        thetas: the starting points, shape (B, P), any floating dtype and device.
        x: the inputs, shape (k, ...), float64 (unless `forward` casts them), on thetas' device.
        y: the targets, as many entries as outputs (flattened), any dtype (taken to float64).
        iters: the largest number of iterations.
        damping: the initial λ of every row.
        tol: the MSE at which a row counts as interpolating (it then stops moving).

    Returns:
        (θ, mse): the final points, shape (B, P), float64, and their MSEs, shape (B,), float64.

    Raises:
        ValueError: thetas is not 2-D.

    Example:
        >>> import torch
        >>> from lab.behavior import fit_interpolate_batch
        >>> x = torch.eye(2, dtype=torch.float64)
        >>> theta, mse = fit_interpolate_batch(lambda t, x: x @ t, torch.zeros(3, 2), x, torch.tensor([1.0, 3.0]))
        >>> theta.shape, bool((mse <= 1e-24).all())
        (torch.Size([3, 2]), True)
    """
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


@dataclass
class ReluActivity:
    """Which ReLUs of a one-hidden-layer net fire on which inputs, and the rank that pattern predicts for G.

    Attributes:
        on: (n, units) float64, 1 where unit j is active on input i.
        kinked: units active on some inputs but not all (their kink lies inside the data).
        linear: units active on every input (linear on the data).
        span: (n, 1 + units·(d + 1)) float64: the output bias, then for each unit its columns x·on_j and on_j — the
            columns G of the first layer and the output bias span for this activity pattern.
    """

    on: torch.Tensor
    kinked: int
    linear: int
    span: torch.Tensor


def relu_activity(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> ReluActivity:
    """The activity pattern of the ReLU layer x ↦ relu(x Wᵀ + b) on the inputs x, and what it predicts for the
    rank of the behavior Jacobian: a unit that never fires contributes nothing, a unit that is linear on the data
    adds its columns once, and each unit's rescaling symmetry removes one direction (see chapter 05).

    Args:
        x: inputs, shape (n, d), float64.
        weight: the layer's weight, shape (units, d).
        bias: its bias, shape (units,).

    Returns:
        A `ReluActivity`.

    Example:
        >>> import torch
        >>> x = torch.tensor([[-1.0], [1.0]], dtype=torch.float64)
        >>> a = relu_activity(x, torch.tensor([[1.0], [0.0]]).double(), torch.tensor([0.0, 1.0]).double())
        >>> a.kinked, a.linear, tuple(a.span.shape)
        (1, 1, (2, 5))
    """
    on = ((x @ weight.T + bias) > 0).double()
    n, units = on.shape
    count = on.sum(0)
    kinked, linear = int(((count > 0) & (count < n)).sum()), int((count == n).sum())
    span = torch.cat([torch.ones(n, 1, dtype=torch.float64)]
                     + [torch.cat([x * on[:, j:j + 1], on[:, j:j + 1]], 1) for j in range(units)], 1)
    return ReluActivity(on, kinked, linear, span)
