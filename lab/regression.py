"""Linear regression in closed form: the loss along a line, least squares, and other loss criteria."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def design(x: torch.Tensor, bias: bool = True) -> torch.Tensor:
    """[X, 1] (or X): the design matrix acting on θ = (w, b)."""
    return torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype, device=x.device)], 1) if bias else x


@dataclass(frozen=True)
class Quadratic:
    """L(θ + h·d) = a + b·h + c·h² exactly (MSE of a linear model)."""

    a: float
    b: float
    c: float

    def __call__(self, h: np.ndarray) -> np.ndarray:
        """The loss at distance h."""
        return self.a + self.b * h + self.c * h ** 2

    def fd(self, h: np.ndarray) -> np.ndarray:
        """f(0) − 2f(h) + f(2h) = 2c·h²."""
        return 2 * self.c * np.asarray(h, dtype=float) ** 2

    def curvature(self, h: np.ndarray) -> np.ndarray:
        """FD/h² = 2c, for every h."""
        return np.full_like(np.asarray(h, dtype=float), 2 * self.c)

    def grit(self, h: np.ndarray) -> np.ndarray:
        """FD/h = 2c·h: slope +1 on log-log axes."""
        return 2 * self.c * np.asarray(h, dtype=float)

    def tangent(self, h: np.ndarray) -> np.ndarray:
        """f(h) − f(0) − h·f'(0) = c·h²."""
        return self.c * np.asarray(h, dtype=float) ** 2


def mse_along(x: torch.Tensor, y: torch.Tensor, theta: torch.Tensor, d: torch.Tensor, bias: bool = True) -> Quadratic:
    """Closed-form coefficients of mean((X̃(θ + h·d) − y)²) in h (float64): a = mean r², b = 2·mean r·s, c = mean s²."""
    xt = design(x.double(), bias)
    r = xt @ theta.double() - y.double()
    s = xt @ d.double()
    return Quadratic(float((r * r).mean()), float(2 * (r * s).mean()), float((s * s).mean()))


def fit_quadratic(h: np.ndarray, f: np.ndarray) -> Quadratic:
    """Least-squares fit of f(h) = a + b·h + c·h² in float64 (exact on noise-free quadratic data)."""
    h = np.asarray(h, dtype=np.float64)
    v = np.stack([np.ones_like(h), h, h * h], 1)
    a, b, c = np.linalg.lstsq(v, np.asarray(f, dtype=np.float64), rcond=None)[0]
    return Quadratic(float(a), float(b), float(c))


def lstsq(x: torch.Tensor, y: torch.Tensor, bias: bool = True) -> tuple[torch.Tensor, float]:
    """The least-squares optimum θ* (float64) and its loss."""
    xt = design(x.double(), bias)
    sol = torch.linalg.lstsq(xt, y.double()[:, None], driver="gelsd").solution[:, 0]
    return sol, float(((xt @ sol - y.double()) ** 2).mean())


def mse_hessian(x: torch.Tensor, bias: bool = True) -> torch.Tensor:
    """The (constant) Hessian 2·X̃ᵀX̃/n of the MSE, in float64."""
    xt = design(x.double(), bias)
    return 2 * xt.T @ xt / len(xt)


def huber(pred: torch.Tensor, target: torch.Tensor, delta: float = 1.0) -> torch.Tensor:
    """Mean Huber loss with transition δ."""
    return torch.nn.functional.huber_loss(pred, target, delta=delta)


def log_cosh(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean log(cosh(r)), computed stably as |r| + log1p(exp(−2|r|)) − log 2."""
    r = (pred - target).abs()
    return (r + torch.log1p(torch.exp(-2 * r)) - np.log(2.0)).mean()


def l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error."""
    return (pred - target).abs().mean()


def logistic(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean logistic loss for labels in {0, 1} on logits."""
    return torch.nn.functional.binary_cross_entropy_with_logits(pred, target)


def kink_distances(x: torch.Tensor, y: torch.Tensor, theta: torch.Tensor, d: torch.Tensor, at: float = 0.0,
                   bias: bool = True) -> np.ndarray:
    """Positive h at which a residual r_i + h·s_i crosses ±`at` (0 for L1; δ for Huber), sorted."""
    xt = design(x.double(), bias)
    r = (xt @ theta.double() - y.double()).cpu().numpy()
    s = (xt @ d.double()).cpu().numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        hs = np.concatenate([(t - r) / s for t in ({0.0} if at == 0 else {at, -at})])
    return np.sort(hs[np.isfinite(hs) & (hs > 0)])


PIECEWISE = ("l1", "huber")


@dataclass(frozen=True)
class PiecewiseLine:
    """The L1 or Huber loss of a linear model along θ + h·d, exactly (float64): mean ℓ(r_i + h·s_i) with its
    kinks, the h at which a residual crosses 0 (L1) or ±δ (Huber)."""

    r: np.ndarray
    s: np.ndarray
    loss: str
    delta: float

    def __call__(self, h: np.ndarray) -> np.ndarray:
        """The loss at each distance h."""
        h = np.atleast_1d(np.asarray(h, dtype=np.float64))
        z = np.abs(self.r[None, :] + h[:, None] * self.s[None, :])
        if self.loss == "l1":
            return z.mean(1)
        return np.where(z < self.delta, 0.5 * z**2, self.delta * (z - 0.5 * self.delta)).mean(1)

    def fd(self, h: np.ndarray) -> np.ndarray:
        """f(0) − 2f(h) + f(2h), computed from the exact line function."""
        h = np.asarray(h, dtype=np.float64)
        return self(np.zeros_like(h)) - 2 * self(h) + self(2 * h)

    @property
    def kinks(self) -> np.ndarray:
        """Positive h of every kink, sorted."""
        at = 0.0 if self.loss == "l1" else self.delta
        with np.errstate(divide="ignore", invalid="ignore"):
            hs = np.concatenate([(t - self.r) / self.s for t in ({0.0} if at == 0 else {at, -at})])
        return np.sort(hs[np.isfinite(hs) & (hs > 0)])

    @property
    def curvature_at_0(self) -> float:
        """f''(0): mean s_i² over the residuals inside (−δ, δ) for Huber (their quadratic part); 0 for L1."""
        if self.loss == "l1":
            return 0.0
        inside = np.abs(self.r) < self.delta
        return float((self.s[inside] ** 2).sum() / len(self.s))


def piecewise_along(x: torch.Tensor, y: torch.Tensor, theta: torch.Tensor, d: torch.Tensor, loss: str = "huber",
                    delta: float = 1.0, bias: bool = True) -> PiecewiseLine:
    """The exact L1 or Huber loss (torch's huber_loss convention, mean reduction) along θ + h·d: between kinks it is
    linear (L1) or quadratic (Huber), so FD(h) = 0 (L1) or f''(0)·h² (Huber) exactly until 2h passes the
    first kink."""
    if loss not in PIECEWISE:
        raise ValueError(f"parameter 'loss' = {loss!r} is not allowed: expected one of {PIECEWISE}")
    if loss == "huber" and not delta > 0:
        raise ValueError(f"parameter 'delta' = {delta} is not allowed: expected delta > 0")
    xt = design(x.double(), bias)
    r = (xt @ theta.double() - y.double()).cpu().numpy()
    s = (xt @ d.double()).cpu().numpy()
    return PiecewiseLine(r, s, loss, float(delta))
