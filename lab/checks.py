"""Named errors for numbers that went non-finite and for models in a mode whose loss is not a function of θ alone.

Every public entry point of the science that computes a loss, a curvature or a statistic checks its inputs and
results with these helpers and raises one named error (what went non-finite, where, and what to try) instead of
returning NaN, dying deep inside ARPACK or matplotlib, or calling garbage a result.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn


class NonFiniteError(FloatingPointError, ValueError):
    """A value that must be finite is NaN or infinite; the message says what, where and what to try."""


class TrainModeError(ValueError):
    """A model is in train mode and has modules (Dropout, BatchNorm, ...) that make its loss random or
    batch-dependent: the loss is then not a function of the parameters alone."""


def _count_bad(x: Any) -> tuple[int, int]:
    """(non-finite entries, entries) of a tensor, array or number."""
    if isinstance(x, torch.Tensor):
        if not (x.is_floating_point() or x.is_complex()):
            return 0, x.numel()
        bad = int((~torch.isfinite(x)).sum())
        return bad, x.numel()
    a = np.asarray(x)
    if a.dtype.kind not in "fc":
        return 0, a.size
    return int(np.sum(~np.isfinite(a))), a.size


def require_finite(x: Any, what: str, where: str, hint: str = "") -> Any:
    """Return x unchanged when every entry is finite, else raise NonFiniteError naming it.

    Args:
        x: a tensor, array or number.
        what: what x is, e.g. "the loss" or "θ".
        where: the entry point, e.g. "lab.training.train".
        hint: what to try (appended after the message).

    Example:
        >>> require_finite(np.array([1.0, 2.0]), "the losses", "example")
        array([1., 2.])
        >>> require_finite(np.array([1.0, np.nan]), "the losses", "example", "try a smaller lr")
        Traceback (most recent call last):
        ...
        lab.checks.NonFiniteError: example: the losses are not finite (1 of 2 entries NaN or inf); try a smaller lr
    """
    bad, n = _count_bad(x)
    if bad:
        first = (float(x.detach().reshape(-1)[0].cpu()) if isinstance(x, torch.Tensor)
                 else float(np.asarray(x).reshape(-1)[0]))
        shown = f"{bad} of {n} entries NaN or inf" if n > 1 else f"value {first!r}"
        verb = "are" if n > 1 else "is"
        raise NonFiniteError(f"{where}: {what} {verb} not finite ({shown})" + (f"; {hint}" if hint else ""))
    return x


def require_finite_float(v: float, name: str, where: str) -> float:
    """v as a float when it is a finite number, else NonFiniteError naming parameter `name`."""
    f = float(v)
    if not math.isfinite(f):
        raise NonFiniteError(f"{where}: parameter '{name}' = {v!r} is not allowed: expected a finite number")
    return f


# Modules whose forward depends on train/eval mode.
MODE_DEPENDENT = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._NormBase, nn.RNNBase)


def mode_dependent_modules(model: nn.Module) -> list[str]:
    """Names of the model's modules in train mode whose forward depends on the mode (Dropout, BatchNorm,
    InstanceNorm with running stats, RNNs with dropout)."""
    out = []
    for name, m in model.named_modules():
        if not m.training or not isinstance(m, MODE_DEPENDENT):
            continue
        if isinstance(m, nn.RNNBase) and not m.dropout:
            continue
        out.append(f"{name or '(model)'}: {type(m).__name__}")
    return out


def require_eval_mode(model: nn.Module, where: str, allow_train_mode: bool = False) -> None:
    """Raise TrainModeError when the model is in train mode with mode-dependent modules, unless the caller opted
    in with allow_train_mode=True. The mode is never switched here: the caller decides (model.eval())."""
    if allow_train_mode:
        return
    found = mode_dependent_modules(model)
    if found:
        raise TrainModeError(
            f"{where}: the model is in train mode and has mode-dependent modules ({', '.join(found[:4])}"
            f"{', ...' if len(found) > 4 else ''}): its loss is random or depends on the batch, so curvature and "
            f"surfaces would describe a different function at each call; call model.eval() first, or pass "
            f"allow_train_mode=True if that is what you mean to measure")
