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
import tempfile
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
from lab.runner import _execute, _inside, declared_parameters, resolve_notebook

GRID_KEYS = ("grid", "rows", "fixed", "plot", "name")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_PART = ".part"  # temporary files: .<name>.<random>.part[.ipynb], removed or renamed when complete


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


def parse_grid(data: Any) -> GridSpec:
    """Parse a grid mapping: {param: [values]} (full product) or {grid:, rows:, fixed:, plot:, name:}."""
    if not isinstance(data, dict) or not data:
        raise SweepError(f"a grid must be a non-empty mapping, got {type(data).__name__}: {data!r}")
    structured = any(k in data for k in ("grid", "rows", "fixed"))
    if not structured:
        data = {"grid": data}
    extra = sorted(set(data) - set(GRID_KEYS))
    if extra:
        raise SweepError(f"unknown grid key(s) {', '.join(map(repr, extra))}; allowed top-level keys: "
                         f"{', '.join(GRID_KEYS)} (or a plain mapping of parameter lists)")
    grid, rows, fixed = data.get("grid") or {}, data.get("rows") or [], data.get("fixed") or {}
    for key, val, kind in (("grid", grid, dict), ("rows", rows, list), ("fixed", fixed, dict)):
        if not isinstance(val, kind):
            raise SweepError(f"grid key {key!r} must be a {kind.__name__}, got {type(val).__name__}")
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
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SweepError(f"grid file {p.name} is not valid YAML: {exc}") from exc
    return parse_grid(data)


def expand(spec: GridSpec) -> list[dict[str, Any]]:
    """All points: the full product of spec.grid, then spec.rows, each with spec.fixed; duplicates dropped."""
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
def _default(info: dict[str, Any]) -> Any:
    """The declared default as a python value (None when it is not a literal)."""
    try:
        return ast.literal_eval(str(info.get("default")))
    except (ValueError, SyntaxError):
        return None


_TYPES: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,),
                                       "list": (list,), "dict": (dict,), "tuple": (list, tuple)}


def _accepted(info: dict[str, Any]) -> tuple[tuple[type, ...] | None, bool]:
    """(accepted python types or None for any, whether None is allowed) for one declared parameter."""
    tname = str(info.get("inferred_type_name") or "None").replace(" ", "")
    optional = False
    m = re.fullmatch(r"(?:typing\.)?Optional\[(.+)\]", tname)
    if m:
        tname, optional = m[1], True
    parts = tname.split("|")
    if "None" in parts and len(parts) > 1:
        parts.remove("None")
        optional = True
    if len(parts) == 1:
        base = re.sub(r"\[.*\]$", "", parts[0]).split(".")[-1].lower()
        if base in _TYPES:
            return _TYPES[base], optional
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
        raise SweepError(f"unknown parameter(s) {', '.join(map(repr, unknown))}{at}; allowed: {allowed}")
    for name, value in params.items():
        types, optional = _accepted(declared[name])
        if value is None and optional:
            continue
        ok = types is None or (isinstance(value, types) and not (isinstance(value, bool) and bool not in types))
        if not ok:
            info = declared[name]
            raise SweepError(f"parameter {name!r}{at}: expected {info.get('inferred_type_name')} "
                             f"(default {info.get('default')}), got {type(value).__name__} {value!r}")


