"""Parameter sweeps of a chapter on Dask: grid files, stable point ids, resumable runs, one results table. The
package splits the engine by role — `grid` (reading, validating, counting and expanding a grid), `plan` (the Sweep
plan, code hashes and staleness, status records, the folder lock), `execute` (running the points on a LocalCluster
or a scheduler) and `results` (results.csv/parquet and summary.png) — and re-exports every name from here, so
`from lab.workbook.sweep import ...` reads as before; patch a name in the submodule that uses it."""
from __future__ import annotations

from lab.workbook.sweep.execute import (
    SweepResult,
    _clean_partials,  # noqa: F401 - private, used by lab.workbook.robustness
    _dashboard,  # noqa: F401 - private, used by the tests
    connect,
    default_workers,
    run_point,
    run_sweep,
    settle,
    submit_points,
)
from lab.workbook.sweep.grid import (
    GRID_KEYS,
    MAX_POINTS,
    GridSpec,
    SweepError,
    canonical,
    check_point,
    count_points,
    expand,
    floats_from_text,
    identity,
    is_structured,
    load_grid,
    parse_grid,
    point_id,
)
from lab.workbook.sweep.plan import (
    LOCK,
    MACHINERY,
    MACHINERY_DIRS,
    Sweep,
    _write_json,  # noqa: F401 - private, used by lab.workbook.robustness
    folder_lock,
    is_done,
    lab_hash,
    notebook_hash,
    package_versions,
    plan,
    point_state,
    read_record,
)
from lab.workbook.sweep.results import choose_axes, collect, plot_summary, write_results

__all__ = [
    "GRID_KEYS",
    "LOCK",
    "MACHINERY",
    "MACHINERY_DIRS",
    "MAX_POINTS",
    "GridSpec",
    "Sweep",
    "SweepError",
    "SweepResult",
    "canonical",
    "check_point",
    "choose_axes",
    "collect",
    "connect",
    "count_points",
    "default_workers",
    "expand",
    "floats_from_text",
    "folder_lock",
    "identity",
    "is_done",
    "is_structured",
    "lab_hash",
    "load_grid",
    "notebook_hash",
    "package_versions",
    "parse_grid",
    "plan",
    "plot_summary",
    "point_id",
    "point_state",
    "read_record",
    "run_point",
    "run_sweep",
    "settle",
    "submit_points",
    "write_results",
]
