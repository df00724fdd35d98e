"""Directions in parameter space: random, filter-normalized (Li et al. 2018), gradient, origin, checkpoint lines."""
from __future__ import annotations

import torch

from lab.params import FlatSpec

BIAS_MODES = ("zero", "filter")


def _unit(v: torch.Tensor) -> torch.Tensor:
    n = v.norm()
    if n == 0:
        raise ValueError("direction has zero norm")
    return v / n


def gaussian(theta: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A Gaussian random direction of unit norm (float64)."""
    d = torch.randn(theta.shape, generator=generator, dtype=torch.float64)
    return _unit(d).to(theta.device)


def filter_normalized(theta: torch.Tensor, spec: FlatSpec, generator: torch.Generator | None = None,
                      bias: str = "zero") -> torch.Tensor:
    """Li et al. (2018) filter-normalized random direction: each output filter d_i rescaled to ‖θ_i‖.

    A filter is one output neuron: a row of a weight matrix (or an output channel of a conv kernel).
    bias='zero' sets bias directions to 0 (Li et al.'s choice, so d changes only weights); bias='filter' treats
    each bias entry as part of its neuron's filter, normalizing [w_i, b_i] jointly. 1-D weights (norm layers)
    are normalized as a whole. The result is not unit-norm: its norm is close to ‖weights of θ‖. Only bias='zero'
    makes the direction exactly invariant to ReLU rescalings (layer·α, next layer·1/α).
    """
    if bias not in BIAS_MODES:
        raise ValueError(f"parameter 'bias' = {bias!r} is not allowed: expected one of {BIAS_MODES}")
    th = theta.detach().double().cpu()
    d = torch.randn(th.shape, generator=generator, dtype=torch.float64)
    sl = spec.slices()
    shapes = dict(zip(spec.names, spec.shapes, strict=True))
    for name in spec.names:
        s, shape = sl[name], shapes[name]
        if name.endswith("bias"):
            continue
        w_t, w_d = th[s].reshape(shape), d[s].reshape(shape)
        if len(shape) == 1:
            d[s] = (w_d * w_t.norm() / w_d.norm()).reshape(-1)
            continue
        b_name = name[: -len("weight")] + "bias" if name.endswith("weight") else None
        rows_t, rows_d = w_t.reshape(shape[0], -1), w_d.reshape(shape[0], -1)
        if bias == "filter" and b_name in sl:
            bt, bd = th[sl[b_name]][:, None], d[sl[b_name]][:, None]
            rows_t, rows_d = torch.cat([rows_t, bt], 1), torch.cat([rows_d, bd], 1)
        scaled = rows_d * (rows_t.norm(dim=1, keepdim=True) / rows_d.norm(dim=1, keepdim=True).clamp_min(1e-300))
        d[s] = scaled[:, : rows_t.shape[1] - (1 if bias == "filter" and b_name in sl else 0)].reshape(-1)
        if bias == "filter" and b_name in sl:
            d[sl[b_name]] = scaled[:, -1]
    for name in spec.names:
        if name.endswith("bias") and bias == "zero":
            d[sl[name]] = 0.0
    return d.to(theta.device)


def gradient(grad: torch.Tensor, ascent: bool = False) -> torch.Tensor:
    """Unit gradient-descent direction −g/‖g‖ (or ascent +g/‖g‖)."""
    return _unit(grad.detach().double()) * (1 if ascent else -1)


def origin(theta: torch.Tensor, away: bool = False) -> torch.Tensor:
    """Unit direction towards the origin −θ/‖θ‖ (or away from it)."""
    return _unit(theta.detach().double()) * (1 if away else -1)


def between(theta_a: torch.Tensor, theta_b: torch.Tensor) -> torch.Tensor:
    """Unit direction from checkpoint a to checkpoint b."""
    return _unit(theta_b.detach().double() - theta_a.detach().double())
