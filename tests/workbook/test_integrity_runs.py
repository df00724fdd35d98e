"""Integrity of files and input (issue #15): no run touches committed files, run names stay inside runs/, a killed
or failed run is never reported as a result, the CLI reads values as papermill does and refuses what is
ambiguous, and sweeps are bounded, locked and local."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from lab.workbook import runner, sweep
from lab.workbook.cli import main
from lab.workbook.paths import COMMITTED_FIGURES, NOTEBOOKS, ROOT
from lab.workbook.report import build_report, default_runs, run_parameters, run_status

FIXTURE = Path(__file__).parent.parent / "fixtures" / "fixture.ipynb"


def _chapter(tmp_path: Path, body: str, name: str = "98_figure.ipynb") -> Path:
    """A chapter-like notebook (parameters x, a body cell) in tmp_path."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# 98 · Figure\n\nDoes a run keep its figures to itself?"),
                nbformat.v4.new_code_cell("x: int = 1", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


FIGURE_CELL = """import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from lab.workbook.figures import save_fig
fig, ax = plt.subplots(); ax.plot([0, x])
print(save_fig(fig, "98", "line"))"""


def test_a_run_writes_its_figures_in_its_own_folder_never_in_figures(tmp_path: Path) -> None:
    src = _chapter(tmp_path, FIGURE_CELL)
    out = runner.run_chapter(src, {"x": 3}, out_dir=tmp_path / "runs", progress=False)
    files = runner.run_files(out)
    assert files.name == "98_figure__x-3.files" and (files / runner.FILES_MARK).is_file()
    assert (files / "figures" / "98" / "line.png").is_file()
    assert not (COMMITTED_FIGURES / "98").exists()
    nb = nbformat.read(out, as_version=4)
    printed = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    assert str(files / "figures" / "98" / "line.png") in printed and ".part" not in printed
    assert run_parameters(nb) == {"x": 3} and nb.metadata[runner.RUN_MARK]["status"] == "complete"
    assert not [p for p in (tmp_path / "runs").iterdir() if p.name.startswith(".")]  # no temporary left


def test_an_interactive_session_writes_figures_under_runs() -> None:
    """JupyterLab or plain papermill set no LAB_FIGURES: their figures go to runs/figures/, not figures/."""
    env = {k: v for k, v in os.environ.items() if k not in ("LAB_FIGURES", "LAB_RESULTS")}
    out = subprocess.run([sys.executable, "-c", "import lab.workbook.paths as p; print(p.FIGURES); print(p.RESULTS)"],
                         capture_output=True, text=True, env=env, cwd=ROOT, check=True).stdout.split()
    assert out == [str(ROOT / "runs" / "figures"), str(ROOT / "runs" / "results")]


@pytest.mark.parametrize("name", ["../../etc/x", "/tmp/abs", "../tests/fixtures/fixture.ipynb", "", ".hidden",
                                  "a/b", "x..y", "..", "run.part"])
def test_run_names_stay_inside_runs(name: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="parameter 'name' .* is not allowed: expected a plain file name"):
        runner.run_chapter(FIXTURE, out_dir=tmp_path, name=name, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_parameterized_run_cannot_take_the_default_runs_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="name of the chapter's default run"):
        runner.run_chapter(FIXTURE, {"x": 5}, out_dir=tmp_path, name="fixture", progress=False)


def test_a_failed_run_keeps_its_notebook_under_another_name(tmp_path: Path) -> None:
    src = _chapter(tmp_path, "raise RuntimeError('boom')")
    good = runner.run_chapter(_chapter(tmp_path / "ok", "print(1)"), out_dir=tmp_path / "runs", progress=False)
    with pytest.raises(Exception, match="boom"):
        runner.run_chapter(src, out_dir=tmp_path / "runs", progress=False)
    failed = tmp_path / "runs" / "98_figure.failed.ipynb"
    assert failed.is_file() and good.is_file()  # the earlier complete run is kept, the failed one beside it
    nb = nbformat.read(failed, as_version=4)
    assert nb.metadata[runner.RUN_MARK]["status"] == "failed" and run_status(nb) == "failed"
    assert default_runs(tmp_path / "runs") == [failed]  # the chapter's latest run failed: that is what is reported
    runner.run_chapter(_chapter(tmp_path / "ok", "print(2)"), out_dir=tmp_path / "runs", progress=False)
    assert default_runs(tmp_path / "runs") == [good] and not failed.exists()  # a success clears the failure


def test_a_killed_run_leaves_nothing_a_report_would_read(tmp_path: Path) -> None:
    """SIGKILL the runner in the middle of a run: no runs/<name>.ipynb appears, only a hidden .part folder."""
    src = _chapter(tmp_path, "import time\nprint('started', flush=True)\ntime.sleep(60)")
    runs = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from lab.workbook import runner; "
                             f"runner.run_chapter({str(src)!r}, out_dir={str(runs)!r}, progress=False)"],
                            cwd=ROOT, start_new_session=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:  # wait until papermill has written the partial notebook
        if any(p.suffix == ".ipynb" for p in runs.glob(".*/*")) if runs.exists() else False:
            break
        time.sleep(0.2)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (runs / "98_figure.ipynb").exists() and default_runs(runs) == []
    partial = next(runs.glob(".*/*.ipynb"))
    assert run_status(nbformat.read(partial, as_version=4)) == "incomplete"  # were it ever shown


