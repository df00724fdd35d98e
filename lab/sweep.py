"""Parameter sweeps of a chapter on Dask: grid files, stable point ids, resumable runs, one results table."""
from __future__ import annotations

import ast
import contextlib
import hashlib
import itertools
import json
import math
import os
import re
import socket
import sys
import threading
import time
import traceback
import uuid
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lab.paths import NOTEBOOKS, RUNS
from lab.runner import (
    FLOAT_RE,
    PART,
    check_out_dir,
    declared_parameters,
    execute,
    is_inside,
    load_yaml,
    resolve_notebook,
    write_atomic,
)

GRID_KEYS = ("grid", "rows", "fixed", "plot", "name")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_PART = PART  # temporary files: .<name>.<random>.part[.ipynb], removed or renamed when complete
_CLAIM_COLUMN = re.compile(r"^C\d+[A-Za-z]?\..+")  # C<n>.passed and C<n>.<number> columns of the results
_PLOT_COLUMNS = ("seconds", "claims_passed")  # results columns besides parameters and claims that can be plotted


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
    {max_width: 256} and {max_width: 256, n_seeds: 5} (the default) are the same run with the same id."""
    defaults = canonical(declared, {k: d for k, v in declared.items()
                                    if (d := _literal_default(v)) is not _NO_DEFAULT})
    return {k: v for k, v in params.items() if not (k in defaults and _same(v, defaults[k]))}


MACHINERY = ("__init__", "__main__", "report", "robustness", "runner", "sweep")  # run chapters; change no number


def lab_hash() -> str:
    """sha1 over the lab package's Python sources that a chapter's numbers depend on (all but the machinery that
    runs and reports chapters): the science a chapter imports is part of its code."""
    h = hashlib.sha1()
    pkg = Path(__file__).resolve().parent
    for f in sorted(pkg.rglob("*.py")):
        if f.stem in MACHINERY and f.parent == pkg:
            continue
        h.update(f.relative_to(pkg).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def notebook_hash(path: str | Path) -> str:
    """The first 12 hex digits of sha1 over a notebook's code cells (sources, in order) and the lab package's
    sources: which version of a chapter's code a point ran. Markdown and outputs do not count."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    return hashlib.sha1(json.dumps([code, lab_hash()]).encode()).hexdigest()[:12]


# ------------------------------------------------------------------------------------------------- the plan
@dataclass
class Sweep:
    """A validated sweep: the chapter, its points (id → parameters), output folder and plot choice."""

    notebook: Path
    name: str
    out_dir: Path
    points: dict[str, dict[str, Any]]
    defaults: dict[str, Any]
    swept: list[str]
    plot: dict[str, str] = field(default_factory=dict)
    code: str = ""  # notebook_hash of the chapter when planned; finished points of another version are stale
    env: dict[str, str] = field(default_factory=dict)  # environment of every point's kernel (e.g. ATEN_CPU_CAPABILITY)

    def notebook_path(self, pid: str) -> Path:
        """The executed notebook of a finished point."""
        return self.out_dir / f"{pid}.ipynb"

    def record_path(self, pid: str) -> Path:
        """The status record of a point."""
        return self.out_dir / f"{pid}.json"


def _check_plot(plot: dict[str, str], declared: dict[str, Any], src: Path, option: str) -> None:
    """Raise SweepError unless each axis names a parameter, a claim column (C<n>.<number>, C<n>.passed) or
    seconds / claims_passed. Claim numbers are only known once points have run (see choose_axes)."""
    for axis, col in plot.items():
        if axis not in ("x", "y"):
            raise SweepError(f"{option} axis {axis!r} must be x or y")
        if col in declared or col in _PLOT_COLUMNS or _CLAIM_COLUMN.match(col):
            continue
        raise SweepError(f"{option} {axis}={col!r} is not a column of the results; allowed: a parameter of "
                         f"{src.name} ({', '.join(declared) or 'none'}), {', '.join(_PLOT_COLUMNS)}, or a claim "
                         "column C<n>.<number> / C<n>.passed")


