"""Reproducibility: seeds, deterministic algorithms, device choice and an environment stamp."""
from __future__ import annotations

import os
import platform
import random
import re
import warnings

import numpy as np
import torch

from lab.workbook.validate import ParameterError

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


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what platform reports."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _blas() -> str:
    """torch's BLAS and the BLAS numpy/scipy load (via threadpoolctl): both change float results."""
    cfg = torch.__config__.show()
    m = re.search(r"BLAS_INFO=(\w+)", cfg)
    parts = [f"torch:{m[1] if m else 'unknown'}" + ("+mkldnn" if torch.backends.mkldnn.is_available() else "")]
    try:
        from threadpoolctl import threadpool_info

        parts += sorted({f"numpy:{i.get('internal_api')}" for i in threadpool_info() if i.get("user_api") == "blas"})
    except ImportError:  # pragma: no cover
        pass
    return ",".join(parts)


def stamp(device: torch.device | str = "cpu", seed: int | None = None) -> dict:
    """Environment facts that decide the numbers: versions, device, CPU model and the ATen kernel set in use
    (ATEN_CPU_CAPABILITY), BLAS, dtype, TF32, determinism, threads; on CUDA the GPU, its driver and CUDA."""
    dev = torch.device(device)
    out = {
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.machine(),
        "cpu": cpu_model(),
        "cpu_kernels": torch.backends.cpu.get_cpu_capability(),
        "aten_cpu_capability": os.environ.get("ATEN_CPU_CAPABILITY", "native"),
        "blas": _blas(),
        "default_dtype": str(torch.get_default_dtype()).replace("torch.", ""),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "threads": torch.get_num_threads(),
        "mkl_threads": _mkl_threads(),
        "seed": seed,
    }
    if dev.type == "cuda":
        out["cuda"] = torch.version.cuda
        out["cudnn"] = torch.backends.cudnn.version()
        out["gpu_capability"] = ".".join(map(str, torch.cuda.get_device_capability(dev)))
        out["driver"] = _nvidia_driver()
    return out


def _mkl_threads() -> int | None:
    """MKL's own thread count (torch's BLAS on x86), from torch's parallel info; None without MKL."""
    m = re.search(r"mkl_get_max_threads\(\)\s*:\s*(\d+)", torch.__config__.parallel_info())
    return int(m[1]) if m else None


def _nvidia_driver() -> str:
    """The NVIDIA driver version (nvidia-smi), or 'unknown'."""
    import subprocess

    try:
        r = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                           text=True, timeout=10)
        return r.stdout.strip().splitlines()[0] if r.returncode == 0 and r.stdout.strip() else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def format_stamp(s: dict) -> str:
    """One readable line of the stamp."""
    return " · ".join(f"{k}={v}" for k, v in s.items())


STAMP_MIMETYPE = "application/vnd.lab.stamp+json"


def show(s: dict) -> None:
    """Display the stamp: one readable line, and the stamp as JSON for the report and the robustness matrix."""
    try:
        from IPython import get_ipython
        from IPython.display import display
        if get_ipython() is not None:
            display({"text/plain": format_stamp(s), STAMP_MIMETYPE: s}, raw=True)
            return
    except ImportError:  # pragma: no cover
        pass
    print(format_stamp(s))
