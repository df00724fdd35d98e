"""The grid of a sweep: reading YAML grid files and grid mappings (a plain mapping of parameter lists, or the
structured grid:/rows:/fixed:/plot:/name: form), counting and expanding them into points under the MAX_POINTS limit,
the stable point id, and validating each point's names and types against the parameters the chapter declares
(floats spelled as text, ints for floats, defaults left out of a point's identity)."""
from __future__ import annotations

import ast
import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lab.workbook.runner import FLOAT_RE, load_yaml

GRID_KEYS = ("grid", "rows", "fixed", "plot", "name")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class SweepError(ValueError):
    """A grid file or a sweep point that cannot run: names the parameter, the point and what is allowed."""


# ----------------------------------------------------------------------------------------------------- the grid
@dataclass
class GridSpec:
    """A parsed grid file: the full-product lists, explicit rows, constants for every point, plot choice."""

    grid: dict[str, list[Any]] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    fixed: dict[str, Any] = field(default_factory=dict)
    plot: dict[str, str] = field(default_factory=dict)
    name: str | None = None


def _as_values(name: str, value: Any) -> list[Any]:
    """A grid entry as its list of values (a scalar is one value); an empty list is an error."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise SweepError(f"grid parameter {name!r} has an empty list of values")
    return values


def is_structured(data: dict[str, Any]) -> bool:
    """True when a grid mapping uses the structured keys: grid or fixed is a mapping, or rows is a list holding
    mappings. Otherwise every key is a chapter parameter, so a parameter named grid, rows, fixed, plot or name
    (chapter 04 declares grid: int) can be swept in a plain grid; plot and name count only alongside these."""
    rows = data.get("rows")
    return (isinstance(data.get("grid"), dict) or isinstance(data.get("fixed"), dict)
            or (isinstance(rows, list) and any(isinstance(r, dict) for r in rows)))


def parse_grid(data: Any) -> GridSpec:
    """Parse a grid mapping: {param: [values]} (full product) or {grid:, rows:, fixed:, plot:, name:}
    (structured when grid or fixed is a mapping or rows a list of mappings; see is_structured)."""
    if not isinstance(data, dict) or not data:
        raise SweepError(f"a grid must be a non-empty mapping, got {type(data).__name__}: {data!r}")
    if not is_structured(data):
        data = {"grid": data}
    extra = sorted(set(data) - set(GRID_KEYS))
    if extra:
        raise SweepError(f"unknown grid key(s) {', '.join(map(repr, extra))}; allowed top-level keys: "
                         f"{', '.join(GRID_KEYS)} (or a plain mapping of parameter lists)")
    grid, rows, fixed = data.get("grid") or {}, data.get("rows") or [], data.get("fixed") or {}
    for key, val, kind in (("grid", grid, dict), ("rows", rows, list), ("fixed", fixed, dict)):
        if not isinstance(val, kind):
            raise SweepError(f"grid key {key!r} must be a {kind.__name__}, got {type(val).__name__} (a parameter "
                             f"named {key!r} goes under grid: or fixed: in a structured grid file)")
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not row:
            raise SweepError(f"rows[{i}] must be a non-empty mapping of parameter: value, got {row!r}")
    if not grid and not rows:
        raise SweepError("the grid defines no points: give parameter lists (grid:) and/or explicit rows (rows:)")
    plot = data.get("plot") or {}
    if not isinstance(plot, dict) or set(plot) - {"x", "y"}:
        raise SweepError(f"plot must be a mapping with keys x and/or y, got {plot!r}")
    name = data.get("name")
    if name is not None and (not isinstance(name, str) or not _NAME_RE.match(name)):
        raise SweepError(f"sweep name {name!r} must be a plain file name (letters, digits, . _ + -)")
    return GridSpec(grid={str(k): _as_values(str(k), v) for k, v in grid.items()},
                    rows=[{str(k): v for k, v in r.items()} for r in rows],
                    fixed={str(k): v for k, v in fixed.items()},
                    plot={k: str(v) for k, v in plot.items()}, name=name)


def load_grid(path: str | Path) -> GridSpec:
    """Read and parse a YAML grid file (see parse_grid)."""
    p = Path(path)
    if not p.is_file():
        raise SweepError(f"grid file {str(path)!r} not found")
    try:
        data = load_yaml(p.read_text(encoding="utf-8"))  # as the CLI reads values: 010 is 10, 0x10 refused
    except yaml.YAMLError as exc:
        raise SweepError(f"grid file {p.name} is not valid YAML: {exc}") from exc
    except ValueError as exc:
        raise SweepError(f"grid file {p.name}: {exc}") from exc
    return parse_grid(data)


MAX_POINTS = 10_000  # a sweep larger than this is refused unless max_points (--max-points) raises the limit


def count_points(spec: GridSpec) -> int:
    """The number of points before duplicates are dropped: the product of the grid's list lengths plus the rows,
    counted without expanding anything (a 10⁹-point grid costs nothing to count)."""
    return (math.prod(len(v) for v in spec.grid.values()) if spec.grid else 0) + len(spec.rows)


def expand(spec: GridSpec, max_points: int = MAX_POINTS) -> list[dict[str, Any]]:
    """All points: the full product of spec.grid, then spec.rows, each with spec.fixed; duplicates dropped.
    More than max_points raises SweepError before any point is built."""
    n = count_points(spec)
    if n > max_points:
        sizes = " × ".join(f"{len(v)} {k}" for k, v in spec.grid.items())
        raise SweepError(f"the grid has {n:,} points ({sizes}{f' + {len(spec.rows)} rows' if spec.rows else ''}), "
                         f"more than the limit of {max_points:,}: shrink it, or raise the limit with --max-points "
                         f"(max_points=) if you mean it")
    names = list(spec.grid)
    points = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*spec.grid.values())] if names else []
    points += [dict(r) for r in spec.rows]
    out, seen = [], set()
    for p in points:
        clash = sorted(set(p) & set(spec.fixed))
        if clash:
            raise SweepError(f"parameter(s) {', '.join(clash)} are both swept and fixed; give each in one place")
        full = {**spec.fixed, **p}
        pid = point_id(full)
        if pid not in seen:
            seen.add(pid)
            out.append(full)
    return out


def point_id(params: dict[str, Any]) -> str:
    """Stable id of a point: the first 12 hex digits of sha1 over its canonical JSON (sorted keys)."""
    canon = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha1(canon.encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------------------------- validation
_NO_DEFAULT = object()  # a declared default that is not a python literal


def _literal_default(info: dict[str, Any]) -> Any:
    """The declared default as a python value, or _NO_DEFAULT when it is not a literal."""
    try:
        return ast.literal_eval(str(info.get("default")))
    except (ValueError, SyntaxError):
        return _NO_DEFAULT


def _default(info: dict[str, Any]) -> Any:
    """The declared default as a python value (None when it is not a literal)."""
    value = _literal_default(info)
    return None if value is _NO_DEFAULT else value


_TYPES: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,),
                                       "list": (list,), "dict": (dict,), "tuple": (list, tuple)}


def _split_top(text: str, sep: str) -> list[str]:
    """text split at sep outside brackets: "int|dict[str,int|float]" -> ["int", "dict[str,int|float]"]."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += (ch == "[") - (ch == "]")
        if ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return [*parts, text[start:]]


