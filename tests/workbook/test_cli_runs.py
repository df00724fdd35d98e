"""`python -m lab run` (issue #31): a --name never takes another chapter's run nor silently replaces a run, values
may be negative numbers, killed runs' temporary folders are reported and cleaned, Ctrl-C ends in one line and the
kernel's own log stays off the terminal."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from lab.workbook import runner
from lab.workbook.cli import main
from lab.workbook.paths import ROOT, RUNS

FIXTURES = Path(__file__).parent.parent / "fixtures"
FIXTURE = FIXTURES / "fixture.ipynb"
SLEEP = FIXTURES / "sleep.ipynb"  # parameter `seconds`: its second cell prints "sleeping" and sleeps that long


def _cli(*args: str, **kw: object) -> subprocess.Popen:
    """`python -m lab <args>` in a fresh process (its own session, so signals reach it alone)."""
    assert signal.getsignal(signal.SIGINT) is not signal.SIG_IGN, "SIGINT is ignored here: so would it be in the child"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "lab", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)


def _wait_for_sleep(runs: Path, timeout: float = 120) -> Path:
    """The temporary folder of a run of SLEEP once its partial notebook shows the sleeping cell started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for nb in runs.glob(".*.part/*.ipynb"):
            try:
                if "sleeping" in nb.read_text(encoding="utf-8"):
                    return nb.parent
            except OSError:
                pass
        time.sleep(0.2)
    raise AssertionError("the sleeping cell never started")


# ------------------------------------------------------------------------------------------------ defect 2: -p -1e-3
@pytest.mark.parametrize("value, parsed", [("-1e-3", -1e-3), ("-1", -1), ("-.5", -0.5), ("-inf", float("-inf")),
                                           ("--x", "--x")])
def test_negative_numbers_are_parameter_values(value: str, parsed: object, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """`-p lr -1e-3` failed in argparse ("expected 2 arguments"): the two words after -p are NAME and VALUE."""
    seen = {}

    def fake_run(nb: object, params: dict, **kw: object) -> Path:
        seen.update(params=params, **kw)
        return Path("runs/x.ipynb")

    monkeypatch.setattr(runner, "run_chapter", fake_run)
    assert main(["run", str(FIXTURE), "-p", "x", value, "--name", "neg", "-p", "label", "-2"]) == 0, \
        capsys.readouterr().err
    assert seen["params"] == {"x": parsed, "label": -2} and seen["name"] == "neg"
    assert type(seen["params"]["x"]) is type(parsed)


def test_a_parameter_missing_its_value_is_still_an_argparse_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["run", str(FIXTURE), "-p", "x"])
    assert e.value.code == 2 and "expected 2 arguments" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ defect 1: --name