def plan(nb: str | Path, grid: str | Path | dict[str, Any] | GridSpec, name: str | None = None,
         out_root: str | Path = RUNS, plot: dict[str, str] | None = None, env: dict[str, str] | None = None,
         max_points: int = MAX_POINTS) -> Sweep:
    """Resolve the chapter, expand and validate every point (names and types) and the plot axes (plot overrides
    the grid file's plot:) before anything runs. `env` is set in every point's kernel (numeric conditions such as
    ATEN_CPU_CAPABILITY or OMP_NUM_THREADS; one sweep folder per environment)."""
    src = resolve_notebook(nb)
    if isinstance(grid, GridSpec):
        spec, grid_stem = grid, "grid"
    elif isinstance(grid, dict):
        spec, grid_stem = parse_grid(grid), "grid"
    else:
        spec, grid_stem = load_grid(grid), Path(grid).stem
    sweep_name = name or spec.name or f"{src.stem}__{grid_stem}"
    if not _NAME_RE.match(sweep_name):
        raise SweepError(f"sweep name {sweep_name!r} must be a plain file name (letters, digits, . _ + -)")
    try:
        root = check_out_dir(out_root, "sweep output")
    except ValueError as exc:
        raise SweepError(str(exc)) from None
    out_dir = root / sweep_name  # absolute: workers and kernels run in other folders
    if is_inside(out_dir, NOTEBOOKS):
        raise SweepError(f"refusing to write sweep output {out_dir} among the source notebooks")
    declared = declared_parameters(src)
    _check_plot(spec.plot, declared, src, "plot:")
    _check_plot(plot or {}, declared, src, "--plot")
    points: dict[str, dict[str, Any]] = {}
    for i, p in enumerate(expand(spec, max_points)):
        p = floats_from_text(declared, p)
        check_point(declared, p, where=f"point {i} ({json.dumps(p, default=str)})")
        p = canonical(declared, p)
        points.setdefault(point_id(identity(declared, p)), p)
    defaults = canonical(declared, {k: _default(v) for k, v in declared.items()})
    swept = [k for k in dict.fromkeys(k for p in points.values() for k in p)
             if len({json.dumps(p.get(k, defaults.get(k)), sort_keys=True, default=str)
                     for p in points.values()}) > 1]
    return Sweep(notebook=src, name=sweep_name, out_dir=out_dir, points=points, defaults=defaults, swept=swept,
                 plot={**spec.plot, **(plot or {})}, code=notebook_hash(src), env=dict(env or {}))


# ------------------------------------------------------------------------------------------------- records
def _write_json(path: Path, data: Any) -> None:
    """Write data as indented JSON, atomically."""
    write_atomic(path, json.dumps(data, indent=1, default=str))


def read_record(path: Path) -> dict[str, Any] | None:
    """A point's status record, or None when missing or unreadable (a torn write counts as missing)."""
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def point_state(sweep: Sweep, pid: str) -> str:
    """"done" when the point's record says ok and its executed notebook is there (non-empty); "stale" when so but
    the record's code_hash is not the chapter's current one (its code changed since; records without a hash, from
    before hashes were kept, count as done); else "pending"."""
    rec = read_record(sweep.record_path(pid))
    try:
        size = sweep.notebook_path(pid).stat().st_size
    except OSError:
        size = 0
    if not (rec and rec.get("status") == "ok" and size > 0):
        return "pending"
    if sweep.code and rec.get("code_hash") and rec["code_hash"] != sweep.code:
        return "stale"
    ran = rec.get("stamp") or {}
    if any(ran.get(k) is not None and str(ran[k]).split("+")[0] != v for k, v in package_versions().items()):
        return "stale"  # same code, other numerics: torch or numpy changed since the point ran
    return "done"


def package_versions() -> dict[str, str]:
    """Versions of the packages the numbers depend on, as the environment stamp records them (torch, numpy,
    python; without local build tags such as +cu130), read without importing torch."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("torch", "numpy"):
        try:
            out[pkg] = version(pkg).split("+")[0]
        except PackageNotFoundError:  # pragma: no cover
            pass
    return out


def is_done(sweep: Sweep, pid: str) -> bool:
    """True when the point finished ok with the chapter's current code (point_state is "done")."""
    return point_state(sweep, pid) == "done"


