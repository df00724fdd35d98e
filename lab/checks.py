"""Named errors for numbers that went non-finite and for models in a mode whose loss is not a function of θ alone.

Every public entry point of the science that computes a loss, a curvature or a statistic checks its inputs and
results with these helpers and raises one named error (what went non-finite, where, and what to try) instead of
returning NaN, dying deep inside ARPACK or matplotlib, or calling garbage a result.

Attributes:
    MODE_DEPENDENT: the tuple of nn.Module base classes whose forward depends on train/eval mode (dropout layers,
        batch/instance norms, RNNs); `mode_dependent_modules` looks for instances of these.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["NonFiniteError", "TrainModeError", "require_finite", "require_finite_float", "MODE_DEPENDENT",
           "mode_dependent_modules", "require_eval_mode"]


class NonFiniteError(FloatingPointError, ValueError):
    """A value that must be finite is NaN or infinite; the message says what, where and what to try.

    Raised by `require_finite`, `require_finite_float` and every entry point that checks its inputs or results
    (training loops, curvature, statistics). It subclasses both FloatingPointError and ValueError, so existing
    ``except ValueError`` handlers catch it too.

    Example:
        >>> from lab.checks import NonFiniteError, require_finite
        >>> try:
        ...     require_finite(float("nan"), "the loss", "demo")
        ... except NonFiniteError as e:
        ...     print(e)
        demo: the loss is not finite (value nan)
        >>> issubclass(NonFiniteError, ValueError)
        True
    """


class TrainModeError(ValueError):
    """A model is in train mode and has modules (Dropout, BatchNorm, ...) that make its loss random or
    batch-dependent: the loss is then not a function of the parameters alone.

    Raised by `require_eval_mode`; the fix is usually ``model.eval()`` before measuring curvature or surfaces.

    Example:
        >>> from torch import nn
        >>> from lab.checks import TrainModeError, require_eval_mode
        >>> try:
        ...     require_eval_mode(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)), "demo")
        ... except TrainModeError:
        ...     print("refused")
        refused
    """


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
        x: a tensor, array or number: a torch.Tensor of any shape, dtype and device (integer and bool tensors
            always pass), a numpy array or anything ``np.asarray`` accepts, or a Python number.
        what: what x is, e.g. "the loss" or "θ".
        where: the entry point, e.g. "lab.training.train".
        hint: what to try (appended after the message).

    Returns:
        x itself (the same object, not a copy), so that the check can wrap an expression.

    Raises:
        NonFiniteError: when any entry of x is NaN or ±inf; the message counts the bad entries (or shows the value
            of a single number).

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
    """v as a float when it is a finite number, else NonFiniteError naming parameter `name`.

    Used to validate scalar parameters (learning rates, thresholds, ranges) at an entry point.

    Args:
        v: the parameter's value: anything ``float()`` accepts (int, float, numpy scalar, 0-d tensor).
        name: the parameter's name, as the caller spells it, e.g. "lr".
        where: the entry point, e.g. "lab.landscape.surface".

    Returns:
        float(v).

    Raises:
        NonFiniteError: when float(v) is NaN or ±inf. (A value float() cannot convert raises its own
            TypeError or ValueError.)

    Example:
        >>> from lab.checks import require_finite_float
        >>> require_finite_float(2, "lr", "demo")
        2.0
        >>> require_finite_float(float("inf"), "lr", "demo")
        Traceback (most recent call last):
        ...
        lab.checks.NonFiniteError: demo: parameter 'lr' = inf is not allowed: expected a finite number
    """
    f = float(v)
    if not math.isfinite(f):
        raise NonFiniteError(f"{where}: parameter '{name}' = {v!r} is not allowed: expected a finite number")
    return f


# Modules whose forward depends on train/eval mode.
MODE_DEPENDENT = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._NormBase, nn.RNNBase)


def mode_dependent_modules(model: nn.Module) -> list[str]:
    """Names of the model's modules in train mode whose forward depends on the mode (Dropout, BatchNorm,
    InstanceNorm with running stats, RNNs with dropout).

    Args:
        model: any nn.Module; it is only inspected, never switched between modes.

    Returns:
        One "name: ClassName" string per offending submodule, in ``model.named_modules()`` order ("(model)" names
        the model itself); empty when the model is in eval mode or has no mode-dependent modules.

    Example:
        >>> from torch import nn
        >>> from lab.checks import mode_dependent_modules
        >>> m = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
        >>> mode_dependent_modules(m), mode_dependent_modules(m.eval())
        (['1: Dropout'], [])
    """
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
    in with allow_train_mode=True. The mode is never switched here: the caller decides (model.eval()).

    Args:
        model: the nn.Module whose loss is about to be treated as a function of its parameters.
        where: the entry point, named in the error message, e.g. "lab.curvature.hvp_operator".
        allow_train_mode: True to skip the check (measuring the train-mode function on purpose).

    Returns:
        None.

    Raises:
        TrainModeError: when ``mode_dependent_modules(model)`` is non-empty and allow_train_mode is False; the
            message lists up to four of the offending modules.

    Example:
        >>> from torch import nn
        >>> from lab.checks import TrainModeError, require_eval_mode
        >>> m = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
        >>> require_eval_mode(m.eval(), "demo")  # eval mode: passes silently
        >>> try:
        ...     require_eval_mode(m.train(), "demo")
        ... except TrainModeError as e:
        ...     print(str(e).split(":")[0], "|", "1: BatchNorm1d" in str(e))
        demo | True
    """
    if allow_train_mode:
        return
    found = mode_dependent_modules(model)
    if found:
        raise TrainModeError(
            f"{where}: the model is in train mode and has mode-dependent modules ({', '.join(found[:4])}"
            f"{', ...' if len(found) > 4 else ''}): its loss is random or depends on the batch, so curvature and "
            f"surfaces would describe a different function at each call; call model.eval() first, or pass "
            f"allow_train_mode=True if that is what you mean to measure")
