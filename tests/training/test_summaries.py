"""The run summaries and the MNIST recipe, moved out of chapters 01, 03, 04 and 06: they equal the code they replace."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lab.data import mnist
from lab.flat import make_loss_fn
from lab.models import SimpleMLP
from lab.training import (
    StreamRun,
    intrinsic_floor,
    intrinsic_std,
    phase_median,
    squared_errors,
    tail_medians,
    train,
    train_mnist_mlp,
)


def test_phase_median_skips_the_first_window() -> None:
    x = np.r_[np.full(10, np.nan), np.arange(90.0)]
    assert phase_median(x, 0.0, 0.2, start=10) == float(np.nanmedian(x[10:20]))
    assert phase_median(x, 0.8, 1.0, start=10) == float(np.median(x[80:]))
    with pytest.raises(ValueError, match="lo < hi"):
        phase_median(x, 0.5, 0.5)


@pytest.mark.parametrize("steps, evals", [(600, 25), (13, 1), (70, 7), (30, 3)])
def test_tail_medians_is_the_last_tenth(steps: int, evals: int) -> None:
    rng = np.random.default_rng(0)
    r = StreamRun(rng.random(steps), np.ones(steps), np.arange(evals), rng.random(evals), torch.zeros(1))
    n, m = max(steps // 10, 1), max(evals // 10, 1)
    assert tail_medians(r) == (float(np.median(r.loss[-n:])), float(np.median(r.held_loss[-m:])))


def test_intrinsic_floor_equals_the_chapter_06_loop() -> None:
    forward = lambda t, x: torch.tanh(x @ t[:3]) * t[3]                      # noqa: E731
    target = lambda x: x[:, 0] * x[:, 1]                                     # noqa: E731
    snaps = [torch.tensor([0.5, -0.2, 0.1, 1.0]), torch.tensor([0.4, 0.1, 0.3, 0.8])]
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    b, nb = 64, 16
    by_hand = math.sqrt(np.mean([intrinsic_std(squared_errors(forward, th, torch.randn(nb * b, 3, generator=g1),
                                                              target), b) ** 2 for th in snaps]))
    assert intrinsic_floor(forward, snaps, target, b, nb, g2) == by_hand


def test_train_mnist_mlp_is_the_chapters_block() -> None:
    """The recipe consumes the random streams exactly as chapters 01, 03 and 04 did: the same θ, bit for bit."""
    net = train_mnist_mlp(seed=3, n_train=200, width=16, depth=2, steps=5, lr=3e-3, n_test=50)
    data = mnist(n_train=200, n_test=50, seed=3, dtype=torch.float64)
    torch.manual_seed(3)
    model = SimpleMLP(width=16, depth=2)
    loss_fn, theta0, _ = make_loss_fn(model, data.x_train, data.y_train)
    theta, hist = train(loss_fn, theta0, 5, opt="adam", lr=3e-3, progress=False)
    assert torch.equal(net.theta0, theta0) and torch.equal(net.theta, theta)
    np.testing.assert_array_equal(net.history.loss, hist.loss)
    assert float(net.loss_fn(net.theta)) == float(loss_fn(theta))
