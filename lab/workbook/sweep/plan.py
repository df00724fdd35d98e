"""The plan of a sweep and its staleness: a validated Sweep (chapter, points by id, output folder, plot axes,
kernel environment), the code hashes that tell which version of a chapter a point ran (notebook_hash over the
notebook's code cells and lab_hash over the lab sources outside the machinery), the package versions a point's
numbers depend on, the per-point status records and point_state (pending, done or stale), and the exclusive
folder_lock on a sweep folder."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.workbook.paths import NOTEBOOKS, RUNS
from lab.workbook.runner import check_out_dir, declared_parameters, is_inside, resolve_notebook, write_atomic
from lab.workbook.sweep.grid import (
    _NAME_RE,
    MAX_POINTS,
    GridSpec,
    SweepError,
    _default,
    canonical,
    check_point,
    expand,
    floats_from_text,
    identity,
    load_grid,
    parse_grid,
    point_id,
)

_CLAIM_COLUMN = re.compile(r"^C\d+[A-Za-z]?\..+")  # C<n>.passed and C<n>.<number> columns of the results
_PLOT_COLUMNS = ("seconds", "claims_passed")  # results columns besides parameters and claims that can be plotted


# Modules that run and report chapters and change no number (paths relative to the lab package); everything else
# in lab — the science, and the workbook modules a chapter runs (validate, claims, repro, figures, chapter) — counts.
MACHINERY_DIRS = ("workbook/sweep",)
MACHINERY = ("__init__.py", "workbook/__init__.py", "workbook/cli.py", "workbook/report.py", "workbook/robustness.py",
             "workbook/runner.py", "workbook/saving.py")


def lab_hash() -> str:
    """sha1 over the lab package's Python sources that a chapter's numbers depend on (all but the machinery that
    runs and reports chapters): the science a chapter imports is part of its code."""
    h = hashlib.sha1()
    pkg = Path(__file__).resolve().parent.parent.parent  # lab/workbook/sweep/plan.py -> lab
    for f in sorted(pkg.rglob("*.py")):
        rel = f.relative_to(pkg).as_posix()
        if rel in MACHINERY or any(rel.startswith(d + "/") for d in MACHINERY_DIRS):
            continue
        h.update(rel.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def notebook_hash(path: str | Path) -> str:
    """The first 12 hex digits of sha1 over a notebook's code cells (sources, in order), its claims declaration
    (notebooks/claims/NN.yaml: the thresholds that decide its verdicts) and the lab package's sources: which version
    of a chapter's code a point ran. Markdown and outputs do not count."""
    import nbformat

    path = Path(path)
    nb = nbformat.read(str(path), as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    decl = path.parent / "claims" / f"{path.stem[:2]}.yaml"
    claims = decl.read_text(encoding="utf-8") if decl.is_file() else ""
    return hashlib.sha1(json.dumps([code, claims, lab_hash()]).encode()).hexdigest()[:12]


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


# ------------------------------------------------------------------------------------------------ locking
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
