"""A chapter's findings in a paragraph, written from its run: the `summary` of `notebooks/claims/NN.yaml` is a list
of sentences, each naming the claims it rests on, with fields filled from those claims' records in the executed
notebook. A sentence whose claims did not all PASS is replaced by its `otherwise` text (or a plain "not established
by this run"), so no number or verdict in it can be stale. The README's chapter table and the report's index are
made from it (`python -m lab readme` rewrites the table; a test checks that the committed one is current).

Fields: `{C2.ratio}` is a number with its interval when the record has one ("0.39 [0.32, 0.46]"),
`{C2.ratio.v}` the value alone, `{C4.power.wd_on_lambda_max}` a number of the claim's power evidence,
`{C4.status}` its verdict; a format spec (`{C3.diff:.3f}`) applies to the value and its interval.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import nbformat
import yaml

from lab.workbook.paths import NOTEBOOKS, ROOT

_FIELD = re.compile(r"\{(C\d+[a-z]?)\.([\w.]+)(?::([^{}]*))?\}")
_SUP = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
README = ROOT / "README.md"
TABLE_START, TABLE_END = "<!-- chapters:start (python -m lab readme) -->", "<!-- chapters:end -->"


def fmt(x: Any, spec: str = "") -> str:
    """A number for prose: 2 significant digits, powers of ten as ×10ⁿ outside [10⁻³, 10⁴); text as it is."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if spec:
        return format(x, spec)
    if isinstance(x, int) and abs(x) < 10**6:
        return str(x)
    if not math.isfinite(x):
        return str(x)
    if x == 0:
        return "0"
    if 100 <= abs(x) < 1e4:
        return f"{x:.0f}"
    if 1e-3 <= abs(x) < 100:
        return f"{x:#.2g}".rstrip(".")  # two significant digits, trailing zeros kept: 1.0, 0.39, 37
    mant, exp = f"{x:.1e}".split("e")
    mant = mant.rstrip("0").rstrip(".")
    return ("" if mant == "1" else f"{mant}×") + "10" + str(int(exp)).translate(_SUP)


def _value(claim: dict[str, Any], path: str, spec: str) -> str:
    if path == "status":
        return str(claim.get("status") or "")
    parts = path.split(".")
    src = claim.get("numbers") or {}
    if parts[0] == "power":
        src, parts = claim.get("power") or {}, parts[1:]
    only_value = parts[-1] == "v"
    name = parts[0]
    if name not in src:
        raise KeyError(f"claim {claim.get('id')}: no number {path!r} (it has {sorted(src)})")
    v = src[name]
    lo, hi = src.get(f"{name}_low"), src.get(f"{name}_high")
    if only_value or lo is None or hi is None:
        return fmt(v, spec)
    return f"{fmt(v, spec)} [{fmt(lo, spec)}, {fmt(hi, spec)}]"


def load_summary(chapter: str) -> list[dict[str, Any]]:
    """The chapter's summary sentences as declared in notebooks/claims/NN.yaml ([] when it declares none)."""
    src = NOTEBOOKS / "claims" / f"{chapter}.yaml"
    if not src.is_file():
        return []
    data = yaml.safe_load(src.read_text(encoding="utf-8")) or {}
    items = data.get("summary") or []
    for it in items:
        if not isinstance(it, dict) or "text" not in it or not isinstance(it.get("claims", []), list):
            raise ValueError(f"{src}: every summary item needs 'text' and a list 'claims'")
    return items


def summarize(chapter: str, claims: list[dict[str, Any]]) -> str:
    """The chapter's finding paragraph from its run's claim records (`lab.workbook.report.parse_claims`)."""
    by_id = {c["id"]: c for c in claims}
    out = []
    for it in load_summary(chapter):
        needed = [str(x) for x in it.get("claims", [])]
        missing = [c for c in needed if c not in by_id]
        not_pass = [f"{c} {by_id[c].get('status') or 'FAIL'}" for c in needed if c in by_id
                    and (by_id[c].get('status') or ('PASS' if by_id[c].get('passed') else 'FAIL')) != "PASS"]
        text = it["text"] if not (missing or not_pass) else it.get("otherwise")
        if text is None:
            out.append(f"({', '.join(needed)}: not established by this run — {', '.join(missing + not_pass)}.)")
            continue

        def one(m: re.Match, by_id: dict = by_id) -> str:
            if m[1] not in by_id:
                return "(not computed)"
            return _value(by_id[m[1]], m[2], m[3] or "")

        out.append(_FIELD.sub(one, str(text).strip()))
    return " ".join(out)


def tally(claims: list[dict[str, Any]]) -> str:
    """'7 findings (6 PASS, 1 NOT TESTED) · 3 checks (3 PASS)'."""
    parts = []
    for kind, word in (("finding", "findings"), ("check", "checks")):
        group = [c for c in claims if c.get("kind") == kind]
        if not group:
            continue
        counts: dict[str, int] = {}
        for c in group:
            st = c.get("status") or ("PASS" if c.get("passed") else "FAIL")
            counts[st] = counts.get(st, 0) + 1
        parts.append(f"{len(group)} {word} (" + ", ".join(f"{n} {st}" for st, n in sorted(counts.items())) + ")")
    return " · ".join(parts)


def _key_figure_path(nb: nbformat.NotebookNode) -> str:
    """The key figure a chapter saved (save_fig(..., key=True)), as a repository path, or ''."""
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            rec = out.get("data", {}).get("application/vnd.lab.key-figure+json")
            if isinstance(rec, dict) and rec.get("path"):
                return str(rec["path"])
    return ""


def readme_table(chapters: list[Path] | None = None) -> str:
    """The README's chapter table, from the committed, executed chapters."""
    from lab.workbook.report import chapter_intro, parse_claims
    from lab.workbook.runner import list_chapters

    rows = ["| # | chapter | claims | finding at the default parameters (from the committed run) | key figure |",
            "|---|---|---|---|---|"]
    for path in chapters or list_chapters():
        nb = nbformat.read(path, as_version=4)
        ch = path.name[:2]
        title = (chapter_intro(nb)[0] or path.stem).split("·", 1)[-1].strip()
        claims = parse_claims(nb)
        key = (nb.metadata.get("lab") or {}).get("key_figure", "") or _key_figure_path(nb)
        text = summarize(ch, claims).replace("|", "\\|")
        fig = f"![]({key})" if key else ""
        rows.append(f"| {ch} | [{title}](notebooks/{path.name}) | {tally(claims)} | {text} | {fig} |")
    return "\n".join(rows)


def update_readme(check: bool = False) -> bool:
    """Rewrite the README's table between its markers from the committed chapters; with check, only say whether it
    is current. Returns True when the README is (now) current."""
    text = README.read_text(encoding="utf-8")
    if TABLE_START not in text or TABLE_END not in text:
        raise ValueError(f"README.md has no chapter table markers ({TABLE_START} … {TABLE_END})")
    head, rest = text.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    new = f"{head}{TABLE_START}\n{readme_table()}\n{TABLE_END}{tail}"
    if check:
        return new == text
    README.write_text(new, encoding="utf-8")
    return True
