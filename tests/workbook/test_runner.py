"""Tests for lab.workbook.runner: parameter parsing and checking, parameterized runs, in-place refresh."""
from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest

from lab.workbook import runner
from lab.workbook.paths import NOTEBOOKS

FIXTURE = Path(__file__).parent.parent / "fixtures" / "fixture.ipynb"


def _stdout(nb: nbformat.NotebookNode) -> str:
    """All stdout text of a notebook."""
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                   if o.get("output_type") == "stream")


def test_parse_cli_params_types() -> None:
    """Values are typed like papermill -p, with explicit float handling."""
    got = runner.parse_cli_params([("dtype", "float64"), ("n", "3"), ("lr", "1e-3"), ("flag", "true"),
                                   ("xs", "[1,2]"), ("f", "0.5"), ("mode", "off"), ("none", "None")])
    assert got == {"dtype": "float64", "n": 3, "lr": 1e-3, "flag": True, "xs": [1, 2], "f": 0.5,
                   "mode": "off", "none": None}
    assert type(got["n"]) is int and type(got["lr"]) is float


def test_output_name() -> None:
    """Defaults give <stem>.ipynb; params a short sanitized suffix; long params a hash."""
    assert runner.output_name("01_a", None) == "01_a.ipynb"
    got = runner.output_name("01_a", {"lr": 0.001, "dtype": "float64"})
    assert got == "01_a__dtype-float64_lr-0.001.ipynb"
    long = runner.output_name("01_a", {"xs": list(range(100))})
    assert long.startswith("01_a__") and len(long) < 40


def test_resolve_notebook_existing_path_and_unknown() -> None:
    """An existing path resolves to itself; an unknown chapter lists the available ones."""
    assert runner.resolve_notebook(str(FIXTURE)) == FIXTURE.resolve()
    with pytest.raises(ValueError, match="available chapters"):
        runner.resolve_notebook("no_such_chapter_xyz")


def test_resolve_notebook_prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """"01", "01_name" and "notebooks/01_name.ipynb" resolve; an ambiguous prefix is rejected."""
    for name in ("01_alpha", "02_beta", "02_bravo"):
        shutil.copy(FIXTURE, tmp_path / f"{name}.ipynb")
    monkeypatch.setattr(runner, "NOTEBOOKS", tmp_path)
    assert runner.resolve_notebook("01") == (tmp_path / "01_alpha.ipynb").resolve()
    assert runner.resolve_notebook("02_beta") == (tmp_path / "02_beta.ipynb").resolve()
    assert runner.resolve_notebook("notebooks/02_beta.ipynb") == (tmp_path / "02_beta.ipynb").resolve()
    with pytest.raises(ValueError, match="ambiguous"):
        runner.resolve_notebook("02")
    with pytest.raises(ValueError, match="ambiguous"):
        runner.resolve_notebook("02_b")


def test_unknown_parameter_rejected(tmp_path: Path) -> None:
    """A parameter not in the parameters cell is an error naming it and the allowed ones."""
    with pytest.raises(ValueError, match="bogus") as err:
        runner.run_chapter(FIXTURE, {"bogus": 1}, out_dir=tmp_path, progress=False)
    assert "label" in str(err.value) and "x" in str(err.value)
    assert not list(tmp_path.iterdir())


def test_run_with_injected_param(tmp_path: Path) -> None:
    """x=5 is injected and used; the output goes to out_dir under a parameterized name."""
    out = runner.run_chapter(FIXTURE, {"x": 5}, out_dir=tmp_path, progress=False)
    assert out == tmp_path / "fixture__x-5.ipynb"
    nb = nbformat.read(out, as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "x = 5" in injected[0].source
    text = _stdout(nb)
    assert "x=5 label='a'" in text and "C1 PASS  x squared is positive" in text


def test_bad_value_raises(tmp_path: Path) -> None:
    """A value the notebook rejects makes run_chapter raise with the parameter in the message."""
    with pytest.raises(Exception, match="'x'") as err:
        runner.run_chapter(FIXTURE, {"x": -1}, out_dir=tmp_path, progress=False)
    assert "positive int" in str(err.value)


def test_never_writes_into_notebooks(tmp_path: Path) -> None:
    """Run outputs are refused inside notebooks/."""
    with pytest.raises(ValueError, match="refusing"):
        runner.run_chapter(FIXTURE, out_dir=NOTEBOOKS, progress=False)


def test_refresh_in_place(tmp_path: Path) -> None:
    """Refresh keeps outputs and counts 1..N, strips papermill metadata, keeps notebook metadata."""
    nb_path = tmp_path / "fixture.ipynb"
    shutil.copy(FIXTURE, nb_path)
    runner.refresh_chapter(nb_path, progress=False)
    nb = nbformat.read(nb_path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    assert "papermill" not in nb.metadata
    assert nb.metadata["kernelspec"]["name"] == "python3" and nb.metadata["lab"] == {"chapter": "99"}
    for c in nb.cells:
        assert "papermill" not in c.metadata and "execution" not in c.metadata
    assert not any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)
    assert "C1 PASS  x squared is positive" in _stdout(nb)
    assert [p.name for p in tmp_path.iterdir()] == ["fixture.ipynb"]


def test_merged_outputs_carry_no_machine_paths() -> None:
    """The repr of a figure path under the project root is written relative to it; other text is kept."""
    from lab.workbook.paths import ROOT

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("save_fig(fig, '01', 'x')")
    nb.cells.append(cell)
    done = nbformat.from_dict(nb)
    shown = {"text/plain": f"PosixPath('{ROOT}/figures/01/x.png')"}
    done.cells[0].outputs = [nbformat.v4.new_output("execute_result", shown),
                             nbformat.v4.new_output("stream", text=f"saved {ROOT}/runs/a.csv; kept /elsewhere/b\n")]
    merged = runner._merge_outputs(nb, done)
    assert merged.cells[0].outputs[0]["data"]["text/plain"] == "PosixPath('figures/01/x.png')"
    assert merged.cells[0].outputs[1]["text"] == "saved runs/a.csv; kept /elsewhere/b\n"


def test_refresh_failure_leaves_source(tmp_path: Path) -> None:
    """When execution fails the source file is byte-for-byte untouched and the error is raised."""
    nb = nbformat.read(FIXTURE, as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    params.source = params.source.replace("x: int = 2", "x: int = 0")
    nb_path = tmp_path / "broken.ipynb"
    nbformat.write(nb, nb_path)
    before = nb_path.read_bytes()
    with pytest.raises(Exception, match="positive int"):
        runner.refresh_chapter(nb_path, progress=False)
    assert nb_path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["broken.ipynb"]


def test_cli_unknown_param_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI turns a ValueError into a clear message and exit status 2."""
    from lab.workbook.cli import main

    assert main(["run", str(FIXTURE), "-p", "nope", "1"]) == 2
    assert "nope" in capsys.readouterr().err


def test_help_params_lists_every_parameter_with_type_default_range_and_comment(capsys) -> None:
    """`python -m lab run 04 --help-params` prints each parameter of the chapter with what it allows, runs nothing."""
    from lab.workbook.cli import main

    assert main(["run", "04", "--help-params"]) == 0
    out = capsys.readouterr().out
    declared = runner.declared_parameters(runner.resolve_notebook("04"))
    assert out.startswith("04_hessian_eigen.ipynb: ") and len(out.strip().splitlines()) == len(declared) + 1
    assert "n_reps" in out and "integer(2, 1000)" in out and "# independent replicates" in out
    assert "k_top" in out and "int" in out and "= 20" in out
