"""Plain nn.Modules used across chapters.

Every model here takes a batch of inputs of shape (n, in_dim), in the module's dtype and on its device, and is
usually turned into a loss of a flat parameter vector θ with `lab.flat.make_loss_fn` (or into a forward(θ, x) with
`lab.flat.make_forward`).

Attributes:
    ACTIVATIONS: activation name ("relu", "tanh", "gelu", "sigmoid") → the nn.Module class that builds it; the
        allowed values of the `activation` argument of `SimpleMLP` and `ResidualMLP`.
"""
from __future__ import annotations

from torch import nn

__all__ = ["ACTIVATIONS", "SimpleMLP", "LinearRegression", "ResidualMLP", "linear_regression", "ReLURegressionNet"]

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "sigmoid": nn.Sigmoid}


class SimpleMLP(nn.Sequential):
    """in_dim → `depth` hidden layers of `width` units with `activation` → out_dim (MNIST by default).

    An nn.Sequential of Linear and activation layers: with depth = d it has 2d + 1 layers (depth 0 is a linear
    model). Input (n, in_dim), output (n, out_dim) logits, in the module's dtype and device (float32 by default).

    Args:
        width: units per hidden layer, >= 1.
        depth: number of hidden layers, >= 0.
        activation: a key of ACTIVATIONS.
        in_dim: input features (784 = flattened 28×28 MNIST).
        out_dim: outputs (10 MNIST classes).

    Attributes:
        width, depth, activation: the constructor's arguments, kept for labels and reports.

    Raises:
        ValueError: for an unknown activation, width < 1 or depth < 0.

    Example:
        >>> import torch
        >>> from lab.models import SimpleMLP
        >>> m = SimpleMLP(width=8, depth=2, in_dim=4, out_dim=3)
        >>> len(m), m(torch.zeros(5, 4)).shape
        (5, torch.Size([5, 3]))
    """

    def __init__(self, width: int = 100, depth: int = 1, activation: str = "relu", in_dim: int = 784,
                 out_dim: int = 10):
        if activation not in ACTIVATIONS:
            raise ValueError(f"parameter 'activation' = {activation!r} is not allowed: "
                             f"expected one of {tuple(ACTIVATIONS)}")
        if width < 1 or depth < 0:
            raise ValueError(f"parameters 'width' = {width}, 'depth' = {depth}: need width >= 1, depth >= 0")
        layers: list[nn.Module] = []
        d = in_dim
        for _ in range(depth):
            layers += [nn.Linear(d, width), ACTIVATIONS[activation]()]
            d = width
        layers.append(nn.Linear(d, out_dim))
        super().__init__(*layers)
        self.width, self.depth, self.activation = width, depth, activation


class LinearRegression(nn.Module):
    """y = Xw + b, returning shape (n,) so that it meets targets of shape (n,) without broadcasting.

    Args:
        d: input features (the columns of X).
        bias: whether to fit the intercept b.

    Attributes:
        linear: the nn.Linear(d, 1) holding w (linear.weight, shape (1, d)) and b (linear.bias, shape (1,)).

    Example:
        >>> import torch
        >>> from lab.models import LinearRegression
        >>> LinearRegression(3)(torch.zeros(5, 3)).shape
        torch.Size([5])
    """

    def __init__(self, d: int, bias: bool = True):
        super().__init__()
        self.linear = nn.Linear(d, 1, bias=bias)

    def forward(self, x):
        """Predictions, shape (n,).

        Args:
            x: inputs, shape (n, d), in the module's dtype and device.

        Returns:
            Xw + b, shape (n,).
        """
        return self.linear(x).squeeze(-1)