def canonical(declared: dict[str, dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
    """Ints given for float-declared parameters become floats, so 1 and 1.0 name the same point."""
    out = dict(params)
    for k, v in params.items():
        if isinstance(v, int) and not isinstance(v, bool) and k in declared and (
                _accepted(declared[k])[0] == _TYPES["float"]):
            out[k] = float(v)
    return out


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

    def notebook_path(self, pid: str) -> Path:
        """The executed notebook of a finished point."""
        return self.out_dir / f"{pid}.ipynb"

    def record_path(self, pid: str) -> Path:
        """The status record of a point."""
        return self.out_dir / f"{pid}.json"


def plan(nb: str | Path, grid: str | Path | dict[str, Any] | GridSpec, name: str | None = None,
         out_root: str | Path = RUNS) -> Sweep:
    """Resolve the chapter, expand and validate every point (names and types) before anything runs."""
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
    out_dir = Path(out_root) / sweep_name
    if _inside(out_dir, NOTEBOOKS):
        raise SweepError(f"refusing to write sweep output {out_dir} among the source notebooks")
    declared = declared_parameters(src)
    points: dict[str, dict[str, Any]] = {}
    for i, p in enumerate(expand(spec)):
        check_point(declared, p, where=f"point {i} ({json.dumps(p, default=str)})")
        p = canonical(declared, p)
        points.setdefault(point_id(p), p)
    swept = [k for k in dict.fromkeys(k for p in points.values() for k in p)
             if len({json.dumps(p.get(k), default=str) for p in points.values()}) > 1]
    for axis, col in spec.plot.items():
        if axis == "x" and col not in declared:
            raise SweepError(f"plot x {col!r} is not a parameter of {src.name}; allowed: {', '.join(declared)}")
    return Sweep(notebook=src, name=sweep_name, out_dir=out_dir, points=points,
                 defaults={k: _default(v) for k, v in declared.items()}, swept=swept, plot=dict(spec.plot))


# ------------------------------------------------------------------------------------------ atomic writes
def _write_atomic(path: Path, text: str) -> None:
    """Write text to path through a temporary file in the same folder and os.replace."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_PART, dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_record(path: Path) -> dict[str, Any] | None:
    """A point's status record, or None when missing or unreadable (a torn write counts as missing)."""
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def is_done(sweep: Sweep, pid: str) -> bool:
    """True when the point's record says ok and its executed notebook exists."""
    rec = read_record(sweep.record_path(pid))
    return bool(rec and rec.get("status") == "ok" and sweep.notebook_path(pid).is_file())


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
def _point_env(folder: Path, pid: str) -> Iterator[None]:
    """Send the chapter's figures and saved tables to runs/<sweep>/{figures,results}/<pid>/ for the duration,
    so points running side by side never write over each other or over the committed figures/."""
    new = {"LAB_FIGURES": str(folder / "figures" / pid), "LAB_RESULTS": str(folder / "results" / pid)}
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


def run_point(src: str, out_dir: str, pid: str, params: dict[str, Any],
              timeout: float | None = None) -> dict[str, Any]:
    """Execute one point (papermill) into out_dir/<pid>.ipynb, write and return its status record.

    The notebook goes to a temporary name and is renamed on success, so <pid>.ipynb is always complete; a failed
    run keeps its partial notebook as <pid>.failed.ipynb and the record holds the error. Never raises for a
    failing chapter: the failure is the record.
    """
    import nbformat

    from lab.report import parse_claims

    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    final, tmp = folder / f"{pid}.ipynb", folder / f".{pid}.{uuid.uuid4().hex[:8]}{_PART}.ipynb"
    rec: dict[str, Any] = {"id": pid, "params": params, "notebook": str(Path(src).name), "worker": _worker_address(),
                           "host": socket.gethostname(), "started": time.time()}
    t0 = time.perf_counter()
    try:
        with _point_env(folder, pid):
            _execute(Path(src), tmp, params, progress=False, timeout=timeout)
        claims = parse_claims(nbformat.read(tmp, as_version=4))
        os.replace(tmp, final)
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
    _write_atomic(folder / f"{pid}.json", json.dumps(rec, indent=1, default=str))
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
            dashboard_address: str | None = ":8787") -> Iterator[Any]:
    """A distributed.Client: to scheduler when given, else to a new LocalCluster (processes, 1 thread each)."""
    from distributed import Client, LocalCluster

    if scheduler:
        client = Client(scheduler)
        try:
            if workers:
                client.wait_for_workers(workers)
            yield client
        finally:
            client.close()
        return
    n = workers or default_workers(n_points)
    with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=dashboard_address,
                      silence_logs=40) as cluster, Client(cluster) as client:
        yield client


def _clean_partials(folder: Path) -> None:
    """Remove temporary files left by killed workers or an interrupted sweep."""
    for p in [*folder.glob(f".*{_PART}"), *folder.glob(f".*{_PART}.ipynb")]:
        p.unlink(missing_ok=True)


