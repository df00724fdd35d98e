"""Structural rules for every chapter in notebooks/ (the checker itself is tested on synthetic notebooks)."""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import nbformat
import papermill
import pytest

from lab.workbook.claims import CONCLUSION_MIMETYPE, DECLARED_MIMETYPE
from lab.workbook.claims import MIMETYPE as CLAIM_MIMETYPE
from lab.workbook.paths import NOTEBOOKS

CHAPTERS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))  # the chapters; template.ipynb is not one
VERDICT = re.compile(r"^C\d+[a-z]? (PASS|FAIL|NOT TESTED)  .+$")
TITLE = re.compile(r"^# \d\d · \S")
SKIP_TAGS = {"skip-execution", "nbval-skip"}
CHECKED = re.compile(r"^\s*#\s*NBVAL_CHECK_OUTPUT\b", re.M)


def _tags(cell) -> set[str]:
    return set(cell.get("metadata", {}).get("tags", []))


def _text_lines(cell) -> list[str]:
    lines: list[str] = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream":
            lines += o.get("text", "").splitlines()
        elif "data" in o and "text/plain" in o["data"]:
            lines += o["data"]["text/plain"].splitlines()
    return lines


def problems(nb: nbformat.NotebookNode, path: Path) -> list[str]:
    """Every rule a chapter breaks, as short messages (empty when the chapter is well formed)."""
    out: list[str] = []
    cells = nb.cells
    code = [c for c in cells if c.cell_type == "code"]
    if not cells or cells[0].cell_type != "markdown" or not TITLE.match(cells[0].source):
        out.append("first cell must be markdown starting with '# NN · '")
    if nb.metadata.get("kernelspec", {}).get("name") != "python3":
        out.append("kernelspec name must be python3")
    params = [i for i, c in enumerate(cells) if c.cell_type == "code" and "parameters" in _tags(c)]
    if len(params) != 1:
        out.append(f"expected exactly one code cell tagged parameters, found {len(params)}")
    else:
        nxt = cells[params[0] + 1] if params[0] + 1 < len(cells) else None
        if nxt is None or nxt.cell_type != "code" or not re.search(r"\b(start_chapter|validate)\(", nxt.source):
            out.append("the cell after the parameters cell must call start_chapter( (or validate()")
    counts = [c.get("execution_count") for c in code if not (_tags(c) & SKIP_TAGS)]
    if counts != list(range(1, len(counts) + 1)):
        out.append(f"execution counts must be 1..{len(counts)}, got {counts}")
    for c in code:
        if "skip-execution" in _tags(c):
            if "nbval-skip" not in _tags(c):
                out.append("a skip-execution cell must also be tagged nbval-skip")
            if c.get("outputs"):
                out.append("a skip-execution cell must have no outputs")
        if CHECKED.search(c.source) or "nbval-check-output" in _tags(c):
            if any("FAIL" in str(o) for o in c.get("outputs", [])):
                out.append("a claims cell reports FAIL")
            lines = _text_lines(c)
            if not lines:
                out.append("a claims cell has no verdict output")
            out += [f"bad verdict line {s!r}" for s in lines if not VERDICT.match(s)]
    found = papermill.inspect_notebook(str(path)) if len(params) == 1 else {}
    if not any(p.get("inferred_type_name") not in (None, "None") for p in found.values()):
        out.append("no type-annotated parameter")
    if len(params) == 1:
        declared = [ln for ln in cells[params[0]].source.splitlines() if ln.strip() and not ln.startswith("#")]
        if len(found) != len(declared):
            out.append(f"papermill parses {len(found)} of the {len(declared)} parameter lines (avoid '=' in comments)")
    if "dtype" in found and "device" not in found:
        out.append("a chapter with a dtype parameter needs a device parameter")
    keys = _outputs_with(nb, "application/vnd.lab.key-figure+json")
    if len(keys) != 1:
        out.append(f"expected one key figure (save_fig(..., key=True)), found {len(keys)}")
    out += claim_agreement(nb)
    return out


def _outputs_with(nb: nbformat.NotebookNode, mimetype: str) -> list[dict]:
    return [o["data"][mimetype] for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if mimetype in o.get("data", {})]


