"""lab.workbook.scaffold: a new chapter from notebooks/template.ipynb, and the template itself runs end to end."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import nbformat
import papermill
import pytest

from lab.workbook import runner, scaffold
from lab.workbook.claims import CONCLUSION_MIMETYPE, DECLARED_MIMETYPE
from lab.workbook.claims import MIMETYPE as CLAIM_MIMETYPE
from lab.workbook.cli import main
from lab.workbook.figures import KEY_FIGURE_MIMETYPE
from lab.workbook.paths import NOTEBOOKS

TEMPLATE = NOTEBOOKS / scaffold.TEMPLATE
CHECKED = re.compile(r"^# NBVAL_CHECK_OUTPUT\n")


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A notebooks folder holding the template and chapter 06, which scaffold (and the runner) use instead."""
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    shutil.copy(TEMPLATE, nbs / scaffold.TEMPLATE)
    (nbs / "06_lr_schedules.ipynb").write_text(TEMPLATE.read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.setattr(scaffold, "NOTEBOOKS", nbs)
    monkeypatch.setattr(runner, "NOTEBOOKS", nbs)
    return nbs


def _tags(cell) -> set[str]:
    return set(cell.metadata.get("tags", []))


def test_template_is_not_a_chapter() -> None:
    """The template lies outside the chapter glob: the runner, the report, robustness and nbval never take it."""
    assert TEMPLATE.is_file()
    assert TEMPLATE not in runner.list_chapters() and not TEMPLATE.match(runner.CHAPTER_GLOB)
    with pytest.raises(ValueError, match="matches no chapter"):
        runner.resolve_notebook("template")


def test_new_chapter_from_template(folder: Path) -> None:
    """07_flatness: the number in the title, CH, the figure folder and the commands; fresh ids; no outputs."""
    path = scaffold.new_chapter("07", "flatness_vs_size")
    assert path == folder / "07_flatness_vs_size.ipynb"
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    template = nbformat.read(folder / scaffold.TEMPLATE, as_version=4)
    assert len(nb.cells) == len(template.cells)
    assert nb.cells[0].source.splitlines()[0] == "# 07 · Flatness vs size"
    text = "\n".join(c.source for c in nb.cells)
    assert 'CH = "07"' in text and "NB=07" in text and "figures/07/example.png" in text
    assert not re.search(r"\bNN\b", text)
    assert 'save_fig(fig, CH, "example", key=True)' in text  # the key figure, in figures/07/
    assert nb.metadata["kernelspec"]["name"] == "python3"
    ids = [c["id"] for c in nb.cells]
    assert ids == [f"c07-{i:02d}" for i in range(len(nb.cells))]
    assert not set(ids) & {c["id"] for c in template.cells}
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    # the anatomy: one parameters cell of literals, then the start cell; a checked verdict cell; tagged explorers
    params = [i for i, c in enumerate(nb.cells) if "parameters" in _tags(c)]
    assert len(params) == 1 and "start_chapter(CH, globals()" in nb.cells[params[0] + 1].source
    declared = papermill.inspect_notebook(str(path))
    assert {k: v["default"] for k, v in declared.items() if k in ("seed", "n_reps", "device")} == {
        "seed": "0", "n_reps": "3", "device": '"cpu"'}
    assert [c.source for c in code if CHECKED.match(c.source)] == ["# NBVAL_CHECK_OUTPUT\ncl.verdicts()"]
    assert all({"nbval-skip", "skip-execution"} <= _tags(c) for c in code if "ipywidgets" in c.source)
    # the new chapter is a chapter: the runner finds it
    assert runner.resolve_notebook("07") == path.resolve()


@pytest.mark.parametrize("number", ["06", "7", "007", "00", "ab", "", 7])
def test_new_chapter_refuses_bad_or_taken_numbers(folder: Path, number: object) -> None:
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(ValueError, match=r"^parameter 'number' = .* is not allowed: [^\n]*$") as err:
        scaffold.new_chapter(number, "flatness")  # type: ignore[arg-type]
    if number == "06":
        assert "chapter 06 exists (06_lr_schedules.ipynb); the next free number is 01" in str(err.value)
    assert sorted(p.name for p in folder.iterdir()) == before


@pytest.mark.parametrize("name", ["Flatness", "flat-ness", "flat ness", "7flat", "_flat", "flat__x", "flat_",
                                  "", "../x", "a" * 61])
def test_new_chapter_refuses_bad_names(folder: Path, name: str) -> None:
    with pytest.raises(ValueError, match=r"^parameter 'name' = .* is not allowed: [^\n]*$"):
        scaffold.new_chapter("07", name)
    assert not list(folder.glob("07_*"))


def test_new_chapter_never_overwrites(folder: Path) -> None:
    """A second chapter 07 is refused, whatever its name; the first is left as it was."""
    path = scaffold.new_chapter("07", "flatness")
    path.write_text(path.read_text(encoding="utf-8").replace("Flatness", "Edited"), encoding="utf-8")
    before = path.read_bytes()
    for name in ("flatness", "other"):
        with pytest.raises(ValueError, match="parameter 'number' = '07' is not allowed: chapter 07 exists"):
            scaffold.new_chapter("07", name)
    assert path.read_bytes() == before and [p.name for p in folder.glob("07_*")] == ["07_flatness.ipynb"]


def test_cli_new(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m lab new 08 sharpness` prints the new notebook; a bad name is a one-line error, exit code 2."""
    assert main(["new", "08", "sharpness"]) == 0
    assert capsys.readouterr().out.strip() == str(folder / "08_sharpness.ipynb")
    assert main(["new", "09", "Bad-Name"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: parameter 'name' = 'Bad-Name' is not allowed") and err.count("\n") == 1


def _texts(cell) -> list[str]:
    out = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream":
            out += o["text"].splitlines()
        elif "text/plain" in o.get("data", {}):
            out += o["data"]["text/plain"].splitlines()
    return out


@pytest.mark.slow  # a papermill kernel: ~15-30 s, like the runner's end-to-end tests
def test_template_runs_end_to_end(tmp_path: Path) -> None:
    """papermill executes the template top to bottom (in a temporary folder, figures there too): every declared
    claim is checked and PASSes, the verdict cell prints verdict lines only, the conclusion covers every claim."""
    src = tmp_path / scaffold.TEMPLATE
    shutil.copy(TEMPLATE, src)
    out = tmp_path / "executed.ipynb"
    runner.execute(src, out, None, False, 300, {"LAB_FIGURES": str(tmp_path / "figures"),
                                                "LAB_RESULTS": str(tmp_path / "results")})
    nb = nbformat.read(out, as_version=4)
    ran = [c for c in nb.cells if c.cell_type == "code" and "skip-execution" not in _tags(c)]
    assert [c.execution_count for c in ran] == list(range(1, len(ran) + 1))
    data = [o["data"] for c in ran for o in c.outputs if "data" in o]
    (declared,) = [d[DECLARED_MIMETYPE] for d in data if DECLARED_MIMETYPE in d]
    ids = [c["id"] for c in declared["claims"]]
    records = {d[CLAIM_MIMETYPE]["id"]: d[CLAIM_MIMETYPE] for d in data if CLAIM_MIMETYPE in d}
    assert ids and list(records) == ids and all(r["passed"] for r in records.values())
    (verdict_cell,) = [c for c in ran if CHECKED.match(c.source)]
    lines = _texts(verdict_cell)
    assert [ln.split()[:2] for ln in lines] == [[cid, "PASS"] for cid in ids]
    assert all(re.fullmatch(r"C\d+[a-z]? PASS  \S.*", ln) for ln in lines)
    (conclusion,) = [d[CONCLUSION_MIMETYPE] for d in data if CONCLUSION_MIMETYPE in d]
    assert conclusion["claims"] == dict.fromkeys(ids, True)
    assert [d[KEY_FIGURE_MIMETYPE]["path"] for d in data if KEY_FIGURE_MIMETYPE in d] == ["figures/NN/example.png"]
    assert (tmp_path / "figures" / "NN" / "example.png").is_file()  # the figure went to LAB_FIGURES, not figures/
    assert not any(c.outputs for c in nb.cells if "skip-execution" in _tags(c))
