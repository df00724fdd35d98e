"""Tests for lab.workbook.report: claim parsing and the HTML report from an executed fixture."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from lab.workbook import runner
from lab.workbook.report import build_report, chapter_intro, parse_claims

FIXTURE = Path(__file__).parent.parent / "fixtures" / "fixture.ipynb"


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture executed once at defaults into a temporary runs folder."""
    return runner.run_chapter(FIXTURE, out_dir=tmp_path_factory.mktemp("runs"), progress=False)


def test_parse_claims(executed: Path) -> None:
    """Verdict lines and claim records merge into one entry per claim."""
    claims = parse_claims(nbformat.read(executed, as_version=4))
    assert claims == [{"id": "C1", "verdict": "PASS", "statement": "x squared is positive", "passed": True,
                       "numbers": {"x": 2, "x_squared": 4, "label": "a"}}]


def test_chapter_intro() -> None:
    """Title is the H1 and the question is the first paragraph after it."""
    title, question = chapter_intro(nbformat.read(FIXTURE, as_version=4))
    assert title == "99 · Fixture"
    assert question.startswith("Does squaring") and "Second paragraph" not in question


def test_build_report(executed: Path, tmp_path: Path) -> None:
    """index.html names the chapter, its claim and verdict, and links the chapter page."""
    index = build_report([executed], out_dir=tmp_path)
    assert index == tmp_path / "index.html"
    page = index.read_text(encoding="utf-8")
    for needle in ("Loss-Landscape Lab — lab report", "99 · Fixture", "C1", "PASS", "x squared is positive",
                   "x_squared=4", "fixture.html"):
        assert needle in page
    assert "C1 PASS" in (tmp_path / "fixture.html").read_text(encoding="utf-8")


def test_report_marks_failed_chapter(tmp_path: Path) -> None:
    """A chapter whose execution failed keeps its title and is flagged in the index."""
    nb = nbformat.read(FIXTURE, as_version=4)
    nb.cells[1].source = nb.cells[1].source.replace("x: int = 2", "x: int = 0")
    src = tmp_path / "bad.ipynb"
    nbformat.write(nb, src)
    with pytest.raises(Exception, match="positive int"):
        runner.run_chapter(src, out_dir=tmp_path / "runs", progress=False)
    assert not (tmp_path / "runs" / "bad.ipynb").exists()  # a failed run never takes the run's name
    page = build_report([tmp_path / "runs" / "bad.failed.ipynb"], out_dir=tmp_path / "report").read_text("utf-8")
    assert "99 · Fixture" in page and "execution failed" in page and "Does squaring" in page
