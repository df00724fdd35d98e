"""The claims registry: every version of every chapter claim's statement, test and threshold, with the commit that
registered it, rebuilt from the git history of the declarations (`notebooks/claims/NN.yaml`, and before those
existed the declarations recorded in the committed notebooks' outputs). `results/claims_registry.csv` is the
published table; `Claims.load` attaches each claim's first version (`registered`) and later ones (`revised`, with
the commit's message as the reason), and `tests/workbook/test_registry.py` checks that the table is current.

    python -m lab registry            # rebuild results/claims_registry.csv
    python -m lab registry --check    # exit 1 when it is not current
"""
from __future__ import annotations

import csv
import io
import json
import re
import subprocess
from pathlib import Path
from typing import Any

from lab.workbook.paths import ROOT

REGISTRY = ROOT / "results" / "claims_registry.csv"
COLUMNS = ("chapter", "claim", "version", "commit", "date", "statement", "test", "threshold", "reason")
_DECLARED = "application/vnd.lab.claims+json"
_FIELD = re.compile(r"\{(\w+)(?::[^{}]*)?\}")


def _git(*args: str, root: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout


def has_history(root: Path = ROOT) -> bool:
    """True in a git checkout with its full history (not a shallow clone)."""
    try:
        return _git("rev-parse", "--is-shallow-repository", root=root).strip() == "false"
    except (OSError, subprocess.CalledProcessError):
        return False


def _declared_in_notebook(text: str) -> list[dict[str, Any]]:
    """The claims a committed notebook introduced (its claims+json record), or [] if none."""
    try:
        nb = json.loads(text)
    except ValueError:
        return []
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []):
            rec = out.get("data", {}).get(_DECLARED)
            if isinstance(rec, dict) and isinstance(rec.get("claims"), list):
                return [c for c in rec["claims"] if isinstance(c, dict) and c.get("id")]
    return []


def _declared_in_yaml(text: str) -> list[dict[str, Any]]:
    import yaml

    data = yaml.safe_load(text) or {}
    return [c for c in data.get("claims", []) if isinstance(c, dict) and c.get("id")]


def _same(old: str, new: str) -> bool:
    """Equal texts, or a template (`{n_reps}` fields) that renders to the old text: the move of the declarations
    from notebook code (rendered f-strings) to YAML templates is not a revision."""
    if old == new:
        return True
    if not _FIELD.search(new):
        return False
    parts = _FIELD.split(new)  # text at even positions, field names at odd ones
    pattern = "".join(re.escape(p) if i % 2 == 0 else ".+?" for i, p in enumerate(parts))
    return re.fullmatch(pattern, old, flags=re.S) is not None


def chapter_history(chapter: str, root: Path = ROOT) -> list[dict[str, str]]:
    """Every version of chapter `chapter`'s claims, oldest first: one row per claim whose statement, test or
    threshold changed in a commit (the commit's subject is the reason)."""
    yaml_path = f"notebooks/claims/{chapter}.yaml"
    log = _git("log", "--reverse", "--format=%H%x09%ad%x09%s", "--date=short", "--",
               f"notebooks/{chapter}_*.ipynb", yaml_path, root=root)
    last: dict[str, dict[str, str]] = {}
    versions: dict[str, int] = {}
    rows: list[dict[str, str]] = []
    for line in log.splitlines():
        commit, date, subject = line.split("\t", 2)
        files = _git("ls-tree", "-r", "--name-only", commit, "notebooks/", root=root).splitlines()
        if yaml_path in files:
            claims = _declared_in_yaml(_git("show", f"{commit}:{yaml_path}", root=root))
        else:
            nbs = [f for f in files if re.fullmatch(rf"notebooks/{chapter}_\w+\.ipynb", f)]
            claims = _declared_in_notebook(_git("show", f"{commit}:{nbs[0]}", root=root)) if nbs else []
        for c in claims:
            cid = str(c["id"])
            cur = {"statement": str(c.get("statement") or ""), "test": str(c.get("test") or ""),
                   "threshold": str(c.get("margin") or "")}
            prev = last.get(cid)
            if prev is not None and all(_same(prev[k], cur[k]) for k in cur):
                last[cid] = cur
                continue
            versions[cid] = versions.get(cid, 0) + 1
            last[cid] = cur
            declared = [r for r in c.get("revised") or [] if isinstance(r, dict) and r.get("reason")]
            reason = ("first registered" if versions[cid] == 1
                      else str(declared[-1]["reason"]) if declared else subject)  # the reason given with the change
            rows.append({"chapter": chapter, "claim": cid, "version": str(versions[cid]), "commit": commit[:7],
                         "date": date, **cur, "reason": reason})
    return rows


def chapters(root: Path = ROOT) -> list[str]:
    """The chapter numbers that declare their claims in notebooks/claims/."""
    return sorted(p.stem for p in (root / "notebooks" / "claims").glob("[0-9][0-9].yaml"))


def build(root: Path = ROOT) -> str:
    """The registry as CSV text, rebuilt from git history."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for ch in chapters(root):
        w.writerows(chapter_history(ch, root))
    return buf.getvalue()


def read(path: Path = REGISTRY) -> list[dict[str, str]]:
    """The published registry's rows ([] when there is none)."""
    if not path.is_file():
        return []
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def versions_of(chapter: str, claim: str, rows: list[dict[str, str]] | None = None) -> list[dict[str, str]]:
    """The registry's versions of one claim, oldest first."""
    rows = read() if rows is None else rows
    return [r for r in rows if r["chapter"] == chapter and r["claim"] == claim]


def main(argv: list[str] | None = None) -> int:
    """python -m lab registry [--check]."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m lab registry", description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 when results/claims_registry.csv is not current")
    args = ap.parse_args(argv)
    if not has_history():
        print("lab registry: this checkout has no full git history (a shallow clone): nothing to rebuild from")
        return 2
    text = build()
    current = REGISTRY.read_text(encoding="utf-8") if REGISTRY.is_file() else ""
    if args.check:
        if text != current:
            print(f"lab registry: {REGISTRY.relative_to(ROOT)} is not current: run `python -m lab registry`")
            return 1
        print(f"lab registry: {REGISTRY.relative_to(ROOT)} is current")
        return 0
    REGISTRY.parent.mkdir(parents=True, exist_ok=True)
    REGISTRY.write_text(text, encoding="utf-8")
    n = text.count("\n") - 1
    print(f"lab registry: {n} claim versions written to {REGISTRY.relative_to(ROOT)}")
    return 0