def _json_safe(value: Any) -> Any:
    """Claim numbers as JSON-safe python values (numpy scalars and arrays to python)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _worker_address() -> str:
    """The Dask worker address when running on one, else host:pid."""
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return f"{socket.gethostname()}:{os.getpid()}"


@contextlib.contextmanager
def _point_env(folder: Path, pid: str, env: dict[str, str] | None = None) -> Iterator[None]:
    """Send the chapter's figures and saved tables to runs/<sweep>/{figures,results}/<pid>/ for the duration,
    so points never write over each other or over the committed figures/, and set `env` (the kernel inherits it).
    Absolute paths: the kernel runs in the notebook's folder. Process-wide: run_point holds _POINT_LOCK."""
    folder = Path(folder).expanduser().resolve()
    new = {**{str(k): str(v) for k, v in (env or {}).items()},
           "LAB_FIGURES": str(folder / "figures" / pid), "LAB_RESULTS": str(folder / "results" / pid)}
    old = {k: os.environ.get(k) for k in new}
    os.environ.update(new)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# One point at a time per worker process: a point sets process-wide state (LAB_FIGURES and LAB_RESULTS here,
# PYTHONPATH in runner.execute, papermill's working directory), so on a worker with several threads (a hand-started
# `dask worker` defaults to one per core) the other threads wait for the running point.
_POINT_LOCK = threading.Lock()


