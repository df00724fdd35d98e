"""Loss surfaces on planes in parameter space (batched with vmap) and trajectory PCA, saved for redrawing."""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lab.checks import require_finite
from lab.params import batched

_HINT = "θ or the directions are non-finite, or the grid reaches where the loss overflows (shrink its range)"


@dataclass
class Surface:
    """L(θ + a·d1 + b·d2) on a grid, with its coordinates and metadata."""

    a: np.ndarray
    b: np.ndarray
    loss: np.ndarray            # shape (len(b), len(a))
    meta: dict = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        """Write coordinates, values and metadata (JSON) to an .npz file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, a=self.a, b=self.b, loss=self.loss, meta=json.dumps(self.meta))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Surface:
        """Read a surface written by save()."""
        z = np.load(path, allow_pickle=False)
        return cls(z["a"], z["b"], z["loss"], json.loads(str(z["meta"])))


def line(loss_fn: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor, d: torch.Tensor, t: np.ndarray,
         chunk_size: int = 64) -> np.ndarray:
    """1D profile L(θ + t_i·d) (Li et al.'s 1D plot), all points evaluated as vmapped batches (float64 result)."""
    tt = torch.as_tensor(np.asarray(t, dtype=float), dtype=torch.float64, device=theta.device)[:, None]
    require_finite(theta, "θ", "lab.surfaces.line")
    require_finite(d, "the direction", "lab.surfaces.line")
    pts = (theta.double()[None] + tt * d.double()[None]).to(theta.dtype)
    with torch.no_grad():
        vals = batched(loss_fn, pts, chunk_size).double().cpu().numpy()
    return require_finite(vals, "the losses along the line", "lab.surfaces.line", _HINT)


def plane(loss_fn: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor, d1: torch.Tensor, d2: torch.Tensor,
          a: np.ndarray, b: np.ndarray, dtype: torch.dtype | None = None, chunk_size: int = 64,
          meta: dict | None = None) -> Surface:
    """Loss on the grid θ + a_i·d1 + b_j·d2, all points evaluated as vmapped batches."""
    dtype = dtype or theta.dtype
    for name, v in (("θ", theta), ("d1", d1), ("d2", d2)):
        require_finite(v, name, "lab.surfaces.plane")
    aa, bb = np.meshgrid(np.asarray(a, dtype=float), np.asarray(b, dtype=float))
    ta = torch.as_tensor(aa.reshape(-1), dtype=torch.float64, device=theta.device)[:, None]
    tb = torch.as_tensor(bb.reshape(-1), dtype=torch.float64, device=theta.device)[:, None]
    pts = (theta.double()[None] + ta * d1.double()[None] + tb * d2.double()[None]).to(dtype)
    with torch.no_grad():
        vals = batched(loss_fn, pts, chunk_size).double().cpu().numpy()
    require_finite(vals, "the losses on the plane", "lab.surfaces.plane", _HINT)
    return Surface(np.asarray(a, float), np.asarray(b, float), vals.reshape(aa.shape), dict(meta or {}))


def trajectory_pca(thetas: torch.Tensor, k: int = 2) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """PCA of a training trajectory around its last point (Li et al.): directions, coordinates, variance ratios."""
    final = thetas[-1].double()
    m = thetas.double() - final[None]
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    dirs = vh[:k].T.contiguous()
    coords = (m @ dirs).cpu().numpy()
    ratio = (s**2 / (s**2).sum()).cpu().numpy()
    return dirs, coords, ratio[:k]


def random_walk_pca(step_lengths: np.ndarray, dim: int, k: int = 2, n_walks: int = 200, seed: int = 0) -> np.ndarray:
    """The null model for trajectory_pca: explained-variance ratios of the top k PCA directions (around the last
    point) of isotropic random walks in `dim` dimensions with the given step lengths, shape (n_walks, k).

    Exact and cheap for any dim: PCA needs only the Gram matrix of the walk, and the Gram matrix of n independent
    Gaussian directions in `dim` dimensions is Wishart(dim, I_n) (scipy.stats.wishart), normalised to unit vectors
    and scaled to the step lengths — no dim-sized vector is ever drawn.
    """
    from scipy.stats import wishart

    s = np.asarray(step_lengths, dtype=np.float64)
    n = len(s)
    if n < 2 or dim < 1 or not np.all(s > 0):
        raise ValueError(f"random_walk_pca: need at least 2 positive step lengths and dim >= 1, got {n} steps, "
                         f"dim={dim}")
    suffix = np.triu(np.ones((n + 1, n)), 0)[: n + 1]      # row t sums the steps i >= t (last row: the end point)
    suffix[n] = 0.0
    rng = np.random.default_rng(seed)
    out = np.empty((n_walks, k))
    for w in range(n_walks):
        g = np.atleast_2d(wishart(df=max(dim, n), scale=np.eye(n)).rvs(random_state=rng)) if dim >= n else None
        if g is None:                                        # fewer dimensions than steps: draw the vectors
            z = rng.standard_normal((n, dim))
            g = z @ z.T
        d = np.sqrt(np.diag(g))
        e = (g / np.outer(d, d)) * np.outer(s, s)            # Gram matrix of the increments
        ev = np.clip(np.linalg.eigvalsh(suffix @ e @ suffix.T)[::-1], 0, None)
        out[w] = ev[:k] / ev.sum()
    return out


def nonconvex_fraction(surf: Surface) -> float:
    """Share of interior grid points where the surface's 2D second-difference Hessian has a negative eigenvalue."""
    require_finite(surf.loss, "the surface's losses", "lab.surfaces.nonconvex_fraction")
    if surf.loss.shape[0] < 3 or surf.loss.shape[1] < 3:
        raise ValueError(f"lab.surfaces.nonconvex_fraction: the surface is {surf.loss.shape}; a second difference "
                         "needs at least 3 × 3 points")
    loss, da, db = surf.loss, surf.a[1] - surf.a[0], surf.b[1] - surf.b[0]
    h11 = (loss[1:-1, 2:] - 2 * loss[1:-1, 1:-1] + loss[1:-1, :-2]) / da**2
    h22 = (loss[2:, 1:-1] - 2 * loss[1:-1, 1:-1] + loss[:-2, 1:-1]) / db**2
    h12 = (loss[2:, 2:] - loss[2:, :-2] - loss[:-2, 2:] + loss[:-2, :-2]) / (4 * da * db)
    lam_min = (h11 + h22) / 2 - np.sqrt(((h11 - h22) / 2) ** 2 + h12**2)
    return float(np.mean(lam_min < 0))
