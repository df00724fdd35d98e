"""Tests for lab.numerics: ulp and neighbour against numpy, dtype names, unit roundoff."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lab.numerics import DTYPES, dtype_of, neighbour, ulp, unit_roundoff

NP = {torch.float32: np.float32, torch.float64: np.float64}


def _values(npdt: type) -> np.ndarray:
    rng = np.random.default_rng(0)
    mags = 10.0 ** rng.uniform(-30, 30, 300)
    vals = np.concatenate([mags, -mags, rng.standard_normal(100),
                           2.0 ** np.arange(-20, 21), -(2.0 ** np.arange(-20, 21)), [1.0, -1.0, 0.5, 3.0]])
    return vals.astype(npdt)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_neighbour_matches_nextafter(dtype: torch.dtype) -> None:
    npdt = NP[dtype]
    x = _values(npdt)
    xt = torch.from_numpy(x)
    for sgn, target in ((1.0, np.inf), (-1.0, -np.inf)):
        got = neighbour(xt, torch.full_like(xt, sgn) * 3.7).numpy()
        want = np.nextafter(x, npdt(target))
        assert got.dtype == npdt
        np.testing.assert_array_equal(got, want)
    assert torch.equal(neighbour(xt, torch.zeros_like(xt)), xt)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_neighbour_of_zero(dtype: torch.dtype) -> None:
    npdt = NP[dtype]
    z = torch.zeros(2, dtype=dtype)
    got = neighbour(z, torch.tensor([1.0, -1.0], dtype=dtype)).numpy()
    np.testing.assert_array_equal(got, [np.nextafter(npdt(0), npdt(1)), np.nextafter(npdt(0), npdt(-1))])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ulp_matches_spacing(dtype: torch.dtype) -> None:
    npdt = NP[dtype]
    x = _values(npdt)
    got = ulp(torch.from_numpy(x))
    assert got.dtype == torch.float64
    np.testing.assert_array_equal(got.numpy(), np.spacing(np.abs(x)).astype(np.float64))
    # powers of two: the gap upwards is eps·x
    p = 2.0 ** np.arange(-10, 11)
    np.testing.assert_array_equal(ulp(torch.tensor(p, dtype=dtype)).numpy(), p * np.finfo(npdt).eps)


def test_ulp_in_another_dtype() -> None:
    x = torch.tensor([1.0, -3.14159, 1e-3, 12345.678], dtype=torch.float64)
    got = ulp(x, torch.float32).numpy()
    np.testing.assert_array_equal(got, np.spacing(np.abs(x.numpy()).astype(np.float32)).astype(np.float64))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
def test_ulp_at_one_is_eps(dtype: torch.dtype) -> None:
    assert ulp(torch.tensor(1.0, dtype=dtype)).item() == torch.finfo(dtype).eps
    assert ulp(torch.tensor(1.0), dtype).item() == torch.finfo(dtype).eps
    assert unit_roundoff(dtype) == torch.finfo(dtype).eps / 2


def test_bfloat16_neighbour() -> None:
    x = torch.tensor([1.0, 1.0, -1.0, 2.0], dtype=torch.bfloat16)
    got = neighbour(x, torch.tensor([1.0, -1.0, -1.0, -1.0])).double().tolist()
    assert got == [1 + 2**-7, 1 - 2**-8, -(1 + 2**-7), 2 - 2**-7]


def test_dtype_of() -> None:
    assert {n: dtype_of(n) for n in DTYPES} == {"float64": torch.float64, "float32": torch.float32,
                                                "bfloat16": torch.bfloat16, "float16": torch.float16}
    with pytest.raises(ValueError, match="'float13'"):
        dtype_of("float13")
