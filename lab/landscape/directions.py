"""Directions in parameter space: random, filter-normalized (Li et al. 2018), gradient, origin, checkpoint lines.

Every builder returns a float64 direction of θ's shape (P,) on θ's device; all but `filter_normalized` have unit
norm. `BIAS_MODES` = ("zero", "filter") are the choices for the bias entries of a filter-normalized direction.
"""
from __future__ import annotations

import torch

from lab.checks import require_finite
from lab.flat import FlatSpec

__all__ = ["BIAS_MODES", "standard_directions", "gaussian", "filter_normalized", "gradient", "origin", "between"]

BIAS_MODES = ("zero", "filter")


def _unit(v: torch.Tensor, what: str = "the direction", where: str = "lab.landscape.directions") -> torch.Tensor:
    """v / ‖v‖; a zero, empty or non-finite v is refused naming `what` (the parameter it came from)."""
    require_finite(v, what, where)
    n = v.norm()
    if v.numel() == 0 or n == 0:
        raise ValueError(f"{where}: {what} has zero norm (it is {'empty' if v.numel() == 0 else 'zero'}): "
                         "no direction")
    return v / n


def _is_bias(name: str) -> bool:
    """A bias by name: the last component starts or ends with "bias" ("0.bias", "in_proj_bias", "bias_ih_l0")."""
    last = name.rpartition(".")[2]
    return last.startswith("bias") or last.endswith("bias")


