"""Tests for lab.workbook.claims: verdict lines, numbers lines and the record of each claim."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from lab.workbook.claims import Claim, Claims

VERDICT = re.compile(r"^C\d+[a-z]? (PASS|FAIL)  .+$")


def _claims() -> Claims:
    return Claims("01", {"C1": "noise floor is flat", "C2": "curvature is positive", "C3a": "never checked"})


def test_verdict_line_format() -> None:
    assert Claim("C1", "noise floor is flat", True).verdict() == "C1 PASS  noise floor is flat"
    assert Claim("C2", "curvature is positive", False).verdict() == "C2 FAIL  curvature is positive"
    assert VERDICT.match(Claim("C3a", "x", True).verdict())


def test_check_outside_ipython_prints_numbers_line(capsys: pytest.CaptureFixture[str]) -> None:
    c = _claims()
    assert c.check("C1", True, sigma=1.23456e-7, n=3, name="adam") is None  # nothing echoed in a notebook
    out = capsys.readouterr().out
    assert out == "C1 [PASS] sigma=1.23e-07, n=3, name=adam\n"
    assert c.results["C1"].passed is True
    c.check("C2", 0, ratio=float("nan"))
    assert capsys.readouterr().out == "C2 [FAIL] ratio=nan (non-finite: ratio)\n"


def test_numbers_recorded_as_plain_values() -> None:
    c = _claims()
    c.check("C1", np.bool_(True), a=np.float64(0.5), b=torch.tensor(2.5), k=np.int64(4), xs=(1, np.float32(2.0)),
            t=torch.tensor(3), none=None, flag=np.True_)
    rec = c.results["C1"]
    assert rec.passed is True
    assert rec.numbers == {"a": 0.5, "b": 2.5, "k": 4, "xs": [1, 2.0], "t": 3, "none": None, "flag": True}
    assert type(rec.numbers["a"]) is float and type(rec.numbers["b"]) is float and type(rec.numbers["k"]) is int
    assert type(rec.numbers["flag"]) is bool


def test_verdicts_prints_all_with_unchecked_fail(capsys: pytest.CaptureFixture[str]) -> None:
    c = _claims()
    c.check("C1", True, x=1)
    c.check("C2", False, x=2)
    capsys.readouterr()
    c.verdicts()
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["C1 PASS  noise floor is flat", "C2 FAIL  curvature is positive",
                     "C3a FAIL  never checked (not computed)"]
    assert all(VERDICT.match(s) for s in lines)
    c.verdicts("C3a")
    assert capsys.readouterr().out == "C3a FAIL  never checked (not computed)\n"
    assert c.all_passed is False


def test_all_passed() -> None:
    c = Claims("02", {"C1": "a", "C2": "b"})
    c.check("C1", True)
    assert c.all_passed is False  # C2 not computed
    c.check("C2", True)
    assert c.all_passed is True
    c.check("C2", False)  # re-checking replaces the verdict
    assert c.all_passed is False


def test_unknown_claim_raises() -> None:
    c = _claims()
    with pytest.raises(KeyError, match="C9"):
        c.check("C9", True)
    assert "C9" not in c.results
    with pytest.raises(KeyError):
        c.verdicts("C9")


def test_nan_never_passes_unless_allowed(capsys: pytest.CaptureFixture[str]) -> None:
    c = _claims()
    c.check("C1", True, alpha=float("nan"), low=-0.1)
    assert c.results["C1"].passed is False and "non-finite: alpha" in c.results["C1"].note
    c.check("C2", True, first_flip=float("nan"), allow_nonfinite=("first_flip",))
    assert c.results["C2"].passed is True
    c.check("C3a", True, time=float("inf"))
    assert c.results["C3a"].passed is False


def test_estimates_expand_and_nan_interval_fails() -> None:
    from lab.stats import t_interval

    c = _claims()
    c.check("C1", True, slope=t_interval([1.0, 1.1, 0.9]))
    assert set(c.results["C1"].numbers) == {"slope", "slope_low", "slope_high", "slope_n"}
    assert c.results["C1"].passed is True
    c.check("C2", True, slope=t_interval([1.0]))             # one replicate: no interval
    assert c.results["C2"].passed is False


def test_declared_once_introduced_checked_and_concluded(capsys: pytest.CaptureFixture[str]) -> None:
    """The declaration drives the introduction's list and the conclusion, which quotes the check's numbers and
    switches to the failure text when the verdict is FAIL."""
    from lab.stats import t_interval

    c = Claims("09")
    c.declare("C1", "the slope is one", test="t-interval inside [0.9, 1.1]", margin="theory says 1",
              conclusion="slope {slope} over {n:d} runs", if_fail="slope {slope} is not one")
    c.declare("C2", "the sign is positive")
    with pytest.raises(KeyError):
        c.declare("C1", "again")
    with pytest.raises(ValueError, match="one line"):
        c.declare("C3", "two\nlines")
    intro = c.introduce()
    assert "**C1** the slope is one." in intro and "*Tested:* t-interval inside [0.9, 1.1]" in intro
    assert "*Threshold:* theory says 1" in intro and "**C2** the sign is positive." in intro
    c.check("C1", True, slope=t_interval([1.0, 1.02, 0.98]), n=3)
    capsys.readouterr()
    text = c.conclude("Preamble.")
    assert text.startswith("Preamble.")
    assert "- **C1** (PASS) slope 1 [0.95, 1.05] over 3 runs" in text
    assert "- **C2** (not computed) the sign is positive." in text
    c.check("C1", False, slope=t_interval([2.0, 2.1, 1.9]), n=3)
    assert "(FAIL) slope 2 [" in c.conclude() and "is not one" in c.conclude()


def test_claim_records_are_strict_json() -> None:
    """Jupyter refuses NaN in JSON: a record's numbers stay JSON numbers and a non-finite one is null, never the
    string 'nan'."""
    import json

    from lab.workbook.claims import _json_number

    rec = {k: _json_number(v) for k, v in {"a": float("nan"), "b": [1.0, float("inf")], "c": 2}.items()}
    assert json.loads(json.dumps(rec, allow_nan=False)) == {"a": None, "b": [1.0, None], "c": 2}


def test_numbers_outside_their_possible_range_fail() -> None:
    """A share of 1.36 or a negative std is garbage: the claim FAILs whatever the test said, and says why."""
    from lab.stats import Estimate, proportion

    c = Claims("99", {"C1": "a share", "C2": "a share", "C3": "a proportion", "C4": "in range"})
    c.check("C1", True, ranges={"share": (0, 1)}, share=1.36)
    c.check("C2", True, ranges={"share": (0, 1)}, share=Estimate(0.9, 0.6, 1.4, 5, "t"))
    c.check("C3", True, p=Estimate(1.2, 0.9, 1.0, 5, "share, Clopper-Pearson interval"))
    c.check("C4", True, ranges={"share": (0, 1)}, share=0.5, p=proportion([True] * 5))
    assert [c.results[k].passed for k in ("C1", "C2", "C3", "C4")] == [False, False, False, True]
    assert "outside its possible range" in c.results["C1"].note
    with pytest.raises(KeyError, match="ranges given"):
        c.check("C4", True, ranges={"nope": (0, 1)}, share=0.5)


def test_nan_inside_lists_and_arrays_never_passes() -> None:
    c = Claims("99", {"C1": "a list", "C2": "an array", "C3": "a list in range", "C4": "fine"})
    c.check("C1", True, vals=[float("nan"), 1.0])
    c.check("C2", True, v=np.array([np.nan, 2.0]))
    c.check("C3", True, v=[2.0], ranges={"v": (0, 1)})
    c.check("C4", True, v=np.array([0.5, 1.0]), ranges={"v": (0, 1)})
    assert [c.results[k].passed for k in ("C1", "C2", "C3", "C4")] == [False, False, False, True]
    assert c.results["C4"].numbers["v"] == [0.5, 1.0]  # arrays are recorded as lists of numbers


def test_a_claim_takes_the_interval_tests_of_its_own_estimates(capsys) -> None:
    """check() takes (and clears) the tests made on the Estimates it is given, and leaves other estimates' alone."""
    from lab.stats import Estimate
    from lab.workbook.claims import Claims

    cl = Claims("99")
    cl.declare("C1", "the ratio is above one half", test="95% interval of the ratio", margin="0.5, from theory")
    ratio, other = Estimate(0.9, 0.7, 1.1, 5, "demo"), Estimate(2.0, 1.0, 3.0, 5, "demo")
    other.below(10.0)                                           # a test on an estimate the claim does not name
    cl.check("C1", ratio.above(0.5) and ratio.within(0.0, 1.0), ratio=ratio)
    capsys.readouterr()
    assert not cl.results["C1"].passed                          # within(0, 1) fails: high = 1.1
    assert ratio.tests_made() == []                             # taken by the claim
    assert [t["test"] for t in other.tests_made()] == ["below"]


