"""Tests for lab.workbook.sweep: grid expansion and validation, and real sweeps on a 2-worker LocalCluster.

The cluster tests run the tiny fixture notebook (a few seconds per point): failure isolation, the results table,
resuming after an interrupted sweep, and a worker killed in the middle of a sweep.
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from lab.workbook import sweep
from lab.workbook.cli import main
from lab.workbook.paths import ROOT

FIXTURE = Path(__file__).parent.parent / "fixtures" / "sweep_fixture.ipynb"
EXAMPLE_GRID = ROOT / "sweeps" / "01_width_depth.yaml"


# ------------------------------------------------------------------------------------------- no cluster needed
def test_point_id_is_stable_and_order_free() -> None:
    """The id is sha1 of canonical JSON (sorted keys), 12 hex digits, independent of key order."""
    assert sweep.point_id({"x": 2, "label": "a"}) == sweep.point_id({"label": "a", "x": 2}) == "7c58500ac016"
    assert sweep.point_id({"x": 2}) != sweep.point_id({"x": 3})
    assert len(sweep.point_id({})) == 12


def test_full_product_rows_and_fixed() -> None:
    """Lists give the full product (in order), rows are appended, fixed values join every point, dups drop."""
    spec = sweep.parse_grid({"x": [1, 2, 3], "label": ["a", "b"]})
    pts = sweep.expand(spec)
    assert pts == [{"x": x, "label": lab} for x in (1, 2, 3) for lab in ("a", "b")]
    spec = sweep.parse_grid({"grid": {"x": [1, 2]}, "rows": [{"x": 7, "label": "q"}, {"x": 1}],
                             "fixed": {"scale": 0.5}})
    assert sweep.expand(spec) == [{"scale": 0.5, "x": 1}, {"scale": 0.5, "x": 2},
                                  {"scale": 0.5, "x": 7, "label": "q"}]
    assert sweep.expand(sweep.parse_grid({"x": 4, "label": ["a"]})) == [{"x": 4, "label": "a"}]  # scalar = 1 value


@pytest.mark.parametrize(("data", "match"), [
    ({"x": []}, "'x' has an empty list"),
    ({"grid": {"x": [1]}, "colums": 1}, "unknown grid key.*'colums'"),
    ({"rows": [{"x": 1}, 5]}, r"rows\[1\] must be a non-empty mapping"),
    ({"grid": {"x": [1, 2]}, "fixed": {"x": 3}}, r"x are both swept and fixed"),
    ({"fixed": {"x": 3}}, "defines no points"),
    ([1, 2], "must be a non-empty mapping"),
    ({"grid": {"x": [1]}, "plot": {"z": "x"}}, "plot must be a mapping with keys x and/or y"),
])
def test_grid_errors(data: object, match: str) -> None:
    """Malformed grids are rejected with a message naming the problem."""
    with pytest.raises(sweep.SweepError, match=match):
        sweep.expand(sweep.parse_grid(data))


def test_validation_before_anything_runs(tmp_path: Path) -> None:
    """Unknown names and wrong types raise (naming parameter and point) before a cluster is contacted."""
    bad_scheduler = "tcp://127.0.0.1:9"  # nothing listens there: reaching it would fail differently
    with pytest.raises(sweep.SweepError, match="unknown parameter.*'bogus'") as err:
        sweep.run_sweep(FIXTURE, {"x": [1], "bogus": [2]}, scheduler=bad_scheduler, out_root=tmp_path)
    assert "sleep_s (float, default 0.0)" in str(err.value)
    with pytest.raises(sweep.SweepError, match=r"parameter 'x' in point 1 .*expected int.*got str 'two'"):
        sweep.run_sweep(FIXTURE, {"x": [1, "two"]}, scheduler=bad_scheduler, out_root=tmp_path)
    with pytest.raises(sweep.SweepError, match="parameter 'x'.*got bool True"):
        sweep.plan(FIXTURE, {"x": [True]}, out_root=tmp_path)
    with pytest.raises(sweep.SweepError, match="parameter 'label'.*expected str"):
        sweep.plan(FIXTURE, {"rows": [{"x": 1}, {"label": 3}]}, out_root=tmp_path)
    assert not list(tmp_path.iterdir())


def test_int_for_float_is_accepted_and_canonical(tmp_path: Path) -> None:
    """An int where a float is declared is fine and names the same point as the float."""
    a = sweep.plan(FIXTURE, {"scale": [1, 2]}, out_root=tmp_path)
    b = sweep.plan(FIXTURE, {"scale": [1.0, 2.0]}, out_root=tmp_path)
    assert list(a.points) == list(b.points) and list(a.points.values()) == [{"scale": 1.0}, {"scale": 2.0}]
    assert a.name == "sweep_fixture__grid" and a.swept == ["scale"]


def test_grid_file_and_example_grid(tmp_path: Path) -> None:
    """A YAML grid file names the sweep after notebook and grid; the chapter 01 example grid validates."""
    g = tmp_path / "small.yaml"
    g.write_text("grid:\n  x: [1, 2]\nfixed:\n  label: b\nplot: {x: x, y: C2.y}\n")
    s = sweep.plan(FIXTURE, g, out_root=tmp_path / "runs")
    assert s.name == "sweep_fixture__small" and s.out_dir == tmp_path / "runs" / "sweep_fixture__small"
    assert s.plot == {"x": "x", "y": "C2.y"} and len(s.points) == 2
    ex = sweep.plan("01", EXAMPLE_GRID, out_root=tmp_path / "runs")
    assert len(ex.points) >= 4 and {"max_width", "max_depth"} <= set(ex.swept)
    with pytest.raises(sweep.SweepError, match="not found"):
        sweep.load_grid(tmp_path / "missing.yaml")


def test_cli_validation_error_and_dry_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m lab sweep` exits 2 on a bad grid; --dry-run lists the points without running them."""
    g = tmp_path / "g.yaml"
    g.write_text("x: [1, 2]\nwidth: [3]\n")
    assert main(["sweep", str(FIXTURE), "--grid", str(g), "--out-dir", str(tmp_path)]) == 2
    assert "unknown parameter(s) 'width'" in capsys.readouterr().err
    g.write_text("x: [1, 2]\nlabel: [a, b]\n")
    assert main(["sweep", str(FIXTURE), "--grid", str(g), "--out-dir", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "4 point(s)" in out and out.count("to run") == 4
    assert not (tmp_path / "sweep_fixture__g").exists()


def test_id_ignores_values_equal_to_the_default(tmp_path: Path) -> None:
    """A value equal to the chapter's default does not change the point: same id, deduplicated; other ids keep
    the plain sha1 of the given parameters."""
    s = sweep.plan(FIXTURE, {"rows": [{"x": 3}, {"x": 3, "label": "a", "scale": 1}, {"x": 3, "label": "b"}]},
                   out_root=tmp_path)
    assert list(s.points) == [sweep.point_id({"x": 3}), sweep.point_id({"x": 3, "label": "b"})]
    assert s.swept == ["label"]  # x is 3 everywhere; label is the default "a" in the first point
    assert list(sweep.plan(FIXTURE, {"x": [2]}, out_root=tmp_path).points) == [sweep.point_id({})]


def test_float_text_from_yaml(tmp_path: Path) -> None:
    """Grid files are read as the CLI reads values (YAML 1.2 scalars): 1e-10 is a float without a dot, 010 is 10,
    a quoted '1e-3' stays text, and 0x10 is refused as ambiguous."""
    g = tmp_path / "g.yaml"
    g.write_text("scale: [1e-12, 1e-10, 0.5]\nlabel: ['1e-3']\nx: [010]\n")
    s = sweep.plan(FIXTURE, g, out_root=tmp_path)
    assert [p["scale"] for p in s.points.values()] == [1e-12, 1e-10, 0.5]
    assert {p["label"] for p in s.points.values()} == {"1e-3"} and {p["x"] for p in s.points.values()} == {10}
    g.write_text("x: [1e3]\n")
    with pytest.raises(sweep.SweepError, match="parameter 'x'.*expected int.*got float 1000.0"):
        sweep.plan(FIXTURE, g, out_root=tmp_path)
    g.write_text("x: [0x10]\n")
    with pytest.raises(sweep.SweepError, match="g.yaml: value '0x10' is ambiguous"):
        sweep.plan(FIXTURE, g, out_root=tmp_path)
    declared = {"a": {"inferred_type_name": "int | float", "default": "1"},
                "b": {"inferred_type_name": "Optional[float]", "default": "None"},
                "c": {"inferred_type_name": "float | str", "default": "'x'"}}
    assert sweep.floats_from_text(declared, {"a": "1e-10", "b": "-2.5E3", "c": "1e-10"}) == {
        "a": 1e-10, "b": -2500.0, "c": "1e-10"}


def test_parameter_named_like_a_grid_key(tmp_path: Path) -> None:
    """A plain grid may sweep a parameter called grid (chapter 04 has one): structure needs grid/fixed mappings
    or rows of mappings."""
    assert sweep.parse_grid({"grid": [11, 21]}).grid == {"grid": [11, 21]}
    assert sweep.parse_grid({"grid": 5, "name": "n"}).grid == {"grid": [5], "name": ["n"]}
    s = sweep.plan(FIXTURE, {"grid": [11, 21]}, out_root=tmp_path)
    assert list(s.points.values()) == [{"grid": 11}, {"grid": 21}] and s.swept == ["grid"]
    s = sweep.plan(FIXTURE, {"grid": {"grid": [5]}, "fixed": {"x": 3}, "name": "nm"}, out_root=tmp_path)
    assert list(s.points.values()) == [{"x": 3, "grid": 5}] and s.name == "nm"
    with pytest.raises(sweep.SweepError, match="'grid' must be a dict.*named 'grid' goes under grid:"):
        sweep.parse_grid({"grid": [1, 2], "fixed": {"x": 3}})
    with pytest.raises(sweep.SweepError, match="unknown parameter.*'plot'.*grid-file keys only when"):
        sweep.plan(FIXTURE, {"x": [1], "plot": {"y": "C2.y"}}, out_root=tmp_path)


def test_plot_validated_before_running(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--plot and the grid's plot: name a parameter, a claim column, seconds or claims_passed, else an error
    naming the option and what is allowed; --dry-run checks them too."""
    with pytest.raises(sweep.SweepError, match=r"--plot x='nope' is not a column.*sweep_fixture.ipynb \(x, scale"):
        sweep.run_sweep(FIXTURE, {"x": [1]}, plot={"x": "nope"}, scheduler="tcp://127.0.0.1:9", out_root=tmp_path)
    with pytest.raises(sweep.SweepError, match=r"plot: y='bogus'.*C<n>.<number>"):
        sweep.plan(FIXTURE, {"grid": {"x": [1]}, "plot": {"y": "bogus"}}, out_root=tmp_path)
    s = sweep.plan(FIXTURE, {"grid": {"x": [1]}, "plot": {"y": "C2.y"}}, plot={"x": "scale"}, out_root=tmp_path)
    assert s.plot == {"x": "scale", "y": "C2.y"}
    g = tmp_path / "g.yaml"
    g.write_text("x: [1]\n")
    assert main(["sweep", str(FIXTURE), "--grid", str(g), "--out-dir", str(tmp_path), "--dry-run",
                 "--plot", "y=claims"]) == 2
    assert "--plot y='claims' is not a column" in capsys.readouterr().err
    assert not list(tmp_path.glob("sweep_fixture*"))


def _fake_execute(log: list[tuple[str, float, float]]) -> object:
    """A stand-in for runner.execute: checks that LAB_FIGURES stays its point's own while it runs, writes an empty
    notebook (or fails for x < 0), and logs (point folder, start, end)."""
    def execute(src: Path, out: Path, params: dict[str, object], progress: bool, timeout: float | None) -> None:
        seen, t0 = os.environ["LAB_FIGURES"], time.monotonic()
        time.sleep(0.3)
        assert os.environ["LAB_FIGURES"] == seen, "another point changed this point's environment"
        nbformat.write(nbformat.v4.new_notebook(), str(out))
        log.append((seen, t0, time.monotonic()))
        if int(params["x"]) < 0:  # type: ignore[call-overload]
            raise ValueError("negative x")
    return execute


def test_run_point_one_at_a_time_per_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Threads of one worker process take turns (points set process-wide environment variables); a success
    removes an earlier <pid>.failed.ipynb; records carry the chapter's code hash; a folder that is not there
    means a worker without the shared filesystem."""
    log: list[tuple[str, float, float]] = []
    monkeypatch.setattr("lab.workbook.sweep.execute.execute", _fake_execute(log))
    (tmp_path / "a.failed.ipynb").write_text("{}")  # an earlier failed attempt of point a
    recs: dict[str, dict[str, object]] = {}
    threads = [threading.Thread(target=lambda p=p, x=x: recs.__setitem__(p, sweep.run_point(
        str(FIXTURE), str(tmp_path), p, {"x": x}))) for p, x in (("a", 1), ("b", 2), ("c", -1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert [recs[p]["status"] for p in "abc"] == ["ok", "ok", "failed"], recs
    assert "ValueError: negative x" in str(recs["c"]["error"])
    spans = sorted((t0, t1) for _, t0, t1 in log)
    assert all(prev[1] <= nxt[0] for prev, nxt in itertools.pairwise(spans)), "points overlapped in one process"
    assert sorted(seen for seen, _, _ in log) == [str(tmp_path.resolve() / "figures" / p) for p in "abc"]
    assert not (tmp_path / "a.failed.ipynb").exists() and (tmp_path / "c.failed.ipynb").is_file()
    assert {r["code_hash"] for r in recs.values()} == {sweep.notebook_hash(FIXTURE)}
    gone = sweep.run_point(str(FIXTURE), str(tmp_path / "elsewhere"), "d", {"x": 1})
    assert gone["status"] == "failed" and "does not share the filesystem" in str(gone["error"])
    assert not (tmp_path / "elsewhere").exists() and len(log) == 3


def test_done_stale_and_settle(tmp_path: Path) -> None:
    """is_done needs an ok record and a non-empty notebook run by the chapter's current code (a code change makes
    finished points stale; markdown does not); settle never overwrites a finished point and names a worker
    that does not share the filesystem."""
    nb = tmp_path / "ch.ipynb"
    shutil.copy(FIXTURE, nb)
    s = sweep.plan(nb, {"x": [1, 3, 4]}, out_root=tmp_path / "runs")
    a, b, c = s.points
    s.out_dir.mkdir(parents=True)
    ok = {"status": "ok", "code_hash": s.code, "claims": []}
    for pid in (a, b):
        s.record_path(pid).write_text(json.dumps({"id": pid, **ok}))
    s.notebook_path(a).write_text("{}")
    s.notebook_path(b).touch()  # empty: killed mid-write on a filesystem without atomic rename
    assert [sweep.point_state(s, p) for p in (a, b, c)] == ["done", "pending", "pending"]
    cells = json.loads(nb.read_text())
    cells["cells"][0]["source"] = ["# changed title"]
    nb.write_text(json.dumps(cells))
    assert sweep.is_done(sweep.plan(nb, {"x": [1, 3, 4]}, out_root=tmp_path / "runs"), a)  # markdown only
    cells["cells"][2]["source"].append("\n# changed code")
    nb.write_text(json.dumps(cells))
    s2 = sweep.plan(nb, {"x": [1, 3, 4]}, out_root=tmp_path / "runs")
    assert s2.code != s.code and sweep.point_state(s2, a) == "stale"
    assert sweep.collect(s2).set_index("point").loc[a, "status"] == "stale"

    before = s.record_path(a).read_text()  # KilledWorker after the worker had finished: keep its record
    assert sweep.settle(s, a, None, RuntimeError("killed"))["status"] == "ok"
    assert s.record_path(a).read_text() == before
    rec = sweep.settle(s, c, None, RuntimeError("worker died"))
    assert rec["status"] == "failed"
    assert json.loads(s.record_path(c).read_text())["error"] == "RuntimeError: worker died"
    s.record_path(c).unlink()
    rec = sweep.settle(s, c, {"id": c, "status": "ok", "worker": "tcp://w:1", "host": "w", "claims": []}, None)
    assert rec["status"] == "failed" and "tcp://w:1 on w does not share the filesystem" in str(rec["error"])
    assert json.loads(s.record_path(c).read_text())["status"] == "failed"


# ---------------------------------------------------------------------------------- a real 2-worker cluster
@pytest.fixture(scope="module")
def client() -> Iterator[object]:
    """A LocalCluster of 2 single-threaded worker processes, shared by the tests below."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=40) as cluster, Client(cluster) as c:
        yield c


FIRST_GRID = {"grid": {"x": [1, 2, -1]}, "rows": [{"x": 3, "scale": 0.1}], "fixed": {"label": "z"}}


@pytest.fixture(scope="module")
def first(client: object, tmp_path_factory: pytest.TempPathFactory) -> sweep.SweepResult:
    """One sweep of 4 points, one of which (x = -1) fails the chapter's own validation."""
    return sweep.run_sweep(FIXTURE, FIRST_GRID, name="first", client=client,
                           out_root=tmp_path_factory.mktemp("runs"), progress=False)


def _pid(s: sweep.Sweep, **params: object) -> str:
    """The id of the point whose parameters include params."""
    (pid,) = [k for k, p in s.points.items() if all(p.get(n) == v for n, v in params.items())]
    return pid


def test_failure_is_isolated_and_recorded(first: sweep.SweepResult) -> None:
    """x = -1 fails with the chapter's error recorded; the other three points finish ok."""
    s, t = first.sweep, first.table.set_index("point")
    bad = _pid(s, x=-1)
    assert sorted(first.ran) == sorted(s.points) and not first.skipped
    assert t.loc[bad, "status"] == "failed" and first.n_failed == 1
    assert "ValueError: parameter 'x' must be a positive int, got -1" in t.loc[bad, "error"]
    assert (t.drop(bad)["status"] == "ok").all() and t.drop(bad)["error"].isna().all()
    assert (s.out_dir / f"{bad}.failed.ipynb").is_file() and not (s.out_dir / f"{bad}.ipynb").exists()
    rec = json.loads((s.out_dir / f"{bad}.json").read_text())
    assert rec["status"] == "failed" and rec["params"] == {"label": "z", "x": -1} and "Traceback" in rec["traceback"]
    for pid in t.drop(bad).index:
        assert (s.out_dir / f"{pid}.ipynb").is_file()
    assert [p.name for p in s.out_dir.glob(".*")] == [sweep.LOCK]  # no temporary files left


def test_results_table_contents(first: sweep.SweepResult, client: object) -> None:
    """One row per point: id, status, seconds, worker, parameters (defaults filled in), claim numbers."""
    s, t = first.sweep, first.table
    assert list(t["point"]) == list(s.points)
    assert {"point", "status", "error", "seconds", "worker", "x", "label", "scale", "claims_passed",
            "C1.passed", "C1.x_squared", "C1.label", "C2.passed", "C2.y"} <= set(t.columns)
    ok = t[t["status"] == "ok"].set_index("x")
    assert list(ok.index) == [1, 2, 3]
    assert list(ok["scale"]) == [1.0, 1.0, 0.1]  # the default 1.0 where the point did not set it
    assert list(ok["C1.x_squared"]) == [1, 4, 9] and list(ok["C2.y"]) == pytest.approx([1.0, 4.0, 0.9])
    assert list(ok["C2.passed"]) == [False, True, False] and list(ok["claims_passed"]) == [0.5, 1.0, 0.5]
    assert (ok["C1.label"] == "z").all() and (ok["seconds"] > 0).all()
    assert (ok["C1.kernel_python"] == sys.executable).all()  # the kernel on the worker is this venv's python
    for pid, row in t[t["status"] == "ok"].set_index("point").iterrows():  # each point's own figures/tables
        assert row["C1.figures"] == str(s.out_dir / "figures" / pid)
        assert row["C1.results"] == str(s.out_dir / "results" / pid)
    workers = set(client.scheduler_info()["workers"])  # type: ignore[attr-defined]
    assert set(t["worker"]) <= workers
    csv = pd.read_csv(s.out_dir / "results.csv")
    pq = pd.read_parquet(s.out_dir / "results.parquet")
    assert list(csv["point"]) == list(pq["point"]) == list(t["point"])
    assert list(pq["C1.x_squared"].dropna()) == [1, 4, 9] and list(csv["status"]) == list(t["status"])
    assert (s.out_dir / "summary.png").stat().st_size > 10_000
    assert sweep.choose_axes(s, t) == ("x", "C1.x_squared")
    with pytest.warns(UserWarning, match="'C9.none' is not a column"):
        assert sweep.choose_axes(dataclasses.replace(s, plot={"y": "C9.none"}), t) == ("x", "claims_passed")
    with pytest.warns(UserWarning, match="plot x 'C9.none' is not a column"):
        assert sweep.choose_axes(dataclasses.replace(s, plot={"x": "C9.none"}), t) == ("x", "C1.x_squared")
    assert (sweep.collect(dataclasses.replace(s, plot={"x": "sleep_s"}))["sleep_s"] == 0.0).all()  # a default


def test_failed_plot_keeps_the_table(first: sweep.SweepResult, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A summary plot that raises is a warning: results.csv and results.parquet are still written."""
    s = dataclasses.replace(first.sweep, out_dir=tmp_path / "copy")
    shutil.copytree(first.sweep.out_dir, s.out_dir)
    for f in ("results.csv", "results.parquet", "summary.png"):
        (s.out_dir / f).unlink()

    def broken(*args: object) -> None:
        raise KeyError("C9.none")

    monkeypatch.setattr("lab.workbook.sweep.results.plot_summary", broken)
    with pytest.warns(UserWarning, match="summary.png not written.*KeyError.*table is complete"):
        table, files = sweep.write_results(s)
    assert files == [s.out_dir / "results.csv", s.out_dir / "results.parquet"] and len(table) == 4
    assert len(pd.read_csv(files[0])) == 4 and [p.name for p in s.out_dir.glob(".*")] == [sweep.LOCK]


def test_resume_after_interruption(first: sweep.SweepResult, client: object, tmp_path: Path) -> None:
    """A rerun skips finished points and reruns failed ones; after a simulated kill (a record lost, a point
    gone, a partial file left) exactly the unfinished points run and nothing finished is redone."""
    runs = tmp_path / "runs"
    shutil.copytree(first.sweep.out_dir, runs / "first")
    s = sweep.plan(FIXTURE, FIRST_GRID, name="first", out_root=runs)
    bad, a, b, c = _pid(s, x=-1), _pid(s, x=1), _pid(s, x=2), _pid(s, x=3)
    mtimes = {p: s.notebook_path(p).stat().st_mtime_ns for p in (a, b, c)}

    again = sweep.run_sweep(FIXTURE, FIRST_GRID, name="first", client=client, out_root=runs, progress=False)
    assert again.ran == [bad] and sorted(again.skipped) == sorted([a, b, c])
    assert {p: s.notebook_path(p).stat().st_mtime_ns for p in (a, b, c)} == mtimes

    s.record_path(a).unlink()  # killed after the notebook was renamed, before its record was written
    s.notebook_path(b).unlink()
    s.record_path(b).unlink()  # never finished
    (s.out_dir / f".{b}.deadbeef.part.ipynb").write_text("{partial")  # a worker killed while writing
    assert sweep.collect(s).set_index("point").loc[[a, b], "status"].tolist() == ["pending", "pending"]
    resumed = sweep.run_sweep(FIXTURE, FIRST_GRID, name="first", client=client, out_root=runs, progress=False)
    assert sorted(resumed.ran) == sorted([a, b, bad]) and resumed.skipped == [c]
    assert s.notebook_path(c).stat().st_mtime_ns == mtimes[c]
    t = resumed.table.set_index("point")
    assert t.loc[[a, b, c], "status"].tolist() == ["ok"] * 3 and t.loc[bad, "status"] == "failed"
    assert [p.name for p in s.out_dir.glob(".*")] == [sweep.LOCK]
    assert len(pd.read_csv(s.out_dir / "results.csv")) == 4


def test_killed_worker_loses_nothing(client: object, tmp_path: Path) -> None:
    """Kill a worker process while it runs a point: the point is rescheduled and every point ends ok."""
    grid = {"x": [1, 2, 3, 4], "sleep_s": [1.5]}
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["result"] = sweep.run_sweep(FIXTURE, grid, name="kill", client=client, out_root=tmp_path,
                                            progress=False)
        except BaseException as exc:  # noqa: BLE001 - surfaced in the main thread
            box["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    victim, key = None, None
    deadline = time.monotonic() + 30
    while victim is None and time.monotonic() < deadline:
        for addr, keys in client.processing().items():  # type: ignore[attr-defined]
            if keys:
                victim, key = addr, str(keys[0])
                break
        time.sleep(0.1)
    assert victim is not None, "no point started within 30 s"
    pid = client.run(os.getpid, workers=[victim])[victim]  # type: ignore[attr-defined]
    time.sleep(1.0)  # inside the point: the kernel is starting or sleeping
    os.kill(pid, signal.SIGKILL)  # the worker process dies at once; its nanny starts a fresh one
    thread.join(timeout=120)
    assert not thread.is_alive() and "error" not in box, box.get("error")
    res = box["result"]
    assert isinstance(res, sweep.SweepResult)
    assert (res.table["status"] == "ok").all() and len(res.table) == 4 and res.n_failed == 0
    assert list(res.table["C1.x_squared"]) == [1, 4, 9, 16]
    killed_pid = key.split("-")[1]
    rec = json.loads(res.sweep.record_path(killed_pid).read_text())
    assert rec["status"] == "ok" and rec["worker"] != victim  # rescheduled on another (or the restarted) worker
    client.wait_for_workers(2, timeout=60)  # type: ignore[attr-defined]
    assert victim not in client.scheduler_info()["workers"]  # type: ignore[attr-defined]
    assert [p.name for p in res.sweep.out_dir.glob(".*")] == [sweep.LOCK]  # no partial files, only the lock


def test_cli_with_scheduler_address(client: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--scheduler ADDRESS` runs on an existing cluster; a failed point makes the exit code 1."""
    g = tmp_path / "pair.yaml"
    g.write_text("x: [5, 0]\n")
    address = client.scheduler.address  # type: ignore[attr-defined]
    argv = ["sweep", str(FIXTURE), "--grid", str(g), "--scheduler", address, "--out-dir", str(tmp_path / "runs"),
            "--no-progress", "--plot", "x=x", "y=C2.y"]
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert "1/2 point(s) ok (2 run now, 0 already done)" in out and "results.csv" in out
    assert "failed: ValueError: parameter 'x' must be a positive int, got 0" in err
    assert main([*argv, "--workers", "2"]) == 1  # resume: only the failed point runs again
    assert "(1 run now, 1 already done)" in capsys.readouterr().out


def test_relative_out_dir_and_changed_code(client: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A relative --out-dir is taken from the current folder (not the worker's or the kernel's); after the
    chapter's code changes, a rerun warns and runs its finished points again; --workers waits a bounded time."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(FIXTURE, "ch.ipynb")
    Path("g.yaml").write_text("x: [3]\n")
    address = client.scheduler.address  # type: ignore[attr-defined]
    argv = ["sweep", "ch.ipynb", "--grid", "g.yaml", "--scheduler", address, "--out-dir", "out", "--no-progress"]
    assert main(argv) == 0
    folder = tmp_path.resolve() / "out" / "ch__g"
    (pid,) = [p.stem for p in folder.glob("*.ipynb")]
    row = pd.read_csv(folder / "results.csv").iloc[0]
    assert row["status"] == "ok" and row["C1.figures"] == str(folder / "figures" / pid)
    assert row["C1.results"] == str(folder / "results" / pid)
    assert "(1 run now, 0 already done)" in capsys.readouterr().out
    assert main(argv) == 0 and "(0 run now, 1 already done)" in capsys.readouterr().out
    nb = json.loads(Path("ch.ipynb").read_text())
    nb["cells"][2]["source"].append("\n# a new version of the check")
    Path("ch.ipynb").write_text(json.dumps(nb))
    with pytest.warns(UserWarning, match="1 finished point.*another version of ch.ipynb's code"):
        assert main(argv) == 0
    assert "(1 run now, 0 already done)" in capsys.readouterr().out
    assert json.loads((folder / f"{pid}.json").read_text())["code_hash"] == sweep.notebook_hash("ch.ipynb")
    with pytest.raises(sweep.SweepError, match=r"only \d of the 9 worker\(s\).*within 0.5 s"):
        with sweep.connect(address, workers=9, wait_timeout=0.5):
            pass


def test_killed_sweep_resumes(client: object, tmp_path: Path) -> None:
    """SIGKILL the whole `python -m lab sweep` process midway: a rerun keeps every finished point and runs the rest."""
    g = tmp_path / "slow.yaml"
    g.write_text("x: [1, 2, 3, 4]\nsleep_s: [1.0]\n")
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "lab", "sweep", str(FIXTURE), "--grid", str(g), "--out-dir", str(out),
           "--workers", "2", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    folder = out / "sweep_fixture__slow"
    try:
        deadline = time.monotonic() + 90
        while not list(folder.glob("*.json"))[1:] and time.monotonic() < deadline:  # sweep.json + one record
            assert proc.poll() is None, "the sweep ended before it could be killed"
            time.sleep(0.2)
    finally:
        # the coordinator and its LocalCluster (scheduler, nannies, workers); the kernels run in sessions of
        # their own, out of the group's reach, and exit by themselves when their parent (the worker) dies
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    s = sweep.plan(FIXTURE, g, out_root=out)
    finished = [p for p in s.points if sweep.is_done(s, p)]
    assert 1 <= len(finished) < 4
    mtimes = {p: s.notebook_path(p).stat().st_mtime_ns for p in finished}
    res = sweep.run_sweep(FIXTURE, g, client=client, out_root=out, progress=False)
    assert sorted(res.skipped) == sorted(finished) and sorted(res.ran) == sorted(set(s.points) - set(finished))
    assert {p: s.notebook_path(p).stat().st_mtime_ns for p in finished} == mtimes
    assert (res.table["status"] == "ok").all() and list(res.table["C1.x_squared"]) == [1, 4, 9, 16]
    assert [p.name for p in folder.glob(".*")] == [sweep.LOCK]


def test_code_hash_follows_the_claims_declaration(tmp_path: Path) -> None:
    """A threshold lives in notebooks/claims/NN.yaml: changing it must make the chapter's old points stale."""
    nb = tmp_path / "07_x.ipynb"
    shutil.copy(FIXTURE, nb)
    bare = sweep.notebook_hash(nb)
    (tmp_path / "claims").mkdir()
    (tmp_path / "claims" / "07.yaml").write_text("- id: C1\n  test: ratio above 2\n", encoding="utf-8")
    declared = sweep.notebook_hash(nb)
    (tmp_path / "claims" / "07.yaml").write_text("- id: C1\n  test: ratio above 3\n", encoding="utf-8")
    assert len({bare, declared, sweep.notebook_hash(nb)}) == 3


@pytest.mark.parametrize("grid_file", sorted((ROOT / "sweeps").glob("[0-9][0-9]_*.yaml")), ids=lambda p: p.name)
def test_committed_sweep_files_plan_and_pass_their_chapters_rules(grid_file: Path, tmp_path: Path) -> None:
    """Every committed grid names its chapter's parameters with values of the declared types (the plan) and inside
    the ranges of the chapter's own validation cell (its rules, evaluated here without running the chapter)."""
    import importlib

    from lab.workbook import runner
    from lab.workbook.sweep.grid import expand, load_grid
    rules_ns = vars(importlib.import_module("lab.workbook.validate"))
    chapter = grid_file.name[:2]
    sweep.plan(chapter, grid_file, out_root=tmp_path)
    cells = nbformat.read(runner.resolve_notebook(chapter), as_version=4).cells
    i = next(k for k, c in enumerate(cells) if "parameters" in c.metadata.get("tags", []))
    ns = dict(rules_ns)
    exec(cells[i + 1].source.split("\nCH = ")[0], ns)  # noqa: S102   the cell's imports and constants
    rules = {name: eval(src, ns) for name, src in runner._rules_in(cells[i + 1].source).items()}  # noqa: S307
    for point in expand(load_grid(grid_file)):
        for name, value in point.items():
            assert rules[name].check(value), f"{grid_file.name}: {name} = {value!r} is not {rules[name].allowed}"
