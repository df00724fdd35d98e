"""Claims: declared once (statement, kind, the alternative a finding rules out, what is tested, where the
threshold comes from and when it was registered, a conclusion template), checked where the numbers are computed,
printed as deterministic verdict lines, and concluded from the run's own numbers — so the introduction's list, the
verdicts and the conclusion cannot disagree.

Two kinds of claim (`KINDS`): a **finding** is a property of networks or training that could have come out
otherwise — it names the `alternative` it rules out, and a refutation or "no effect" finding (`needs_power`) PASSes
only with evidence, in the same run, that its test would have seen the alternative (`power`); a **check** is an
identity, an implementation test against a reference or a protocol gate the chapter's measurements depend on.
A claim whose power is missing, or whose protocol checks (`depends_on`) failed, is NOT TESTED: neither PASS nor
FAIL. An interval over more units than the chapter's independent replicates (`Claims(units=...)`) FAILs unless the
declaration says why its units are independent (`units`).

A chapter's declarations are data: `notebooks/claims/NN.yaml`, loaded by `Claims.load(CH)`.
"""
from __future__ import annotations

import math
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.stats import Estimate

MIMETYPE = "application/vnd.lab.claim+json"
DECLARED_MIMETYPE = "application/vnd.lab.claims+json"
CONCLUSION_MIMETYPE = "application/vnd.lab.conclusion+json"
KINDS = ("finding", "check")
PASS, FAIL, NOT_TESTED = "PASS", "FAIL", "NOT TESTED"
STATUSES = (PASS, FAIL, NOT_TESTED)


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
    """One declared claim: the statement (phrased so it can fail), its kind, the alternative a finding rules out,
    what is tested, where the threshold comes from and its margin, the threshold as first registered and its
    revisions, and conclusion templates filled from the check's numbers (`conclusion` on PASS, `if_fail` on FAIL,
    `if_untested` when NOT TESTED)."""

    id: str
    statement: str
    test: str = ""
    margin: str = ""
    conclusion: str = ""
    if_fail: str = ""
    kind: str | None = None
    alternative: str = ""
    needs_power: bool = False
    depends_on: tuple[str, ...] = ()
    units: str = ""
    registered: dict[str, str] | None = None
    revised: tuple[dict[str, str], ...] = ()
    if_untested: str = ""


@dataclass
class Claim:
    """One checked claim: id, statement, verdict and the measured numbers behind it; `status` is PASS, FAIL or
    NOT TESTED (its power or a protocol check it depends on failed), `passed` is status == PASS."""

    id: str
    statement: str
    passed: bool
    numbers: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    status: str = ""

    def __post_init__(self) -> None:
        if not self.status:
            self.status = PASS if self.passed else FAIL
        if self.status not in STATUSES:
            raise ValueError(f"parameter 'status' = {self.status!r} is not allowed: expected one of {STATUSES}")
        self.passed = self.status == PASS

    def verdict(self) -> str:
        """The verdict line: id, PASS/FAIL/NOT TESTED, statement (no numbers)."""
        return f"{self.id} {self.status}  {self.statement}"

    def numbers_line(self) -> str:
        """The numbers behind the verdict, for the unchecked cell before the claims cell."""
        nums = ", ".join(f"{k}={_fmt(v)}" for k, v in self.numbers.items())
        return f"{self.id} [{self.status}] {nums}" + (f" ({self.note})" if self.note else "")


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


def _spec_record(s: Spec) -> dict[str, Any]:
    """A declaration as a JSON record (lists for tuples, no empty optional fields beyond the original six)."""
    rec = {k: v for k, v in vars(s).items()}
    rec["depends_on"] = list(s.depends_on)
    rec["revised"] = list(s.revised)
    return rec