def test_report_marks_incomplete_runs_and_shows_parameters(tmp_path: Path) -> None:
    out = runner.run_chapter(FIXTURE, {"x": 4}, out_dir=tmp_path / "runs", progress=False)
    nb = nbformat.read(out, as_version=4)
    page = build_report([out], out_dir=tmp_path / "r1").read_text("utf-8")
    assert "Parameters: x = 4" in page and "1/1 claims pass" in page
    for c in nb.cells[2:]:
        c.metadata.setdefault("papermill", {})["status"] = "pending"  # as a run killed after cell 1 leaves it
    nb.metadata.pop(runner.RUN_MARK)
    partial = tmp_path / "partial" / "99_fixture.ipynb"
    partial.parent.mkdir()
    nbformat.write(nb, partial)
    page = build_report([partial], out_dir=tmp_path / "r2").read_text("utf-8")
    assert "incomplete run" in page and "claims pass" not in page


def test_report_uses_the_runs_own_key_figure(tmp_path: Path) -> None:
    src = _chapter(tmp_path, FIGURE_CELL)
    nb = nbformat.read(src, as_version=4)
    nb.metadata["lab"] = {"key_figure": "figures/98/line.png"}
    nbformat.write(nb, src)
    out = runner.run_chapter(src, {"x": 7}, out_dir=tmp_path / "runs", progress=False)
    index = build_report([out], out_dir=tmp_path / "report").read_text("utf-8")
    shown = tmp_path / "report" / "_images" / "line.png"  # the key figure, linked full size from the index
    assert shown.read_bytes() == (runner.run_files(out) / "figures" / "98" / "line.png").read_bytes()
    assert 'href="_images/line.png"' in index


@pytest.mark.parametrize("text, value", [("010", 10), ("1e-3", 1e-3), ("[1, 010]", [1, 10]), ("yes", "yes"),
                                         ("2026-01-01", "2026-01-01"), ("'0x10'", "0x10"), ("true", True),
                                         ("1_000", 1000), ("0bad", "0bad"), ("[.inf, -.inf]", [float("inf"),
                                                                                             float("-inf")])])
def test_cli_values_parse_as_papermill_does(text: str, value: object) -> None:
    assert runner.parse_cli_params([("v", text)]) == {"v": value}


@pytest.mark.parametrize("text", ["0x10", "0o17", "0b11", "1:40", "-1:30:00", "[2, 0x10]", "{a: 1:40}"])
def test_ambiguous_cli_values_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"parameter 'v': value .* is ambiguous"):
        runner.parse_cli_params([("v", text)])


