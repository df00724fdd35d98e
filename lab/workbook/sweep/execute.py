"""Running a sweep's points on Dask: one point in a papermill kernel on a worker (run_point: one at a time per
process, its own figures/results folders and environment, an atomic notebook and a status record), the
distributed.Client to a scheduler or a new LocalCluster (connect, default_workers, the dashboard link), submitting
the pending points with per-point timeouts and retries under a progress bar (submit_points), the coordinator's
record of a point whose task died (settle), and run_sweep, which plans, locks the folder, runs and collects."""
from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import traceback
import uuid
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.workbook.paths import RUNS
from lab.workbook.runner import PART, execute
from lab.workbook.sweep.grid import MAX_POINTS, GridSpec, SweepError
from lab.workbook.sweep.plan import (
    Sweep,
    _write_json,
    folder_lock,
    is_done,
    notebook_hash,
    plan,
    point_state,
    read_record,
)
from lab.workbook.sweep.results import write_results

_PART = PART  # temporary files: .<name>.<random>.part[.ipynb], removed or renamed when complete


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

    from lab.workbook.report import parse_claims, parse_stamp

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
                   claims=[{"id": c["id"], "passed": bool(c["passed"]), "status": c.get("status"),
                            "kind": c.get("kind"), "statement": c["statement"],
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
