"""Tests for lab.workbook.repro: seeding, device choice and the environment stamp."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from lab.workbook.repro import format_stamp, get_device, setup, stamp
from lab.workbook.validate import ParameterError


def test_setup_is_deterministic() -> None:
    setup(seed=123)
    a = (torch.randn(5), np.random.rand(3), random.random())
    setup(seed=123)
    b = (torch.randn(5), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    setup(seed=124)
    assert not torch.equal(torch.randn(5), a[0])


def test_setup_switches_and_stamp() -> None:
    s = setup(seed=7, deterministic=True, tf32=False)
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.backends.cuda.matmul.allow_tf32 is False
    assert s["seed"] == 7 and s["deterministic"] is True and s["tf32_matmul"] is False and s["device"] == "cpu"
    s = setup(seed=7, deterministic=False)
    assert not torch.are_deterministic_algorithms_enabled() and s["deterministic"] is False


def test_stamp_keys_and_values() -> None:
    s = stamp("cpu", seed=3)
    for key in ("torch", "device", "tf32_matmul", "deterministic", "threads"):
        assert key in s
    assert s["torch"] == torch.__version__ and s["device"] == "cpu" and s["seed"] == 3
    assert s["threads"] == torch.get_num_threads() and isinstance(s["threads"], int)
    assert s["deterministic"] == torch.are_deterministic_algorithms_enabled()
    line = format_stamp(s)
    assert f"torch={torch.__version__}" in line and "device=cpu" in line


def test_get_device_cpu() -> None:
    assert get_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")
def test_get_device_cuda_without_gpu_names_device() -> None:
    with pytest.raises(ParameterError, match="'device'") as e:
        get_device("cuda")
    assert "cpu" in str(e.value)
    with pytest.raises(ParameterError, match="'device'"):
        setup(device="cuda")


def test_get_device_unknown_names_device() -> None:
    with pytest.raises(ParameterError, match="'device'") as e:
        get_device("tpu")
    assert "'tpu'" in str(e.value) and "cuda" in str(e.value)
