"""Plain nn.Modules used across chapters."""
from __future__ import annotations

from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "sigmoid": nn.Sigmoid}


class SimpleMLP(nn.Sequential):
    """in_dim → `depth` hidden layers of `width` units with `activation` → out_dim (MNIST by default)."""

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
    """y = Xw + b, returning shape (n,) so that it meets targets of shape (n,) without broadcasting."""

    def __init__(self, d: int, bias: bool = True):
        super().__init__()
        self.linear = nn.Linear(d, 1, bias=bias)

    def forward(self, x):
        """Predictions, shape (n,)."""
        return self.linear(x).squeeze(-1)


class ResidualMLP(nn.Module):
    """in_dim → width, then `depth` residual blocks x ← x + act(Wx + b), → out_dim (a skip-connection MLP)."""

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
        """Forward pass."""
        x = self.act(self.inp(x))
        for block in self.blocks:
            x = x + self.act(block(x))
        return self.out(x)


def linear_regression(d: int, bias: bool = True) -> LinearRegression:
    """y = Xw + b as a module (parameters: linear.weight then linear.bias, as in the design matrix [X, 1])."""
    return LinearRegression(d, bias)


class Seed002Net(nn.Module):
    """The 3-100-100-1 ReLU net of the learning-rate notes (seed 002)."""

    def __init__(self, hidden: int = 100):
        super().__init__()
        self.input_conv = nn.Linear(3, hidden)
        self.hidden_conv = nn.Linear(hidden, hidden)
        self.output_conv = nn.Linear(hidden, 1)
        self.act = nn.ReLU()

    def forward(self, x):
        """Forward pass, returning shape (n, 1)."""
        x = self.act(self.input_conv(x))
        x = self.act(self.hidden_conv(x))
        return self.output_conv(x)
