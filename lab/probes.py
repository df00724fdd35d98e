"""Finite-difference probes of a loss along a direction at doubling distances (seed 000's method)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import grad

from lab.params import batched

PERTURB = ("float64", "working")


@dataclass
class Probe:
    """Loss samples at θ + h·d for doubling h, with the finite-difference quantities of the notes."""

    h: np.ndarray          # distances h_k = h_min · 2^k
    f0: float              # f(θ)
    f1: np.ndarray         # f(θ + h·d)
    f2: np.ndarray         # f(θ + 2h·d)
    slope: float           # f'(θ)·d (float64 reference)
    changed: np.ndarray    # fraction of parameters whose stored value differs from θ's at θ + h·d
    step: np.ndarray       # ‖stored(θ + h·d) − stored(θ)‖ / h: the step actually taken, per unit h

    @property
    def fd(self) -> np.ndarray:
        """Second finite difference f(θ) − 2f(θ+h) + f(θ+2h)."""
        return self.f0 - 2 * self.f1 + self.f2

    @property
    def curvature(self) -> np.ndarray:
        """FD / h² (≈ f'')."""
        return self.fd / self.h ** 2

    @property
    def grit(self) -> np.ndarray:
        """Roughness FD / h (≈ f''·h)."""
        return self.fd / self.h

    @property
    def tangent(self) -> np.ndarray:
        """Deviation from the tangent: f(θ+h) − f(θ) − h·f'(θ)·d (≈ f''h²/2)."""
        return self.f1 - self.f0 - self.h * self.slope


def doubling_h(h_min: float = 1e-12, decades: float = 13.0) -> np.ndarray:
    """Distances h_min·2^k covering at least `decades` decades."""
    n = int(np.ceil(decades * np.log2(10))) + 1
    return h_min * 2.0 ** np.arange(n)


def points_along(theta64: torch.Tensor, direction64: torch.Tensor, t: np.ndarray, dtype: torch.dtype,
                 perturb: str = "float64") -> torch.Tensor:
    """Stored parameters at θ + t·d in `dtype`: perturbed in float64 then cast, or in the working dtype."""
    if perturb not in PERTURB:
        raise ValueError(f"parameter 'perturb' = {perturb!r} is not allowed: expected one of {PERTURB}")
    tt = torch.as_tensor(t, dtype=torch.float64, device=theta64.device)[:, None]
    if perturb == "float64":
        return (theta64[None] + tt * direction64[None]).to(dtype)
    return theta64.to(dtype)[None] + tt.to(dtype) * direction64.to(dtype)[None]


def evaluate_distinct(loss_fn: Callable[[torch.Tensor], torch.Tensor], pts: torch.Tensor, chunk_size: int = 64
                      ) -> torch.Tensor:
    """loss_fn at each row of pts, evaluating runs of identical consecutive rows once.

    Along a line the stored points at small h round back to the same values; a function of the stored
    parameters must give them the same loss. A batched (vmapped) evaluation need not: the summation order of a
    batched kernel can depend on a row's position in the batch (e.g. AVX-512 blocking), which would turn identical
    points into different losses. Evaluating each distinct point once makes f a function of the stored point.
    """
    if len(pts) == 0:
        return batched(loss_fn, pts, chunk_size)
    new = torch.ones(len(pts), dtype=torch.bool, device=pts.device)
    new[1:] = (pts[1:] != pts[:-1]).any(dim=1)
    index = torch.cumsum(new.long(), 0) - 1
    return batched(loss_fn, pts[new], chunk_size)[index]


def doubling_probe(loss_fn: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor, direction: torch.Tensor,
                   h_min: float = 1e-12, decades: float = 13.0, dtype: torch.dtype = torch.float32,
                   forward_dtype: torch.dtype | None = None, perturb: str = "float64", chunk_size: int = 64
                   ) -> Probe:
    """Sample loss_fn at θ and θ + h_min·2^k·d (k = 0..n) and return the notes' FD quantities.

    Parameters are stored in `dtype` (θ + h·d rounded to it) and the forward pass runs in `forward_dtype`
    (default: `dtype`); forward_dtype=float64 with dtype=float32 isolates the representation error.
    """
    forward_dtype = forward_dtype or dtype
    th64, d64 = theta.detach().double(), direction.detach().double()
    h = doubling_h(h_min, decades)
    t = np.concatenate([[0.0], h, [2 * h[-1]]])
    pts = points_along(th64, d64, t, dtype, perturb)
    with torch.no_grad():
        vals = evaluate_distinct(loss_fn, pts.to(forward_dtype), chunk_size).double().cpu().numpy()
        diff = pts[1:].double() - pts[:1].double()
        changed = (diff != 0).double().mean(1).cpu().numpy()
        step = (diff.norm(dim=1).cpu().numpy() / t[1:])
    slope = float(grad(loss_fn)(th64) @ d64)
    return Probe(h=h, f0=float(vals[0]), f1=vals[1:-1], f2=vals[2:], slope=slope,
                 changed=changed[:-1], step=step[:-1])


def ulp_threshold(theta: torch.Tensor, direction: torch.Tensor, dtype: torch.dtype) -> float:
    """Largest h at which θ + h·d (perturbed in float64) still rounds to the stored θ in every coordinate.

    Coordinate i moves once θ_i + h·d_i crosses the rounding boundary (half-way to the neighbour of the stored
    value in the direction of d_i); θ itself need not be representable in `dtype`.
    """
    from lab.precision import neighbour
    th64 = theta.detach().double()
    stored = th64.to(dtype)
    d = direction.detach().double().to(th64.device)
    boundary = 0.5 * (stored.double() + neighbour(stored, torch.sign(d)).double())
    dist = (boundary - th64).abs() / d.abs().clamp_min(1e-300)
    return float(dist[d != 0].min())


def relu_flips(model: torch.nn.Sequential, theta: torch.Tensor, direction: torch.Tensor, hs: np.ndarray,
               x: torch.Tensor) -> np.ndarray:
    """Number of (sample, hidden unit) ReLU on/off changes between θ and θ + h·d, for each h (float64)."""
    from lab.params import make_forward
    _, _, spec = make_forward(model)
    from lab.params import unflatten

    def pattern(th: torch.Tensor) -> torch.Tensor:
        params = unflatten(th, spec)
        out, h_ = [], x.double()
        for i, layer in enumerate(model):
            if isinstance(layer, torch.nn.Linear):
                h_ = torch.nn.functional.linear(h_, params[f"{i}.weight"], params.get(f"{i}.bias"))
            elif isinstance(layer, torch.nn.ReLU):
                out.append(h_ > 0)
                h_ = torch.relu(h_)
            else:
                raise ValueError(f"relu_flips supports Linear/ReLU Sequential models, found {type(layer).__name__}")
        return torch.cat([o.reshape(len(x), -1) for o in out], 1)

    th64, d64 = theta.detach().double(), direction.detach().double()
    with torch.no_grad():
        base = pattern(th64)
        return np.array([int((pattern(th64 + float(h) * d64) != base).sum()) for h in hs])
