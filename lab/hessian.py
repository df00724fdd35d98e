"""Hessian-vector products of a pure loss of the flat parameter vector (forward-over-reverse, torch.func)."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch.func import grad, jvp


def hvp(loss_fn: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """H(θ)·v by forward-mode differentiation of the gradient."""
    return jvp(grad(loss_fn), (theta,), (v.to(theta.dtype),))[1]


def directional_curvature(loss_fn: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor,
                          d: torch.Tensor) -> float:
    """dᵀ H d / dᵀd: the second derivative of the loss along d (float64 recommended)."""
    return float(d @ hvp(loss_fn, theta, d) / (d @ d))