def test_claim_record_shows_tests_in_the_notebook_output() -> None:
    """Executed through IPython's display, the claim+json record holds 'tests', 'test' and 'threshold'."""
    from unittest import mock

    from lab.stats import Estimate
    from lab.workbook import claims as mod

    shown = []
    cl = mod.Claims("99")
    cl.declare("C1", "x is above 1", test="interval of x", margin="1, from theory")
    x = Estimate(2.0, 1.5, 2.5, 4, "demo")
    with mock.patch("IPython.get_ipython", return_value=object()), \
            mock.patch("IPython.display.display", side_effect=lambda d, raw: shown.append(d)):
        cl.check("C1", x.above(1.0), x=x)
    rec = shown[-1][mod.MIMETYPE]
    assert rec["test"] == "interval of x" and rec["threshold"] == "1, from theory"
    assert rec["tests"] == [{"number": "x", "test": "above", "bounds": [1.0], "passed": True, "margin": 0.5}]


def test_kinds_alternative_and_counts() -> None:
    c = Claims("01")
    c.declare("C1", "an identity holds", kind="check")
    c.declare("C2", "width does not matter", kind="finding", alternative="noise grows as √width: exponent 0.5",
              needs_power=True)
    assert c.counts() == {"finding": 1, "check": 1, "unknown": 0}
    with pytest.raises(ValueError, match="alternative"):
        c.declare("C3", "a finding without its alternative", kind="finding")
    with pytest.raises(ValueError, match="'kind'"):
        c.declare("C4", "x", kind="observation")
    with pytest.raises(ValueError, match="needs_power"):
        c.declare("C5", "x", kind="check", needs_power=True)
    with pytest.raises(KeyError, match="C9"):
        c.declare("C6", "x", kind="check", depends_on=["C9"])


