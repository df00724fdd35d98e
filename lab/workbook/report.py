"""Build the HTML lab report (an index of chapters, claims and key figures) from executed notebooks."""
from __future__ import annotations

import base64
import datetime as _dt
import html
import re
import shutil
from pathlib import Path
from typing import Any

import nbformat

from lab.workbook.figures import KEY_FIGURE_MIMETYPE
from lab.workbook.paths import NOTEBOOKS, REPORT, ROOT

CLAIM_MIMETYPE = "application/vnd.lab.claim+json"
STAMP_MIMETYPE = "application/vnd.lab.stamp+json"
CHECK_MARKER = "# NBVAL_CHECK_OUTPUT"
VERDICT_RE = re.compile(r"^(C\d+[a-z]?) (PASS|FAIL)  (.*)$")
TITLE = "Loss-Landscape Lab — lab report"
ERROR_TAG = "papermill-error-cell-tag"


def _text(value: Any) -> str:
    """Notebook text fields may be a string or a list of strings."""
    return "".join(value) if isinstance(value, list) else str(value or "")


def parse_claims(nb: nbformat.NotebookNode) -> list[dict[str, Any]]:
    """Claims of an executed notebook: verdict lines of check cells merged with claim+json number records."""
    claims: dict[str, dict[str, Any]] = {}
    records: dict[str, dict[str, Any]] = {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        is_check = _text(cell.source).lstrip().startswith(CHECK_MARKER)
        for out in cell.get("outputs", []):
            rec = out.get("data", {}).get(CLAIM_MIMETYPE) if out.get("output_type") in (
                "display_data", "execute_result") else None
            if isinstance(rec, dict) and rec.get("id"):
                records[str(rec["id"])] = rec
            if is_check and out.get("output_type") == "stream" and out.get("name") == "stdout":
                for line in _text(out.get("text")).splitlines():
                    m = VERDICT_RE.match(line.rstrip("\r"))
                    if m:
                        claims[m[1]] = {"id": m[1], "verdict": m[2], "statement": m[3]}
    for cid, rec in records.items():
        if cid not in claims:
            claims[cid] = {"id": cid, "verdict": None, "statement": str(rec.get("statement", ""))}
    result = []
    for cid, c in claims.items():
        rec = records.get(cid, {})
        c["passed"] = c["verdict"] == "PASS" if c["verdict"] else bool(rec.get("passed", False))
        c["numbers"] = dict(rec.get("numbers") or {})
        result.append(c)
    return result


def parse_stamp(nb: nbformat.NotebookNode) -> dict[str, Any]:
    """The environment stamp a chapter displayed (repro.show), or {} when it shows none."""
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            rec = out.get("data", {}).get(STAMP_MIMETYPE)
            if isinstance(rec, dict):
                return dict(rec)
    return {}


def chapter_intro(nb: nbformat.NotebookNode) -> tuple[str, str]:
    """The H1 title and the first paragraph after it, from the notebook's opening markdown cell."""
    for cell in nb.cells:
        if cell.cell_type != "markdown" or ERROR_TAG in cell.metadata.get("tags", []):
            continue
        lines = _text(cell.source).splitlines()
        title, rest = "", lines
        for i, line in enumerate(lines):
            if line.startswith("# "):
                title, rest = line[2:].strip(), lines[i + 1:]
                break
        para: list[str] = []
        for line in rest:
            if line.strip():
                para.append(line.strip())
            elif para:
                break
        return title, " ".join(para)
    return "", ""


def _fmt_number(v: Any) -> str:
    """Compact rendering of one number (or string) behind a claim."""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


RUN_MARK = "lab_run"


def run_parameters(nb: nbformat.NotebookNode) -> dict[str, Any]:
    """The parameters a run was executed with ({} for a default run), from the runner's or papermill's record."""
    mark = nb.metadata.get(RUN_MARK) or {}
    if "parameters" in mark:
        return dict(mark["parameters"] or {})
    return dict((nb.metadata.get("papermill") or {}).get("parameters") or {})


def run_status(nb: nbformat.NotebookNode) -> str:
    """'complete', 'failed' (a cell raised) or 'incomplete' (killed, interrupted or still running: some cells
    never finished), from the notebook's error outputs and papermill's per-cell status."""
    mark = nb.metadata.get(RUN_MARK) or {}
    if mark.get("status") == "failed" or any(ERROR_TAG in c.metadata.get("tags", []) for c in nb.cells) or any(
            o.get("output_type") == "error" for c in nb.cells for o in c.get("outputs", [])):
        return "failed"
    if mark.get("status") == "interrupted":
        return "incomplete"
    states = [(c.metadata.get("papermill") or {}).get("status") for c in nb.cells if c.cell_type == "code"]
    if any(st is not None and st != "completed" for st in states):
        return "incomplete"
    pm = nb.metadata.get("papermill") or {}
    if pm and pm.get("end_time") is None and "start_time" in pm:
        return "incomplete"
    return "complete"


def _run_figure(nb: nbformat.NotebookNode, path: Path, rel: str) -> Path | None:
    """The file of figure `rel` (e.g. figures/03/x.png) as this run made it: the committed figures/ for a committed
    notebook, the run's own folder (runs/<name>/figures/...) for a run; None when that run did not make it."""
    path = Path(path).resolve()
    if path.is_relative_to(NOTEBOOKS.resolve()):
        return ROOT / rel
    mark = nb.metadata.get(RUN_MARK) or {}
    files = mark.get("files")
    return path.parent / files / rel if files and mark.get("status", "complete") == "complete" else None


def key_figure_path(nb: nbformat.NotebookNode) -> str | None:
    """The key figure a run declared (`save_fig(..., key=True)` displays its record), e.g. "figures/03/x.png";
    else the notebook metadata's lab.key_figure (runs made before the declaration existed); else None."""
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            rec = out.get("data", {}).get(KEY_FIGURE_MIMETYPE)
            if rec:
                return rec["path"]
    return nb.metadata.get("lab", {}).get("key_figure")


def _key_figure(nb: nbformat.NotebookNode, chapter: str, fig_dir: Path, path: Path | None = None) -> Path | None:
    """Copy the chapter's key figure (metadata, as the run itself saved it; else its first PNG output) into fig_dir;
    return the file. Never a figure of another run: a run without its own copy falls back to its own outputs."""
    rel = key_figure_path(nb)
    src = _run_figure(nb, path, rel) if rel and path is not None else None
    if src is not None and src.is_file():
        fig_dir.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy2(src, fig_dir / src.name))
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            png = out.get("data", {}).get("image/png")
            if png:
                fig_dir.mkdir(parents=True, exist_ok=True)
                dest = fig_dir / f"{chapter}_output.png"
                dest.write_bytes(base64.b64decode(_text(png)))
                return dest
    return None


