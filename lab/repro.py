"""Reproducibility: seeds, deterministic algorithms, device choice and an environment stamp."""
from __future__ import annotations

import os
import platform
import random
import warnings

import numpy as np
import torch

from lab.validate import ParameterError

DEVICES = ("cpu", "cuda")


def get_device(device: str) -> torch.device:
    """The torch device for 'cpu' or 'cuda'; a clear error if cuda is asked for and absent."""
    if device not in DEVICES:
        raise ParameterError(f"parameter 'device' = {device!r} is not allowed: expected one of {DEVICES}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ParameterError("parameter 'device' = 'cuda' but no CUDA GPU is available here; use device='cpu'")
    return torch.device(device)


def setup(seed: int = 0, device: str = "cpu", deterministic: bool = True, tf32: bool = False) -> dict:
    """Seed every generator, set deterministic algorithms and TF32, choose the device; return the stamp."""
    dev = get_device(device)
    # torch's own internals call the deprecated torch.jit.script; the warning is noise in chapter outputs
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    return stamp(dev, seed)


def stamp(device: torch.device | str = "cpu", seed: int | None = None) -> dict:
    """Environment facts that decide the numbers: versions, device, dtype, TF32, determinism, threads."""
    dev = torch.device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else (platform.processor() or platform.machine())
    return {
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "device": str(dev),
        "device_name": name,
        "default_dtype": str(torch.get_default_dtype()).replace("torch.", ""),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "threads": torch.get_num_threads(),
        "seed": seed,
    }


def format_stamp(s: dict) -> str:
    """One readable line of the stamp."""
    return " · ".join(f"{k}={v}" for k, v in s.items())
