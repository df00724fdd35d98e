"""Repository paths resolved from the package, so chapters work from any working directory."""
from __future__ import annotations

import os
from pathlib import Path

from lab import data as _data


def _env_path(name: str, default: Path) -> Path:
    """The folder named by environment variable name, made absolute (a relative value is taken from the current
    working directory, once, at import), else default."""
    value = os.environ.get(name)
    return Path(value).expanduser().resolve() if value else default


ROOT: Path = Path(__file__).resolve().parent.parent.parent
NOTEBOOKS: Path = ROOT / "notebooks"
COMMITTED_FIGURES: Path = ROOT / "figures"  # written only by `lab refresh` (which sets LAB_FIGURES to it)
# Every other run — JupyterLab, papermill, `lab run`, nbval, sweeps — writes its figures under runs/: runs of the
# runner and the sweeps set LAB_FIGURES to their own folder, and an interactive session's go to runs/figures/.
FIGURES: Path = _env_path("LAB_FIGURES", ROOT / "runs" / "figures")
RUNS: Path = ROOT / "runs"
REPORT: Path = ROOT / "report"
DATA: Path = _data.DATA  # one cache for the library and the workbook (lab.data)
RESULTS: Path = _env_path("LAB_RESULTS", RUNS / "results")


def figure_dir(chapter: str) -> Path:
    """Folder for one chapter's figures (created on demand)."""
    d = FIGURES / chapter
    d.mkdir(parents=True, exist_ok=True)
    return d


def results_dir(chapter: str) -> Path:
    """Folder for one chapter's saved tables (git-ignored, under runs/results/ unless LAB_RESULTS is set)."""
    d = RESULTS / chapter
    d.mkdir(parents=True, exist_ok=True)
    return d


def git_output(*args: str) -> str:
    """Output of a read-only git command in the repository ('' when git or the repository is unavailable); takes no
    lock on the index (--no-optional-locks)."""
    import subprocess

    try:
        r = subprocess.run(["git", "--no-optional-locks", "-C", str(ROOT), *args], capture_output=True, text=True,
                           timeout=20)
    except (OSError, subprocess.SubprocessError):
        return ""
    return r.stdout.strip() if r.returncode == 0 else ""