def test_refutation_without_power_is_not_tested(capsys: pytest.CaptureFixture[str]) -> None:
    c = Claims("01")
    c.declare("C1", "refuted: no effect", kind="finding", alternative="an effect of 2x", needs_power=True)
    c.check("C1", True, ratio=1.0)  # no power evidence: NOT TESTED, not PASS
    assert c.results["C1"].status == "NOT TESTED" and c.results["C1"].passed is False
    c.check("C1", True, ratio=1.0, power={"passed": False, "control": 0.1})
    assert c.results["C1"].status == "NOT TESTED"
    c.check("C1", True, ratio=1.0, power={"passed": True, "control": 2.0})
    assert c.results["C1"].status == "PASS"
    c.check("C1", False, ratio=3.0, power={"passed": True})
    assert c.results["C1"].status == "FAIL"
    c.check("C1", False, ratio=3.0, power={"passed": False})  # an underpowered test decides nothing either way
    assert c.results["C1"].status == "NOT TESTED"
    c.check("C1", True, ratio=float("nan"), power={"passed": False})  # garbage still FAILs
    assert c.results["C1"].status == "FAIL"
    c.check("C1", True, ratio=1.0, power={"passed": True, "control": float("nan")})  # NaN power never passes
    assert c.results["C1"].status == "NOT TESTED"
    capsys.readouterr()
    c.verdicts()
    assert capsys.readouterr().out == "C1 NOT TESTED  refuted: no effect\n"
    assert c.none_failed and not c.all_passed
    with pytest.raises(ValueError, match="power"):
        c.check("C1", True, power={"control": 1.0})


