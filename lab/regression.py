"""Linear regression in closed form: the loss along a line, least squares, and other loss criteria.

The model is pred = X̃·θ with the design matrix X̃ = [X, 1] (`design`) and θ = (w, b). Its MSE along any line is
exactly a quadratic in h (`Quadratic`, `mse_along`): the noise-free reference for the finite-difference probes.
L1 and Huber losses along a line are piecewise (`PiecewiseLine`, `piecewise_along`); `PIECEWISE` = ("l1", "huber")
names them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["design", "Quadratic", "mse_along", "fit_quadratic", "lstsq", "mse_hessian", "huber", "log_cosh", "l1",
           "logistic", "kink_distances", "PIECEWISE", "PiecewiseLine", "piecewise_along"]


def design(x: torch.Tensor, bias: bool = True) -> torch.Tensor:
    """[X, 1] (or X): the design matrix acting on θ = (w, b).

    Args:
        x: the inputs, shape (n, p), any floating dtype and device.
        bias: append a column of ones (for the intercept b).

    Returns:
        torch.Tensor: shape (n, p + 1) (or (n, p) without bias), x's dtype and device.

    Example:
        >>> import torch
        >>> from lab.regression import design
        >>> design(torch.tensor([[2.0], [3.0]])).tolist()
        [[2.0, 1.0], [3.0, 1.0]]
    """
    return torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype, device=x.device)], 1) if bias else x


@dataclass(frozen=True)
class Quadratic:
    """L(θ + h·d) = a + b·h + c·h² exactly (MSE of a linear model).

    Produced by `mse_along` and `fit_quadratic`. Its methods give the exact finite-difference quantities of
    `lab.numerics.DoublingProbe` for this loss, the reference a measured probe is compared with.

    Attributes:
        a: the loss at h = 0.
        b: the slope at h = 0 (f'(0)).
        c: half the curvature (f'' = 2c).

    Example:
        >>> import numpy as np
        >>> from lab.regression import Quadratic
        >>> q = Quadratic(a=1.0, b=-2.0, c=0.5)
        >>> h = np.array([1.0, 2.0])
        >>> q(h).tolist(), q.fd(h).tolist(), q.curvature(h).tolist(), q.grit(h).tolist(), q.tangent(h).tolist()
        ([-0.5, -1.0], [1.0, 4.0], [1.0, 1.0], [1.0, 2.0], [0.5, 2.0])
    """

    a: float
    b: float
    c: float

    def __call__(self, h: np.ndarray) -> np.ndarray:
        """The loss at distance h.

        Args:
            h: distances, a float or an array of any shape.

        Returns:
            a + b·h + c·h², of h's shape.
        """
        return self.a + self.b * h + self.c * h ** 2

    def fd(self, h: np.ndarray) -> np.ndarray:
        """f(0) − 2f(h) + f(2h) = 2c·h².

        Args:
            h: distances, any shape.

        Returns:
            np.ndarray: of h's shape, float64.
        """
        return 2 * self.c * np.asarray(h, dtype=float) ** 2

    def curvature(self, h: np.ndarray) -> np.ndarray:
        """FD/h² = 2c, for every h.

        Args:
            h: distances, any shape.

        Returns:
            np.ndarray: 2c in h's shape, float64.
        """
        return np.full_like(np.asarray(h, dtype=float), 2 * self.c)

    def grit(self, h: np.ndarray) -> np.ndarray:
        """FD/h = 2c·h: slope +1 on log-log axes.

        The roughness the notes call "grit" (as `lab.numerics.DoublingProbe.grit`).

        Args:
            h: distances, any shape.

        Returns:
            np.ndarray: of h's shape, float64.
        """
        return 2 * self.c * np.asarray(h, dtype=float)

    def tangent(self, h: np.ndarray) -> np.ndarray:
        """f(h) − f(0) − h·f'(0) = c·h².

        Args:
            h: distances, any shape.

        Returns:
            np.ndarray: of h's shape, float64.
        """
        return self.c * np.asarray(h, dtype=float) ** 2


def mse_along(x: torch.Tensor, y: torch.Tensor, theta: torch.Tensor, d: torch.Tensor, bias: bool = True) -> Quadratic:
    """Closed-form coefficients of mean((X̃(θ + h·d) − y)²) in h (float64): a = mean r², b = 2·mean r·s, c = mean s².

    Here r = X̃θ − y are the residuals at θ and s = X̃d their rate of change along d.

    Args:
        x: the inputs, shape (n, p), any floating dtype.
        y: the targets, shape (n,).
        theta: the parameters (w, b), shape (p + 1,) (or (p,) without bias).
        d: the direction, θ's shape.
        bias: whether θ has an intercept (see `design`).

    Returns:
        The exact Quadratic of the MSE along θ + h·d.

    Example:
        >>> import torch
        >>> from lab.regression import mse_along
        >>> x, y = torch.tensor([[1.0], [2.0]]), torch.tensor([1.0, 2.0])
        >>> mse_along(x, y, theta=torch.zeros(2), d=torch.tensor([1.0, 0.0]))      # (1 − h)²·mean y² = 2.5(1 − h)²
        Quadratic(a=2.5, b=-5.0, c=2.5)
    """
    xt = design(x.double(), bias)
    r = xt @ theta.double() - y.double()
    s = xt @ d.double()
    return Quadratic(float((r * r).mean()), float(2 * (r * s).mean()), float((s * s).mean()))


def fit_quadratic(h: np.ndarray, f: np.ndarray) -> Quadratic:
    """Least-squares fit of f(h) = a + b·h + c·h² in float64 (exact on noise-free quadratic data).

    Args:
        h: distances, shape (n,), n ≥ 3.
        f: the loss at each distance, shape (n,).

    Returns:
        The fitted Quadratic.

    Example:
        >>> import numpy as np
        >>> from lab.regression import fit_quadratic
        >>> h = np.array([0.0, 1.0, 2.0, 3.0])
        >>> q = fit_quadratic(h, 1 + 2 * h + 3 * h ** 2)
        >>> round(q.a, 6), round(q.b, 6), round(q.c, 6)
        (1.0, 2.0, 3.0)
    """
    h = np.asarray(h, dtype=np.float64)
    v = np.stack([np.ones_like(h), h, h * h], 1)
    a, b, c = np.linalg.lstsq(v, np.asarray(f, dtype=np.float64), rcond=None)[0]
    return Quadratic(float(a), float(b), float(c))


def lstsq(x: torch.Tensor, y: torch.Tensor, bias: bool = True) -> tuple[torch.Tensor, float]:
    """The least-squares optimum θ* (float64) and its loss.

    Solved by torch.linalg.lstsq (gelsd driver: the minimum-norm solution when X̃ is rank-deficient).

    Args:
        x: the inputs, shape (n, p), any floating dtype (CPU: the gelsd driver).
        y: the targets, shape (n,).
        bias: fit an intercept (see `design`).

    Returns:
        (θ*, loss): θ* = (w, b), shape (p + 1,) (or (p,)), float64; the MSE at θ* as a float.

    Example:
        >>> import torch
        >>> from lab.regression import lstsq
        >>> theta, loss = lstsq(torch.tensor([[0.0], [1.0], [2.0]]), torch.tensor([1.0, 3.0, 5.0]))   # y = 2x + 1
        >>> [round(v, 6) for v in theta.tolist()], round(loss, 6)
        ([2.0, 1.0], 0.0)
    """
    xt = design(x.double(), bias)
    sol = torch.linalg.lstsq(xt, y.double()[:, None], driver="gelsd").solution[:, 0]
    return sol, float(((xt @ sol - y.double()) ** 2).mean())


def mse_hessian(x: torch.Tensor, bias: bool = True) -> torch.Tensor:
    """The (constant) Hessian 2·X̃ᵀX̃/n of the MSE, in float64.

    Args:
        x: the inputs, shape (n, p), any floating dtype and device.
        bias: include the intercept (see `design`).

    Returns:
        torch.Tensor: shape (p + 1, p + 1) (or (p, p)), float64, on x's device.

    Example:
        >>> import torch
        >>> from lab.regression import mse_hessian
        >>> mse_hessian(torch.tensor([[1.0], [3.0]])).tolist()
        [[10.0, 4.0], [4.0, 2.0]]
    """
    xt = design(x.double(), bias)
    return 2 * xt.T @ xt / len(xt)


def huber(pred: torch.Tensor, target: torch.Tensor, delta: float = 1.0) -> torch.Tensor:
    """Mean Huber loss with transition δ.

    Per entry ½r² for |r| < δ and δ·(|r| − ½δ) beyond (torch.nn.functional.huber_loss), averaged.

    Args:
        pred: predictions, any shape, floating dtype.
        target: targets, pred's shape, dtype and device.
        delta: the transition δ > 0 between the quadratic and the linear part.

    Returns:
        torch.Tensor: the mean loss, a 0-d tensor in pred's dtype.

    Example:
        >>> import torch
        >>> from lab.regression import huber
        >>> float(huber(torch.tensor([0.0, 3.0]), torch.zeros(2)))      # (0 + 1·(3 − 0.5))/2
        1.25
    """
    return torch.nn.functional.huber_loss(pred, target, delta=delta)


def log_cosh(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean log(cosh(r)), computed stably as |r| + log1p(exp(−2|r|)) − log 2.

    Args:
        pred: predictions, any shape, floating dtype.
        target: targets, pred's shape, dtype and device.

    Returns:
        torch.Tensor: the mean loss, a 0-d tensor in pred's dtype.

    Example:
        >>> import torch
        >>> from lab.regression import log_cosh
        >>> pred = torch.tensor([1.0, -1.0], dtype=torch.float64)
        >>> round(float(log_cosh(pred, torch.zeros(2, dtype=torch.float64))), 6)     # log(cosh 1)
        0.433781
    """
    r = (pred - target).abs()
    return (r + torch.log1p(torch.exp(-2 * r)) - np.log(2.0)).mean()


def l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error.

    Args:
        pred: predictions, any shape, floating dtype.
        target: targets, broadcastable to pred.

    Returns:
        torch.Tensor: mean |pred − target|, a 0-d tensor.

    Example:
        >>> import torch
        >>> from lab.regression import l1
        >>> float(l1(torch.tensor([1.0, -3.0]), torch.zeros(2)))
        2.0
    """
    return (pred - target).abs().mean()


def logistic(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean logistic loss for labels in {0, 1} on logits.

    Args:
        pred: logits, any shape, floating dtype.
        target: labels 0 or 1, pred's shape, floating dtype (torch.nn.functional.binary_cross_entropy_with_logits).

    Returns:
        torch.Tensor: the mean loss, a 0-d tensor in pred's dtype.

    Example:
        >>> import torch
        >>> from lab.regression import logistic
        >>> round(float(logistic(torch.zeros(2), torch.tensor([0.0, 1.0]))), 6)    # log 2 at logit 0
        0.693147
    """
    return torch.nn.functional.binary_cross_entropy_with_logits(pred, target)


def kink_distances(x: torch.Tensor, y: torch.Tensor, theta: torch.Tensor, d: torch.Tensor, at: float = 0.0,
                   bias: bool = True) -> np.ndarray:
    """Positive h at which a residual r_i + h·s_i crosses ±`at` (0 for L1; δ for Huber), sorted.

    Here r = X̃θ − y and s = X̃d: the distances along θ + h·d where the L1 or Huber loss of the linear model has a
    kink.

    Args:
        x: the inputs, shape (n, p), any floating dtype.
        y: the targets, shape (n,).
        theta: the parameters (w, b), shape (p + 1,) (or (p,) without bias).
        d: the direction, θ's shape.
        at: the residual value at which the loss kinks: 0 for L1, δ for Huber (both ±δ are used).
        bias: whether θ has an intercept (see `design`).

    Returns:
        np.ndarray: the positive kink distances, sorted, float64 (a repeated distance appears once per crossing).

    Example:
        >>> import torch
        >>> from lab.regression import kink_distances
        >>> x, y = torch.tensor([[1.0], [2.0]]), torch.tensor([1.0, 4.0])     # residuals −1 + h, −4 + 2h
        >>> kink_distances(x, y, torch.zeros(2), torch.tensor([1.0, 0.0])).tolist()
        [1.0, 2.0]
    """
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
    kinks, the h at which a residual crosses 0 (L1) or ±δ (Huber).

    Produced by `piecewise_along`.

    Attributes:
        r: the residuals X̃θ − y at h = 0, shape (n,), float64.
        s: their rates of change X̃d along the line, shape (n,), float64.
        loss: "l1" or "huber" (one of PIECEWISE).
        delta: Huber's transition δ (unused for L1).

    Example:
        >>> import numpy as np
        >>> from lab.regression import PiecewiseLine
        >>> p = PiecewiseLine(r=np.array([-1.0]), s=np.array([1.0]), loss="l1", delta=1.0)     # |h − 1|
        >>> p(np.array([0.0, 1.0, 2.0])).tolist(), p.kinks.tolist(), p.fd(np.array([0.5, 1.0])).tolist()
        ([1.0, 0.0, 1.0], [1.0], [0.0, 2.0])
    """

    r: np.ndarray
    s: np.ndarray
    loss: str
    delta: float

    def __call__(self, h: np.ndarray) -> np.ndarray:
        """The loss at each distance h.

        Args:
            h: distances, a float or a 1-D array.

        Returns:
            np.ndarray: the mean loss per distance, shape (len(h),), float64.
        """
        h = np.atleast_1d(np.asarray(h, dtype=np.float64))
        z = np.abs(self.r[None, :] + h[:, None] * self.s[None, :])
        if self.loss == "l1":
            return z.mean(1)
        return np.where(z < self.delta, 0.5 * z**2, self.delta * (z - 0.5 * self.delta)).mean(1)

    def fd(self, h: np.ndarray) -> np.ndarray:
        """f(0) − 2f(h) + f(2h), computed from the exact line function.

        Args:
            h: distances, a float or a 1-D array.

        Returns:
            np.ndarray: FD per distance, shape (len(h),), float64.
        """
        h = np.asarray(h, dtype=np.float64)
        return self(np.zeros_like(h)) - 2 * self(h) + self(2 * h)

    @property
    def kinks(self) -> np.ndarray:
        """Positive h of every kink, sorted.

        Returns:
            np.ndarray: float64, as `kink_distances`.
        """
        at = 0.0 if self.loss == "l1" else self.delta
        with np.errstate(divide="ignore", invalid="ignore"):
            hs = np.concatenate([(t - self.r) / self.s for t in ({0.0} if at == 0 else {at, -at})])
        return np.sort(hs[np.isfinite(hs) & (hs > 0)])

    @property
    def curvature_at_0(self) -> float:
        """f''(0): mean s_i² over the residuals inside (−δ, δ) for Huber (their quadratic part); 0 for L1.

        The sum runs over the residuals inside (−δ, δ) and is divided by the number of all residuals.

        Returns:
            float: the curvature of the line at h = 0 (FD(h) = f''(0)·h² until 2h passes the first kink).
        """
        if self.loss == "l1":
            return 0.0
        inside = np.abs(self.r) < self.delta
        return float((self.s[inside] ** 2).sum() / len(self.s))


def piecewise_along(x: torch.Tensor, y: torch.Tensor, theta: torch.Tensor, d: torch.Tensor, loss: str = "huber",
                    delta: float = 1.0, bias: bool = True) -> PiecewiseLine:
    """The exact L1 or Huber loss (torch's huber_loss convention, mean reduction) along θ + h·d: between kinks it is
    linear (L1) or quadratic (Huber), so FD(h) = 0 (L1) or f''(0)·h² (Huber) exactly until 2h passes the
    first kink.

    Args:
        x: the inputs, shape (n, p), any floating dtype.
        y: the targets, shape (n,).
        theta: the parameters (w, b), shape (p + 1,) (or (p,) without bias).
        d: the direction, θ's shape.
        loss: "l1" or "huber" (one of PIECEWISE).
        delta: Huber's transition δ > 0.
        bias: whether θ has an intercept (see `design`).

    Returns:
        The exact PiecewiseLine along θ + h·d.

    Raises:
        ValueError: `loss` is not one of PIECEWISE, or delta ≤ 0 for Huber.

    Example:
        >>> import numpy as np
        >>> import torch
        >>> from lab.regression import piecewise_along
        >>> x, y = torch.tensor([[1.0], [2.0]]), torch.tensor([0.5, 4.0])     # residuals −0.5 + h, −4 + 2h
        >>> p = piecewise_along(x, y, torch.zeros(2), torch.tensor([1.0, 0.0]), loss="huber", delta=1.0)
        >>> p.kinks.tolist(), p.curvature_at_0, p.fd(np.array([0.25])).tolist()     # FD = 0.5·0.25² before a kink
        ([1.5, 1.5, 2.5], 0.5, [0.03125])
    """
    if loss not in PIECEWISE:
        raise ValueError(f"parameter 'loss' = {loss!r} is not allowed: expected one of {PIECEWISE}")
    if loss == "huber" and not delta > 0:
        raise ValueError(f"parameter 'delta' = {delta} is not allowed: expected delta > 0")
    xt = design(x.double(), bias)
    r = (xt @ theta.double() - y.double()).cpu().numpy()
    s = (xt @ d.double()).cpu().numpy()
    return PiecewiseLine(r, s, loss, float(delta))
