"""Loss along lines and on planes through parameter space (Li et al. 2018's 1D and 2D plots), and the share of a
surface that is non-convex.

Points are evaluated one at a time on a CPU (a plain loop: measured faster there than vmapped batches, which are
memory-bound on a CPU) and as vmapped chunks on a GPU; memory is one chunk's points and activations, never the grid's.
`plane` also knows that a network's first layer is affine in the plane's coordinates — X(W + aD₁ + bD₂)ᵀ =
XWᵀ + a·XD₁ᵀ + b·XD₂ᵀ — and, for a loss from `lab.flat.make_loss_fn` on an nn.Sequential that starts with a Linear
layer, forms those three products once, so each point costs only the layers after the first.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

from lab.checks import not_allowed, require_finite, require_vector

__all__ = ["Surface", "METHODS", "line", "plane", "nonconvex_fraction"]

METHODS = ("auto", "affine", "plain")


_HINT = "θ or the directions are non-finite, or the grid reaches where the loss overflows (shrink its range)"


@dataclass
class Surface:
    """L(θ + a·d1 + b·d2) on a grid, with its coordinates and metadata.

    Produced by `plane`.

    Attributes:
        a: the coordinates along d1, shape (na,), float64.
        b: the coordinates along d2, shape (nb,), float64.
        loss: the loss at (a_i, b_j) in loss[j, i], shape (nb, na), float64 (the layout of np.meshgrid(a, b)).
        meta: free-form metadata (e.g. the model, the directions' kind).

    Example:
        >>> import numpy as np
        >>> from lab.landscape import Surface
        >>> s = Surface(a=np.array([0.0, 1.0]), b=np.array([0.0, 1.0, 2.0]), loss=np.zeros((3, 2)))
        >>> s.loss.shape, s.meta
        ((3, 2), {})
    """

    a: np.ndarray
    b: np.ndarray
    loss: np.ndarray            # shape (len(b), len(a))
    meta: dict = field(default_factory=dict)


class _FirstAffine:
    """L at θ + Σ_k c_k·d_k for a loss whose model is an nn.Sequential of (optional Flatten layers,) a Linear layer
    and then anything: the Linear layer's pre-activations are affine in c, Z(c) = Z₀ + Σ_k c_k·Z_k with Z₀ = XWᵀ + b
    and Z_k = XD_kᵀ + d_k (formed once in float64, kept in the evaluation dtype); each point runs only the layers
    after it, on Z(c) and the rest of θ + Σ c_k d_k (formed in float64) rounded to the evaluation dtype."""

    def __init__(self, parts, theta: torch.Tensor, dirs: list[torch.Tensor], dtype: torch.dtype):
        model, spec = parts.model, parts.spec
        children = list(model.named_children())
        i = 0
        while isinstance(children[i][1], nn.Flatten):
            i += 1
        name, lin = children[i]
        sl = spec.slices()
        first = [n for n in (f"{name}.weight", f"{name}.bias") if n in sl]
        rest_names = [n for n in spec.names if n not in first]
        self.rest = nn.Sequential(OrderedDict(children[i + 1:]))
        self.rest_shapes = [(n, spec.shapes[spec.names.index(n)]) for n in rest_names]
        idx = [torch.arange(sl[n].start, sl[n].stop, device=theta.device) for n in rest_names]
        self.idx = torch.cat(idx) if idx else torch.zeros(0, dtype=torch.long, device=theta.device)
        x = parts.x_as(torch.float64, theta.device)
        for _, f in children[:i]:
            x = f(x)
        w_shape = spec.shapes[spec.names.index(f"{name}.weight")]

        def pre(v: torch.Tensor) -> torch.Tensor:
            z = x @ v[sl[f"{name}.weight"]].reshape(w_shape).T
            return z + v[sl[f"{name}.bias"]] if f"{name}.bias" in sl else z

        vecs = [theta.double(), *(d.double() for d in dirs)]
        self.z = [pre(v).to(dtype) for v in vecs]          # Z₀, Z₁, ... (n, out_features), formed in float64
        self.r = [v[self.idx] for v in vecs]               # the rest of θ and of each direction
        self.crit, self.dtype = parts.crit, dtype
        self.y = parts.y_as(dtype, theta.device)

    @staticmethod
    def applies(loss_fn: Callable) -> bool:
        parts = getattr(loss_fn, "parts", None)
        if parts is None or not isinstance(parts.model, nn.Sequential) or parts.buffers:
            return False
        children = [m for _, m in parts.model.named_children()]
        i = 0
        while i < len(children) and isinstance(children[i], nn.Flatten):
            i += 1
        if i >= len(children) or type(children[i]) is not nn.Linear:
            return False
        named = list(parts.model.named_children())
        first = {f"{named[i][0]}.weight", f"{named[i][0]}.bias"}
        rest = {f"{n}.{k}" for n, m in named[i + 1:] for k, _ in m.named_parameters(remove_duplicate=False)}
        # every parameter once, and the later layers' parameters their own: a weight tied to the first layer would
        # otherwise be read from the module, stale, instead of from θ
        return (set(parts.spec.names) == {n for n, _ in parts.model.named_parameters()}
                and rest == set(parts.spec.names) - first)

    def __call__(self, c: torch.Tensor) -> torch.Tensor:
        """c (k,) float64 ↦ the loss, a 0-d tensor in the evaluation dtype."""
        z, th, cz = self.z[0], self.r[0], c.to(self.dtype)
        for k in range(1, len(self.z)):  # Z(c) in the evaluation dtype, as the plain path's first layer is
            z = z + cz[k - 1] * self.z[k]
            th = th + c[k - 1] * self.r[k]
        th = th.to(self.dtype)
        params, j = {}, 0
        for n, shape in self.rest_shapes:
            m = int(torch.Size(shape).numel())
            params[n] = th[j:j + m].reshape(shape)
            j += m
        return self.crit(functional_call(self.rest, params, (z,)), self.y)


def _grid(values, name: str, where: str) -> np.ndarray:
    """A non-empty, finite 1-D array of coordinates (float64), else a named error."""
    try:
        g = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(not_allowed(name, values, "a 1-D array of numbers", where)) from None
    if g.ndim != 1 or g.size == 0:
        raise ValueError(not_allowed(name, values, f"a non-empty 1-D array of coordinates (got shape {g.shape})",
                                     where))
    require_finite(g, f"parameter '{name}'", where)
    return g


def _evaluate(loss_fn: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor, dirs: list[torch.Tensor],
              coeffs: np.ndarray, dtype: torch.dtype, chunk_size: int | None, method: str, where: str) -> np.ndarray:
    """The loss at θ + Σ_k coeffs[i, k]·d_k for every row i: float64 (n,)."""
    if method not in METHODS:
        raise ValueError(f"parameter 'method' = {method!r} is not allowed: expected one of {METHODS}")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"parameter 'chunk_size' = {chunk_size!r} is not allowed: expected an integer >= 1 or None "
                         "(1 on a CPU, 64 on a GPU)")
    if not callable(loss_fn):
        raise TypeError(not_allowed("loss_fn", loss_fn, "a callable θ (P,) ↦ scalar tensor", where))
    require_vector(theta, "theta", where)
    p = theta.numel()
    parts = getattr(loss_fn, "parts", None)
    spec = getattr(parts, "spec", None)
    if spec is not None and getattr(spec, "size", p) != p:
        raise ValueError(not_allowed("theta", theta, f"the model's {spec.size} parameters (got {p} entries)", where))
    names = ["d1", "d2"] if len(dirs) > 1 else ["d"]
    for name, d in zip(names, dirs, strict=True):
        require_vector(d, name, where, size=p, nonzero=True)
        if d.device != theta.device:
            raise ValueError(not_allowed(name, d, f"a tensor on θ's device {theta.device} (got {d.device})", where))
    if len(dirs) == 2:
        d1, d2 = (d.detach().double() for d in dirs)
        n1, n2, c = float(d1 @ d1), float(d2 @ d2), float(d1 @ d2)
        if n1 * n2 - c * c <= 1e-12 * n1 * n2:
            raise ValueError(f"{where}: parameters 'd1' and 'd2' are parallel (cosine {c / (n1 * n2) ** 0.5:.6g}): "
                             "a plane needs two linearly independent directions")
    affine = _FirstAffine.applies(loss_fn)
    if method == "affine" and not affine:
        raise ValueError(f"{where}: method='affine' needs a loss from lab.flat.make_loss_fn whose model is an "
                         "nn.Sequential starting (after any Flatten) with an nn.Linear, and no buffers; use 'auto'")
    chunk = chunk_size or (1 if theta.device.type == "cpu" else 64)
    c = torch.as_tensor(np.asarray(coeffs, dtype=np.float64), device=theta.device)
    vals = np.empty(len(c))
    with torch.no_grad():
        if affine and method != "plain":
            point = _FirstAffine(loss_fn.parts, theta, dirs, dtype)  # type: ignore[attr-defined]
        else:
            th64, d64 = theta.double(), torch.stack([d.double() for d in dirs])

            def point(ci: torch.Tensor) -> torch.Tensor:
                return loss_fn((th64 + ci @ d64).to(dtype))
        if chunk == 1:
            for i in range(len(c)):
                vals[i] = float(point(c[i]))
        else:  # one chunk of points at a time: memory chunk × (P + activations)
            batch = vmap(point)
            for i in range(0, len(c), chunk):
                vals[i:i + chunk] = batch(c[i:i + chunk]).double().cpu().numpy()
    return vals


def line(loss_fn: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor, d: torch.Tensor, t: np.ndarray,
         chunk_size: int | None = None, method: str = "plain") -> np.ndarray:
    """1D profile L(θ + t_i·d) (Li et al.'s 1D plot), float64 result.

    The points are formed in float64 and rounded to θ's dtype, in which the loss is evaluated: the default
    method="plain" evaluates the network exactly as it runs at those weights, which is what a study of its rounding
    noise measures (chapters 01–03). method="auto" / "affine" take `plane`'s first-layer-affine path.

    Args:
        loss_fn: θ ↦ scalar loss, a pure, vmappable torch function of the flat parameters (e.g. from
            `lab.flat.make_loss_fn`).
        theta: flat parameters, shape (P,), any floating dtype and device.
        d: the direction, shape (P,), on θ's device.
        t: the distances along d, shape (n,).
        chunk_size: points per vmapped batch; 1 is a plain loop; None: 1 on a CPU, 64 on a GPU.
        method: "plain" (default), "auto" or "affine" (see `plane`).

    Returns:
        np.ndarray: the loss at each t, shape (n,), float64.

    Raises:
        lab.checks.NonFiniteError: θ, d or a loss along the line is not finite.
        ValueError: an unknown method or chunk_size.

    Example:
        >>> import numpy as np
        >>> import torch
        >>> from lab.landscape import line
        >>> theta = torch.tensor([1.0, 0.0], dtype=torch.float64)
        >>> d = torch.tensor([0.0, 1.0], dtype=torch.float64)
        >>> line(lambda p: (p * p).sum(), theta, d, np.array([0.0, 1.0, 2.0])).tolist()
        [1.0, 2.0, 5.0]
    """
    tt = _grid(t, "t", "lab.landscape.line").reshape(-1, 1)
    vals = _evaluate(loss_fn, theta, [d], tt, theta.dtype, chunk_size, method, "lab.landscape.line")
    return require_finite(vals, "the losses along the line", "lab.landscape.line", _HINT)


def plane(loss_fn: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor, d1: torch.Tensor, d2: torch.Tensor,
          a: np.ndarray, b: np.ndarray, dtype: torch.dtype | None = None, chunk_size: int | None = None,
          meta: dict | None = None, method: str = "auto") -> Surface:
    """Loss on the grid θ + a_i·d1 + b_j·d2.

    method="plain" forms each point in float64, rounds it to `dtype` and evaluates the loss there. method="affine"
    uses that the first layer is affine in (a, b): for a loss from `lab.flat.make_loss_fn` whose model is an
    nn.Sequential starting (after any Flatten) with an nn.Linear, the first layer's pre-activations
    XWᵀ + a·XD₁ᵀ + b·XD₂ᵀ (+ biases) are formed once in float64 and each point runs only the later layers — on the
    784-100-100-10 MNIST net ~5× faster than "plain", agreeing to float32 rounding (tested). "auto" (the default)
    takes "affine" where it applies and "plain" elsewhere.

    Args:
        loss_fn: θ ↦ scalar loss, a pure, vmappable torch function of the flat parameters.
        theta: flat parameters, shape (P,), any floating dtype and device.
        d1: the first direction, shape (P,), on θ's device.
        d2: the second direction, shape (P,), on θ's device.
        a: the coordinates along d1, shape (na,).
        b: the coordinates along d2, shape (nb,).
        dtype: the dtype of the points and the loss evaluation (default: θ's dtype).
        chunk_size: points per vmapped batch, the points of one batch all that is held in memory; 1 is a plain loop;
            None: 1 on a CPU (faster there), 64 on a GPU.
        meta: metadata copied into the Surface.
        method: "auto" (default), "affine" or "plain".

    Returns:
        A Surface with loss of shape (nb, na), float64.

    Raises:
        lab.checks.NonFiniteError: θ, d1, d2 or a loss on the grid is not finite.
        ValueError: an unknown method or chunk_size, or "affine" for a loss it does not apply to.

    Example:
        >>> import numpy as np
        >>> import torch
        >>> from lab.landscape import plane
        >>> e1, e2 = torch.eye(2, dtype=torch.float64)
        >>> s = plane(lambda p: (p * p).sum(), torch.zeros(2, dtype=torch.float64), e1, e2,
        ...           a=np.array([-1.0, 0.0, 1.0]), b=np.array([0.0, 1.0]))
        >>> s.loss.tolist()                                  # rows: b; columns: a
        [[1.0, 0.0, 1.0], [2.0, 1.0, 2.0]]
    """
    a, b = _grid(a, "a", "lab.landscape.plane"), _grid(b, "b", "lab.landscape.plane")
    aa, bb = np.meshgrid(a, b)
    coeffs = np.stack([aa.reshape(-1), bb.reshape(-1)], axis=1)
    vals = _evaluate(loss_fn, theta, [d1, d2], coeffs, dtype or theta.dtype, chunk_size, method,
                     "lab.landscape.plane")
    require_finite(vals, "the losses on the plane", "lab.landscape.plane", _HINT)
    return Surface(np.asarray(a, float), np.asarray(b, float), vals.reshape(aa.shape), dict(meta or {}))


def nonconvex_fraction(surf: Surface) -> float:
    """Share of interior grid points where the surface's 2D second-difference Hessian has a negative eigenvalue.

    The Hessian of the loss restricted to the plane is estimated by central second differences on the grid (with
    each point's own spacings on an uneven grid), and its smaller eigenvalue is tested at every interior point.

    Args:
        surf: a Surface with at least 3 × 3 points, strictly monotone coordinates and finite losses of shape
            (len(b), len(a)).

    Returns:
        The fraction of the (nb − 2)·(na − 2) interior points that are locally non-convex, a float in [0, 1].

    Raises:
        lab.checks.NonFiniteError: the surface has a non-finite loss.
        ValueError: the grid is smaller than 3 × 3, its coordinates repeat, or the loss has the wrong shape.

    Example:
        >>> import numpy as np
        >>> from lab.landscape import Surface, nonconvex_fraction
        >>> a = b = np.linspace(-1.0, 1.0, 5)
        >>> saddle, bowl = a[None, :] ** 2 - b[:, None] ** 2, a[None, :] ** 2 + b[:, None] ** 2
        >>> nonconvex_fraction(Surface(a, b, saddle)), nonconvex_fraction(Surface(a, b, bowl))
        (1.0, 0.0)
    """
    where = "lab.landscape.nonconvex_fraction"
    if not isinstance(surf, Surface):
        raise TypeError(not_allowed("surf", surf, "a lab.landscape.Surface", where))
    a, b = _grid(surf.a, "surf.a", where), _grid(surf.b, "surf.b", where)
    loss = np.asarray(surf.loss, dtype=np.float64)
    if loss.shape != (len(b), len(a)):
        raise ValueError(f"{where}: parameter 'surf' has loss of shape {loss.shape} for {len(a)} a and {len(b)} b "
                         f"coordinates: expected (len(b), len(a)) = ({len(b)}, {len(a)})")
    require_finite(loss, "the surface's losses", where)
    if loss.shape[0] < 3 or loss.shape[1] < 3:
        raise ValueError(f"{where}: parameter 'surf' is {loss.shape}; a second difference needs at least 3 × 3 points")
    for name, g in (("surf.a", a), ("surf.b", b)):
        step = np.diff(g)
        if not (np.all(step > 0) or np.all(step < 0)):
            raise ValueError(not_allowed(name, g, "strictly increasing or decreasing coordinates", where))
    even_a, even_b = (bool(np.allclose(np.diff(g), g[1] - g[0], rtol=1e-6, atol=0)) for g in (a, b))
    if even_a and even_b:
        da, db = a[1] - a[0], b[1] - b[0]
        h11 = (loss[1:-1, 2:] - 2 * loss[1:-1, 1:-1] + loss[1:-1, :-2]) / da**2
        h22 = (loss[2:, 1:-1] - 2 * loss[1:-1, 1:-1] + loss[:-2, 1:-1]) / db**2
        h12 = (loss[2:, 2:] - loss[2:, :-2] - loss[:-2, 2:] + loss[:-2, :-2]) / (4 * da * db)
    else:  # an uneven grid: second differences with the spacing on each side of every point
        hp, hm = (a[2:] - a[1:-1])[None, :], (a[1:-1] - a[:-2])[None, :]
        kp, km = (b[2:] - b[1:-1])[:, None], (b[1:-1] - b[:-2])[:, None]
        c = loss[1:-1, 1:-1]
        h11 = 2 * (hm * loss[1:-1, 2:] - (hp + hm) * c + hp * loss[1:-1, :-2]) / (hp * hm * (hp + hm))
        h22 = 2 * (km * loss[2:, 1:-1] - (kp + km) * c + kp * loss[:-2, 1:-1]) / (kp * km * (kp + km))
        h12 = (loss[2:, 2:] - loss[2:, :-2] - loss[:-2, 2:] + loss[:-2, :-2]) / ((hp + hm) * (kp + km))
    lam_min = (h11 + h22) / 2 - np.sqrt(((h11 - h22) / 2) ** 2 + h12**2)
    return float(np.mean(lam_min < 0))