def claim_agreement(nb: nbformat.NotebookNode) -> list[str]:
    """The claims are written once: the declaration (introduced as a list), the verdict lines, the claim records
    and the generated conclusion must name the same claims, in the same order, with the same verdicts."""
    out: list[str] = []
    declared = _outputs_with(nb, DECLARED_MIMETYPE)
    if len(declared) != 1:
        return [f"expected one introduced claims declaration (Claims.introduce), found {len(declared)}"]
    ids = [c["id"] for c in declared[0]["claims"]]
    verdicts: dict[str, str] = {}
    for c in nb.cells:
        if c.cell_type == "code" and CHECKED.search(c.source):
            for line in _text_lines(c):
                m = re.match(r"^(C\d+[a-z]?) (PASS|FAIL|NOT TESTED)  ", line)
                if m:
                    if m[1] in verdicts:
                        out.append(f"claim {m[1]} has two verdict lines")
                    verdicts[m[1]] = m[2]
    if list(verdicts) != ids:
        out.append(f"verdict lines {list(verdicts)} do not match the declared claims {ids}")
    records = {r["id"]: r for r in _outputs_with(nb, CLAIM_MIMETYPE)}
    for cid in ids:
        rec = records.get(cid)
        if rec is None:
            out.append(f"claim {cid} has no recorded numbers (Claims.check)")
        elif cid in verdicts and (verdicts[cid] == "PASS") != bool(rec.get("passed")):
            out.append(f"claim {cid}: its record and its verdict line disagree")
        elif cid in verdicts and rec.get("status") not in (None, verdicts[cid]):
            out.append(f"claim {cid}: its record's status and its verdict line disagree")
        if rec is not None and rec.get("kind") not in ("finding", "check"):
            out.append(f"claim {cid}: its record declares no kind (finding or check)")
        if rec is not None and rec.get("kind") == "finding" and not rec.get("alternative"):
            out.append(f"claim {cid}: a finding whose record names no alternative")
    concl = _outputs_with(nb, CONCLUSION_MIMETYPE)
    if len(concl) != 1:
        out.append(f"expected one generated conclusion (Claims.conclude), found {len(concl)}")
    else:
        got = concl[0]["claims"]  # a JSON object: nbformat stores its keys sorted, so compare as sets
        if set(got) != set(ids):
            out.append(f"the conclusion covers {sorted(got)}, the declaration {ids}")
        for cid, passed in got.items():
            if cid in verdicts and (verdicts[cid] == "PASS") != bool(passed):
                out.append(f"claim {cid}: the conclusion and the verdict line disagree")
    return out


def test_notebooks_folder_exists() -> None:
    assert NOTEBOOKS.is_dir(), NOTEBOOKS


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.name for p in CHAPTERS])
def test_chapter_structure(path: Path) -> None:
    assert re.match(r"^\d\d_.+\.ipynb$", path.name), path.name
    nb = nbformat.read(path, as_version=4)
    assert problems(nb, path) == []


# ---- the checker on synthetic chapters: it accepts a good one and names each broken rule -------------------------

def _good() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}

    def code(src: str, n: int | None, tags: list[str] | None = None, outputs: list | None = None):
        c = nbformat.v4.new_code_cell(src, execution_count=n, outputs=outputs or [])
        if tags:
            c.metadata["tags"] = tags
        return c

    stream = lambda text: nbformat.v4.new_output("stream", name="stdout", text=text)
    display = lambda data: nbformat.v4.new_output("display_data", data=data)
    nb.cells = [
        nbformat.v4.new_markdown_cell("# 01 · The noise floor\n\nWhere does the loss stop being smooth?"),
        code('dtype: str = "float32"  # working precision\ndevice: str = "cpu"\nn: int = 3', 1, ["parameters"]),
        code('C = start_chapter("01", globals(), RULES)', 2),
        code("expensive()", None, ["skip-execution", "nbval-skip"]),
        code("claims.introduce()", 3, outputs=[display({DECLARED_MIMETYPE: {"chapter": "01", "claims": [
            {"id": "C1"}, {"id": "C2a"}]}})]),
        code("claims.check('C1', True, x=1)", 4, outputs=[
            display({CLAIM_MIMETYPE: {"id": "C1", "passed": True, "kind": "check"}, "text/plain": "C1 [PASS] x=1"}),
            display({CLAIM_MIMETYPE: {"id": "C2a", "passed": True, "kind": "finding", "alternative": "u-free noise"},
                     "text/plain": "C2a [PASS] y=2"})]),
        code("# NBVAL_CHECK_OUTPUT\nclaims.verdicts()", 5,
             outputs=[stream("C1 PASS  the floor is flat\nC2a PASS  it scales with u\n")]),
        code("claims.conclude()", 6, outputs=[display({CONCLUSION_MIMETYPE: {"chapter": "01",
                                                                            "claims": {"C1": True, "C2a": True}}})]),
        code('save_fig(fig, CH, "floor", key=True)', 7, outputs=[display({
            "application/vnd.lab.key-figure+json": {"chapter": "01", "path": "figures/01/floor.png"}})]),
    ]
    return nb