def test_a_claim_after_a_failed_protocol_check_is_not_tested() -> None:
    c = Claims("07")
    c.declare("C1", "every run reached the target", kind="check")
    c.declare("C2", "small batches are flatter", kind="finding", alternative="ratio ≥ 1", depends_on=["C1"])
    c.check("C1", False, n_missed=30)
    c.check("C2", True, ratio=0.4)
    assert c.results["C2"].status == "NOT TESTED" and "C1" in c.results["C2"].note
    c.check("C1", True)
    c.check("C2", True, ratio=0.4)
    assert c.results["C2"].status == "PASS"


def test_an_interval_over_more_units_than_replicates_fails_unless_declared() -> None:
    from lab.stats import t_interval

    c = Claims("07", units=5)
    c.declare("C1", "gap is smaller", kind="finding", alternative="no difference")
    c.declare("C2", "rates differ", kind="finding", alternative="equal rates", units="runs are independent draws")
    e = t_interval(np.linspace(0.1, 1.0, 10))
    c.check("C1", e.above(0), diff=e)
    assert c.results["C1"].status == "FAIL" and "more than the 5 independent replicates" in c.results["C1"].note
    e = t_interval(np.linspace(0.1, 1.0, 10))
    c.check("C2", e.above(0), diff=e)
    assert c.results["C2"].status == "PASS"
    e = t_interval(np.linspace(0.1, 1.0, 5))
    c.check("C1", e.above(0), diff=e)
    assert c.results["C1"].status == "PASS"
    reported = t_interval(np.linspace(0.1, 1.0, 10))  # reported beside the verdict, no interval test made on it
    c.check("C1", True, share=reported)
    assert c.results["C1"].status == "PASS"
    with pytest.raises(ValueError, match="units"):
        Claims("07", units=0)


def test_load_fills_parameters_and_records_kind(tmp_path) -> None:
    src = tmp_path / "99.yaml"
    src.write_text(
        "chapter: '99'\nclaims:\n"
        "- id: C1\n  kind: check\n  statement: all {n_reps} runs converge\n  conclusion: '{n} runs'\n"
        "- id: C2\n  kind: finding\n  statement: lr {lr:g} is stable\n  alternative: divergence\n"
        "  test: below {bound}\n  needs_power: true\n  depends_on: [C1]\n"
        "  revised:\n  - threshold: below 2\n    reason: tuned\n", encoding="utf-8")
    c = Claims.load("99", {"n_reps": 5, "lr": 0.001, "bound": 1.5}, path=src)
    assert c.specs["C1"].statement == "all 5 runs converge" and c.specs["C1"].conclusion == "{n} runs"
    assert c.specs["C2"].statement == "lr 0.001 is stable" and c.specs["C2"].test == "below 1.5"
    assert c.specs["C2"].depends_on == ("C1",) and c.specs["C2"].needs_power
    with pytest.raises(KeyError, match="lr"):
        Claims.load("99", {"n_reps": 5}, path=src)
    c.check("C1", True, n=5)
    c.check("C2", True, power={"passed": True}, registered_passed=False)
    assert c.conclusion_line("C1") == "- **C1** (PASS) 5 runs"
    bad = tmp_path / "98.yaml"
    bad.write_text("chapter: '98'\nclaims:\n- id: C1\n  statement: x\n  kind: finding\n", encoding="utf-8")
    with pytest.raises(ValueError, match="alternative"):
        Claims.load("98", path=bad)
    bad.write_text("chapter: '98'\nclaims:\n- id: C1\n  statement: x\n  colour: red\n", encoding="utf-8")
    with pytest.raises(ValueError, match="colour"):
        Claims.load("98", path=bad)


def test_every_chapter_declares_kind_and_alternative() -> None:
    from lab.workbook.paths import NOTEBOOKS

    chapters = sorted(p.name[:2] for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    assert chapters, "no chapters found"
    for ch in chapters:
        import yaml

        data = yaml.safe_load((NOTEBOOKS / "claims" / f"{ch}.yaml").read_text(encoding="utf-8"))
        for item in data["claims"]:
            assert item.get("kind") in ("finding", "check"), f"{ch} {item['id']}: no kind"
            if item["kind"] == "finding":
                assert str(item.get("alternative", "")).strip(), f"{ch} {item['id']}: a finding without alternative"