@pytest.mark.parametrize("chapter, name, why", [
    ("05", "01_noise_floor", "chapter 01's default run name"),
    ("02", "01_noise_floor", "chapter 01's default run name"),
    ("05", "01_mine", "begins with chapter 01's number"),
    ("05", "05_behavior_manifolds.failed", "ending in .failed"),
])
def test_a_name_of_another_chapters_run_is_refused(chapter: str, name: str, why: str, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """`lab run 05 --name 01_noise_floor` replaced chapter 01's default run: refused in one line naming --name."""
    def never(*a: object, **k: object) -> None:
        raise AssertionError("the run was not refused")

    monkeypatch.setattr(runner, "execute", never)  # were it not refused, no chapter runs (nor replaces runs/)
    target = RUNS / f"{name}.ipynb"
    before = target.stat().st_mtime_ns if target.exists() else None
    assert main(["run", chapter, "--name", name]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --name {name!r} is not allowed") and why in err and err.count("\n") == 1
    assert (target.stat().st_mtime_ns if target.exists() else None) == before


def test_own_chapter_number_and_plain_names_are_allowed() -> None:
    src = runner.resolve_notebook("05")
    assert runner.check_run_name(src, "05_behavior_manifolds") == "05_behavior_manifolds.ipynb"
    assert runner.check_run_name(src, "05_wide") == "05_wide.ipynb"
    assert runner.check_run_name(FIXTURE, "mine") == "mine.ipynb"
    assert runner.check_run_name(FIXTURE, "99_x") == "99_x.ipynb"  # no chapter 99


def test_an_existing_name_is_refused_without_replace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Reusing a --name silently replaced the earlier run: now refused unless --replace."""
    earlier = tmp_path / "mine.ipynb"
    earlier.write_text("{}")
    with pytest.raises(ValueError, match="--replace"):
        runner.run_chapter(FIXTURE, out_dir=tmp_path, name="mine", progress=False)
    assert main(["run", str(FIXTURE), "--name", "mine", "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "exists" in err and "--replace" in err and err.count("\n") == 1
    assert earlier.read_text() == "{}" and sorted(p.name for p in tmp_path.iterdir()) == ["mine.ipynb"]
    assert main(["run", str(FIXTURE), "--replace"]) == 2 and "--replace goes with --name" in capsys.readouterr().err


def test_an_interrupted_main_leaves_sigint_alone(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """main() called in a process (a test, a notebook) must not leave SIGINT ignored: every child process it starts
    afterwards would inherit SIG_IGN and no longer stop on Ctrl-C."""
    def interrupted(*a: object, **k: object) -> None:
        raise runner.Interrupted("run of x.ipynb into runs/x.ipynb; nothing was kept")

    monkeypatch.setattr(runner, "run_chapter", interrupted)
    before = signal.getsignal(signal.SIGINT)
    assert main(["run", str(FIXTURE)]) == 130
    assert capsys.readouterr().err == "interrupted: run of x.ipynb into runs/x.ipynb; nothing was kept\n"
    assert signal.getsignal(signal.SIGINT) is before


def test_help_documents_the_naming_rules(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--replace" in out and "another chapter's number" in out and "replaces the earlier run" in out


@pytest.mark.slow
def test_replace_replaces_and_a_failed_retry_of_a_name_is_allowed(tmp_path: Path) -> None:
    first = runner.run_chapter(FIXTURE, {"x": 3}, out_dir=tmp_path, name="mine", progress=False)
    again = runner.run_chapter(FIXTURE, {"x": 4}, out_dir=tmp_path, name="mine", progress=False, replace=True)
    assert first == again and nbformat.read(again, as_version=4).metadata[runner.RUN_MARK]["parameters"] == {"x": 4}


# ------------------------------------------------------------------------------------------------ defect 3: .part
def _part(runs: Path, stem: str, rand: str, owner: dict | None, mtime: float | None = None) -> Path:
    d = runs / f".{stem}.{rand}.part"
    d.mkdir(parents=True)
    if owner is not None:
        (d / runner.OWNER).write_text(json.dumps(owner))
    if mtime is not None:
        os.utime(d, (mtime, mtime))
    return d


def test_stale_part_folders_are_those_of_gone_processes_from_before_this_one(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host, old = socket.gethostname(), runner._STARTED - 3600
    dead = _part(tmp_path, "a", "abcd1234", {"pid": gone.pid, "host": host, "started": old, "name": "a.ipynb"})
    anonymous = _part(tmp_path, "a", "efgh5678", None, mtime=old)  # killed before it wrote its owner record
    _part(tmp_path, "a", "live0000", {"pid": os.getpid(), "host": host, "started": old, "name": "a.ipynb"})
    _part(tmp_path, "a", "young000", {"pid": gone.pid, "host": host, "started": time.time() + 5, "name": "a.ipynb"})
    _part(tmp_path, "a", "remote00", {"pid": gone.pid, "host": host + "-x", "started": old, "name": "a.ipynb"})
    other = _part(tmp_path, "b.c", "ijkl9012", {"pid": gone.pid, "host": host, "started": old, "name": "b.c.ipynb"})
    (tmp_path / ".a.ipynb.xyz.part").write_text("")  # write_atomic's temporary file, not a run's folder
    assert sorted(p["path"] for p in runner.stale_parts(tmp_path)) == sorted([dead, anonymous, other])
    note = runner.report_stale_parts(tmp_path, but="a.ipynb")
    assert note.count("\n") == 0 and other.name in note and dead.name not in note
    line = runner.clean_stale_parts(tmp_path, "a.ipynb")
    assert line.startswith("removed 2 folder(s) left by killed runs of a.ipynb") and "\n" not in line
    assert not dead.exists() and not anonymous.exists() and other.exists()
    assert len(list(tmp_path.glob(".a.*.part"))) == 4  # the live, young and remote ones, and the file
    assert runner.clean_stale_parts(tmp_path, "a.ipynb") is None


@pytest.mark.slow
def test_a_killed_runs_folder_records_its_pid_and_the_next_run_of_its_name_removes_it(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    proc = _cli("run", str(SLEEP), "-p", "seconds", "60", "--name", "k", "--out-dir", str(runs), "--no-progress")
    part = _wait_for_sleep(runs)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    owner = json.loads((part / runner.OWNER).read_text())
    assert owner["pid"] == proc.pid and owner["name"] == "k.ipynb"
    other = _cli("run", str(SLEEP), "--name", "other", "--out-dir", str(runs), "--no-progress")
    _, err = other.communicate(timeout=180)
    assert other.returncode == 0 and part.exists(), err
    assert err.startswith("note: 1 folder(s) left by killed runs: ") and part.name in err and err.count("\n") == 1
    again = _cli("run", str(SLEEP), "--name", "k", "--out-dir", str(runs), "--no-progress")
    out, err = again.communicate(timeout=180)
    assert again.returncode == 0, err
    assert err.startswith("removed 1 folder(s) left by killed runs of k.ipynb: ") and err.count("\n") == 1
    assert not part.exists() and not list(runs.glob(".*.part"))
    assert out.strip() == str(runs / "k.ipynb")


# ------------------------------------------------------------------------------------------------ defect 4: Ctrl-C
@pytest.mark.slow
def test_a_refusal_in_the_chapter_prints_one_line_and_no_kernel_log(tmp_path: Path) -> None:
    """The kernel's own log ("[IPKernelApp] WARNING | … without encryption", "[IPKernelApp] ERROR |
    KeyboardInterrupt") came before the one-line error."""
    proc = _cli("run", str(FIXTURE), "-p", "x", "-1", "--out-dir", str(tmp_path), "--no-progress")
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 1 and out == ""
    assert err == "error: cell 3 failed: ValueError: parameter 'x' must be a positive int\n"


@pytest.mark.slow
def test_ctrl_c_ends_in_one_line_saying_what_was_running(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    proc = _cli("run", str(SLEEP), "-p", "seconds", "60", "--name", "c", "--out-dir", str(runs), "--no-progress")
    _wait_for_sleep(runs)
    os.kill(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.startswith(f"interrupted: run of sleep.ipynb into {runs / 'c.ipynb'}") and err.count("\n") == 1, err
    assert "Traceback" not in err and out == ""
    assert not (runs / "c.ipynb").exists() and not list(runs.glob(".*.part"))
    kept = nbformat.read(runs / "c.failed.ipynb", as_version=4)
    assert kept.metadata[runner.RUN_MARK]["status"] == "interrupted"