def run_point(src: str, out_dir: str, pid: str, params: dict[str, Any],
              timeout: float | None = None, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Execute one point (papermill) into out_dir/<pid>.ipynb, write and return its status record.

    The notebook goes to a temporary name and is renamed on success, so <pid>.ipynb is always complete (a stale
    <pid>.failed.ipynb from an earlier attempt is removed); a failed run keeps its partial notebook as
    <pid>.failed.ipynb and the record holds the error. Never raises for a failing chapter: the failure is the
    record. out_dir must exist (the coordinator creates it): a worker that cannot see it does not share the
    filesystem, and gets a failed record saying so (returned, not written). Points in one process run one at a
    time (_POINT_LOCK).
    """
    with _POINT_LOCK:
        return _run_point(src, out_dir, pid, params, timeout, env)


def _run_point(src: str, out_dir: str, pid: str, params: dict[str, Any], timeout: float | None,
               env: dict[str, str] | None = None) -> dict[str, Any]:
    """run_point without the lock."""
    import nbformat

    from lab.report import parse_claims, parse_stamp

    folder = Path(out_dir).expanduser().resolve()
    rec: dict[str, Any] = {"id": pid, "params": params, "notebook": str(Path(src).name), "worker": _worker_address(),
                           "host": socket.gethostname(), "started": time.time(), "env": dict(env or {})}
    if not folder.is_dir():
        rec.update(status="failed", claims=[], seconds=0.0, code_hash=None,
                   error=f"SweepError: worker {rec['worker']} on {rec['host']} does not share the filesystem: the "
                         f"sweep folder {folder} is not there; every worker must see the repository and the sweep "
                         "folder at the same path")
        return rec
    rec["code_hash"] = notebook_hash(src)
    final, tmp = folder / f"{pid}.ipynb", folder / f".{pid}.{uuid.uuid4().hex[:8]}{_PART}.ipynb"
    t0 = time.perf_counter()
    try:
        with _point_env(folder, pid, env):
            execute(Path(src), tmp, params, progress=False, timeout=timeout)
        executed = nbformat.read(tmp, as_version=4)
        claims = parse_claims(executed)
        rec["stamp"] = parse_stamp(executed)
        os.replace(tmp, final)
        (folder / f"{pid}.failed.ipynb").unlink(missing_ok=True)  # an earlier failed attempt
        rec.update(status="ok", error=None,
                   claims=[{"id": c["id"], "passed": bool(c["passed"]), "statement": c["statement"],
                            "numbers": _json_safe(c["numbers"])} for c in claims])
    except Exception as exc:  # noqa: BLE001 - a failed point is a result, recorded with its error
        ename, evalue = getattr(exc, "ename", type(exc).__name__), getattr(exc, "evalue", str(exc))
        rec.update(status="failed", error=f"{ename}: {evalue}", claims=[],
                   traceback="".join(traceback.format_exception(exc))[-4000:])
        if tmp.exists():
            os.replace(tmp, folder / f"{pid}.failed.ipynb")
    finally:
        tmp.unlink(missing_ok=True)
    rec["seconds"] = round(time.perf_counter() - t0, 3)
    _write_json(folder / f"{pid}.json", rec)
    return rec


# ------------------------------------------------------------------------------------------------ execution
@dataclass
class SweepResult:
    """What a sweep did: its plan, which points ran now, which were skipped, and the files it wrote."""

    sweep: Sweep
    ran: list[str]
    skipped: list[str]
    table: Any  # pandas.DataFrame
    files: list[Path]

    @property
    def n_failed(self) -> int:
        """Points whose status is not ok."""
        return int((self.table["status"] != "ok").sum())


def default_workers(n_points: int) -> int:
    """Workers for a local cluster: one per CPU core, no more than there are points, at least one."""
    return max(1, min(os.cpu_count() or 1, n_points))


def _dashboard(client: Any) -> str | None:
    """The dashboard address when the scheduler serves one (bokeh installed), else None."""
    try:
        if "dashboard" not in client.scheduler_info().get("services", {}):
            return None
        return str(client.dashboard_link)
    except Exception:  # noqa: BLE001 - informational only
        return None


@contextlib.contextmanager
def connect(scheduler: str | None = None, workers: int | None = None, n_points: int = 1,
            dashboard_address: str | None = "127.0.0.1:8787", wait_timeout: float = 120.0) -> Iterator[Any]:
    """A distributed.Client: to scheduler when given (waiting at most wait_timeout seconds for workers to have
    joined), else to a new LocalCluster (processes, 1 thread each)."""
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler)
        except OSError as exc:  # TimeoutError included
            raise SweepError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from exc
        try:
            if workers:
                try:
                    client.wait_for_workers(workers, timeout=wait_timeout)
                except TimeoutError as exc:
                    have = len(client.scheduler_info().get("workers", {}))
                    raise SweepError(f"only {have} of the {workers} worker(s) asked for (--workers) joined the "
                                     f"scheduler at {scheduler} within {wait_timeout:g} s; start more workers "
                                     "or ask for fewer") from exc
            yield client
        finally:
            client.close()
        return
    n = workers or default_workers(n_points)
    with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=dashboard_address, silence_logs=40) as cluster, Client(cluster) as client:
        yield client


def _clean_partials(folder: Path) -> None:
    """Remove temporary files left by killed workers or an interrupted sweep."""
    for p in [*folder.glob(f".*{_PART}"), *folder.glob(f".*{_PART}.ipynb")]:
        p.unlink(missing_ok=True)


def run_sweep(nb: str | Path, grid: str | Path | dict[str, Any] | GridSpec, name: str | None = None,
              scheduler: str | None = None, workers: int | None = None, client: Any = None,
              out_root: str | Path = RUNS, timeout: float | None = None, retries: int = 1, progress: bool = True,
              plot: dict[str, str] | None = None, dashboard_address: str | None = "127.0.0.1:8787",
              max_points: int = MAX_POINTS) -> SweepResult:
    """Validate, then run every pending point of a sweep on Dask and collect the table and summary plot.

    Points whose record says ok and whose notebook exists are skipped; failed and missing ones run, and so do
    finished ones whose chapter code has changed since (with a warning; see point_state). Each point writes its
    own record as it finishes, so killing a worker or the whole sweep loses no finished point.
    Pass client to use an existing distributed.Client, scheduler for an address, else a LocalCluster of workers.
    """
    sweep = plan(nb, grid, name=name, out_root=out_root, plot=plot, max_points=max_points)
    sweep.out_dir.mkdir(parents=True, exist_ok=True)
    with folder_lock(sweep.out_dir):
        return _run_locked(sweep, scheduler, workers, client, timeout, retries, progress, dashboard_address)


LOCK = ".sweep.lock"
_HELD: set[str] = set()  # folders this process has locked


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on a sweep folder for the duration: a second sweep (or robustness run) on the same
    folder is refused with SweepError saying who holds it (host, pid, command, since when). The lock is an
    fcntl lock on folder/.sweep.lock, released by the OS when the holder dies, so a killed sweep never leaves the
    folder locked. The lock file stays (removing it would let two processes lock two different files)."""
    import fcntl

    folder = Path(folder).resolve()
    if str(folder) in _HELD:  # this process holds it already (e.g. the CLI around a robustness run): re-entrant
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    fh = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the duration
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise SweepError(f"sweep folder {folder} is in use by {holder}; wait for it to finish, or use another "
                             "--name") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()} since "
                 f"{time.strftime('%Y-%m-%d %H:%M:%S')} ({' '.join(sys.argv)[:200]})")
        fh.flush()
        _HELD.add(str(folder))
        try:
            yield
        finally:
            _HELD.discard(str(folder))
    finally:
        fh.close()