def _accepted(info: dict[str, Any]) -> tuple[tuple[type, ...] | None, bool]:
    """(accepted python types or None for any, whether None is allowed) for one declared parameter."""
    tname = str(info.get("inferred_type_name") or "None").replace(" ", "")
    optional = False
    m = re.fullmatch(r"(?:typing\.)?Optional\[(.+)\]", tname)
    if m:
        tname, optional = m[1], True
    m = re.fullmatch(r"(?:typing\.)?Union\[(.+)\]", tname)
    parts = _split_top(m[1], ",") if m else _split_top(tname, "|")
    if "None" in parts and len(parts) > 1:
        parts = [p for p in parts if p != "None"]
        optional = True
    if parts != ["None"]:
        bases = [re.sub(r"\[.*\]$", "", p).split(".")[-1].lower() for p in parts]
        if all(b in _TYPES for b in bases):
            return tuple(dict.fromkeys(t for b in bases for t in _TYPES[b])), optional
    default = _default(info)
    if parts == ["None"] and default is not None:  # no annotation: infer from the default literal
        for name, types in _TYPES.items():
            if type(default).__name__ == name:
                return types, True
    return None, True


def check_point(declared: dict[str, dict[str, Any]], params: dict[str, Any], where: str = "") -> None:
    """Raise SweepError if a name is not declared or a value's type does not fit the declared parameter."""
    at = f" in {where}" if where else ""
    unknown = sorted(set(params) - set(declared))
    if unknown:
        allowed = ", ".join(f"{k} ({v.get('inferred_type_name')}, default {v.get('default')})"
                            for k, v in declared.items()) or "(none)"
        hint = ("; grid, rows, fixed, plot and name are grid-file keys only when grid: or fixed: is a mapping or "
                "rows: a list of mappings" if set(unknown) & set(GRID_KEYS) else "")
        raise SweepError(f"unknown parameter(s) {', '.join(map(repr, unknown))}{at}; allowed: {allowed}{hint}")
    for name, value in params.items():
        types, optional = _accepted(declared[name])
        if value is None and optional:
            continue
        ok = types is None or (isinstance(value, types) and not (isinstance(value, bool) and bool not in types))
        if not ok:
            info = declared[name]
            raise SweepError(f"parameter {name!r}{at}: expected {info.get('inferred_type_name')} "
                             f"(default {info.get('default')}), got {type(value).__name__} {value!r}")


def floats_from_text(declared: dict[str, dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
    """Strings that spell a float become floats where a float is declared (and a string is not): YAML 1.1 reads
    1e-10 (no dot) as the string "1e-10". The same float syntax as `python -m lab run -p` (runner.FLOAT_RE)."""
    out = dict(params)
    for k, v in params.items():
        if isinstance(v, str) and k in declared and FLOAT_RE.match(v.strip()):
            types = _accepted(declared[k])[0]
            if types is not None and float in types and str not in types:
                out[k] = float(v)
    return out


def canonical(declared: dict[str, dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
    """Ints given for float-declared parameters become floats, so 1 and 1.0 name the same point."""
    out = dict(params)
    for k, v in params.items():
        if isinstance(v, int) and not isinstance(v, bool) and k in declared and (
                _accepted(declared[k])[0] == _TYPES["float"]):
            out[k] = float(v)
    return out


def _same(a: Any, b: Any) -> bool:
    """Equal as canonical JSON (so 1 and True, 1 and 1.0 differ; a tuple equals the list)."""
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def identity(declared: dict[str, dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
    """The parameters that name a point: those whose value differs from the chapter's declared default, so
    {max_width: 512} and {max_width: 512, n_seeds: 5} (the default) are the same run with the same id."""
    defaults = canonical(declared, {k: d for k, v in declared.items()
                                    if (d := _literal_default(v)) is not _NO_DEFAULT})
    return {k: v for k, v in params.items() if not (k in defaults and _same(v, defaults[k]))}