class ResidualMLP(nn.Module):
    """in_dim → width, then `depth` residual blocks x ← x + act(Wx + b), → out_dim (a skip-connection MLP).

    Input (n, in_dim), output (n, out_dim) logits, in the module's dtype and device.

    Args:
        width: units of the residual stream (every block maps width → width).
        depth: number of residual blocks (0: a one-hidden-layer MLP).
        activation: a key of ACTIVATIONS, used after the input layer and inside every block.
        in_dim: input features (784 = flattened 28×28 MNIST).
        out_dim: outputs (10 MNIST classes).

    Attributes:
        inp: the input nn.Linear(in_dim, width).
        blocks: nn.ModuleList of `depth` nn.Linear(width, width).
        out: the output nn.Linear(width, out_dim).
        act: the activation module.

    Raises:
        ValueError: for an unknown activation.

    Example:
        >>> import torch
        >>> from lab.models import ResidualMLP
        >>> m = ResidualMLP(width=8, depth=2, in_dim=4, out_dim=3)
        >>> len(m.blocks), m(torch.zeros(5, 4)).shape
        (2, torch.Size([5, 3]))
    """

    def __init__(self, width: int = 32, depth: int = 4, activation: str = "relu", in_dim: int = 784,
                 out_dim: int = 10):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"parameter 'activation' = {activation!r} is not allowed: "
                             f"expected one of {tuple(ACTIVATIONS)}")
        self.inp = nn.Linear(in_dim, width)
        self.blocks = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.out = nn.Linear(width, out_dim)
        self.act = ACTIVATIONS[activation]()

    def forward(self, x):
        """Forward pass.

        Args:
            x: inputs, shape (n, in_dim), in the module's dtype and device.

        Returns:
            Logits, shape (n, out_dim).
        """
        x = self.act(self.inp(x))
        for block in self.blocks:
            x = x + self.act(block(x))
        return self.out(x)


def linear_regression(d: int, bias: bool = True) -> LinearRegression:
    """y = Xw + b as a module (parameters: linear.weight then linear.bias, as in the design matrix [X, 1]).

    Args:
        d: input features.
        bias: whether to fit the intercept.

    Returns:
        A `LinearRegression`; flattened, its parameters are [w_1, ..., w_d, b], i.e. θ of length d + 1 (d without
        bias), in float32 unless converted.

    Example:
        >>> from lab.models import linear_regression
        >>> [name for name, _ in linear_regression(3).named_parameters()]
        ['linear.weight', 'linear.bias']
    """
    return LinearRegression(d, bias)


class ReLURegressionNet(nn.Module):
    """A 3 → hidden → hidden → 1 ReLU regression net (the learning-rate notes, seed 002, train it on `ratio_target`).

    Three Linear layers, `input_layer`, `hidden_layer`, `output_layer`; forward returns shape (n, 1).

    Args:
        hidden: units in each of the two hidden layers; the net has 3·h + h + h·h + h + h + 1 parameters.

    Attributes:
        input_layer: nn.Linear(3, hidden).
        hidden_layer: nn.Linear(hidden, hidden).
        output_layer: nn.Linear(hidden, 1).
        act: the nn.ReLU used after the first two layers.

    Example:
        >>> import torch
        >>> from lab.models import ReLURegressionNet
        >>> net = ReLURegressionNet(hidden=4)
        >>> net(torch.zeros(5, 3)).shape, sum(p.numel() for p in net.parameters())
        (torch.Size([5, 1]), 41)
    """

    def __init__(self, hidden: int = 100):
        super().__init__()
        self.input_layer = nn.Linear(3, hidden)
        self.hidden_layer = nn.Linear(hidden, hidden)
        self.output_layer = nn.Linear(hidden, 1)
        self.act = nn.ReLU()

    def forward(self, x):
        """Forward pass, returning shape (n, 1).

        Args:
            x: inputs, shape (n, 3), in the module's dtype and device.

        Returns:
            Predictions, shape (n, 1) (reshape to (n,) before comparing with a target of shape (n,)).
        """
        x = self.act(self.input_layer(x))
        x = self.act(self.hidden_layer(x))
        return self.output_layer(x)
