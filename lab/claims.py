"""Claims: record the numbers behind each claim, then print one deterministic verdict line per claim."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

MIMETYPE = "application/vnd.lab.claim+json"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if math.isfinite(v) else str(v)
    return str(v)


def _plain(v: Any) -> Any:
    if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
        v = v.item()
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, (int, float, str)):
        return v
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return str(v)


@dataclass
class Claim:
    """One claim: id, statement, verdict and the measured numbers behind it."""

    id: str
    statement: str
    passed: bool
    numbers: dict[str, Any] = field(default_factory=dict)

    def verdict(self) -> str:
        """The verdict line: id, PASS/FAIL, statement (no numbers)."""
        return f"{self.id} {'PASS' if self.passed else 'FAIL'}  {self.statement}"

    def numbers_line(self) -> str:
        """The numbers behind the verdict, for the unchecked cell before the claims cell."""
        nums = ", ".join(f"{k}={_fmt(v)}" for k, v in self.numbers.items())
        return f"{self.id} [{'PASS' if self.passed else 'FAIL'}] {nums}"


class Claims:
    """A chapter's claims, checked where the numbers are computed and printed in the claims cells."""

    def __init__(self, chapter: str, statements: dict[str, str]):
        self.chapter = chapter
        self.statements = dict(statements)
        self.results: dict[str, Claim] = {}

    def check(self, cid: str, passed: bool, **numbers: Any) -> None:
        """Decide claim `cid`, show its numbers and record them in the notebook as a claim+json output."""
        if cid not in self.statements:
            raise KeyError(f"unknown claim {cid!r}; declared: {sorted(self.statements)}")
        c = Claim(cid, self.statements[cid], bool(passed), {k: _plain(v) for k, v in numbers.items()})
        self.results[cid] = c
        record = {"chapter": self.chapter, "id": c.id, "statement": c.statement, "passed": c.passed,
                  "numbers": c.numbers}
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
        for cid in ids or tuple(self.statements):
            c = self.results.get(cid)
            print(c.verdict() if c else f"{cid} FAIL  {self.statements[cid]} (not computed)")

    @property
    def all_passed(self) -> bool:
        """True when every declared claim was checked and passed."""
        return all(cid in self.results and self.results[cid].passed for cid in self.statements)
