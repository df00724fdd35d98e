"""Recipes: the set-ups several chapters share, as one call (data → model → pure loss → training)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lab.data import Split, mnist
from lab.flat import FlatSpec, make_loss_fn
from lab.models import SimpleMLP
from lab.training.loops import History, train

__all__ = ["TrainedNet", "train_mnist_mlp"]


@dataclass
class TrainedNet:
    """A model trained as a pure function of its flat parameters.

    Attributes:
        data: the MNIST split it was trained on (`lab.data.Split`).
        model: the module (its own parameters untouched: training runs on the flat vector).
        loss_fn: θ (P,) ↦ mean cross-entropy over data.x_train, in θ's dtype.
        spec: how θ maps onto the model's parameters.
        theta0: the initial flat parameters (P,), float32, on the device.
        theta: the trained flat parameters (P,), float32, on the device.
        history: the training history (losses, step lengths, snapshots).
    """

    data: Split
    model: nn.Module
    loss_fn: object
    spec: FlatSpec
    theta0: torch.Tensor
    theta: torch.Tensor
    history: History


def train_mnist_mlp(seed: int, n_train: int, width: int, depth: int, steps: int, lr: float,
                    device: str | torch.device = "cpu", n_test: int = 1000, opt: str = "adam",
                    **train_kwargs) -> TrainedNet:
    """MNIST (`lab.data.mnist`, shuffled by `seed`, float64 on `device`) → `SimpleMLP(width, depth)` initialised
    from `torch.manual_seed(seed)` → the full-batch cross-entropy as a pure loss → `steps` of full-batch `opt`
    (`lab.training.train`) from the initialisation, in float32.

    Args:
        seed: data order and initialisation (a replicate's seed).
        n_train, n_test: images in the training and test sets.
        width, depth: the SimpleMLP's hidden units per layer and hidden layers.
        steps: training steps (0 keeps θ at the initialisation).
        lr: the learning rate.
        device: where the data and θ live.
        opt: "adam", "sgd" or "rmsprop".
        **train_kwargs: passed to `train` (e.g. snapshot_every, callback).

    Returns:
        A `TrainedNet`.

    Example:
        >>> net = train_mnist_mlp(seed=0, n_train=100, width=8, depth=1, steps=2, lr=1e-3, n_test=20)
        >>> net.theta.shape, len(net.history.loss), net.data.x_train.shape
        (torch.Size([6370]), 2, torch.Size([100, 784]))
    """
    data = mnist(n_train=n_train, n_test=n_test, seed=seed, dtype=torch.float64, device=device)
    torch.manual_seed(seed)
    model = SimpleMLP(width=width, depth=depth)
    loss_fn, theta0, spec = make_loss_fn(model, data.x_train, data.y_train)
    theta0 = theta0.to(device)
    train_kwargs.setdefault("progress", False)
    if steps:
        theta, history = train(loss_fn, theta0, steps, opt=opt, lr=lr, **train_kwargs)
    else:
        theta, history = theta0, History(np.zeros(0), np.zeros(0))
    return TrainedNet(data, model, loss_fn, spec, theta0, theta, history)