def run_sweep(nb: str | Path, grid: str | Path | dict[str, Any] | GridSpec, name: str | None = None,
              scheduler: str | None = None, workers: int | None = None, client: Any = None,
              out_root: str | Path = RUNS, timeout: float | None = None, retries: int = 1, progress: bool = True,
              plot: dict[str, str] | None = None, dashboard_address: str | None = ":8787") -> SweepResult:
    """Validate, then run every pending point of a sweep on Dask and collect the table and summary plot.

    Points whose record says ok and whose notebook exists are skipped; failed and missing ones run. Each point
    writes its own record as it finishes, so killing a worker or the whole sweep loses no finished point.
    Pass client to use an existing distributed.Client, scheduler for an address, else a LocalCluster of workers.
    """
    from tqdm.auto import tqdm

    sweep = plan(nb, grid, name=name, out_root=out_root)
    if plot:
        sweep.plot.update(plot)
    sweep.out_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(sweep.out_dir / "sweep.json", json.dumps(
        {"notebook": str(sweep.notebook), "name": sweep.name, "swept": sweep.swept, "plot": sweep.plot,
         "points": sweep.points}, indent=1, default=str))
    _clean_partials(sweep.out_dir)
    skipped = [pid for pid in sweep.points if is_done(sweep, pid)]
    pending = [pid for pid in sweep.points if pid not in set(skipped)]
    tqdm.write(f"sweep {sweep.name}: {len(sweep.points)} point(s), {len(skipped)} already done, {len(pending)} to run")
    ran: list[str] = []
    if pending:
        ctx = contextlib.nullcontext(client) if client is not None else connect(
            scheduler, workers, len(pending), dashboard_address)
        with ctx as cl:
            link = _dashboard(cl)
            if link:
                tqdm.write(f"dask dashboard: {link}")
            ran = _submit_all(cl, sweep, pending, timeout, retries, progress)
    _clean_partials(sweep.out_dir)
    table, files = write_results(sweep)
    return SweepResult(sweep=sweep, ran=ran, skipped=skipped, table=table, files=files)


def _submit_all(client: Any, sweep: Sweep, pending: Sequence[str], timeout: float | None, retries: int,
                progress: bool) -> list[str]:
    """Submit one task per point, follow them with a progress bar, record tasks that died with their worker."""
    from distributed import as_completed
    from tqdm.auto import tqdm

    futures = {}
    for pid in pending:
        fut = client.submit(run_point, str(sweep.notebook), str(sweep.out_dir), pid, sweep.points[pid], timeout,
                            pure=False, retries=retries, key=f"point-{pid}-{uuid.uuid4().hex[:8]}")
        futures[fut] = pid
    counts = {"ok": 0, "failed": 0}
    bar = tqdm(total=len(futures), desc=sweep.name, unit="point", disable=not progress)
    ran = []
    try:
        for fut in as_completed(futures):
            pid = futures[fut]
            ran.append(pid)
            if fut.status == "finished":
                rec = fut.result()
                if read_record(sweep.record_path(pid)) is None:  # a worker without our filesystem
                    _write_atomic(sweep.record_path(pid), json.dumps(rec, indent=1, default=str))
            else:  # the task itself died (e.g. its worker was killed more often than allowed)
                exc = fut.exception()
                rec = {"id": pid, "params": sweep.points[pid], "status": "failed", "claims": [],
                       "error": f"{type(exc).__name__}: {exc}", "worker": None, "seconds": None}
                _write_atomic(sweep.record_path(pid), json.dumps(rec, indent=1, default=str))
            counts["ok" if rec.get("status") == "ok" else "failed"] += 1
            bar.set_postfix(counts)
            bar.update(1)
    finally:
        bar.close()
        for fut in futures:
            if not fut.done():
                fut.cancel()
    return ran


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
    yet has status "pending".
    """
    import pandas as pd

    rows = []
    params = list(dict.fromkeys([*sweep.swept, *(k for p in sweep.points.values() for k in p)]))
    for pid, p in sweep.points.items():
        rec = read_record(sweep.record_path(pid)) or {}
        status = rec.get("status", "pending")
        if status == "ok" and not sweep.notebook_path(pid).is_file():
            status = "pending"
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
    """Write results.csv (and results.parquet when pyarrow is importable) and summary.png; return the table."""
    df = collect(sweep)
    files = [sweep.out_dir / "results.csv"]
    _write_atomic(files[0], df.to_csv(index=False))
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        pass
    else:
        pq = sweep.out_dir / "results.parquet"
        _parquet_ready(df).to_parquet(pq, index=False)
        files.append(pq)
    png = plot_summary(sweep, df)
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

    An unknown y column (claims are only known once points have run) falls back to claims_passed with a warning.
    """
    ok = df[df["status"] == "ok"]
    x = sweep.plot.get("x") or next((p for p in sweep.swept if p in df and _numeric(df, p)), None)
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
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