@pytest.mark.parametrize("argv, shown", [
    (["run", "99", "--timeout", "-5"], "expected a positive number of seconds"),
    (["sweep", "01", "--grid", "g.yaml", "--workers", "0"], "expected a positive integer"),
    (["sweep", "01", "--grid", "g.yaml", "--max-points", "x"], "expected a positive integer"),
])
def test_cli_refuses_bad_options(argv: list[str], shown: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and shown in capsys.readouterr().err


@pytest.mark.parametrize("exc, code, shown", [(PermissionError(13, "Permission denied", "/x/runs/a.ipynb"), 2,
                                               "error: cannot write /x/runs/a.ipynb: permission denied"),
                                              (KeyboardInterrupt(), 130, "interrupted:")])
def test_cli_reports_permission_errors_and_ctrl_c_in_one_line(exc: BaseException, code: int, shown: str,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    def boom(*a: object, **k: object) -> None:
        raise exc

    monkeypatch.setattr(runner, "run_chapter", boom)
    assert main(["run", str(FIXTURE)]) == code
    err = capsys.readouterr().err
    assert err.startswith(shown) and err.count("\n") == 1


def test_a_huge_grid_is_refused_before_it_is_expanded(tmp_path: Path) -> None:
    grid = {f"p{i}": list(range(10)) for i in range(9)}  # 10⁹ points: it took 11.5 GB before
    spec = sweep.parse_grid(grid)
    assert sweep.count_points(spec) == 10**9
    t0 = time.perf_counter()
    with pytest.raises(sweep.SweepError, match=r"1,000,000,000 points .* more than the limit of 10,000.*--max-points"):
        sweep.expand(spec)
    assert time.perf_counter() - t0 < 1.0
    assert len(sweep.expand(sweep.parse_grid({"a": [1, 2, 3]}), max_points=3)) == 3


def test_a_sweep_folder_is_locked_by_its_holder(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    code = ("import sys, time; from pathlib import Path; from lab.workbook.sweep import folder_lock\n"
            f"with folder_lock(Path({str(folder)!r})):\n    print('locked', flush=True); time.sleep(30)")
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(sweep.SweepError, match=rf"in use by pid {holder.pid} on .* since"):
            with sweep.folder_lock(folder):
                pass
    finally:
        holder.kill()
        holder.wait()
    with sweep.folder_lock(folder), sweep.folder_lock(folder):  # free again once its holder died; re-entrant
        pass


def test_records_of_other_package_versions_are_stale(tmp_path: Path) -> None:
    s = sweep.plan(Path(__file__).parent.parent / "fixtures" / "sweep_fixture.ipynb", {"x": [1]}, out_root=tmp_path)
    pid = next(iter(s.points))
    s.out_dir.mkdir(parents=True)
    s.notebook_path(pid).write_text("{}")
    rec = {"status": "ok", "code_hash": s.code, "stamp": dict(sweep.package_versions())}
    s.record_path(pid).write_text(json.dumps(rec))
    assert sweep.point_state(s, pid) == "done"
    rec["stamp"]["torch"] += "+cu999"  # a build tag alone is the same release
    s.record_path(pid).write_text(json.dumps(rec))
    assert sweep.point_state(s, pid) == "done"
    rec["stamp"]["torch"] = "0.0.1"
    s.record_path(pid).write_text(json.dumps(rec))
    assert sweep.point_state(s, pid) == "stale"


def test_local_cluster_and_dashboard_listen_on_localhost_only() -> None:
    pytest.importorskip("distributed")
    with sweep.connect(None, 1, 1) as client:
        assert client.scheduler.address.startswith("tcp://127.0.0.1:")
        link = sweep._dashboard(client)
        assert link is None or link.startswith("http://127.0.0.1:")


def test_makefile_quotes_its_arguments() -> None:
    out = subprocess.run(["make", "-n", "sweep", "NB=01", "GRID=dir with space/g.yaml"],
                         cwd=ROOT, capture_output=True, text=True).stdout
    assert "--grid 'dir with space/g.yaml'" in out
    out = subprocess.run(["make", "-n", "sweep", "NB=01", "GRID=it's.yaml"], cwd=ROOT, capture_output=True,
                         text=True).stdout
    assert "--grid 'it'\\''s.yaml'" in out


def test_committed_outputs_carry_no_random_ids() -> None:
    """pandas Styler ids (T_1a2b3) and widget model ids are drawn anew at each run: a refresh normalises them, so
    an unchanged chapter refreshes to the same file."""
    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for i, cell in enumerate(nb.cells):
            for out in cell.get("outputs", []):
                html = "".join(out.get("data", {}).get("text/html", ""))
                assert not re.search(r"T_[0-9a-f]{5}[_\"' ]", html), f"{path.name} cell {i}: a random Styler id"
                plain = "".join(out.get("data", {}).get("text/plain", ""))
                assert not re.search(r" at 0x[0-9a-f]{6,}>", plain), f"{path.name} cell {i}: a memory address"
                assert runner.WIDGET_MIME not in out.get("data", {}), (
                    f"{path.name} cell {i}: a progress-bar widget, which JupyterLab shows frozen at '0%|'")


def test_refresh_drops_progress_bar_widgets_and_keeps_everything_else() -> None:
    bar = {"output_type": "display_data", "metadata": {},
           "data": {runner.WIDGET_MIME: {"model_id": "ab12", "version_major": 2, "version_minor": 0},
                    "text/plain": "train:   0%|          | 0/3 [00:00<?, ?it/s]"}}
    text = {"output_type": "stream", "name": "stdout", "text": "C1 PASS  x"}
    png = {"output_type": "display_data", "metadata": {}, "data": {"image/png": "iVBOR"}}
    assert runner.without_widgets([bar, text, png, bar]) == [text, png]


@pytest.mark.parametrize("name", ["results", "figures"])
def test_a_run_name_never_replaces_a_folder_it_did_not_make(name: str, tmp_path: Path) -> None:
    """--name results made run_chapter rmtree runs/results/ (every interactive session's tables)."""
    runs = tmp_path / "runs"
    (runs / f"{name}.files").mkdir(parents=True)
    (runs / f"{name}.files" / "keep.csv").write_text("1")
    with pytest.raises(ValueError, match="was not made by a run"):
        runner.run_chapter(_chapter(tmp_path, FIGURE_CELL), out_dir=runs, name=name, progress=False)
    assert (runs / f"{name}.files" / "keep.csv").read_text() == "1"
    (runs / "results").mkdir()
    (runs / "results" / "t.csv").write_text("2")  # the plain folders of runs/ are never a run's files folder
    runner.run_chapter(_chapter(tmp_path, FIGURE_CELL), out_dir=runs, name="results2", progress=False)
    assert (runs / "results" / "t.csv").read_text() == "2"


@pytest.mark.parametrize("where", ["figures", "notebooks", "results", "."])
def test_runs_and_sweeps_never_write_inside_the_repository_outside_runs(where: str) -> None:
    with pytest.raises(ValueError, match="inside the repository a run writes only under"):
        runner.run_chapter(FIXTURE, out_dir=ROOT / where, progress=False)
    with pytest.raises(sweep.SweepError, match="inside the repository a run writes only under"):
        sweep.plan(Path(__file__).parent.parent / "fixtures" / "sweep_fixture.ipynb", {"x": [1]}, out_root=ROOT / where)


def test_a_failed_run_never_shows_an_earlier_runs_figure(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    src = _chapter(tmp_path, FIGURE_CELL + "\nassert x == 1, 'only x = 1 works'")
    nb = nbformat.read(src, as_version=4)
    nb.metadata["lab"] = {"key_figure": "figures/98/line.png"}
    nbformat.write(nb, src)
    runner.run_chapter(src, out_dir=runs, name="98_r", progress=False)
    with pytest.raises(Exception, match="only x = 1 works"):
        runner.run_chapter(src, {"x": 2}, out_dir=runs, name="98_r2", progress=False)
    failed = runs / "98_r2.failed.ipynb"
    assert nbformat.read(failed, as_version=4).metadata[runner.RUN_MARK]["files"] is None
    build_report([failed], out_dir=tmp_path / "report")
    earlier = (runs / "98_r.files" / "figures" / "98" / "line.png").read_bytes()
    assert not [p for p in (tmp_path / "report").rglob("*.png") if p.read_bytes() == earlier]
    assert default_runs(runs) == [runs / "98_r.ipynb"]  # 98_r2 is parameterized; 98_r's latest run completed


def test_the_installed_kernel_has_the_display_name_the_notebooks_record() -> None:
    """JupyterLab rewrites a notebook's kernelspec when the kernel's display name differs: opening a chapter would
    then modify it. The Makefile installs the kernel under the name every committed notebook records."""
    makefile = (ROOT / "Makefile").read_text()
    m = re.search(r'ipykernel install --sys-prefix --name (\S+) --display-name "([^"]+)"', makefile)
    assert m
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        spec = nbformat.read(path, as_version=4).metadata["kernelspec"]
        assert (spec["name"], spec["display_name"]) == (m[1], m[2]), path.name