class Claims:
    """A chapter's claims, declared once, checked where the numbers are computed and printed in the claims cells.

    Load the chapter's declarations with `Claims.load(CH)` (or declare with `declare`), list them with `introduce`,
    decide each with `check` (non-finite numbers FAIL unless named in `allow_nonfinite`; a finding that
    `needs_power` is NOT TESTED without passing `power`), print verdicts with `verdicts` and write the conclusion
    from the run's numbers with `conclude`. `units` is the number of independent replicates of the run: an interval
    over more units FAILs unless the claim's declaration says why its units are independent.
    """

    def __init__(self, chapter: str, statements: dict[str, str] | None = None, units: int | None = None):
        if units is not None and (isinstance(units, bool) or not isinstance(units, int) or units < 1):
            raise ValueError(f"parameter 'units' = {units!r} is not allowed: expected a positive int (the number of "
                             "independent replicates) or None")
        self.chapter = chapter
        self.units = units
        self.specs: dict[str, Spec] = {}
        self.results: dict[str, Claim] = {}
        self._values: dict[str, dict[str, Any]] = {}
        for cid, text in (statements or {}).items():
            self.declare(cid, text)

    @classmethod
    def load(cls, chapter: str, context: dict[str, Any] | None = None, units: int | None = None,
             path: str | Path | None = None) -> Claims:
        """The chapter's claims as declared in `notebooks/claims/<chapter>.yaml` (or `path`): a list of mappings
        with the keys of `declare`. `{name}` fields (with an optional format spec, `{lr:g}`) in a statement, test,
        margin or alternative are filled from `context` (the chapter's parameters: pass `globals()`); conclusion
        templates keep theirs for `conclude`."""
        import re

        import yaml

        from lab.workbook.paths import NOTEBOOKS

        src = Path(path) if path is not None else NOTEBOOKS / "claims" / f"{chapter}.yaml"
        if not src.is_file():
            raise FileNotFoundError(f"chapter {chapter}: no claims declared at {src}")
        data = yaml.safe_load(src.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("claims"), list):
            raise ValueError(f"{src}: expected a mapping with a list 'claims'")
        out = cls(chapter, units=units)
        try:  # each claim's first committed version, from the registry (results/claims_registry.csv)
            from lab.workbook.registry import read
            first: dict[str, dict[str, str]] = {}
            for row in read():
                if row["chapter"] == chapter:
                    first.setdefault(row["claim"], {"test": row["test"], "threshold": row["threshold"],
                                                    "commit": row["commit"], "date": row["date"]})
        except (OSError, KeyError, ValueError):
            first = {}
        for item in data["claims"]:
            item = dict(item)
            cid = item.pop("id", None)
            statement = item.pop("statement", None)
            if not cid or not statement:
                raise ValueError(f"{src}: every claim needs an 'id' and a 'statement' (got {cid!r})")
            ctx = context if context is not None else {}

            def fill(text: str, cid: str = str(cid), ctx: dict = ctx) -> str:
                def one(m: re.Match) -> str:
                    if m[1] not in ctx:
                        raise KeyError(f"{src}: claim {cid}: field {{{m[1]}}} is not a parameter of the chapter")
                    return format(ctx[m[1]], m[2] or "")
                return re.sub(r"\{(\w+)(?::([^{}]*))?\}", one, text)

            if "registered" not in item and str(cid) in first:
                item["registered"] = first[str(cid)]
            statement = fill(str(statement))
            for key in ("test", "margin", "alternative"):
                if key in item:
                    item[key] = fill(str(item[key]))
            try:
                out.declare(str(cid), statement, **item)
            except TypeError as exc:
                raise ValueError(f"{src}: claim {cid}: {exc}") from None
        return out

    @property
    def statements(self) -> dict[str, str]:
        """id → statement of every declared claim."""
        return {cid: s.statement for cid, s in self.specs.items()}

    def declare(self, cid: str, statement: str, test: str = "", margin: str = "", conclusion: str = "",
                if_fail: str = "", *, kind: str | None = None, alternative: str = "", needs_power: bool = False,
                depends_on: tuple[str, ...] | list[str] = (), units: str = "",
                registered: dict[str, str] | None = None, revised: tuple | list = (), if_untested: str = "") -> None:
        """Declare claim `cid` once: its statement (the verdict line), the test, the threshold's origin and margin,
        conclusion templates ({name} fields are the numbers given to `check`), and:

        kind: "finding" or "check" (`KINDS`). A finding names its `alternative` (the outcome it rules out, in words
        and as a number where one exists); `needs_power` marks a refutation or "no effect", which PASSes only with
        `power` evidence; `depends_on` lists the checks whose failure leaves it NOT TESTED; `units` says why an
        interval's units are independent when there are more of them than replicates; `registered` is the
        threshold as first registered ({"threshold", "commit"}), `revised` its later changes ({"threshold",
        "commit", "reason"}) — `results/claims_registry.csv` holds their history.
        """
        if cid in self.specs:
            raise KeyError(f"claim {cid!r} is declared twice")
        if "\n" in statement:
            raise ValueError(f"claim {cid!r}: the statement must be one line")
        if kind is not None and kind not in KINDS:
            raise ValueError(f"claim {cid!r}: parameter 'kind' = {kind!r} is not allowed: expected one of {KINDS}")
        if kind == "finding" and not alternative.strip():
            raise ValueError(f"claim {cid!r}: a finding must name its 'alternative' (the outcome it rules out)")
        if needs_power and kind != "finding":
            raise ValueError(f"claim {cid!r}: 'needs_power' is for findings (refutations and no-effect results)")
        deps = tuple(depends_on)
        unknown = [d for d in deps if d not in self.specs]
        if unknown:
            raise KeyError(f"claim {cid!r} depends on {unknown}, which are not declared before it")
        for r in ([registered] if registered else []) + list(revised):
            if not isinstance(r, dict) or "threshold" not in r:
                raise ValueError(f"claim {cid!r}: 'registered' and 'revised' entries are mappings with a "
                                 f"'threshold' (got {r!r})")
        self.specs[cid] = Spec(cid, statement, test, margin, conclusion, if_fail, kind, alternative,
                               bool(needs_power), deps, units, dict(registered) if registered else None,
                               tuple(dict(r) for r in revised), if_untested)

    def counts(self) -> dict[str, int]:
        """How many declared claims are findings, checks and undeclared kinds."""
        out = {"finding": 0, "check": 0, "unknown": 0}
        for s in self.specs.values():
            out[s.kind or "unknown"] += 1
        return out

    def introduce(self) -> str:
        """Show (and return) the declared claims as a Markdown list: kind, statement, alternative, test, threshold
        and margin."""
        lines = []
        for s in self.specs.values():
            tag = f" *({s.kind})*" if s.kind else ""
            line = f"- **{s.id}**{tag} {s.statement}."
            if s.alternative:
                line += f" *Rules out:* {s.alternative}."
            if s.test:
                line += f" *Tested:* {s.test}."
            if s.margin:
                line += f" *Threshold:* {s.margin}."
            if s.needs_power:
                line += " *Power:* shown in the same run, else NOT TESTED."
            if s.depends_on:
                line += f" *Depends on:* {', '.join(s.depends_on)}."
            lines.append(line)
        n = self.counts()
        head = (f"**Claims tested here** ({n['finding']} findings, {n['check']} checks; declared once, in "
                f"`notebooks/claims/{self.chapter}.yaml`; verdicts and the conclusion are generated from this run):")
        md = head + "\n\n" + "\n".join(lines)
        _show(md, DECLARED_MIMETYPE, {"chapter": self.chapter,
                                      "claims": [_spec_record(s) for s in self.specs.values()]})
        return md

    def check(self, cid: str, passed: bool, allow_nonfinite: tuple[str, ...] = (),
              ranges: dict[str, tuple[float | None, float | None]] | None = None,
              power: dict[str, Any] | None = None, registered_passed: bool | None = None, **numbers: Any) -> None:
        """Decide claim `cid`, show its numbers and record them in the notebook as a claim+json output.

        The record also carries the declared kind, alternative, test and threshold, and every interval test
        (`above`, `below`, `within`, `excludes`) made on an Estimate among the numbers since its last claim, with its
        bounds, result and margin (`Estimate.tests_made`): the report draws each claim's margin from them.

        Estimate numbers expand to name, name_low, name_high, name_n. A non-finite float among the numbers makes
        the claim FAIL (NaN never passes) unless its name is in allow_nonfinite. `ranges` gives the possible range
        (lo, hi; None for unbounded) of named numbers — a share in [0, 1], a std ≥ 0: a value (or an Estimate's
        value or interval end) outside it makes the claim FAIL, as garbage, whatever `passed` says. Shares made by
        `lab.stats.proportion` are checked against [0, 1] without being named. An Estimate over more units than
        `Claims.units` makes it FAIL unless the declaration gives `units`.

        `power` ({"passed": bool, ...numbers}): the evidence that the test would have seen the alternative (a
        positive control, or a minimum detectable effect against the alternative's size); when it fails the claim
        is NOT TESTED whichever way its test went (non-finite or impossible numbers still FAIL). A claim declared
        with `needs_power` is NOT TESTED without it, and so is a claim whose `depends_on` checks did not PASS.
        `registered_passed`: the verdict under the threshold as first registered, for a revised claim.
        """
        if cid not in self.specs:
            raise KeyError(f"unknown claim {cid!r}; declared: {sorted(self.specs)}")
        spec = self.specs[cid]
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
        pseudo = []
        if self.units is not None and not spec.units:
            pseudo = [f"{k}: an interval over {v.n} units, more than the {self.units} independent replicates"
                      for k, v in numbers.items()
                      if isinstance(v, Estimate) and v.n > self.units and v.tests_made(clear=False)]
        ok = bool(passed) and not bad and not outside and not pseudo
        notes = ([f"non-finite: {', '.join(bad)}"] if bad else []) + outside + pseudo
        status = PASS if ok else FAIL
        power_rec = None
        if power is not None:
            if not isinstance(power, dict) or "passed" not in power:
                raise ValueError(f"claim {cid!r}: parameter 'power' must be a dict with a 'passed' entry")
            raw: dict[str, Any] = {}
            for k, v in power.items():
                raw.update(v.numbers(k) if isinstance(v, Estimate) else {k: _plain(v)})
            finite = all(math.isfinite(x) for k, v in raw.items() if k != "passed" for x in _floats(v))
            power_rec = {k: _json_number(v) for k, v in raw.items()}
            power_rec["passed"] = bool(power["passed"]) and finite  # a NaN in the evidence is no evidence
        elif spec.needs_power:
            power_rec = {"passed": False, "why": "no power evidence in this run"}
        failed_deps = [d for d in spec.depends_on if not (d in self.results and self.results[d].passed)]
        if failed_deps:
            status = NOT_TESTED
            notes.append(f"not tested: it depends on {', '.join(failed_deps)}, which did not PASS")
        elif power_rec is not None and not power_rec["passed"] and not (bad or outside or pseudo):
            status = NOT_TESTED  # whichever way the test went: without power its outcome says nothing
            notes.append("not tested at this size: the power check failed (the test could not have seen the "
                         "alternative)")
        note = "; ".join(notes)
        c = Claim(cid, spec.statement, status == PASS, flat, note, status)
        self.results[cid] = c
        self._values[cid] = {**{f"power_{k}": v for k, v in (power or {}).items()}, **flat, **numbers}
        record = {"chapter": self.chapter, "id": c.id, "statement": c.statement, "passed": c.passed,
                  "status": c.status, "kind": spec.kind,
                  "numbers": {k: _json_number(v) for k, v in c.numbers.items()}}
        if spec.alternative:
            record["alternative"] = spec.alternative
        if spec.test or spec.margin:
            record.update(test=spec.test, threshold=spec.margin)
        if power_rec is not None:
            record["power"] = power_rec
        if spec.depends_on:
            record["depends_on"] = list(spec.depends_on)
        if spec.registered:
            record["registered"] = spec.registered
        if spec.revised:
            record["revised"] = list(spec.revised)
            record["registered_verdict"] = (None if registered_passed is None
                                            else PASS if registered_passed else FAIL)
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
        template = {PASS: s.conclusion, FAIL: s.if_fail or "", NOT_TESTED: s.if_untested or ""}[c.status]
        verdict = c.status
        if c.status == NOT_TESTED and not template:
            return f"- **{cid}** ({verdict}) {s.statement} — not tested here ({c.note})."
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
                                                   for cid in self.specs},
                                        "status": {cid: (self.results[cid].status if cid in self.results else None)
                                                   for cid in self.specs}})
        return md

    @property
    def none_failed(self) -> bool:
        """True when every declared claim was checked and none FAILed (NOT TESTED is not a failure)."""
        return all(cid in self.results and self.results[cid].status != FAIL for cid in self.specs)

    @property
    def all_passed(self) -> bool:
        """True when every declared claim was checked and passed."""
        return all(cid in self.results and self.results[cid].passed for cid in self.specs)