def _run_locked(sweep: Sweep, scheduler: str | None, workers: int | None, client: Any, timeout: float | None,
                retries: int, progress: bool, dashboard_address: str | None) -> SweepResult:
    """run_sweep's body, with the folder locked."""
    from tqdm.auto import tqdm

    _write_json(sweep.out_dir / "sweep.json", {"notebook": str(sweep.notebook), "name": sweep.name,
                                               "code_hash": sweep.code, "swept": sweep.swept, "plot": sweep.plot,
                                               "env": sweep.env,
                                               "points": sweep.points})
    _clean_partials(sweep.out_dir)
    states = {pid: point_state(sweep, pid) for pid in sweep.points}
    skipped = [pid for pid, st in states.items() if st == "done"]
    pending = [pid for pid, st in states.items() if st != "done"]
    stale = [pid for pid, st in states.items() if st == "stale"]
    if stale:
        warnings.warn(f"{len(stale)} finished point(s) of sweep {sweep.name} ran another version of "
                      f"{sweep.notebook.name}'s code (its code hash is now {sweep.code}): running them again",
                      stacklevel=2)
    tqdm.write(f"sweep {sweep.name}: {len(sweep.points)} point(s), {len(skipped)} already done, {len(pending)} to run"
               + (f" ({len(stale)} of them because the chapter's code changed)" if stale else ""))
    ran: list[str] = []
    if pending:
        ctx = contextlib.nullcontext(client) if client is not None else connect(
            scheduler, workers, len(pending), dashboard_address)
        with ctx as cl:
            link = _dashboard(cl)
            if link:
                tqdm.write(f"dask dashboard: {link}")
            ran = [pid for _, pid in submit_points(cl, [(sweep, pid) for pid in pending], timeout, retries,
                                                   progress, desc=sweep.name)]
    _clean_partials(sweep.out_dir)
    table, files = write_results(sweep)
    return SweepResult(sweep=sweep, ran=ran, skipped=skipped, table=table, files=files)


def submit_points(client: Any, items: Sequence[tuple[Sweep, str]], timeout: float | None, retries: int,
                  progress: bool, desc: str = "points") -> list[tuple[Sweep, str]]:
    """Submit one task per (sweep, point id) — points of several sweeps may share one cluster — follow them with a
    progress bar, record tasks that died with their worker; return the items in the order they finished."""
    from distributed import as_completed
    from tqdm.auto import tqdm

    futures = {}
    for sweep, pid in items:
        fut = client.submit(run_point, str(sweep.notebook), str(sweep.out_dir), pid, sweep.points[pid], timeout,
                            sweep.env or None, pure=False, retries=retries, key=f"point-{pid}-{uuid.uuid4().hex[:8]}")
        futures[fut] = (sweep, pid)
    counts = {"ok": 0, "failed": 0}
    bar = tqdm(total=len(futures), desc=desc, unit="point", disable=not progress)
    ran = []
    try:
        for fut in as_completed(futures):
            sweep, pid = futures[fut]
            ran.append((sweep, pid))
            if fut.status == "finished":
                rec = settle(sweep, pid, fut.result(), None)
            else:  # the task itself died (e.g. its worker was killed more often than allowed)
                rec = settle(sweep, pid, None, fut.exception())
            counts["ok" if rec.get("status") == "ok" else "failed"] += 1
            bar.set_postfix(counts)
            bar.update(1)
    finally:
        bar.close()
        for fut in futures:
            if not fut.done():
                fut.cancel()
    return ran


