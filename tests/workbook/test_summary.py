"""Tests for lab.workbook.summary: a chapter's finding paragraph from its run, and the README's chapter table."""
from __future__ import annotations

import pytest

from lab.workbook import summary


def test_numbers_read_as_prose() -> None:
    assert summary.fmt(0.3876) == "0.39" and summary.fmt(1.02) == "1.0" and summary.fmt(37.3) == "37"
    assert summary.fmt(474.2) == "474" and summary.fmt(0.0023) == "0.0023"
    assert summary.fmt(1.41e6) == "1.4×10⁶"
    assert summary.fmt(4.44e-16) == "4.4×10⁻¹⁶"
    assert summary.fmt(1e-7) == "10⁻⁷"
    assert summary.fmt(30) == "30" and summary.fmt("exp decay") == "exp decay"
    assert summary.fmt(0.25, ".0%") == "25%"


def _claims(status: str = "PASS") -> list[dict]:
    return [{"id": "C2", "status": status, "passed": status == "PASS", "kind": "finding",
             "numbers": {"ratio": 0.388, "ratio_low": 0.325, "ratio_high": 0.462, "n": 5},
             "power": {"passed": True, "control": 0.54, "control_low": 0.4, "control_high": 0.68}}]


def test_summarize_fills_fields_and_replaces_sentences_whose_claims_did_not_pass(monkeypatch) -> None:
    items = [{"claims": ["C2"], "text": "ratio {C2.ratio} over {C2.n.v} replicates, control {C2.power.control:.2f}"},
             {"claims": ["C2"], "text": "flatter.", "otherwise": "verdict {C2.status}: {C2.ratio.v}"}]
    monkeypatch.setattr(summary, "load_summary", lambda ch: items)
    assert summary.summarize("07", _claims()) == \
        "ratio 0.39 [0.33, 0.46] over 5 replicates, control 0.54 [0.40, 0.68] flatter."
    assert summary.summarize("07", _claims("NOT TESTED")) == \
        "(C2: not established by this run — C2 NOT TESTED.) verdict NOT TESTED: 0.39"
    monkeypatch.setattr(summary, "load_summary", lambda ch: [{"claims": ["C2"], "text": "{C2.missing}"}])
    with pytest.raises(KeyError, match="missing"):
        summary.summarize("07", _claims())


def test_tally_counts_findings_and_checks_apart() -> None:
    claims = _claims() + [{"id": "C3", "kind": "check", "status": "PASS"},
                          {"id": "C4", "kind": "finding", "status": "NOT TESTED"}]
    assert summary.tally(claims) == "2 findings (1 NOT TESTED, 1 PASS) · 1 checks (1 PASS)"


def test_every_chapter_summary_fits_its_committed_run() -> None:
    import nbformat

    from lab.workbook.report import parse_claims
    from lab.workbook.runner import list_chapters

    for path in list_chapters():
        text = summary.summarize(path.name[:2], parse_claims(nbformat.read(path, as_version=4)))
        assert text and "{" not in text, f"{path.name}: summary {text!r}"


def test_the_readme_table_is_current() -> None:
    assert summary.update_readme(check=True), \
        "README.md's chapter table is not the committed runs': run `python -m lab readme` and commit it"
