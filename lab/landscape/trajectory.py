"""Training trajectories in parameter space: PCA around the last point (Li et al. 2018) and its random-walk null."""
from __future__ import annotations

import numpy as np
import torch

from lab.checks import not_allowed, require_finite, require_int

__all__ = ["trajectory_pca", "random_walk_pca"]



def trajectory_pca(thetas: torch.Tensor, k: int = 2) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """PCA of a training trajectory around its last point (Li et al.): directions, coordinates, variance ratios.

    The points are taken relative to the final point (not to their mean), so the directions span where the
    trajectory came from, and the plane through the final point along them is the one Li et al. plot. The sign of
    each direction is arbitrary (that of the SVD).

    Args:
        thetas: the trajectory, shape (T, P): one flat parameter vector per checkpoint, last row the final point;
            any floating dtype and device (computed in float64).
        k: how many directions to keep, 1 <= k <= min(T, P).

    Returns:
        (dirs, coords, ratio): dirs the orthonormal directions, shape (P, k), float64, on thetas' device; coords
        each checkpoint's coordinates along them, shape (T, k), a float64 numpy array; ratio the share of the
        total squared distance from the final point each direction explains, shape (k,), numpy float64.

    Example:
        >>> import torch
        >>> from lab.landscape import trajectory_pca
        >>> thetas = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.1, 0.0], [2.0, 0.0, 0.0], [3.0, 0.1, 0.0]])
        >>> dirs, coords, ratio = trajectory_pca(thetas)
        >>> dirs.shape, coords.shape, round(float(ratio.sum()), 6), bool(ratio[0] > 0.99)
        (torch.Size([3, 2]), (4, 2), 1.0, True)
    """
    where = "lab.landscape.trajectory_pca"
    if not isinstance(thetas, torch.Tensor) or not thetas.is_floating_point():
        raise TypeError(not_allowed("thetas", thetas, "a floating-point torch.Tensor of shape (T, P)", where))
    if thetas.ndim != 2 or thetas.shape[0] < 2 or thetas.shape[1] < 1:
        raise ValueError(not_allowed("thetas", thetas, f"shape (T, P) with T >= 2 points (got {tuple(thetas.shape)})",
                                     where))
    require_finite(thetas, "parameter 'thetas'", where)
    k = require_int(k, "k", where, lo=1, hi=min(thetas.shape))
    final = thetas[-1].double()
    m = thetas.double() - final[None]
    if not bool(m.ne(0).any()):
        raise ValueError(f"{where}: parameter 'thetas' never moves (every point equals the last): no directions")
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

    A walk with no structure at all already has its variance concentrated in the first few PCA directions, so a
    trajectory's variance ratios mean something only when compared with this null.

    Args:
        step_lengths: the lengths of the n ≥ 2 steps, shape (n,), all > 0 (e.g. the trajectory's own).
        dim: the dimension of the space (the number of parameters P), ≥ 1.
        k: how many directions to keep, 1 <= k <= n.
        n_walks: how many random walks to draw, >= 1.
        seed: seed of the numpy generator.

    Returns:
        np.ndarray: the top-k explained-variance ratios of each walk, shape (n_walks, k), float64.

    Raises:
        ValueError: fewer than 2 steps, a step length ≤ 0, dim < 1, k outside [1, n] or n_walks < 1.

    Example:
        >>> import numpy as np
        >>> from lab.landscape import random_walk_pca
        >>> r = random_walk_pca(np.ones(10), dim=1000, n_walks=20)
        >>> r.shape, bool((r[:, 0] > r[:, 1]).all()), bool(r[:, 0].mean() > 0.5)
        ((20, 2), True, True)
    """
    from scipy.stats import wishart

    where = "lab.landscape.random_walk_pca"
    s = np.asarray(step_lengths, dtype=np.float64)
    require_finite(s, "parameter 'step_lengths'", where)
    n = len(s) if s.ndim == 1 else 0
    if n < 2 or not np.all(s > 0):
        raise ValueError(f"{where}: parameter 'step_lengths' has shape {s.shape} and minimum "
                         f"{float(s.min()) if s.size else float('nan')}: expected at least 2 positive step lengths")
    dim = require_int(dim, "dim", where, lo=1)
    k = require_int(k, "k", where, lo=1, hi=n)
    n_walks = require_int(n_walks, "n_walks", where, lo=1)
    seed = require_int(seed, "seed", where, lo=0)
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
