"""Floating-point facts per dtype: names, unit roundoff, ulp."""
from __future__ import annotations

import torch

DTYPES: dict[str, torch.dtype] = {
    "float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
}


def dtype_of(name: str) -> torch.dtype:
    """The torch dtype for a name in DTYPES; a clear error otherwise."""
    if name not in DTYPES:
        raise ValueError(f"dtype {name!r} is not allowed: expected one of {tuple(DTYPES)}")
    return DTYPES[name]


def unit_roundoff(dtype: torch.dtype) -> float:
    """u = eps/2: the largest relative error of rounding to nearest."""
    return torch.finfo(dtype).eps / 2


_INT = {8: torch.int64, 4: torch.int32, 2: torch.int16}


def neighbour(x: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """The next representable value of x's dtype from x towards sign(direction) (x where direction is 0)."""
    bits = x.view(_INT[x.element_size()])
    s = torch.sign(direction).to(bits.dtype)
    away = (torch.signbit(x).to(bits.dtype) * -2 + 1) == s  # moving away from zero: magnitude grows
    step = torch.where(away, 1, -1).to(bits.dtype) * (s != 0)
    out = (bits + step).view(x.dtype)
    tiny = torch.tensor(torch.finfo(x.dtype).smallest_normal * torch.finfo(x.dtype).eps, dtype=x.dtype)
    zero_case = torch.where(s > 0, tiny, -tiny).to(x.dtype)
    return torch.where((x == 0) & (s != 0), zero_case, out)


def ulp(x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Gap (in float64) from |x| to the next larger representable magnitude of `dtype`."""
    xd = x.detach().to(dtype or x.dtype).abs()
    return neighbour(xd, torch.ones_like(xd)).double() - xd.double()
