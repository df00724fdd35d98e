"""Floating-point facts per dtype: names, unit roundoff, ulp.

`DTYPES` maps the names the workbook accepts ("float64", "float32", "bfloat16", "float16") to torch dtypes;
`dtype_of` looks a name up with a clear error. `unit_roundoff` is u = eps/2, the relative error bound of rounding
to nearest; `neighbour` steps to the adjacent representable value and `ulp` measures the gap to it, both bit-exact.
"""
from __future__ import annotations

import torch

from lab.checks import not_allowed, require_finite

__all__ = ["DTYPES", "dtype_of", "unit_roundoff", "neighbour", "ulp"]

DTYPES: dict[str, torch.dtype] = {
    "float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
}


def dtype_of(name: str) -> torch.dtype:
    """The torch dtype for a name in DTYPES; a clear error otherwise.

    Args:
        name: one of the keys of `DTYPES`: "float64", "float32", "bfloat16" or "float16".

    Returns:
        The matching `torch.dtype`.

    Raises:
        ValueError: `name` is not a key of `DTYPES` (the message lists the allowed names).

    Example:
        >>> from lab.numerics import dtype_of
        >>> dtype_of("bfloat16")
        torch.bfloat16
    """
    if name not in DTYPES:
        raise ValueError(f"dtype {name!r} is not allowed: expected one of {tuple(DTYPES)}")
    return DTYPES[name]


def unit_roundoff(dtype: torch.dtype) -> float:
    """u = eps/2: the largest relative error of rounding to nearest.

    Rounding a real number x to `dtype` gives x·(1 + δ) with |δ| ≤ u (away from underflow and overflow), so u is
    the unit in which the workbook measures rounding noise (see `lab.numerics.noise.rounding_model`).

    Args:
        dtype: a floating torch dtype, e.g. torch.float32.

    Returns:
        u as a Python float: 2⁻⁵³ for float64, 2⁻²⁴ for float32, 2⁻⁸ for bfloat16, 2⁻¹¹ for float16.

    Example:
        >>> import torch
        >>> from lab.numerics import unit_roundoff
        >>> unit_roundoff(torch.float32) == 2.0 ** -24, unit_roundoff(torch.bfloat16)
        (True, 0.00390625)
    """
    return torch.finfo(_float_dtype(dtype, "dtype", "lab.numerics.unit_roundoff")).eps / 2


def _float_dtype(dtype, name: str, where: str) -> torch.dtype:
    """dtype when it is a floating torch.dtype, else a TypeError naming parameter `name`."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(not_allowed(name, dtype, "a floating torch.dtype, e.g. torch.float32 (dtype_of maps names)",
                                    where))
    return dtype


_INT = {8: torch.int64, 4: torch.int32, 2: torch.int16}


def neighbour(x: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """The next representable value of x's dtype from x towards sign(direction) (x where direction is 0).

    Computed on the bit pattern (an integer step of the IEEE encoding), so it is exact and works for float64,
    float32, bfloat16 and float16 alike; from ±0 it steps to ± the smallest subnormal.

    Args:
        x: values, any shape, a floating dtype of 2, 4 or 8 bytes (float16, bfloat16, float32, float64), any device.
        direction: a tensor broadcastable to x (same device); only its sign is used: > 0 steps up, < 0 steps down,
            0 leaves the entry unchanged.

    Returns:
        A tensor of x's shape, dtype and device: each entry's neighbour in its dtype.

    Example:
        >>> import torch
        >>> from lab.numerics import neighbour
        >>> x = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float16)
        >>> neighbour(x, torch.tensor([1.0, -1.0, 0.0])).tolist()
        [1.0009765625, 0.99951171875, 1.0]
    """
    where = "lab.numerics.neighbour"
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.element_size() not in _INT:
        raise TypeError(not_allowed("x", x, "a tensor of float16, bfloat16, float32 or float64", where))
    if not isinstance(direction, torch.Tensor):
        direction = torch.as_tensor(direction, device=x.device)
    require_finite(direction, "parameter 'direction'", where, "only its sign is used, and NaN has none")
    bits = x.view(_INT[x.element_size()])
    s = torch.sign(direction).to(bits.dtype)
    away = (torch.signbit(x).to(bits.dtype) * -2 + 1) == s  # moving away from zero: magnitude grows
    step = torch.where(away, 1, -1).to(bits.dtype) * (s != 0)
    out = (bits + step).view(x.dtype)
    tiny = torch.tensor(torch.finfo(x.dtype).smallest_normal * torch.finfo(x.dtype).eps, dtype=x.dtype)
    zero_case = torch.where(s > 0, tiny, -tiny).to(x.dtype)
    return torch.where((x == 0) & (s != 0), zero_case, out)


def ulp(x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Gap (in float64) from |x| to the next larger representable magnitude of `dtype`.

    x is first rounded to `dtype` (detached), so this is the ulp of the stored value: the smallest change a step
    away from zero can make to it.

    Args:
        x: values, any shape, any floating dtype and device.
        dtype: the dtype whose spacing is measured (default: x's own dtype).

    Returns:
        A float64 tensor of x's shape on x's device: the ulp of each entry.

    Example:
        >>> import torch
        >>> from lab.numerics import ulp
        >>> ulp(torch.tensor([1.0, 1024.0, -2.0]), torch.float16).tolist()
        [0.0009765625, 1.0, 0.001953125]
    """
    where = "lab.numerics.ulp"
    if dtype is not None:
        _float_dtype(dtype, "dtype", where)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(not_allowed("x", x, "a floating-point torch.Tensor", where))
    require_finite(x, "parameter 'x'", where, "an infinite or NaN value has no ulp")
    xd = x.detach().to(dtype or x.dtype).abs()
    return neighbour(xd, torch.ones_like(xd)).double() - xd.double()