def _chapter_html(nb: nbformat.NotebookNode, dest: Path) -> None:
    """Write the full executed notebook (inputs and outputs) as one HTML page."""
    from nbconvert import HTMLExporter

    resources = {"metadata": {"path": str(NOTEBOOKS)}}
    try:
        body, _ = HTMLExporter(embed_images=True).from_notebook_node(nb, resources=resources)
    except Exception:  # noqa: BLE001 - a missing markdown image must not break the report
        body, _ = HTMLExporter().from_notebook_node(nb, resources=resources)
    dest.write_text(body, encoding="utf-8")


_CSS = """body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.25rem .5rem;
text-align:left;vertical-align:top}.PASS{color:#1a7f37;font-weight:bold}.FAIL{color:#cf222e;font-weight:bold}
img{max-width:100%}section{border-top:1px solid #ddd;margin-top:2rem}.nums{font-family:monospace;
font-size:.9em}.meta{color:#666}"""


def _claims_table(claims: list[dict[str, Any]]) -> str:
    """HTML table of claims: id, verdict, statement, numbers."""
    if not claims:
        return "<p class='meta'>No claims recorded.</p>"
    rows = []
    for c in claims:
        verdict = c["verdict"] or ("PASS" if c["passed"] else "FAIL") + " (no verdict line)"
        cls = "PASS" if c["passed"] else "FAIL"
        nums = ", ".join(f"{html.escape(str(k))}={html.escape(_fmt_number(v))}"
                         for k, v in c["numbers"].items())
        rows.append(f"<tr><td>{html.escape(c['id'])}</td><td class='{cls}'>{html.escape(verdict)}</td>"
                    f"<td>{html.escape(c['statement'])}</td><td class='nums'>{nums}</td></tr>")
    return ("<table><tr><th>claim</th><th>verdict</th><th>statement</th><th>numbers</th></tr>"
            + "".join(rows) + "</table>")


