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
                       "status": "PASS", "kind": None, "alternative": "", "power": None, "registered_verdict": None,
                       "numbers": {"x": 2, "x_squared": 4, "label": "a"}, "test": "", "threshold": "",
                       "tests": []}]


def test_chapter_intro() -> None:
    """Title is the H1 and the question is the first paragraph after it."""
    title, question = chapter_intro(nbformat.read(FIXTURE, as_version=4))
    assert title == "99 · Fixture"
    assert question.startswith("Does squaring") and "Second paragraph" not in question


def test_build_report(executed: Path, tmp_path: Path) -> None:
    """index.html names the chapter, its verdicts and the workbook's tally, and links the chapter page, which holds
    the claims table (the index states findings, not tables)."""
    index = build_report([executed], out_dir=tmp_path)
    assert index == tmp_path / "index.html"
    page = index.read_text(encoding="utf-8")
    for needle in ("Loss-Landscape Lab — lab report", "99 · Fixture", "1/1 claims pass", "fixture.html"):
        assert needle in page
    assert "lab-claims" not in page
    chapter = (tmp_path / "fixture.html").read_text(encoding="utf-8")
    for needle in ("<td>C1</td><td class='lab-PASS'>PASS</td>", "x squared is positive", "x_squared=4",
                   "<td class='lab-nums'>x 2</td>"):
        assert needle in chapter


def test_report_shows_the_runs_own_numbers(executed: Path, tmp_path: Path) -> None:
    """Numbers come from the run's claim records, never from anywhere else: a changed record shows changed."""
    nb = nbformat.read(executed, as_version=4)
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            rec = out.get("data", {}).get("application/vnd.lab.claim+json")
            if rec:
                rec["numbers"]["x_squared"] = 98765
    changed = tmp_path / "runs" / executed.name
    changed.parent.mkdir()
    nbformat.write(nb, changed)
    index = build_report([changed], out_dir=tmp_path / "report")
    text = (tmp_path / "report" / "fixture.html").read_text(encoding="utf-8")
    assert "x_squared=98765" in text and "x_squared=4" not in text
    assert "x_squared=4" not in index.read_text(encoding="utf-8")


def test_chapter_page_is_cleaned_and_headed(executed: Path, tmp_path: Path) -> None:
    """The chapter page drops parameters, validation and NBVAL markers, folds code, opens with the question, then the
    run record folded under one line; the claims appear once (a compact table, details folded under it)."""
    build_report([executed], out_dir=tmp_path)
    page = (tmp_path / "fixture.html").read_text(encoding="utf-8")
    assert "Default parameters." in page and "lab-claims" in page and "tag_hide-input" in page
    assert page.index("Does squaring") < page.index("Run record: complete") < page.index("lab-compact")
    assert page.count("<details class=\"lab-run\">") + page.count("<details class='lab-run'>") == 1
    assert page.count("x squared is positive") == 3  # compact table, folded details, the folded code declaring it
    for gone in ("NBVAL_CHECK_OUTPUT", "# a positive integer", "must be a positive int", "x=2 label="):
        assert gone not in page
    assert (tmp_path / ".lab-report").is_file()
    assert not list(tmp_path.glob("_sources")) and not list(tmp_path.glob(".doctrees"))


