"""Tests for lab.models: parameter counts, activation check, output shapes."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from lab.models import ACTIVATIONS, ReLURegressionNet, SimpleMLP, linear_regression


def _count(width: int, depth: int, in_dim: int, out_dim: int) -> int:
    if depth == 0:
        return in_dim * out_dim + out_dim
    return (in_dim * width + width) + (depth - 1) * (width * width + width) + (width * out_dim + out_dim)


@pytest.mark.parametrize("width, depth", [(1, 0), (1, 1), (100, 1), (7, 3), (32, 2)])
def test_simple_mlp_parameter_count(width: int, depth: int) -> None:
    m = SimpleMLP(width=width, depth=depth)
    assert sum(p.numel() for p in m.parameters()) == _count(width, depth, 784, 10)
    m = SimpleMLP(width=width, depth=depth, in_dim=5, out_dim=2)
    assert sum(p.numel() for p in m.parameters()) == _count(width, depth, 5, 2)
    assert (m.width, m.depth) == (width, depth)


def test_default_mlp_is_784_100_10() -> None:
    m = SimpleMLP()
    assert sum(p.numel() for p in m.parameters()) == 784 * 100 + 100 + 100 * 10 + 10 == 79510
    assert m(torch.zeros(3, 784)).shape == (3, 10)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_activation_used(activation: str) -> None:
    m = SimpleMLP(width=4, depth=2, activation=activation, in_dim=3, out_dim=2)
    acts = [mod for mod in m if not isinstance(mod, nn.Linear)]
    assert len(acts) == 2 and all(isinstance(a, ACTIVATIONS[activation]) for a in acts)


@pytest.mark.parametrize("bad", ["softplus", "ReLU", ""])
def test_bad_activation_names_parameter(bad: str) -> None:
    with pytest.raises(ValueError, match="'activation'") as e:
        SimpleMLP(activation=bad)
    assert repr(bad) in str(e.value) and "relu" in str(e.value)


@pytest.mark.parametrize("width, depth", [(0, 1), (5, -1)])
def test_bad_width_depth(width: int, depth: int) -> None:
    with pytest.raises(ValueError, match="width"):
        SimpleMLP(width=width, depth=depth)


def test_seed002_net_shape_and_size() -> None:
    net = ReLURegressionNet()
    out = net(torch.randn(17, 3))
    assert out.shape == (17, 1)
    assert sum(p.numel() for p in net.parameters()) == (3 * 100 + 100) + (100 * 100 + 100) + (100 + 1)
    assert ReLURegressionNet(hidden=8)(torch.randn(2, 3)).shape == (2, 1)


def test_linear_regression_module() -> None:
    assert sum(p.numel() for p in linear_regression(6).parameters()) == 7
    assert sum(p.numel() for p in linear_regression(6, bias=False).parameters()) == 6
