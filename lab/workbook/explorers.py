"""The drawing behind the chapters' widget explorers: plain functions of arrays that return a figure, so that every
explorer is tested headless (tests/workbook/test_explorers.py) without executing a chapter. The notebooks' explorer
cells compute what the sliders ask for and call these; the labels, units and noise lines match the chapters' figures.
"""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np

from lab.training import rolling_std
from lab.workbook.figures import LOG10_LOSS, loss_contourf

H_LABEL = r"step $h$ (distance along the unit direction)"
ALL_ZERO = "all FD = 0 here"
# quantity -> (title, values from a probe, FD noise divided by the power of h it carries)
QUANTITIES = {
    "fd": (r"$|\mathrm{FD}|$", lambda p: np.abs(np.asarray(p.fd, dtype=float)), 0),
    "grit": (r"$|\mathrm{grit}| = |\mathrm{FD}|/h$", lambda p: np.abs(np.asarray(p.fd, dtype=float)) / p.h, 1),
    "curvature": (r"$|\mathrm{curvature}| = |\mathrm{FD}|/h^2$",
                  lambda p: np.abs(np.asarray(p.fd, dtype=float)) / p.h**2, 2),
}


def probe_figure(probe, fd_noise: float | None = None, quantities: Sequence[str] = ("curvature", "grit", "fd"),
                 title: str = "", unit: str = "nats", xlabel: str = H_LABEL) -> plt.Figure:
    """The chapters' probe panels for one doubling probe (anything with arrays `h` and `fd`): |FD|, |grit|,
    |curvature| on log axes, the FD noise √6σ dashed (divided by h or h²), exact zeros ticked along the bottom, and
    "all FD = 0 here" instead of an empty log plot when every finite difference is 0.

    Args:
        probe: an object with `h` (n,) distances and `fd` (n,) second finite differences (numpy or torch, CPU).
        fd_noise: the FD noise √6·σ in loss units, or None for no noise line.
        quantities: which panels, from "fd", "grit", "curvature".
        title: the figure's title.
        unit: the loss's unit, for the y label.
        xlabel: the x label (the default says h is a distance along a unit direction).
    Returns:
        the figure (one panel per quantity).
    Example:
        >>> import types, numpy as np
        >>> p = types.SimpleNamespace(h=np.logspace(-8, 0, 9), fd=np.zeros(9))
        >>> fig = probe_figure(p, 1e-9)
        >>> any(t.get_text() == ALL_ZERO for t in fig.axes[0].texts)
        True
    """
    unknown = [q for q in quantities if q not in QUANTITIES]
    if unknown:
        raise ValueError(f"parameter 'quantities' = {unknown} is not allowed: expected some of {tuple(QUANTITIES)}")
    h = np.asarray(probe.h, dtype=float)
    fd = np.asarray(probe.fd, dtype=float)
    fig, axes = plt.subplots(1, len(quantities), figsize=(5 * len(quantities), 3.8), layout="constrained",
                             squeeze=False)
    for ax, q in zip(axes[0], quantities, strict=True):
        label, fn, power = QUANTITIES[q]
        ax.set_title(label)
        ax.set_xlabel(xlabel)
        if not np.any(fd != 0):
            ax.text(0.5, 0.5, ALL_ZERO, transform=ax.transAxes, ha="center", va="center", fontsize=12)
            ax.set_xscale("log")
            ax.set_xlim(h.min(), h.max())
            ax.set_yticks([])
            continue
        y = fn(probe)
        ax.loglog(h, np.where(y > 0, y, np.nan), ".-", ms=3, lw=0.8, color="C0", label="probe")
        if fd_noise is not None:
            ax.loglog(h, fd_noise / h**power, "k--", lw=0.8, label=r"FD noise $\sqrt{6}\,\sigma$")
        zero = h[fd == 0]
        if len(zero):
            ax.plot(zero, np.full(len(zero), 0.03), "|", color="C3", ms=6, transform=ax.get_xaxis_transform(),
                    label="FD = 0 exactly")
    axes[0, 0].set_ylabel(f"loss units ({unit})")
    if np.any(fd != 0):
        axes[0, 0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return fig


def surface_figure(surf, title: str = "", xlabel: str = r"$\delta$", ylabel: str = r"$\eta$") -> plt.Figure:
    """Filled contours of log10 loss of a `lab.landscape.Surface` (anything with `a`, `b`, `loss`) with its colour
    bar, as chapter 04 draws its planes.

    Example:
        >>> import types, numpy as np
        >>> a = np.linspace(-1, 1, 5)
        >>> s = types.SimpleNamespace(a=a, b=a, loss=1 + np.add.outer(a**2, a**2))
        >>> surface_figure(s, "plane").axes[0].get_title()
        'plane'
    """
    fig, ax = plt.subplots(figsize=(5.5, 4.2), layout="constrained")
    loss_contourf(ax, surf, label=LOG10_LOSS)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    return fig


def fits_figure(x: np.ndarray, fits: np.ndarray, x_train: np.ndarray | None = None,
                y_train: np.ndarray | None = None, title: str = "", max_lines: int = 30) -> plt.Figure:
    """Interpolating fits (rows of `fits`, evaluated at `x`) over the training points, as in chapter 05; says so
    when there is no fit.

    Example:
        >>> import numpy as np
        >>> x = np.linspace(-2, 2, 5)
        >>> len(fits_figure(x, np.zeros((0, 5))).axes[0].texts)
        1
    """
    fig, ax = plt.subplots(figsize=(6, 3.8), layout="constrained")
    fits = np.asarray(fits, dtype=float).reshape(-1, len(x))
    for f in fits[:max_lines]:
        ax.plot(x, f, lw=0.6, alpha=0.7)
    if not len(fits):
        ax.text(0.5, 0.5, "no interpolating fit here", transform=ax.transAxes, ha="center", va="center")
    if x_train is not None and y_train is not None:
        ax.plot(np.ravel(x_train), np.ravel(y_train), "ko", ms=6, label="training points")
        ax.legend(fontsize=8)
    ax.set(title=title, xlabel="input $x$", ylabel=r"network output $f_\theta(x)$")
    return fig


def rolling_std_figure(loss: np.ndarray, window: int, target: float, floor_steps: np.ndarray | None = None,
                       floor: np.ndarray | None = None, lr: np.ndarray | None = None,
                       title: str = "") -> plt.Figure:
    """Chapter 06's picture of one run: the loss (or the lr chosen, when `lr` is given) and the rolling std of
    log10 L over `window` steps against the target, with the intrinsic floor dashed when given.

    Example:
        >>> import numpy as np
        >>> loss = np.exp(np.random.default_rng(0).normal(size=200))
        >>> len(rolling_std_figure(loss, 20, 0.1).axes)
        2
    """
    loss = np.asarray(loss, dtype=float)
    steps = np.arange(1, len(loss) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), layout="constrained")
    if lr is not None:
        axes[0].semilogy(steps, lr)
        axes[0].set(xlabel="step $t$", ylabel=r"lr $\eta$", title=title or "lr chosen by the controller")
    else:
        axes[0].loglog(steps, loss, lw=0.4)
        axes[0].set(xlabel="step $t$", ylabel="MSE $L$", title=title)
    axes[1].plot(steps, rolling_std(np.log10(loss), window), lw=1, label=f"rolling std, window {window}")
    if floor_steps is not None and floor is not None:
        axes[1].plot(floor_steps, floor, "k--", label="intrinsic floor (probe)")
    axes[1].axhline(target, color="gray", ls=":", label=f"target {target:g}")
    axes[1].axvline(window, color="r", ls="--", lw=0.8, label=f"window = {window} steps")
    axes[1].set(xlabel="step $t$", ylabel=r"rolling std of $\log_{10} L$")
    axes[1].legend(fontsize=8)
    return fig


