"""Parameter validation for chapters: a wrong value stops the run at once, naming the parameter."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any


class ParameterError(ValueError):
    """A chapter parameter has a wrong type or value."""


@dataclass(frozen=True)
class Rule:
    """One parameter's allowed values: a checker and a human description."""

    check: Callable[[Any], bool]
    allowed: str


def integer(lo: int | None = None, hi: int | None = None, why: str = "") -> Rule:
    """An int (not bool) in [lo, hi]; `why` says where a bound comes from (shown in the error)."""
    def ok(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and (lo is None or v >= lo) and (hi is None or v <= hi)
    return Rule(ok, f"an integer in [{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
                    + (f" ({why})" if why else ""))


def real(lo: float | None = None, hi: float | None = None) -> Rule:
    """A finite real number (int accepted) in [lo, hi]."""
    def ok(v: Any) -> bool:
        return (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                and (lo is None or v >= lo) and (hi is None or v <= hi))
    return Rule(ok, f"a number in [{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]")


def boolean() -> Rule:
    """True or False."""
    return Rule(lambda v: isinstance(v, bool), "True or False")


def choice(*options: Any) -> Rule:
    """One of the given options."""
    return Rule(lambda v: isinstance(v, type(options[0])) and v in options, "one of " + ", ".join(map(repr, options)))


def subset(*options: Any, min_len: int = 1) -> Rule:
    """A list of distinct values, each one of the given options."""
    def ok(v: Any) -> bool:
        return (isinstance(v, (list, tuple)) and len(v) >= min_len and len(set(v)) == len(v)
                and all(isinstance(x, type(options[0])) and x in options for x in v))
    return Rule(ok, f"a list of at least {min_len} distinct values from " + ", ".join(map(repr, options)))


def int_list(lo: int = 1, hi: int | None = None, min_len: int = 1) -> Rule:
    """A list of ints in [lo, hi] with at least min_len items."""
    item = integer(lo, hi)
    def ok(v: Any) -> bool:
        return isinstance(v, (list, tuple)) and len(v) >= min_len and all(item.check(x) for x in v)
    return Rule(ok, f"a list of at least {min_len} integers, each {item.allowed[3:]}")


def validate(values: Mapping[str, Any], rules: Mapping[str, Rule],
             relations: Iterable[tuple[str, bool | Callable[[], bool], str]] = ()) -> dict[str, Any]:
    """Check each named parameter against its rule; raise ParameterError naming the first bad one.

    `relations` are (parameter name, holds, message) triples for constraints between parameters; `holds` should be
    a function of no arguments (e.g. ``lambda: d < n``), called only after every parameter passed its own rule, so
    that a wrong-typed value is named as such rather than failing inside the relation. An exception raised by a
    relation is reported as that parameter's error. Returns the validated parameters as a dict.

    Example:
        >>> validate({"n": 10, "d": 3}, {"n": integer(1), "d": integer(1)}, [("d", lambda: 3 < 10, "d < n")])
        {'n': 10, 'd': 3}
        >>> validate({"n": "x", "d": 3}, {"n": integer(1), "d": integer(1)}, [("d", lambda: 3 < "x", "d < n")])
        Traceback (most recent call last):
        ...
        lab.workbook.validate.ParameterError: parameter 'n' = 'x' (str) is not allowed: expected an integer in [1, inf]
    """
    out = {}
    for name, rule in rules.items():
        if name not in values:
            raise ParameterError(f"parameter '{name}' is missing (allowed: {rule.allowed})")
        v = values[name]
        if not rule.check(v):
            raise ParameterError(f"parameter '{name}' = {v!r} ({type(v).__name__}) is not allowed: "
                                 f"expected {rule.allowed}")
        out[name] = v
    for name, holds, message in relations:
        if callable(holds):
            try:
                holds = holds()
            except (ArithmeticError, TypeError, ValueError) as exc:
                raise ParameterError(f"parameter '{name}' = {values.get(name)!r}: {message} "
                                     f"(could not be checked: {type(exc).__name__}: {exc})") from None
        if not holds:
            raise ParameterError(f"parameter '{name}' = {values.get(name)!r} is not allowed: {message}")
    return out


def int_csv(lo: int = 1, hi: int | None = None, min_len: int = 1, distinct: bool = True) -> Rule:
    """A comma-separated string of ints in [lo, hi] (papermill-friendly stand-in for a list parameter); distinct
    values unless distinct=False.

    Example:
        >>> int_csv(1, 9, min_len=2).check("2,3"), int_csv(1, 9, min_len=2).check("2,2")
        (True, False)
    """
    def ok(v: Any) -> bool:
        if not isinstance(v, str):
            return False
        parts = [p.strip() for p in v.split(",")]
        if not (len(parts) >= min_len and all(p.isascii() and p.isdigit() for p in parts)):
            return False
        ints = [int(p) for p in parts]
        return all(lo <= i and (hi is None or i <= hi) for i in ints) and (not distinct or len(set(ints)) == len(ints))
    return Rule(ok, f"a comma-separated string of at least {min_len} {'distinct ' if distinct else ''}integers in "
                    f"[{lo}, {'inf' if hi is None else hi}], e.g. '2,3,5'")
