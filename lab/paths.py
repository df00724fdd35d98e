"""Repository paths resolved from the package, so chapters work from any working directory."""
from __future__ import annotations

import os
from pathlib import Path

ROOT: Path = Path(__file__).resolve().parent.parent
NOTEBOOKS: Path = ROOT / "notebooks"
FIGURES: Path = Path(os.environ.get("LAB_FIGURES", ROOT / "figures"))  # sweeps point this elsewhere per run
RUNS: Path = ROOT / "runs"
REPORT: Path = ROOT / "report"
DATA: Path = Path(os.environ.get("LAB_DATA", ROOT / "data"))
RESULTS: Path = Path(os.environ.get("LAB_RESULTS", RUNS / "results"))


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