def test_report_refuses_to_replace_a_folder_it_did_not_build(executed: Path, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("keep")
    with pytest.raises(ValueError, match="refusing to replace .* no lab report"):
        build_report([executed], out_dir=tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "keep"


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
    chapter = (tmp_path / "report" / "bad-failed.html").read_text("utf-8")
    assert "Execution failed" in chapter and "positive int" in chapter  # flagged, and the traceback kept


def test_claims_table_and_margin_chart_show_each_threshold_and_margin(executed: Path, tmp_path: Path) -> None:
    """A claim record's declared test, threshold and interval tests (as Claims.check writes them) appear in the
    chapter's claims table with the margin, and the chapter page carries the margin chart."""
    from lab.workbook.report import margin_chart, parse_claims, relative_margin

    nb = nbformat.read(executed, as_version=4)
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            rec = out.get("data", {}).get("application/vnd.lab.claim+json")
            if rec:
                rec["numbers"].update(ratio=0.9, ratio_low=0.7, ratio_high=1.1, ratio_n=5)
                rec.update(test="95% interval of the ratio", threshold="0.5, from theory",
                           tests=[{"number": "ratio", "test": "above", "bounds": [0.5], "passed": True,
                                   "margin": 0.2}])
    changed = tmp_path / "runs" / executed.name
    changed.parent.mkdir()
    nbformat.write(nb, changed)
    claims = parse_claims(nbformat.read(changed, as_version=4))
    assert claims[0]["tests"][0]["margin"] == 0.2 and relative_margin(claims[0]["tests"][0]) == pytest.approx(0.4)
    assert margin_chart(claims, tmp_path / "m.png").is_file()
    assert margin_chart([{"id": "C1", "tests": []}], tmp_path / "none.png") is None
    build_report([changed], out_dir=tmp_path / "report")
    page = (tmp_path / "report" / "fixture.html").read_text(encoding="utf-8")
    assert "95% interval of the ratio" in page and "0.5, from theory" in page
    assert "ratio [0.7, 1.1] above 0.5: margin +0.2 (+40%)" in page
    assert "margins.png" in page and list((tmp_path / "report").rglob("margins*.png"))


def test_the_report_has_a_page_on_the_published_robustness_matrix(executed: Path, tmp_path: Path) -> None:
    """With a published matrix (results/robustness), the report gets a robustness page with its verdict count, heat
    map and per-claim table, linked from the index; without one, none."""
    import json

    from lab.workbook import report

    src = tmp_path / "published"
    src.mkdir()
    (src / "conditions.json").write_text(json.dumps({
        "conditions": [{"name": "native·2t", "seeds": [0, 1]}], "skipped": [[{"name": "cuda"}, "no CUDA GPU"]],
        "native_kernels": "avx512", "runs": 2, "distinct_runs": 2, "failed_runs": 0, "verdicts": 4, "fails": 1,
        "flipping_claims": ["99 C1"]}))
    (src / "claims.md").write_text("| chapter | claim | runs where it holds |\n| --- | --- | --- |\n"
                                   "| 99 | C1 | 1/2 |\n| 99 | C2 | 2/2 |\n")
    book = tmp_path / "book"
    book.mkdir()
    assert report.robustness_page(book, src) == "robustness"
    page = (book / "robustness.md").read_text()
    assert "3 of 4 verdicts PASS" in page and "99 C1" in page and "native·2t (seeds 0, 1)" in page
    assert "no CUDA GPU" in page and "| 99 | C1 | 1/2 |" in page and "| 99 | C2 |" not in page  # only the shaky rows
    assert "1 of 2 claims hold in every run" in page
    assert report.robustness_page(tmp_path / "book2", tmp_path / "absent") is None
    index = build_report([executed], out_dir=tmp_path / "report")
    if (report.ROBUSTNESS / "conditions.json").is_file():          # the repository publishes one
        assert "robustness.html" in index.read_text(encoding="utf-8")
        assert (tmp_path / "report" / "robustness.html").is_file()


def test_synthesis_declaration_names_declared_claims() -> None:
    """Every row of notebooks/claims/notes.yaml names a lab note shipped in notes/ and claims the chapters declare."""
    import yaml

    from lab.workbook.paths import NOTEBOOKS
    from lab.workbook.report import NOTES, load_synthesis

    declared = {f"{p.stem}.{c['id']}" for p in (NOTEBOOKS / "claims").glob("[0-9][0-9].yaml")
                for c in yaml.safe_load(p.read_text(encoding="utf-8"))["claims"]}
    notes = {p.name[:3] for p in NOTES.glob("[0-9][0-9][0-9]_*.txt")}
    entries = load_synthesis()
    assert len(entries) >= 20 and {e["note"] for e in entries} == notes
    assert {c for e in entries for c in e["claims"]} <= declared


def test_synthesis_status_follows_the_runs_verdicts(tmp_path: Path) -> None:
    """The declared answer only when every claim named PASSed; NOT TESTED, FAIL and a missing claim say so."""
    from lab.workbook.report import load_synthesis, synthesis_status

    e = {"note": "000", "says": "x", "answer": "refuted", "claims": ["01.C1", "01.C2"]}
    ok = {"01.C1": {"status": "PASS"}, "01.C2": {"status": "PASS"}}
    assert synthesis_status(e, ok) == "refuted"
    assert synthesis_status(e, {**ok, "01.C2": {"status": "NOT TESTED"}}) == "not tested here"
    assert synthesis_status(e, {**ok, "01.C2": {"status": "FAIL"}}) == "open: a claim failed"
    assert synthesis_status(e, {"01.C1": {"status": "PASS"}}) == "open: not run"
    bad = tmp_path / "notes.yaml"
    bad.write_text("- {note: '000', says: x, answer: maybe, claims: [01.C1]}\n", encoding="utf-8")
    with pytest.raises(ValueError, match="answer 'maybe'; allowed: confirmed"):
        load_synthesis(bad)


def test_chapter_mentions_become_citations_of_the_bibliography() -> None:
    """'Li et al. (2018)' → a textual citation, 'Li et al. 2018' → a bare one; code spans untouched; every entry of
    notebooks/references.bib carries an arXiv id or a DOI."""
    from pybtex.database import parse_file

    from lab.workbook.report import BIBLIOGRAPHY, citation_patterns, cite

    pats = citation_patterns()
    assert cite("as Li et al. (2018) show", pats) == "as {cite:t}`li2018visualizing` show"
    assert cite("(Sagun et al. 2017; Moré & Wild 2011)", pats) == (
        "({cite:alp}`sagun2017empirical`; {cite:alp}`more2011ecnoise`)")
    assert cite("`Li et al. 2018` and Li et al.'s curvature", pats) == "`Li et al. 2018` and Li et al.'s curvature"
    for key, e in parse_file(str(BIBLIOGRAPHY)).entries.items():
        assert e.fields.get("eprint") or e.fields.get("doi"), key


def test_the_shipped_cjk_font_covers_the_chapters_quotes() -> None:
    """The report's subset Noto Sans JP has a glyph for every CJK character in the chapters' prose, so lab note 001's
    quotes render (not as empty boxes) on a machine without a CJK font, and in the PDF."""
    import re

    from fontTools.ttLib import TTFont

    from lab.workbook.paths import NOTEBOOKS
    from lab.workbook.report import FONTS

    cmap = TTFont(FONTS / "noto-sans-jp-subset.woff").getBestCmap()
    used = {ch for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb") for c in nbformat.read(p, as_version=4).cells
            if c.cell_type == "markdown" for ch in re.findall(r"[\u3000-\u30ff\u4e00-\u9fff\uff00-\uffef]", c.source)}
    assert used and not {ch for ch in used if ord(ch) not in cmap}
