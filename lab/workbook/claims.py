"""Claims: declared once (statement, what is tested, where the threshold comes from, a conclusion template),
checked where the numbers are computed, printed as deterministic verdict lines, and concluded from the run's own
numbers — so the introduction's list, the verdicts and the conclusion cannot disagree."""
from __future__ import annotations

import math
import string
from dataclasses import dataclass, field
from typing import Any

from lab.stats import Estimate

MIMETYPE = "application/vnd.lab.claim+json"
DECLARED_MIMETYPE = "application/vnd.lab.claims+json"
CONCLUSION_MIMETYPE = "application/vnd.lab.conclusion+json"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if math.isfinite(v) else str(v)
    return str(v)


def _plain(v: Any) -> Any:
    if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
        v = v.item()
    elif hasattr(v, "tolist") and hasattr(v, "ndim"):  # numpy arrays and tensors become (nested) lists of numbers
        v = (v.detach().cpu() if hasattr(v, "detach") else v).tolist()
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, (int, float, str)):
        return v
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return str(v)


def _json_number(v: Any) -> Any:
    """A claim number as strict JSON allows it: numbers stay JSON numbers and a non-finite float becomes null
    (JSON has no NaN; the record's 'nonfinite' field says which it was), never the string 'nan'."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, list):
        return [_json_number(x) for x in v]
    return v


def _floats(v: Any) -> list[float]:
    """Every number in a claim value (a number or a nested list of them), as floats; bools and text are skipped."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return []
    if isinstance(v, (int, float)):
        return [float(v)]
    if isinstance(v, (list, tuple)):
        return [x for item in v for x in _floats(item)]
    return []


class _Formatter(string.Formatter):
    """str.format for conclusion templates: floats without a format spec get 3 significant digits, Estimates print
    as 'value [low, high]'."""

    def format_field(self, value: Any, format_spec: str) -> str:
        if isinstance(value, Estimate):
            return format(value, format_spec or ".3g")
        if isinstance(value, float) and not format_spec:
            return _fmt(value)
        return super().format_field(value, format_spec)


@dataclass
class Spec:
    """One declared claim: the finding (phrased so it can fail), what is tested, where the threshold comes from and
    its margin, and conclusion templates filled from the check's numbers (`conclusion` on PASS, `if_fail` on FAIL)."""

    id: str
    statement: str
    test: str = ""
    margin: str = ""
    conclusion: str = ""
    if_fail: str = ""


@dataclass
class Claim:
    """One checked claim: id, statement, verdict and the measured numbers behind it."""

    id: str
    statement: str
    passed: bool
    numbers: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    def verdict(self) -> str:
        """The verdict line: id, PASS/FAIL, statement (no numbers)."""
        return f"{self.id} {'PASS' if self.passed else 'FAIL'}  {self.statement}"

    def numbers_line(self) -> str:
        """The numbers behind the verdict, for the unchecked cell before the claims cell."""
        nums = ", ".join(f"{k}={_fmt(v)}" for k, v in self.numbers.items())
        return f"{self.id} [{'PASS' if self.passed else 'FAIL'}] {nums}" + (f" ({self.note})" if self.note else "")


def _show(markdown: str, mimetype: str, record: Any) -> None:
    """Display markdown (with a JSON record) in IPython, else print it."""
    try:
        from IPython import get_ipython
        from IPython.display import display
        if get_ipython() is not None:
            display({"text/markdown": markdown, mimetype: record, "text/plain": markdown}, raw=True)
            return
    except ImportError:  # pragma: no cover
        pass
    print(markdown)