def build_report(executed: list[Path], out_dir: Path = REPORT) -> Path:
    """Write out_dir/index.html and one HTML page per executed chapter; return the index path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sections, toc = [], []
    for path in sorted(Path(p) for p in executed):
        nb = nbformat.read(path, as_version=4)
        chapter = path.stem
        title, question = chapter_intro(nb)
        title = title or chapter
        claims = parse_claims(nb)
        _chapter_html(nb, out_dir / f"{chapter}.html")
        fig = _key_figure(nb, chapter, out_dir / "figures" / chapter, path)
        npass = sum(c["passed"] for c in claims)
        state = run_status(nb)
        status = {"complete": "", "failed": " <strong class='FAIL'>execution failed</strong>",
                  "incomplete": " <strong class='FAIL'>incomplete run (killed or interrupted): its claims are not "
                                "a result</strong>"}[state]
        params = run_parameters(nb)
        shown = ", ".join(f"{k} = {v!r}" for k, v in sorted(params.items()))
        params_html = (f"<p class='meta'>Parameters: {html.escape(shown)}</p>" if params
                       else "<p class='meta'>Default parameters.</p>")
        anchor = html.escape(chapter, quote=True)
        tally = f"{npass}/{len(claims)} claims pass" if state == "complete" else f"{len(claims)} claims, not counted"
        toc.append(f"<li><a href='#{anchor}'>{html.escape(title)}</a> — {tally}"
                   f"{' (parameters: ' + html.escape(shown) + ')' if params else ''}{status}</li>")
        fig_html = (f"<figure><img src='{html.escape(fig.relative_to(out_dir).as_posix(), quote=True)}' "
                    f"alt='key figure of {anchor}'></figure>") if fig else ""
        sections.append(
            f"<section id='{anchor}'><h2>{html.escape(title)}</h2>{status}{params_html}"
            f"<p>{html.escape(question)}</p>{_claims_table(claims)}{fig_html}"
            f"<p><a href='{html.escape(chapter, quote=True)}.html'>Full chapter: {html.escape(chapter)}</a>"
            f" <span class='meta'>(from {html.escape(path.name)})</span></p></section>")
    built = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    page = (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(TITLE)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(TITLE)}</h1>"
            f"<p class='meta'>Built {html.escape(built)}</p><ul>{''.join(toc)}</ul>"
            f"{''.join(sections)}</body></html>\n")
    index = out_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def _parameterized(path: Path) -> bool:
    """True when the executed notebook at path records parameters (an unreadable one counts as not)."""
    try:
        return bool(run_parameters(nbformat.read(path, as_version=4)))
    except (OSError, ValueError):
        return False


def default_runs(runs_dir: Path) -> list[Path]:
    """The executed default-parameter chapter runs in runs_dir: parameterized runs (named <stem>__..., or recorded
    with parameters whatever their name) and failed runs (<name>.failed.ipynb) are skipped."""
    out = []
    for p in sorted(Path(runs_dir).glob("[0-9][0-9]_*.ipynb")):
        if "__" in p.stem or p.stem.endswith(".failed") or _parameterized(p):
            continue
        failed = p.with_name(f"{p.stem}.failed.ipynb")  # the chapter's latest run failed: report that, not this
        out.append(failed if failed.exists() and failed.stat().st_mtime >= p.stat().st_mtime else p)
    for failed in sorted(Path(runs_dir).glob("[0-9][0-9]_*.failed.ipynb")):  # a chapter that never completed
        stem = failed.name.removesuffix(".failed.ipynb")
        if "__" in stem or failed.with_name(f"{stem}.ipynb").exists() or _parameterized(failed):
            continue
        out.append(failed)
    return sorted(out)