def gaussian(theta: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A Gaussian random direction of unit norm (float64).

    Args:
        theta: flat parameters, shape (P,), any dtype and device; only its shape and device are used.
        generator: a CPU torch.Generator for reproducible draws (default: torch's global generator).

    Returns:
        torch.Tensor: a unit-norm direction, shape (P,), float64, on θ's device.

    Raises:
        ValueError: the draw has zero norm (only possible for P = 0).

    Example:
        >>> import torch
        >>> from lab.landscape import directions as D
        >>> d = D.gaussian(torch.zeros(5), torch.Generator().manual_seed(0))
        >>> d.shape, d.dtype, round(float(d.norm()), 6)
        (torch.Size([5]), torch.float64, 1.0)
    """
    d = torch.randn(theta.shape, generator=generator, dtype=torch.float64)
    return _unit(d, "parameter 'theta' (its shape)", "lab.landscape.directions.gaussian").to(theta.device)


def filter_normalized(theta: torch.Tensor, spec: FlatSpec, generator: torch.Generator | None = None,
                      bias: str = "zero") -> torch.Tensor:
    """Li et al. (2018) filter-normalized random direction: each output filter d_i rescaled to ‖θ_i‖.

    A filter is one output neuron: a row of a weight matrix (or an output channel of a conv kernel).
    bias='zero' sets bias directions to 0 (Li et al.'s choice, so d changes only weights); bias='filter' treats
    each bias entry as part of its neuron's filter, normalizing [w_i, b_i] jointly. 1-D weights (norm layers)
    are normalized as a whole. The result is not unit-norm: its norm is close to ‖weights of θ‖. Only bias='zero'
    makes the direction exactly invariant to ReLU rescalings (layer·α, next layer·1/α).

    Parameters are recognised by name: a parameter whose last name component starts or ends with "bias" is a bias
    ("bias", "in_proj_bias", an RNN's "bias_ih_l0"), and a weight pairs with the bias named by replacing "weight"
    with "bias" in that component ("<layer>.weight" with "<layer>.bias", "in_proj_weight" with "in_proj_bias",
    "weight_hh_l0" with "bias_hh_l0"). For the layers beyond Linear and Conv, a filter is a row of the parameter's
    first dimension: one token's vector of an nn.Embedding weight (V, D) (also for an embedding tied to an output
    head, where that row is also the head's output neuron: one parameter, one definition), one position of a
    learned positional table (T, D), one q/k/v unit of attention's in_proj_weight (3E, E), one gate unit of an RNN's
    weight_ih_l0 (gates·H, in). 0-d and 1-D parameters that are not biases (LayerNorm and BatchNorm scales, a
    temperature) are normalized as a whole; LayerNorm and BatchNorm shifts are biases.

    Args:
        theta: flat parameters, shape (P,), any floating dtype and device (read in float64 on the CPU).
        spec: the FlatSpec that maps θ onto the model's named parameters (from `lab.flat.flatten` or
            `lab.flat.make_loss_fn`).
        generator: a CPU torch.Generator for reproducible draws (default: torch's global generator).
        bias: one of BIAS_MODES: "zero" or "filter" (see above).

    Returns:
        torch.Tensor: the direction, shape (P,), float64, on θ's device; not of unit norm.

    Raises:
        ValueError: `bias` is not one of BIAS_MODES.

    Example:
        >>> import torch
        >>> from lab.flat import flatten, unflatten
        >>> from lab.landscape import directions as D
        >>> _, spec = flatten(torch.nn.Linear(3, 2))                 # weight (2, 3), bias (2,): P = 8
        >>> theta = torch.arange(1.0, 9.0)
        >>> d = unflatten(D.filter_normalized(theta, spec, torch.Generator().manual_seed(0)), spec)
        >>> w = unflatten(theta.double(), spec)["weight"]
        >>> bool(torch.allclose(d["weight"].norm(dim=1), w.norm(dim=1))), d["bias"].tolist()
        (True, [0.0, 0.0])
    """
    if bias not in BIAS_MODES:
        raise ValueError(f"parameter 'bias' = {bias!r} is not allowed: expected one of {BIAS_MODES}")
    if theta.numel() != spec.size:
        raise ValueError(f"lab.landscape.directions.filter_normalized: parameter 'theta' has {theta.numel()} entries "
                         f"but 'spec' describes {spec.size} parameters")
    th = theta.detach().double().cpu()
    d = torch.randn(th.shape, generator=generator, dtype=torch.float64)
    sl = spec.slices()
    shapes = dict(zip(spec.names, spec.shapes, strict=True))
    for name in spec.names:
        s, shape = sl[name], shapes[name]
        if _is_bias(name):
            continue
        w_t, w_d = th[s].reshape(shape), d[s].reshape(shape)
        if len(shape) <= 1:
            d[s] = (w_d * w_t.norm() / w_d.norm()).reshape(-1)
            continue
        head, _, last = name.rpartition(".")
        b_name = head + "." * bool(head) + last.replace("weight", "bias", 1) if "weight" in last else None
        rows_t, rows_d = w_t.reshape(shape[0], -1), w_d.reshape(shape[0], -1)
        if bias == "filter" and b_name in sl:
            bt, bd = th[sl[b_name]][:, None], d[sl[b_name]][:, None]
            rows_t, rows_d = torch.cat([rows_t, bt], 1), torch.cat([rows_d, bd], 1)
        scaled = rows_d * (rows_t.norm(dim=1, keepdim=True) / rows_d.norm(dim=1, keepdim=True).clamp_min(1e-300))
        d[s] = scaled[:, : rows_t.shape[1] - (1 if bias == "filter" and b_name in sl else 0)].reshape(-1)
        if bias == "filter" and b_name in sl:
            d[sl[b_name]] = scaled[:, -1]
    for name in spec.names:
        if _is_bias(name) and bias == "zero":
            d[sl[name]] = 0.0
    return d.to(theta.device)


def gradient(grad: torch.Tensor, ascent: bool = False) -> torch.Tensor:
    """Unit gradient-descent direction −g/‖g‖ (or ascent +g/‖g‖).

    Args:
        grad: the loss gradient at θ, shape (P,), any floating dtype and device.
        ascent: return +g/‖g‖ instead.

    Returns:
        torch.Tensor: a unit direction, shape (P,), float64, on grad's device.

    Raises:
        ValueError: the gradient is zero.

    Example:
        >>> import torch
        >>> from lab.landscape import directions as D
        >>> D.gradient(torch.tensor([3.0, 4.0])).tolist()
        [-0.6, -0.8]
    """
    return _unit(grad.detach().double(), "parameter 'grad'", "lab.landscape.directions.gradient") * \
        (1 if ascent else -1)


def origin(theta: torch.Tensor, away: bool = False) -> torch.Tensor:
    """Unit direction towards the origin −θ/‖θ‖ (or away from it).

    Args:
        theta: flat parameters, shape (P,), any floating dtype and device.
        away: return +θ/‖θ‖ instead.

    Returns:
        torch.Tensor: a unit direction, shape (P,), float64, on θ's device.

    Raises:
        ValueError: θ is zero.

    Example:
        >>> import torch
        >>> from lab.landscape import directions as D
        >>> D.origin(torch.tensor([3.0, 4.0]), away=True).tolist()
        [0.6, 0.8]
    """
    return _unit(theta.detach().double(), "parameter 'theta'", "lab.landscape.directions.origin") * \
        (1 if away else -1)


def between(theta_a: torch.Tensor, theta_b: torch.Tensor) -> torch.Tensor:
    """Unit direction from checkpoint a to checkpoint b.

    Args:
        theta_a: flat parameters of the start point, shape (P,), any floating dtype and device.
        theta_b: flat parameters of the end point, shape (P,), on theta_a's device.

    Returns:
        torch.Tensor: (θ_b − θ_a)/‖θ_b − θ_a‖, shape (P,), float64, on their device.

    Raises:
        ValueError: the two points are equal.

    Example:
        >>> import torch
        >>> from lab.landscape import directions as D
        >>> D.between(torch.zeros(2), torch.tensor([3.0, 4.0])).tolist()
        [0.6, 0.8]
    """
    if theta_a.shape != theta_b.shape:
        raise ValueError(f"lab.landscape.directions.between: parameters 'theta_a' and 'theta_b' have shapes "
                         f"{tuple(theta_a.shape)} and {tuple(theta_b.shape)}: expected the same shape")
    return _unit(theta_b.detach().double() - theta_a.detach().double(), "parameters 'theta_b' − 'theta_a'",
                 "lab.landscape.directions.between")


def standard_directions(theta: torch.Tensor, spec: FlatSpec, grad: torch.Tensor, generator: torch.Generator,
                        bias: str = "zero", early: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The workbook's set of probe directions at θ: a Gaussian and a filter-normalized one (drawn from `generator`,
    in that order), the descent direction −∇L and the direction to the origin; with `early` (an earlier point of
    the same run) also the ascent direction, the direction away from the origin and the one to `early`.

    Args:
        theta: the point, shape (P,).
        spec: θ's layout (`lab.flat.FlatSpec`), for filter normalization.
        grad: ∇L(θ), shape (P,).
        generator: draws the two random directions.
        bias: how filter normalization treats biases ("zero" or "filter").
        early: an earlier checkpoint (P,), or None.

    Returns:
        name → direction (P,), θ's dtype and device, each as its builder scales it (`gaussian`, `filter_normalized`,
        `gradient`, `origin`, `between`); 4 entries, or 7 with `early`.

    Example:
        >>> import torch
        >>> from lab.flat import flatten
        >>> theta, spec = flatten(torch.nn.Linear(3, 2))
        >>> d = standard_directions(theta, spec, torch.ones(8), torch.Generator().manual_seed(0), early=theta * 0.5)
        >>> list(d)
        ['gaussian', 'filter-normalized', 'descent', 'to origin', 'ascent', 'from origin', 'to early checkpoint']
    """
    dirs = {"gaussian": gaussian(theta, generator), "filter-normalized": filter_normalized(theta, spec, generator,
                                                                                            bias=bias),
            "descent": gradient(grad), "to origin": origin(theta)}
    if early is not None:
        dirs |= {"ascent": gradient(grad, ascent=True), "from origin": origin(theta, away=True),
                 "to early checkpoint": between(theta, early)}
    return dirs