def settle(sweep: Sweep, pid: str, rec: dict[str, Any] | None, exc: BaseException | None) -> dict[str, Any]:
    """The coordinator's record of a point whose task ended: rec (what the task returned) or exc (why it died).

    A point the worker finished and recorded is never overwritten, even when the task died afterwards (a
    KilledWorker after the record was written). A task that died writes a failed record. A point the worker
    reports ok but whose record is not here comes from a worker without the shared filesystem: recorded as
    failed, saying so (never an ok record whose notebook is missing, which would rerun every time).
    """
    path = sweep.record_path(pid)
    if is_done(sweep, pid):
        return read_record(path) or dict(rec or {})
    if exc is not None or rec is None:
        rec = {"id": pid, "params": sweep.points[pid], "status": "failed", "claims": [],
               "error": f"{type(exc).__name__}: {exc}", "worker": None, "seconds": None}
    elif read_record(path) is None:  # the worker wrote its files somewhere else
        if rec.get("status") == "ok":
            rec = {**rec, "status": "failed", "claims": [],
                   "error": f"SweepError: worker {rec.get('worker')} on {rec.get('host')} does not share the "
                            f"filesystem: it finished the point, but its notebook and record are not in "
                            f"{sweep.out_dir} here; every worker must see the sweep folder at the same path"}
    else:
        return rec
    _write_json(path, rec)
    return rec


# -------------------------------------------------------------------------------------------------- results
def _cell(value: Any) -> Any:
    """A table cell: scalars as they are, lists and dicts as compact JSON."""
    if isinstance(value, (list, dict, tuple)):
        return json.dumps(value, default=str)
    return value


def collect(sweep: Sweep) -> Any:
    """The results table (pandas): one row per point with id, status, error, seconds, parameters, claims.

    Parameters a point does not set show the chapter's default. Each claim gives columns `<id>.passed` and
    `<id>.<number>`; `claims_passed` is the fraction of a point's claims that passed. A point with no record
    yet has status "pending"; one finished by another version of the chapter's code, "stale" (claims left out).
    """
    import pandas as pd

    rows = []
    params = list(dict.fromkeys([*sweep.swept, *(k for p in sweep.points.values() for k in p),
                                 *(c for c in sweep.plot.values() if c in sweep.defaults)]))
    for pid, p in sweep.points.items():
        rec = read_record(sweep.record_path(pid)) or {}
        status = rec.get("status", "pending")
        if status == "ok":
            state = point_state(sweep, pid)
            status = "ok" if state == "done" else state
        row: dict[str, Any] = {"point": pid, "status": status, "error": rec.get("error"),
                               "seconds": rec.get("seconds"), "worker": rec.get("worker")}
        for k in params:
            row[k] = _cell(p.get(k, sweep.defaults.get(k)))
        claims = (rec.get("claims") or []) if status == "ok" else []
        row["claims_passed"] = (sum(bool(c.get("passed")) for c in claims) / len(claims)) if claims else math.nan
        for c in claims:
            row[f"{c['id']}.passed"] = bool(c.get("passed"))
            for k, v in (c.get("numbers") or {}).items():
                row[f"{c['id']}.{k}"] = _cell(v)
        rows.append(row)
    return pd.DataFrame(rows)