class Claims:
    """A chapter's claims, declared once, checked where the numbers are computed and printed in the claims cells.

    Declare with `declare` (or a dict of id → statement), list them with `introduce`, decide each with `check`
    (non-finite numbers FAIL unless named in `allow_nonfinite`), print verdicts with `verdicts` and write the
    conclusion from the run's numbers with `conclude`.
    """

    def __init__(self, chapter: str, statements: dict[str, str] | None = None):
        self.chapter = chapter
        self.specs: dict[str, Spec] = {}
        self.results: dict[str, Claim] = {}
        self._values: dict[str, dict[str, Any]] = {}
        for cid, text in (statements or {}).items():
            self.declare(cid, text)

    @property
    def statements(self) -> dict[str, str]:
        """id → statement of every declared claim."""
        return {cid: s.statement for cid, s in self.specs.items()}

    def declare(self, cid: str, statement: str, test: str = "", margin: str = "", conclusion: str = "",
                if_fail: str = "") -> None:
        """Declare claim `cid` once: its statement (the verdict line), the test, the threshold's origin and margin,
        and conclusion templates ({name} fields are the numbers given to `check`)."""
        if cid in self.specs:
            raise KeyError(f"claim {cid!r} is declared twice")
        if "\n" in statement:
            raise ValueError(f"claim {cid!r}: the statement must be one line")
        self.specs[cid] = Spec(cid, statement, test, margin, conclusion, if_fail)

    def introduce(self) -> str:
        """Show (and return) the declared claims as a Markdown list: statement, test, threshold and margin."""
        lines = []
        for s in self.specs.values():
            line = f"- **{s.id}** {s.statement}."
            if s.test:
                line += f" *Tested:* {s.test}."
            if s.margin:
                line += f" *Threshold:* {s.margin}."
            lines.append(line)
        md = "**Claims tested here** (declared once; verdicts and the conclusion are generated from this run):\n\n" \
            + "\n".join(lines)
        _show(md, DECLARED_MIMETYPE, {"chapter": self.chapter,
                                      "claims": [vars(s) for s in self.specs.values()]})
        return md

    def check(self, cid: str, passed: bool, allow_nonfinite: tuple[str, ...] = (),
              ranges: dict[str, tuple[float | None, float | None]] | None = None, **numbers: Any) -> None:
        """Decide claim `cid`, show its numbers and record them in the notebook as a claim+json output.

        The record also carries the declared test and threshold, and every interval test (`above`, `below`,
        `within`, `excludes`) made on an Estimate among the numbers since its last claim, with its bounds, result
        and margin (`Estimate.tests_made`): the report draws each claim's margin from them.

        Estimate numbers expand to name, name_low, name_high, name_n. A non-finite float among the numbers makes
        the claim FAIL (NaN never passes) unless its name is in allow_nonfinite. `ranges` gives the possible range
        (lo, hi; None for unbounded) of named numbers — a share in [0, 1], a std ≥ 0: a value (or an Estimate's
        value or interval end) outside it makes the claim FAIL, as garbage, whatever `passed` says. Shares made by
        `lab.stats.proportion` are checked against [0, 1] without being named.
        """
        if cid not in self.specs:
            raise KeyError(f"unknown claim {cid!r}; declared: {sorted(self.specs)}")
        flat: dict[str, Any] = {}
        source: dict[str, str] = {}
        for k, v in numbers.items():
            items = v.numbers(k) if isinstance(v, Estimate) else {k: _plain(v)}
            flat.update(items)
            source.update(dict.fromkeys(items, k))
        bad = [k for k, v in flat.items() if any(not math.isfinite(x) for x in _floats(v))
               and source[k] not in allow_nonfinite]
        limits = dict(ranges or {})
        unknown = sorted(set(limits) - set(numbers))
        if unknown:
            raise KeyError(f"claim {cid!r}: ranges given for {unknown}, which are not among its numbers")
        for k, v in numbers.items():
            if isinstance(v, Estimate) and v.method.startswith("share"):
                limits.setdefault(k, (0.0, 1.0))
        outside = []
        for k, (lo, hi) in limits.items():
            parts = [flat[n] for n, src in source.items() if src == k and not n.endswith("_n")]
            vals = [x for part in parts for x in _floats(part) if math.isfinite(x)]
            if any((lo is not None and x < lo) or (hi is not None and x > hi) for x in vals):
                outside.append(f"{k} outside its possible range [{'-inf' if lo is None else lo}, "
                               f"{'inf' if hi is None else hi}]")
        ok = bool(passed) and not bad and not outside
        note = "; ".join(([f"non-finite: {', '.join(bad)}"] if bad else []) + outside)
        c = Claim(cid, self.specs[cid].statement, ok, flat, note)
        self.results[cid] = c
        self._values[cid] = {**flat, **numbers}
        spec = self.specs[cid]
        record = {"chapter": self.chapter, "id": c.id, "statement": c.statement, "passed": c.passed,
                  "numbers": {k: _json_number(v) for k, v in c.numbers.items()}}
        if spec.test or spec.margin:
            record.update(test=spec.test, threshold=spec.margin)
        tests = [{"number": k, **t} for k, v in numbers.items() if isinstance(v, Estimate) for t in v.tests_made()]
        if tests:  # the interval tests behind the verdict, with each threshold and margin (for the report)
            record["tests"] = tests
        nonfinite = {k: str(v) for k, v in c.numbers.items() if any(not math.isfinite(x) for x in _floats(v))}
        if nonfinite:
            record["nonfinite"] = nonfinite
        if note:
            record["note"] = note
        try:
            from IPython import get_ipython
            from IPython.display import display
            if get_ipython() is not None:
                display({MIMETYPE: record, "text/plain": c.numbers_line()}, raw=True)
                return
        except ImportError:  # pragma: no cover
            pass
        print(c.numbers_line())

    def verdicts(self, *ids: str) -> None:
        """Print the verdict lines of the given claims (all declared if none); an unchecked claim FAILs."""
        for cid in ids or tuple(self.specs):
            c = self.results.get(cid)
            print(c.verdict() if c else f"{cid} FAIL  {self.specs[cid].statement} (not computed)")

    def conclusion_line(self, cid: str) -> str:
        """One Markdown line of the conclusion for claim cid, filled from its numbers."""
        s, c = self.specs[cid], self.results.get(cid)
        if c is None:
            return f"- **{cid}** (not computed) {s.statement}."
        template = s.conclusion if c.passed else (s.if_fail or "")
        verdict = "PASS" if c.passed else "FAIL"
        if template:
            try:
                text = _Formatter().vformat(template, (), self._values[cid])
            except (KeyError, IndexError, ValueError) as exc:
                text = f"{s.statement} ({c.numbers_line()}; template error: {exc})"
        else:
            text = f"{s.statement}" + ("" if c.passed else " — not established by this run") + \
                f" ({', '.join(f'{k} = {_fmt(v)}' for k, v in c.numbers.items())})"
        return f"- **{cid}** ({verdict}) {text}"

    def conclude(self, preamble: str = "") -> str:
        """Show (and return) the conclusion: one line per declared claim with its verdict and this run's numbers."""
        body = "\n".join(self.conclusion_line(cid) for cid in self.specs)
        md = (preamble.strip() + "\n\n" if preamble else "") + body
        _show(md, CONCLUSION_MIMETYPE, {"chapter": self.chapter,
                                        "claims": {cid: (self.results[cid].passed if cid in self.results else None)
                                                   for cid in self.specs}})
        return md

    @property
    def all_passed(self) -> bool:
        """True when every declared claim was checked and passed."""
        return all(cid in self.results and self.results[cid].passed for cid in self.specs)