def _check(nb: nbformat.NotebookNode, tmp_path: Path) -> list[str]:
    path = tmp_path / "01_x.ipynb"
    nbformat.write(nb, path)
    return problems(nb, path)


def test_checker_accepts_good_chapter(tmp_path: Path) -> None:
    assert _check(_good(), tmp_path) == []


def _break_title(nb):
    nb.cells[0].source = "# The noise floor"


def _break_kernel(nb):
    nb.metadata["kernelspec"]["name"] = "lab-venv"


def _two_params(nb):
    nb.cells[2].metadata["tags"] = ["parameters"]


def _no_validate(nb):
    nb.cells[2].source = "P = dict(dtype=dtype)"


def _bad_counts(nb):
    nb.cells[4].execution_count = 9


def _skip_without_nbval(nb):
    nb.cells[3].metadata["tags"] = ["skip-execution"]


def _skip_with_output(nb):
    nb.cells[3].outputs = [nbformat.v4.new_output("stream", name="stdout", text="hi\n")]


def _claim_fail(nb):
    nb.cells[6].outputs[0].text = "C1 FAIL  the floor is flat\nC2a PASS  it scales with u\n"


def _claim_bad_line(nb):
    nb.cells[6].outputs[0].text = "C1 PASS the floor is flat\n"


def _claim_no_output(nb):
    nb.cells[6].outputs = []


def _verdict_missing(nb):
    nb.cells[6].outputs[0].text = "C1 PASS  the floor is flat\n"


def _conclusion_disagrees(nb):
    nb.cells[7].outputs[0]["data"][CONCLUSION_MIMETYPE]["claims"]["C2a"] = False


def _no_declaration(nb):
    nb.cells[4].outputs = []


def _record_disagrees(nb):
    nb.cells[5].outputs[1]["data"][CLAIM_MIMETYPE]["passed"] = False


def _no_annotation(nb):
    nb.cells[1].source = 'dtype = "float32"\ndevice = "cpu"'


def _dtype_without_device(nb):
    nb.cells[1].source = 'dtype: str = "float32"\nn: int = 3'


@pytest.mark.parametrize("breaker, expected", [
    (_break_title, "first cell"), (_break_kernel, "kernelspec"), (_two_params, "exactly one"),
    (_no_validate, "start_chapter("), (_bad_counts, "execution counts"), (_skip_without_nbval, "nbval-skip"),
    (_skip_with_output, "no outputs"), (_claim_fail, "reports FAIL"), (_claim_bad_line, "bad verdict line"),
    (_claim_no_output, "no verdict output"), (_no_annotation, "type-annotated"),
    (_dtype_without_device, "device parameter"), (_verdict_missing, "do not match the declared"),
    (_conclusion_disagrees, "conclusion and the verdict line disagree"), (_no_declaration, "claims declaration"),
    (_record_disagrees, "record and its verdict line disagree"),
])
def test_checker_names_broken_rule(breaker, expected: str, tmp_path: Path) -> None:
    nb = copy.deepcopy(_good())
    breaker(nb)
    got = _check(nb, tmp_path)
    assert got and any(expected in g for g in got), got


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.name for p in CHAPTERS])
def test_committed_outputs_carry_no_machine_paths(path: Path) -> None:
    """`lab refresh` writes paths under the project relative to it: no committed output names this machine."""
    from lab.workbook.paths import ROOT

    nb = nbformat.read(path, as_version=4)
    text = json.dumps([c.get("outputs", []) for c in nb.cells if c.cell_type == "code"])
    assert str(ROOT) not in text and not re.search(r"/(work|tmp|root|home)/[\w.-]+/", text)
