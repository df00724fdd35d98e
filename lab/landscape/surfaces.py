"""Loss along lines and on planes through parameter space (Li et al. 2018's 1D and 2D plots), evaluated as vmapped
batches, and the share of a surface that is non-convex."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from lab.checks import require_finite
from lab.flat import batched

__all__ = ["Surface", "line", "plane", "nonconvex_fraction"]


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


def line(loss_fn: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor, d: torch.Tensor, t: np.ndarray,
         chunk_size: int = 64) -> np.ndarray:
    """1D profile L(θ + t_i·d) (Li et al.'s 1D plot), all points evaluated as vmapped batches (float64 result).

    The points are formed in float64 and rounded to θ's dtype, in which the loss is evaluated.

    Args:
        loss_fn: θ ↦ scalar loss, a pure, vmappable torch function of the flat parameters (e.g. from
            `lab.flat.make_loss_fn`).
        theta: flat parameters, shape (P,), any floating dtype and device.
        d: the direction, shape (P,), on θ's device.
        t: the distances along d, shape (n,).
        chunk_size: points per vmapped batch.

    Returns:
        np.ndarray: the loss at each t, shape (n,), float64.

    Raises:
        lab.checks.NonFiniteError: θ, d or a loss along the line is not finite.

    Example:
        >>> import numpy as np
        >>> import torch
        >>> from lab.landscape import line
        >>> theta = torch.tensor([1.0, 0.0], dtype=torch.float64)
        >>> d = torch.tensor([0.0, 1.0], dtype=torch.float64)
        >>> line(lambda p: (p * p).sum(), theta, d, np.array([0.0, 1.0, 2.0])).tolist()
        [1.0, 2.0, 5.0]
    """
    tt = torch.as_tensor(np.asarray(t, dtype=float), dtype=torch.float64, device=theta.device)[:, None]
    require_finite(theta, "θ", "lab.landscape.line")
    require_finite(d, "the direction", "lab.landscape.line")
    th64, d64 = theta.double()[None], d.double()[None]
    vals = np.empty(len(tt))
    with torch.no_grad():  # one chunk of points at a time: memory chunk_size × P
        for i in range(0, len(tt), chunk_size):
            pts = (th64 + tt[i:i + chunk_size] * d64).to(theta.dtype)
            vals[i:i + chunk_size] = batched(loss_fn, pts, chunk_size).double().cpu().numpy()
    return require_finite(vals, "the losses along the line", "lab.landscape.line", _HINT)


def plane(loss_fn: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor, d1: torch.Tensor, d2: torch.Tensor,
          a: np.ndarray, b: np.ndarray, dtype: torch.dtype | None = None, chunk_size: int = 64,
          meta: dict | None = None) -> Surface:
    """Loss on the grid θ + a_i·d1 + b_j·d2, all points evaluated as vmapped batches.

    The points are formed in float64 and rounded to `dtype`, in which the loss is evaluated.

    Args:
        loss_fn: θ ↦ scalar loss, a pure, vmappable torch function of the flat parameters.
        theta: flat parameters, shape (P,), any floating dtype and device.
        d1: the first direction, shape (P,), on θ's device.
        d2: the second direction, shape (P,), on θ's device.
        a: the coordinates along d1, shape (na,).
        b: the coordinates along d2, shape (nb,).
        dtype: the dtype of the points and the loss evaluation (default: θ's dtype).
        chunk_size: points per vmapped batch; the points of one batch are all that is held in memory
            (chunk_size × P values), never the whole grid.
        meta: metadata copied into the Surface.

    Returns:
        A Surface with loss of shape (nb, na), float64.

    Raises:
        lab.checks.NonFiniteError: θ, d1, d2 or a loss on the grid is not finite.

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
    dtype = dtype or theta.dtype
    for name, v in (("θ", theta), ("d1", d1), ("d2", d2)):
        require_finite(v, name, "lab.landscape.plane")
    aa, bb = np.meshgrid(np.asarray(a, dtype=float), np.asarray(b, dtype=float))
    ta = torch.as_tensor(aa.reshape(-1), dtype=torch.float64, device=theta.device)[:, None]
    tb = torch.as_tensor(bb.reshape(-1), dtype=torch.float64, device=theta.device)[:, None]
    th64, e1, e2 = theta.double()[None], d1.double()[None], d2.double()[None]
    vals = np.empty(len(ta))
    with torch.no_grad():  # points are formed one chunk at a time: memory is chunk_size × P, not the grid's S² × P
        for i in range(0, len(ta), chunk_size):
            pts = (th64 + ta[i:i + chunk_size] * e1 + tb[i:i + chunk_size] * e2).to(dtype)
            vals[i:i + chunk_size] = batched(loss_fn, pts, chunk_size).double().cpu().numpy()
    require_finite(vals, "the losses on the plane", "lab.landscape.plane", _HINT)
    return Surface(np.asarray(a, float), np.asarray(b, float), vals.reshape(aa.shape), dict(meta or {}))


def nonconvex_fraction(surf: Surface) -> float:
    """Share of interior grid points where the surface's 2D second-difference Hessian has a negative eigenvalue.

    The Hessian of the loss restricted to the plane is estimated by central second differences on the grid
    (assumed evenly spaced), and its smaller eigenvalue is tested at every interior point.

    Args:
        surf: a Surface with at least 3 × 3 points and finite losses.

    Returns:
        The fraction of the (nb − 2)·(na − 2) interior points that are locally non-convex, a float in [0, 1].

    Raises:
        lab.checks.NonFiniteError: the surface has a non-finite loss.
        ValueError: the grid is smaller than 3 × 3.

    Example:
        >>> import numpy as np
        >>> from lab.landscape import Surface, nonconvex_fraction
        >>> a = b = np.linspace(-1.0, 1.0, 5)
        >>> saddle, bowl = a[None, :] ** 2 - b[:, None] ** 2, a[None, :] ** 2 + b[:, None] ** 2
        >>> nonconvex_fraction(Surface(a, b, saddle)), nonconvex_fraction(Surface(a, b, bowl))
        (1.0, 0.0)
    """
    require_finite(surf.loss, "the surface's losses", "lab.landscape.nonconvex_fraction")
    if surf.loss.shape[0] < 3 or surf.loss.shape[1] < 3:
        raise ValueError(f"lab.landscape.nonconvex_fraction: the surface is {surf.loss.shape}; a second difference "
                         "needs at least 3 × 3 points")
    loss, da, db = surf.loss, surf.a[1] - surf.a[0], surf.b[1] - surf.b[0]
    h11 = (loss[1:-1, 2:] - 2 * loss[1:-1, 1:-1] + loss[1:-1, :-2]) / da**2
    h22 = (loss[2:, 1:-1] - 2 * loss[1:-1, 1:-1] + loss[:-2, 1:-1]) / db**2
    h12 = (loss[2:, 2:] - loss[2:, :-2] - loss[:-2, 2:] + loss[:-2, :-2]) / (4 * da * db)
    lam_min = (h11 + h22) / 2 - np.sqrt(((h11 - h22) / 2) ** 2 + h12**2)
    return float(np.mean(lam_min < 0))
