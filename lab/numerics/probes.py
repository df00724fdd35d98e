"""Finite-difference probes of a loss along a direction at doubling distances (seed 000's method).

The probe samples f(θ + h·d) for h = h_min·2^k over many decades and forms the second finite difference
FD(h) = f(θ) − 2f(θ+h·d) + f(θ+2h·d) and its scalings: the curvature FD/h², the roughness FD/h (the notes' "grit")
and the deviation from the tangent. How θ + h·d is stored matters at small h: `PERTURB` = ("float64", "working")
names the two ways, forming the point in float64 and rounding it to the storage dtype, or adding h·d in the working
dtype itself.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import grad

from lab.checks import require_finite, require_real, require_vector
from lab.flat import batched

__all__ = ["PERTURB", "DoublingProbe", "doubling_h", "points_along", "evaluate_distinct", "doubling_probe",
           "ulp_threshold", "relu_flips"]

PERTURB = ("float64", "working")


@dataclass
class DoublingProbe:
    """Loss samples at θ + h·d for doubling h, with the finite-difference quantities of the notes.

    Produced by `doubling_probe`; every array has one entry per h, shape (n,), float64.

    Attributes:
        h: the distances h_k = h_min·2^k, shape (n,).
        f0: f(θ) (θ as stored in the probe's dtype).
        f1: f(θ + h·d) per h, shape (n,).
        f2: f(θ + 2h·d) per h, shape (n,).
        slope: the directional derivative f'(θ)·d, computed in float64 by autograd (the reference for `tangent`).
        changed: the fraction of parameters whose stored value at θ + h·d differs from θ's, shape (n,): 0 where the
            step is below the storage dtype's resolution (see `ulp_threshold`).
        step: ‖stored(θ + h·d) − stored(θ)‖/h per h, shape (n,): the step actually taken per unit h (‖d‖ when
            storage is exact, 0 where nothing moved).

    Example:
        >>> import numpy as np
        >>> from lab.numerics import DoublingProbe
        >>> h = np.array([1.0, 2.0])                       # f(t) = t² sampled exactly: f'' = 2
        >>> p = DoublingProbe(h=h, f0=0.0, f1=h ** 2, f2=(2 * h) ** 2, slope=0.0, changed=np.ones(2), step=np.ones(2))
        >>> p.fd.tolist(), p.curvature.tolist(), p.grit.tolist(), p.tangent.tolist()
        ([2.0, 8.0], [2.0, 2.0], [2.0, 4.0], [1.0, 4.0])
    """

    h: np.ndarray          # distances h_k = h_min · 2^k
    f0: float              # f(θ)
    f1: np.ndarray         # f(θ + h·d)
    f2: np.ndarray         # f(θ + 2h·d)
    slope: float           # f'(θ)·d (float64 reference)
    changed: np.ndarray    # fraction of parameters whose stored value differs from θ's at θ + h·d
    step: np.ndarray       # ‖stored(θ + h·d) − stored(θ)‖ / h: the step actually taken, per unit h

    @property
    def fd(self) -> np.ndarray:
        """Second finite difference f(θ) − 2f(θ+h) + f(θ+2h).

        Returns:
            np.ndarray: FD per h, shape (n,), float64 (≈ f''·h² where the loss is quadratic).
        """
        return self.f0 - 2 * self.f1 + self.f2

    @property
    def curvature(self) -> np.ndarray:
        """FD / h² (≈ f'').

        Returns:
            np.ndarray: shape (n,), float64; constant in h where the loss is quadratic along d.
        """
        return self.fd / self.h ** 2

    @property
    def grit(self) -> np.ndarray:
        """Roughness FD / h (≈ f''·h).

        "Grit" is the notes' name for this roughness FD/h: it grows like h (slope +1 on log-log axes) where the loss
        is quadratic, falls like 1/h where rounding noise dominates FD, and departs from both where the loss has
        structure at scale h.

        Returns:
            np.ndarray: shape (n,), float64.
        """
        return self.fd / self.h

    @property
    def tangent(self) -> np.ndarray:
        """Deviation from the tangent: f(θ+h) − f(θ) − h·f'(θ)·d (≈ f''h²/2).

        Returns:
            np.ndarray: shape (n,), float64.
        """
        return self.f1 - self.f0 - self.h * self.slope


def _same_vectors(theta: torch.Tensor, direction: torch.Tensor, tname: str, dname: str, where: str) -> None:
    """θ and a direction: finite vectors of one length, the direction non-zero; else a named error."""
    require_vector(theta, tname, where)
    require_vector(direction, dname, where, size=theta.numel(), nonzero=True)


def doubling_h(h_min: float = 1e-12, decades: float = 13.0) -> np.ndarray:
    """Distances h_min·2^k covering at least `decades` decades.

    Args:
        h_min: the smallest distance (> 0).
        decades: the span log10(h_max/h_min) to cover at least.

    Returns:
        np.ndarray: h_min·2^k for k = 0..n−1, n = ceil(decades·log2(10)) + 1, float64.

    Example:
        >>> from lab.numerics import doubling_h
        >>> doubling_h(1e-3, 1.0).tolist()
        [0.001, 0.002, 0.004, 0.008, 0.016]
    """
    h_min = require_real(h_min, "h_min", "lab.numerics.doubling_h", lo=0, lo_open=True)
    decades = require_real(decades, "decades", "lab.numerics.doubling_h", lo=0, lo_open=True)
    n = int(np.ceil(decades * np.log2(10))) + 1
    return h_min * 2.0 ** np.arange(n)


def points_along(theta64: torch.Tensor, direction64: torch.Tensor, t: np.ndarray, dtype: torch.dtype,
                 perturb: str = "float64") -> torch.Tensor:
    """Stored parameters at θ + t·d in `dtype`: perturbed in float64 then cast, or in the working dtype.

    Args:
        theta64: flat parameters, shape (P,), float64 (any device; the result is on its device).
        direction64: the direction, shape (P,), on theta64's device (float64 for perturb="float64").
        t: the distances along d, shape (N,).
        dtype: the storage dtype of the result.
        perturb: "float64": round θ + t·d, formed in float64, to `dtype`; "working": round θ and d to `dtype` and
            form θ + t·d there (the error of an update computed in the working precision).

    Returns:
        torch.Tensor: shape (N, P), `dtype`, on theta64's device; row i is the stored point at t[i].

    Raises:
        ValueError: `perturb` is not one of PERTURB.

    Example:
        >>> import numpy as np
        >>> import torch
        >>> from lab.numerics import points_along
        >>> theta = torch.tensor([1.0, 0.0], dtype=torch.float64)
        >>> e1 = torch.tensor([1.0, 0.0], dtype=torch.float64)
        >>> pts = points_along(theta, e1, np.array([0.0, 1e-9, 1e-3]), torch.float32)
        >>> pts.shape, pts.dtype, bool(pts[1, 0] == 1.0)          # a step of 1e-9 rounds back to 1 in float32
        (torch.Size([3, 2]), torch.float32, True)
    """
    if perturb not in PERTURB:
        raise ValueError(f"parameter 'perturb' = {perturb!r} is not allowed: expected one of {PERTURB}")
    _same_vectors(theta64, direction64, "theta64", "direction64", "lab.numerics.points_along")
    tt = torch.as_tensor(np.asarray(t, dtype=np.float64).reshape(-1), device=theta64.device)[:, None]
    require_finite(tt, "parameter 't'", "lab.numerics.points_along")
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

    Args:
        loss_fn: θ ↦ scalar loss, a pure, vmappable torch function of the flat parameters.
        pts: the points, shape (N, P), any dtype and device (ordered along a line, so repeats are consecutive).
        chunk_size: points per vmapped batch (see `lab.flat.batched`).

    Returns:
        torch.Tensor: the loss at each row, shape (N,), in loss_fn's output dtype, on pts' device.

    Example:
        >>> import torch
        >>> from lab.numerics import evaluate_distinct
        >>> evaluate_distinct(lambda t: (t * t).sum(), torch.tensor([[1.0], [1.0], [2.0]])).tolist()
        [1.0, 1.0, 4.0]
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
                   ) -> DoublingProbe:
    """Sample loss_fn at θ and θ + h_min·2^k·d (k = 0..n) and return the notes' FD quantities.

    Parameters are stored in `dtype` (θ + h·d rounded to it) and the forward pass runs in `forward_dtype`
    (default: `dtype`); forward_dtype=float64 with dtype=float32 isolates the representation error.

    Args:
        loss_fn: θ ↦ scalar loss, a pure, vmappable torch function of the flat parameters that computes in θ's
            dtype (e.g. from `lab.flat.make_loss_fn`); also differentiated by torch.func.grad in float64.
        theta: flat parameters, shape (P,), any floating dtype and device (taken to float64 first).
        direction: the probe direction d, shape (P,), on θ's device (usually of unit norm).
        h_min: the smallest distance.
        decades: how many decades of h to cover (see `doubling_h`).
        dtype: the storage dtype of the parameters.
        forward_dtype: the dtype of the forward pass (default: `dtype`).
        perturb: how θ + h·d is formed, one of PERTURB (see `points_along`).
        chunk_size: points per vmapped batch.

    Returns:
        A DoublingProbe with n = len(doubling_h(h_min, decades)) distances.

    Raises:
        ValueError: `perturb` is not one of PERTURB.

    Example:
        >>> import torch
        >>> from lab.numerics import doubling_probe
        >>> f = lambda t: (t * t).sum()                        # f'' = 2 along any unit direction
        >>> theta = torch.tensor([1.0, 0.0], dtype=torch.float64)
        >>> d = torch.tensor([0.6, 0.8], dtype=torch.float64)
        >>> p = doubling_probe(f, theta, d, h_min=1e-3, decades=1.0, dtype=torch.float64)
        >>> p.h.shape, p.curvature.round(6).tolist(), round(p.slope, 6)
        ((5,), [2.0, 2.0, 2.0, 2.0, 2.0], 1.2)
    """
    forward_dtype = forward_dtype or dtype
    _same_vectors(theta, direction, "theta", "direction", "lab.numerics.doubling_probe")
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
    return DoublingProbe(h=h, f0=float(vals[0]), f1=vals[1:-1], f2=vals[2:], slope=slope,
                 changed=changed[:-1], step=step[:-1])


def ulp_threshold(theta: torch.Tensor, direction: torch.Tensor, dtype: torch.dtype) -> float:
    """Largest h at which θ + h·d (perturbed in float64) still rounds to the stored θ in every coordinate.

    Coordinate i moves once θ_i + h·d_i crosses the rounding boundary (half-way to the neighbour of the stored
    value in the direction of d_i); θ itself need not be representable in `dtype`.

    Args:
        theta: flat parameters, shape (P,), any floating dtype and device (taken to float64).
        direction: the direction d, shape (P,), with at least one nonzero entry (moved to θ's device).
        dtype: the storage dtype.

    Returns:
        The threshold h as a float: below it a probe stores θ + h·d as θ and sees FD = 0.

    Example:
        >>> import torch
        >>> from lab.numerics import ulp_threshold
        >>> theta = torch.tensor([1.0, 2.0], dtype=torch.float64)
        >>> ulp_threshold(theta, torch.ones(2), torch.float32) == 2.0 ** -24      # half an ulp of 1.0
        True
    """
    from lab.numerics.precision import neighbour
    _same_vectors(theta, direction, "theta", "direction", "lab.numerics.ulp_threshold")
    th64 = theta.detach().double()
    stored = th64.to(dtype)
    d = direction.detach().double().to(th64.device)
    boundary = 0.5 * (stored.double() + neighbour(stored, torch.sign(d)).double())
    dist = (boundary - th64).abs() / d.abs().clamp_min(1e-300)
    return float(dist[d != 0].min())


def relu_flips(model: torch.nn.Sequential, theta: torch.Tensor, direction: torch.Tensor, hs: np.ndarray,
               x: torch.Tensor) -> np.ndarray:
    """Number of (sample, hidden unit) ReLU on/off changes between θ and θ + h·d, for each h (float64).

    A flip means the piecewise-linear network crossed a kink between θ and θ + h·d: where flips appear, the loss
    stops being smooth along d at scale h.

    Args:
        model: an nn.Sequential of Linear and ReLU layers only (its weights are not used: θ is).
        theta: flat parameters of `model`, shape (P,), any floating dtype (taken to float64).
        direction: the direction d, shape (P,), on θ's device.
        hs: the distances, shape (n,).
        x: inputs, shape (k, in_features), on θ's device.

    Returns:
        np.ndarray: the number of flipped (sample, unit) pairs per h, shape (n,), integer.

    Raises:
        ValueError: the model has a layer other than Linear or ReLU.

    Example:
        >>> import numpy as np
        >>> import torch
        >>> from lab.numerics import relu_flips
        >>> model = torch.nn.Sequential(torch.nn.Linear(1, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1))
        >>> theta = torch.tensor([1.0, 1.0, 0.0, -1.0, 1.0, 1.0, 0.0])    # weights, biases (0, -1), output layer
        >>> d = torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])         # raise the second unit's bias
        >>> relu_flips(model, theta, d, np.array([0.1, 1.0]), torch.tensor([[0.5]])).tolist()
        [0, 1]
    """
    from lab.flat import make_forward
    _, _, spec = make_forward(model)
    from lab.flat import unflatten

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