def _parquet_ready(df: Any) -> Any:
    """A copy whose object columns hold one type each (mixed columns become strings), as parquet needs."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object:
            kinds = {type(v) for v in out[col] if v is not None and not (isinstance(v, float) and math.isnan(v))}
            if len(kinds) > 1:
                out[col] = [None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
                            for v in out[col]]
    return out


def write_results(sweep: Sweep) -> tuple[Any, list[Path]]:
    """Write results.csv (and results.parquet when pyarrow is importable) and summary.png, each atomically;
    return the table and the files. A plot that fails is a warning: the table is never lost."""
    df = collect(sweep)
    files = [sweep.out_dir / "results.csv"]
    write_atomic(files[0], df.to_csv(index=False))
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        pass
    else:
        pq = sweep.out_dir / "results.parquet"
        write_atomic(pq, lambda tmp: _parquet_ready(df).to_parquet(tmp, index=False))
        files.append(pq)
    try:
        png = plot_summary(sweep, df)
    except Exception as exc:  # noqa: BLE001 - the table is the result; the plot is a convenience
        warnings.warn(f"summary.png not written ({type(exc).__name__}: {exc}); the results table is complete",
                      stacklevel=2)
        png = None
    if png is not None:
        files.append(png)
    return df, files


def _numeric(df: Any, col: str) -> bool:
    """True when the column is numeric (not bool) with at least one finite value."""
    import pandas as pd

    s = df[col]
    return (pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
            and bool(pd.to_numeric(s, errors="coerce").notna().any()))


def choose_axes(sweep: Sweep, df: Any) -> tuple[str | None, str]:
    """(x, y) of the summary plot: the grid's plot choice, else the first numeric swept parameter and the
    first claim number that varies over the finished points, else the fraction of claims passed.

    An x or y that is not a column (claims are only known once points have run) falls back, with a warning, to
    the guess for x and to claims_passed for y.
    """
    ok = df[df["status"] == "ok"]
    x = sweep.plot.get("x")
    if x is not None and x not in df.columns:
        warnings.warn(f"plot x {x!r} is not a column of the results (columns: {', '.join(df.columns)}); "
                      "plotting against the first numeric swept parameter instead", stacklevel=2)
        x = None
    x = x or next((p for p in sweep.swept if p in df and _numeric(df, p)), None)
    y = sweep.plot.get("y")
    if y is None:
        claim_cols = [c for c in df.columns if re.match(r"^C\d+[a-z]?\.", c) and not c.endswith(".passed")]
        y = next((c for c in claim_cols if _numeric(ok, c) and ok[c].nunique() > 1), "claims_passed")
    if y not in df.columns:  # the sweep has run by now: fall back rather than lose the plot
        warnings.warn(f"plot y {y!r} is not a column of the results (columns: {', '.join(df.columns)}); "
                      "plotting claims_passed instead", stacklevel=2)
        y = "claims_passed"
    return x, y


def plot_summary(sweep: Sweep, df: Any) -> Path | None:
    """summary.png: y against the first swept parameter (one line per other swept combination) and the
    fraction of claims passed per point; None when no point has finished."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import pandas as pd

    ok = df[df["status"] == "ok"]
    if ok.empty:
        return None
    x, y = choose_axes(sweep, df)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 2]})
    others = [p for p in sweep.swept if p != x and p in df]
    if x is not None:
        groups = ok.groupby(others, dropna=False, sort=True) if others else [((), ok)]
        for key, g in groups:
            key = key if isinstance(key, tuple) else (key,)
            g = g.assign(_x=pd.to_numeric(g[x], errors="coerce"), _y=pd.to_numeric(g[y], errors="coerce"))
            g = g.sort_values("_x")
            label = ", ".join(f"{k}={v}" for k, v in zip(others, key, strict=True)) or None
            ax.plot(g["_x"], g["_y"], "o-", label=label)
        xs = pd.to_numeric(ok[x], errors="coerce").dropna()
        if len(xs) and (xs > 0).all() and xs.max() / xs.min() >= 8:
            ax.set_xscale("log", base=2 if all(float(v).is_integer() for v in xs) else 10)
        ax.set_xlabel(x)
        if others:
            ax.legend(fontsize=8)
    else:
        ax.plot(range(len(ok)), pd.to_numeric(ok[y], errors="coerce"), "o")
        ax.set_xticks(range(len(ok)), ok["point"], rotation=45, fontsize=7)
        ax.set_xlabel("point")
    ax.set_ylabel(y)
    ax.set_title(f"{y} over the sweep")
    frac = pd.to_numeric(df["claims_passed"], errors="coerce").fillna(0.0)
    colors = ["tab:green" if s == "ok" else "tab:red" for s in df["status"]]
    labels = [(", ".join(f"{p}={r[p]}" for p in sweep.swept) or r["point"]) + ("" if r["status"] == "ok" else
              f" ({r['status']})") for _, r in df.iterrows()]
    ax2.barh(range(len(df)), frac, color=colors)
    ax2.set_yticks(range(len(df)), labels, fontsize=7)
    ax2.set_xlim(0, 1)
    ax2.invert_yaxis()
    ax2.set_xlabel("fraction of claims passed")
    ax2.set_title(f"{int((df['status'] == 'ok').sum())}/{len(df)} points ok")
    fig.suptitle(f"sweep {sweep.name}")
    fig.tight_layout()
    out = sweep.out_dir / "summary.png"
    try:
        write_atomic(out, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    finally:
        plt.close(fig)
    return out