def lowprec_figure(eval_steps: np.ndarray, loss: np.ndarray, ref_loss: np.ndarray, lost_meas: np.ndarray,
                   lost_pred: np.ndarray, label: str) -> plt.Figure:
    """Chapter 08's explorer: left, the float64 training loss of a low-precision run (`label`) against the float32
    reference at the same evaluation steps; right, the share of updates lost per step, measured and predicted by the
    round-to-nearest rule (`lab.numerics.lost_updates`)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), layout="constrained")
    axes[0].plot(eval_steps, ref_loss, label="float32")
    axes[0].plot(eval_steps, loss, "--", label=label)
    axes[0].set(xlabel="step", ylabel="training loss (cross-entropy, float64)", yscale="log")
    axes[0].legend()
    steps = np.arange(len(lost_meas))
    axes[1].plot(steps, lost_meas, label="measured")
    axes[1].plot(steps, lost_pred, "--", label="predicted (round-to-nearest rule)")
    axes[1].set(xlabel="step", ylabel="share of updates lost", ylim=(0, 1.02))
    axes[1].legend()
    return fig


def profile_figure(t: np.ndarray, profiles: dict[str, np.ndarray], xlabel: str, title: str = "") -> plt.Figure:
    """Chapter 07's explorer: loss profiles along one line (label → loss at each t), log scale, one curve each."""
    fig, ax = plt.subplots(figsize=(5.5, 3.4), layout="constrained")
    for label, loss in profiles.items():
        ax.plot(t, loss, label=label)
    ax.set(xlabel=xlabel, ylabel="training loss (nats)", yscale="log", title=title)
    ax.legend(fontsize=8)
    return fig


def eigen_profile_figure(t: np.ndarray, loss: np.ndarray, model: np.ndarray, title: str = "") -> plt.Figure:
    """Chapter 09's explorer: the loss along a Hessian eigenvector (linear scale) against its second-order model
    L + t·gᵀv + ½λt², so one sees where the quadratic stops describing the loss (near a saddle: how far down)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.4), layout="constrained")
    ax.plot(t, loss, label="loss")
    ax.plot(t, model, ":", label="second-order model")
    ax.set(xlabel="t along the eigenvector", ylabel="training loss (nats)", title=title)
    ax.legend(fontsize=8)
    return fig


__all__ = ["ALL_ZERO", "H_LABEL", "probe_figure", "surface_figure", "fits_figure", "rolling_std_figure",
           "lowprec_figure", "profile_figure", "eigen_profile_figure"]
