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

__all__ = ["NonFiniteError", "TrainModeError", "require_finite", "require_finite_float", "require_int", "require_real",
           "require_level", "require_vector", "not_allowed", "MODE_DEPENDENT", "mode_dependent_modules",
           "require_eval_mode"]


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


def not_allowed(name: str, value: Any, expected: str, where: str = "") -> str:
    """The one-line message for a refused parameter: "[where: ]parameter 'name' = value is not allowed: expected ...".

    Example:
        >>> not_allowed("k", 2.5, "an integer >= 1", "demo")
        "demo: parameter 'k' = 2.5 is not allowed: expected an integer >= 1"
    """
    shown = repr(value)
    if len(shown) > 60 or "\n" in shown:
        shown = (f"{type(value).__name__} of shape {tuple(value.shape)}" if hasattr(value, "shape")
                 else shown[:57] + "...")
    return (f"{where}: " if where else "") + f"parameter '{name}' = {shown} is not allowed: expected {expected}"


def _range_text(kind: str, lo: float | None, hi: float | None, lo_open: bool = False, hi_open: bool = False) -> str:
    if lo is not None and hi is not None:
        return f"{kind} in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{kind} {'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f"{kind} {'<' if hi_open else '<='} {hi}"
    return kind


def _as_scalar(value: Any) -> Any:
    """A 0-d tensor or numpy array as its Python number; anything else unchanged."""
    if isinstance(value, torch.Tensor) and value.ndim == 0:
        return value.item()
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    return value


def require_int(value: Any, name: str, where: str = "", lo: int | None = None, hi: int | None = None) -> int:
    """value as an int when it is an integer (not a bool, not a float such as 2.0) in [lo, hi], else a one-line
    error naming parameter `name`.

    Args:
        value: the parameter's value: a Python or numpy integer, or a 0-d integer tensor.
        name: the parameter's name, as the caller spells it.
        where: the entry point, prefixed to the message when given.
        lo, hi: the smallest and largest allowed values (None: unbounded).

    Returns:
        int(value).

    Raises:
        TypeError: value is not an integer. ValueError: it lies outside [lo, hi].

    Example:
        >>> require_int(3, "k", lo=1)
        3
        >>> require_int(2.5, "k", lo=1)
        Traceback (most recent call last):
        ...
        TypeError: parameter 'k' = 2.5 is not allowed: expected an integer >= 1
    """
    v = _as_scalar(value)
    expected = _range_text("an integer", lo, hi)
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise TypeError(not_allowed(name, value, expected, where))
    v = int(v)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ValueError(not_allowed(name, value, expected, where))
    return v


def require_real(value: Any, name: str, where: str = "", lo: float | None = None, hi: float | None = None,
                 lo_open: bool = False, hi_open: bool = False) -> float:
    """value as a float when it is a finite real number in the given range, else a one-line error naming it.

    Args:
        value: a Python or numpy number, or a 0-d tensor (not a bool, not a string).
        name, where: as for `require_int`.
        lo, hi: the range's ends (None: unbounded); lo_open / hi_open exclude them.

    Returns:
        float(value).

    Raises:
        TypeError: not a real number. NonFiniteError: NaN or ±inf. ValueError: outside the range.

    Example:
        >>> require_real(0.5, "level", lo=0, hi=1, lo_open=True, hi_open=True)
        0.5
        >>> require_real(0, "sigma", "demo", lo=0, lo_open=True)
        Traceback (most recent call last):
        ...
        ValueError: demo: parameter 'sigma' = 0 is not allowed: expected a number > 0
    """
    v = _as_scalar(value)
    expected = _range_text("a number", lo, hi, lo_open, hi_open)
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError(not_allowed(name, value, expected, where))
    f = float(v)
    if not math.isfinite(f):
        raise NonFiniteError(not_allowed(name, value, "a finite number" + ("" if expected == "a number" else
                                                                           f" ({expected})"), where))
    if ((lo is not None and (f < lo or (lo_open and f == lo)))
            or (hi is not None and (f > hi or (hi_open and f == hi)))):
        raise ValueError(not_allowed(name, value, expected, where))
    return f


def require_level(level: Any, where: str = "", name: str = "level") -> float:
    """A confidence level: a finite number strictly between 0 and 1, else a one-line error naming it.

    Example:
        >>> require_level(0.95)
        0.95
        >>> require_level(1.5, "demo")
        Traceback (most recent call last):
        ...
        ValueError: demo: parameter 'level' = 1.5 is not allowed: expected a number in (0, 1)
    """
    return require_real(level, name, where, lo=0, hi=1, lo_open=True, hi_open=True)


def require_vector(v: Any, name: str, where: str = "", size: int | None = None, nonzero: bool = False,
                   finite: bool = True) -> torch.Tensor:
    """v when it is a floating torch tensor with `size` entries (any shape that holds them as one vector is
    refused unless 1-D), finite and, with nonzero, not all zero; else a one-line error naming parameter `name`.

    Args:
        v: the vector.
        name, where: as for `require_int`.
        size: the required number of entries (None: any, at least one).
        nonzero: refuse the zero vector (a direction, a start vector).
        finite: refuse NaN and ±inf entries (NonFiniteError).

    Returns:
        v itself.

    Example:
        >>> require_vector(torch.ones(3), "d", size=3)
        tensor([1., 1., 1.])
        >>> require_vector(torch.ones(2), "d", "demo", size=3)
        Traceback (most recent call last):
        ...
        ValueError: demo: parameter 'd' = tensor([1., 1.]) is not allowed: expected a vector of 3 entries (got 2)
    """
    if not isinstance(v, torch.Tensor) or not (v.is_floating_point() or v.is_complex()):
        what = f"a {v.dtype} tensor" if isinstance(v, torch.Tensor) else type(v).__name__
        raise TypeError(not_allowed(name, v, f"a floating-point torch.Tensor (got {what})", where))
    if v.ndim != 1 or (size is not None and v.numel() != size) or v.numel() == 0:
        want = f"a vector of {size} entries" if size is not None else "a non-empty vector"
        raise ValueError(not_allowed(name, v, f"{want} (got shape {tuple(v.shape)})" if v.ndim != 1
                                     else f"{want} (got {v.numel()})", where))
    if finite:
        bad, n = _count_bad(v)
        if bad:
            raise NonFiniteError(not_allowed(name, v, f"finite entries ({bad} of {n} are NaN or inf)", where))
    if nonzero and not bool(v.detach().ne(0).any()):
        raise ValueError(not_allowed(name, v, "a non-zero vector", where))
    return v


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
