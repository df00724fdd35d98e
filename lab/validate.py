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


def integer(lo: int | None = None, hi: int | None = None) -> Rule:
    """An int (not bool) in [lo, hi]."""
    def ok(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and (lo is None or v >= lo) and (hi is None or v <= hi)
    return Rule(ok, f"an integer in [{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]")


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
             relations: Iterable[tuple[str, bool, str]] = ()) -> dict[str, Any]:
    """Check each named parameter against its rule; raise ParameterError naming the first bad one.

    `relations` are (parameter name, holds, message) triples for constraints between parameters.
    Returns the validated parameters as a dict.
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
        if not holds:
            raise ParameterError(f"parameter '{name}': {message}")
    return out


def int_csv(lo: int = 1, hi: int | None = None, min_len: int = 1) -> Rule:
    """A comma-separated string of ints in [lo, hi] (papermill-friendly stand-in for a list parameter)."""
    def ok(v: Any) -> bool:
        if not isinstance(v, str):
            return False
        parts = [p.strip() for p in v.split(",")]
        return (len(parts) >= min_len and all(p.isdigit() for p in parts)
                and all(lo <= int(p) and (hi is None or int(p) <= hi) for p in parts))
    return Rule(ok, f"a comma-separated string of at least {min_len} integers in [{lo}, {'inf' if hi is None else hi}],"
                    f" e.g. '2,3,5'")
