"""Build the lab report from executed notebooks with Jupyter Book 1 (Sphinx, myst-nb, sphinx-book-theme): an index
of chapters, claims and key figures, and one cleaned page per chapter; never re-executed, offline, opens from file://.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import re
import shutil
from pathlib import Path
from typing import Any

import nbformat

from lab.workbook.figures import FIGURE_MIMETYPE, KEY_FIGURE_MIMETYPE
from lab.workbook.paths import NOTEBOOKS, REPORT, ROOT, git_output

CLAIM_MIMETYPE = "application/vnd.lab.claim+json"
STAMP_MIMETYPE = "application/vnd.lab.stamp+json"
CHECK_MARKER = "# NBVAL_CHECK_OUTPUT"
VERDICT_RE = re.compile(r"^(C\d+[a-z]?) (PASS|FAIL|NOT TESTED)  (.*)$")
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
        c["status"] = c["verdict"] or str(rec.get("status") or ("PASS" if c["passed"] else "FAIL"))
        c["kind"] = rec.get("kind")
        c["alternative"] = str(rec.get("alternative") or "")
        c["power"] = rec.get("power") if isinstance(rec.get("power"), dict) else None
        c["registered_verdict"] = rec.get("registered_verdict")
        c["numbers"] = dict(rec.get("numbers") or {})
        c["test"], c["threshold"] = str(rec.get("test") or ""), str(rec.get("threshold") or "")
        c["tests"] = [t for t in rec.get("tests") or [] if isinstance(t, dict)]
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


def key_figure_caption(nb: nbformat.NotebookNode) -> str:
    """The caption the run's key-figure record carries (save_fig(..., key=True, caption=...)), else ''."""
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            rec = out.get("data", {}).get(KEY_FIGURE_MIMETYPE)
            if isinstance(rec, dict) and rec.get("caption"):
                return str(rec["caption"])
    return ""


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


# ---------------------------------------------------------------------------------------------------------------------
# The report is a Jupyter Book (1.x: Sphinx, myst-nb, sphinx-book-theme) built from cleaned copies of the executed
# notebooks, never re-executed: execute_notebooks is "off". Everything it loads is local (no CDN, no MathJax, no
# thebe, no launch or repository buttons), so the pages open from file:// with no network.

WORKBOOK_QUESTION = (
    "An open research workbook on the geometry of neural-network loss landscapes: how rough is a loss surface "
    "at the scales we probe it, what its curvature — the Hessian's eigenvalues, their outliers and bulk — looks "
    "like at initialisation and after training, and what that geometry says about how networks train. Each "
    "chapter asks one question, answers it with measurements and checks its own claims against theory or an "
    "independent float64 computation; the verdicts and numbers below are this run's own outputs.")
REPORT_MARK = ".lab-report"  # marker file inside a built report: only a folder carrying it (or empty) is replaced
WIDGET_MIMETYPE = "application/vnd.jupyter.widget-view+json"
LAB_MIMETYPE_PREFIX = "application/vnd.lab."
VALIDATION_RE = re.compile(r"\bstart_chapter\(|lab\.workbook\.validate\b|raise \w*Error\(\s*f?[\"']parameter '")
NBVAL_LINE_RE = re.compile(r"^\s*# NBVAL_[A-Z_]+\s*$")
PATH_ECHO_RE = re.compile(r"^(Posix|Windows)?Path\('[^']*'\)$")  # save_fig's return value, echoed
PNG_NAME_RE = re.compile(r"([\w.-]+\.png)\b")
SAVE_FIG_RE = re.compile(r"save_fig\([^,()]+,[^,()]+,\s*[\"']([\w-]+)[\"']")
BUILD_TIMEOUT = 600  # seconds for one Jupyter Book build
EXTENSIONS = ["sphinx_togglebutton", "sphinx_copybutton", "myst_nb", "jupyter_book", "sphinx_external_toc",
              "sphinx_design", "sphinx_book_theme",  # JB's defaults less sphinx_thebe, sphinx_comments, intersphinx
              "sphinxcontrib.bibtex"]  # the bibliography (notebooks/references.bib)

FONTS = Path(__file__).resolve().parent / "fonts"  # Noto Sans JP, subset to the chapters' Japanese quotes (OFL)
_CSS = """@font-face{font-family:"Lab Noto Sans JP";src:url(fonts/noto-sans-jp-subset.woff) format("woff");
unicode-range:U+3000-30FF,U+4E00-9FFF,U+FF00-FFEF}
html{--pst-font-family-base:var(--pst-font-family-base-system),"Lab Noto Sans JP"}
.lab-table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.9em;width:100%}
.lab-table td,.lab-table th{border:1px solid var(--pst-color-border,#ccc);padding:.25rem .5rem;text-align:left;
vertical-align:top}.lab-table th{background:var(--pst-color-surface,#f3f4f5)}
.lab-PASS{color:#1a7f37;font-weight:bold}.lab-FAIL{color:#cf222e;font-weight:bold}.lab-UNTESTED{color:#9a6700;font-weight:bold}
.lab-nums{font-family:var(--pst-font-family-monospace,monospace);font-size:.85em}
.lab-meta th{width:9rem;white-space:nowrap}.lab-tally{font-weight:bold}
article img{max-width:100%;height:auto}
.cell_output pre{font-size:.85em;white-space:pre-wrap}
@media print{.bd-sidebar-primary,.bd-sidebar-secondary,.bd-header,.bd-header-article,.prev-next-area,.bd-footer,
.bd-footer-article,.headerlink,.toggle-button,.cell_input{display:none!important}
.bd-main .bd-content .bd-article-container{max-width:100%!important}figure.lab-keyfig{float:none;width:70%}
div.full-width,div.cell.tag_full-width{width:100%!important;max-width:100%!important}
article section{break-inside:auto}figure,table.lab-compact tr{break-inside:avoid}}
.lab-synthesis td:first-child{white-space:nowrap}
figure.lab-keyfig{float:right;width:48%;margin:.2rem 0 .6rem 1.2rem}figure.lab-keyfig figcaption{font-size:.8em}
article section section{display:flow-root}
.bd-main .bd-content .bd-article-container:has(.lab-index){max-width:100%}
.bd-main .bd-content .bd-article-container:has(.lab-index) .bd-article{max-width:72rem}
@media (min-width:992px){div.full-width.container{position:relative;z-index:2;width:136%;max-width:136%}}
details.lab-run,details.lab-details{margin:.5rem 0 1rem}details.lab-run>summary,details.lab-details>summary{
cursor:pointer;color:var(--pst-color-text-muted,#555);font-size:.9em}
"""


def _fmt_value(v: Any) -> str:
    """A claim number for the tables: floats to 4 significant digits, lists element-wise, None as 'n/a'."""
    if v is None:
        return "n/a"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt_value(x) for x in v) + "]"
    return _fmt_number(v)


def _status_text(state: str) -> str:
    """The loud line for a run that is not complete ('' for a complete one)."""
    return {"complete": "",
            "failed": "execution failed: a cell raised an error, so this run's claims are not a result",
            "incomplete": "incomplete run (killed or interrupted): some cells never finished, so its claims are not "
                          "a result"}[state]


def _status_admonition(state: str) -> str:
    """A MyST error admonition flagging a failed or incomplete run ('' for a complete one)."""
    if state == "complete":
        return ""
    head = "Execution failed" if state == "failed" else "Incomplete run"
    return f"```{{error}} {head}\n{_status_text(state)[0].upper()}{_status_text(state)[1:]}.\n```\n\n"


def _params_text(params: dict[str, Any]) -> str:
    """'Parameters: x = 4, y = 'a'' for a parameterized run, 'Default parameters.' otherwise."""
    if not params:
        return "Default parameters."
    return "Parameters: " + ", ".join(f"{k} = {v!r}" for k, v in sorted(params.items()))


def _test_text(t: dict[str, Any], numbers: dict[str, Any]) -> str:
    """One interval test in words: 'ratio [0.7, 1.1] above 0.5: margin +0.2 (+40%)'."""
    name, b = str(t.get("number", "?")), [_fmt_value(x) for x in t.get("bounds") or []]
    interval = f"[{_fmt_value(numbers.get(name + '_low'))}, {_fmt_value(numbers.get(name + '_high'))}]"
    what = {"above": f"above {b[0]}" if b else "above", "below": f"below {b[0]}" if b else "below",
            "within": f"within [{', '.join(b)}]", "excludes": f"excludes {b[0]}" if b else "excludes"}.get(
        str(t.get("test")), str(t.get("test")))
    margin = t.get("margin")
    rel = relative_margin(t)
    m = "n/a" if margin is None else f"{margin:+.3g}" + (f" ({rel:+.0%})" if rel is not None else "")
    return f"{name} {interval} {what}: margin {m}"


def relative_margin(t: dict[str, Any]) -> float | None:
    """A test's margin relative to the size of its threshold (|bound|, or the width of a `within` range when it
    contains 0): comparable across claims. None where the margin is not finite or the scale is 0."""
    margin, bounds = t.get("margin"), [x for x in t.get("bounds") or [] if x is not None]
    if margin is None or not bounds:
        return None
    scale = max(abs(x) for x in bounds)
    if t.get("test") == "within" and len(bounds) == 2:
        scale = min(scale, abs(bounds[1] - bounds[0])) or scale
    return margin / scale if scale > 0 else None


def claims_table(claims: list[dict[str, Any]]) -> str:
    """One-block HTML table of claims (id, verdict, statement, the test with its threshold and margin, this run's
    numbers), for a MyST page. Every number comes from the run's claim records."""
    if not claims:
        return "<p class='lab-meta'>No claims recorded.</p>"
    rows = []
    for c in claims:
        verdict = c["verdict"] or ("PASS" if c["passed"] else "FAIL") + " (no verdict line)"
        status = c.get("status") or ("PASS" if c["passed"] else "FAIL")
        cls = {"PASS": "lab-PASS", "NOT TESTED": "lab-UNTESTED"}.get(status, "lab-FAIL")
        if c.get("registered_verdict"):
            verdict += f" (registered threshold: {c['registered_verdict']})"
        nums = ", ".join(f"{html.escape(str(k))}={html.escape(_fmt_value(v))}" for k, v in c["numbers"].items())
        test = [html.escape(c.get("test", "")) if c.get("test") else "",
                f"<em>threshold:</em> {html.escape(c['threshold'])}" if c.get("threshold") else ""]
        test += [f"<span class='lab-nums'>{html.escape(_test_text(t, c['numbers']))}</span>"
                 for t in c.get("tests", [])]
        if c.get("power"):
            pw = c["power"]
            test.append(f"<em>power:</em> {'shown' if pw.get('passed') else 'not shown'} ("
                        + html.escape(", ".join(f"{k}={_fmt_value(v)}" for k, v in pw.items() if k != "passed")) + ")")
        kind = html.escape(str(c.get("kind") or ""))
        statement = html.escape(c["statement"]) + (
            f"<br><em>rules out:</em> {html.escape(c['alternative'])}" if c.get("alternative") else "")
        rows.append(f"<tr><td>{html.escape(c['id'])}</td><td class='{cls}'>{html.escape(verdict)}</td>"
                    f"<td>{kind}</td><td>{statement}</td><td>{'<br>'.join(x for x in test if x)}</td>"
                    f"<td class='lab-nums'>{nums}</td></tr>")
    return ("<table class='lab-table lab-claims'><thead><tr><th>claim</th><th>verdict</th><th>kind</th>"
            "<th>statement</th><th>test · threshold · margin</th><th>numbers</th></tr></thead><tbody>" + "".join(rows)
            + "</tbody></table>")


TEXT_WIDTH_PX = 768   # the theme's text column at a 1,400 px window; wider figures break out of it (full-width)
TEXT_COLUMN_CHARS = 100  # printed characters a line of output holds in that column (lab.css: outputs at .85em)


def png_width(data: str | bytes) -> int:
    """The pixel width of a PNG (base64 text, as notebooks store it, or raw bytes); 0 when it is not a PNG."""
    raw = base64.b64decode("".join(data[:80].split())[:64]) if isinstance(data, str) else bytes(data[:32])
    return int.from_bytes(raw[16:20], "big") if raw[:8] == b"\x89PNG\r\n\x1a\n" else 0


def drawn_width(natural_px: int) -> int:
    """The CSS width at which a figure saved at the house dpi shows at the size it was drawn (96 CSS px per inch)."""
    from lab.workbook.figures import DPI

    return round(natural_px * 96 / DPI)


def figure_block(rel: str, natural_px: int, alt: str, caption: str) -> str:
    """A MyST figure at its drawn size (never enlarged); one wider than the text column breaks out of it."""
    width = drawn_width(natural_px) if natural_px else 0
    fig = (f"```{{figure}} {rel}\n" + (f":width: {width}px\n" if width else ":width: 100%\n")
           + f":alt: {alt}\n\n{caption}\n```")
    return f"````{{container}} full-width\n{fig}\n````" if width > TEXT_WIDTH_PX else fig


def key_number(c: dict[str, Any]) -> str:
    """A claim's headline number with its 95% interval, from its first interval test ('ratio 0.74 [0.60, 0.91]'),
    else its first number; '' when it recorded none."""
    nums = c.get("numbers") or {}
    for t in c.get("tests") or []:
        name = str(t.get("number", ""))
        if name in nums:
            low, high = nums.get(name + "_low"), nums.get(name + "_high")
            return f"{name} {_fmt_value(nums[name])}" + (
                f" [{_fmt_value(low)}, {_fmt_value(high)}]" if low is not None and high is not None else "")
    for k, v in nums.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not k.endswith(("_low", "_high", "_n")):
            return f"{k} {_fmt_value(v)}"
    return ""


def compact_claims(claims: list[dict[str, Any]]) -> str:
    """The chapter page's claims, once: a compact HTML table (id, verdict, kind, statement, key number with its
    interval) and, folded under it, the full table of tests, thresholds, margins, power and raw numbers."""
    if not claims:
        return "<p class='lab-meta'>No claims recorded.</p>"
    rows = []
    for c in claims:
        status = c.get("status") or ("PASS" if c["passed"] else "FAIL")
        cls = {"PASS": "lab-PASS", "NOT TESTED": "lab-UNTESTED"}.get(status, "lab-FAIL")
        rows.append(f"<tr><td>{html.escape(c['id'])}</td><td class='{cls}'>{html.escape(status)}</td>"
                    f"<td>{html.escape(str(c.get('kind') or ''))}</td><td>{html.escape(c['statement'])}</td>"
                    f"<td class='lab-nums'>{html.escape(key_number(c))}</td></tr>")
    table = ("<table class='lab-table lab-compact'><thead><tr><th>claim</th><th>verdict</th><th>kind</th>"
             "<th>statement</th><th>key number [95% interval]</th></tr></thead><tbody>" + "".join(rows)
             + "</tbody></table>")
    return (table + "<details class='lab-details'><summary>What each claim rules out, its test, threshold, "
            "margin, power and this run's numbers</summary>" + claims_table(claims) + "</details>")


def margin_chart(claims: list[dict[str, Any]], dest: Path, label: str = "") -> Path | None:
    """A small chart of every interval test's margin relative to its threshold (positive: the interval clears it;
    negative: it does not), one bar per test, PASS green and FAIL red; None when no claim made an interval test
    (claims decided replicate by replicate are in the table only)."""
    rows = [(f"{c['id']} {t.get('number', '')} {t.get('test', '')}", relative_margin(t), bool(t.get("passed")))
            for c in claims for t in c.get("tests", [])]
    rows = [r for r in rows if r[1] is not None]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 0.32 * len(rows) + 1.2), layout="constrained")
    y = range(len(rows))
    ax.barh(list(y), [r[1] for r in rows], color=["#1a7f37" if r[2] else "#cf222e" for r in rows])
    ax.axvline(0, color="0.2", lw=1)
    ax.set_yticks(list(y), [r[0] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_xlabel("margin of the 95% interval beyond its threshold (relative to |threshold|)")
    ax.set_title(f"Chapter {label}: how far each interval test clears its threshold" if label else
                 "How far each interval test clears its threshold", fontsize=10)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dest, dpi=110)
    plt.close(fig)
    return dest


def provenance(nb: nbformat.NotebookNode, path: Path) -> tuple[str, str]:
    """(commit, run date) of an executed notebook: the runner's record and papermill's end time; for a committed
    chapter (refreshed in place, its run records stripped) the last commit of its file."""
    mark = nb.metadata.get(RUN_MARK) or {}
    commit = str(mark.get("commit") or "")
    pm = nb.metadata.get("papermill") or {}
    when = str(pm.get("end_time") or pm.get("start_time") or "")
    if when:
        try:
            when = _dt.datetime.fromisoformat(when).astimezone().strftime("%Y-%m-%d %H:%M %Z")
        except ValueError:
            pass
    if not commit or not when:
        log = git_output("log", "-1", "--format=%h %cd", "--date=format:%Y-%m-%d %H:%M", "--",
                         str(Path(path).resolve()))
        if log and Path(path).resolve().is_relative_to(NOTEBOOKS.resolve()):
            h, _, d = log.partition(" ")
            commit = commit or f"{h} (last commit of {Path(path).name})"
            when = when or f"{d} (committed)"
    if not when:
        mtime = _dt.datetime.fromtimestamp(Path(path).stat().st_mtime).astimezone()
        when = mtime.strftime("%Y-%m-%d %H:%M %Z") + " (file time)"
    return commit or "not recorded", when


def format_environment(s: dict[str, Any]) -> str:
    """The environment stamp in one readable line: device (GPU or CPU), torch, CPU kernels, threads, BLAS, dtype."""
    if not s:
        return "not recorded (the run showed no environment stamp)"
    parts = []
    if s.get("device", "cpu").startswith("cuda"):
        gpu = f"GPU {s.get('device_name', '?')}"
        if s.get("gpu_capability"):
            gpu += f" (sm {s['gpu_capability']})"
        parts.append(gpu + f", CUDA {s.get('cuda', '?')}, driver {s.get('driver', '?')}, cuDNN {s.get('cudnn', '?')}")
        parts.append(f"TF32 matmul {s.get('tf32_matmul')}, cuDNN {s.get('tf32_cudnn')}")
    parts.append(f"CPU {s.get('cpu', '?')} ({s.get('device_name', '?') if s.get('device') == 'cpu' else 'host'})")
    parts.append(f"torch {s.get('torch', '?')}, numpy {s.get('numpy', '?')}, Python {s.get('python', '?')}")
    parts.append(f"kernels {s.get('cpu_kernels', '?')} (ATEN_CPU_CAPABILITY={s.get('aten_cpu_capability', '?')})")
    threads = f"threads {s.get('threads', '?')}"
    if s.get("mkl_threads") is not None:
        threads += f" (MKL {s['mkl_threads']})"
    parts.append(threads)
    parts.append(f"BLAS {s.get('blas', '?')}")
    parts.append(f"dtype {s.get('default_dtype', '?')}, deterministic {s.get('deterministic', '?')}, "
                 f"seed {s.get('seed', '?')}")
    return " · ".join(parts)


def _meta_table(rows: list[tuple[str, str]]) -> str:
    """A two-column HTML table (label, value), escaped, on one line for MyST."""
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table class='lab-table lab-meta'><tbody>{body}</tbody></table>"


def _tally(claims: list[dict[str, Any]], state: str) -> str:
    """'3/4 claims pass' for a complete run; a run that is not complete is not counted."""
    if state != "complete":
        return f"{len(claims)} claims, not counted"
    return tally_text(claims)


def _kind_count(claims: list[dict[str, Any]]) -> str:
    """'51 findings, 19 checks' over claim records."""
    n_f = sum(c.get("kind") == "finding" for c in claims)
    n_c = sum(c.get("kind") == "check" for c in claims)
    other = len(claims) - n_f - n_c
    return f"{n_f} findings, {n_c} checks" + (f", {other} claims of undeclared kind" if other else "")


def tally_text(claims: list[dict[str, Any]]) -> str:
    """'6/7 findings and 3/3 checks pass, 1 not tested': findings and checks counted apart (a claim without a
    declared kind counts as a claim)."""
    parts, untested = [], sum(c.get("status") == "NOT TESTED" for c in claims)
    for kind, word in (("finding", "findings"), ("check", "checks"), (None, "claims")):
        group = [c for c in claims if (c.get("kind") or None) == kind]
        if group:
            parts.append(f"{sum(c['passed'] for c in group)}/{len(group)} {word}")
    return " and ".join(parts) + " pass" + (f", {untested} not tested" if untested else "")


def _is_explorer(cell: nbformat.NotebookNode) -> bool:
    """An interactive explorer cell: tagged skip-execution, or built on ipywidgets' interact."""
    src = _text(cell.source)
    return "skip-execution" in cell.metadata.get("tags", []) or bool(re.search(r"\binteract(ive)?\(", src))


def _has_error(cell: nbformat.NotebookNode) -> bool:
    """True when the cell holds an error output (it is kept whatever it is, so the traceback shows)."""
    return any(o.get("output_type") == "error" for o in cell.get("outputs", []))


def _drop_cell(cell: nbformat.NotebookNode) -> bool:
    """Cells the report leaves out: parameters, papermill's injected parameters, the start_chapter/validation
    cell and explorers; never one holding the traceback of a failed run."""
    if cell.cell_type != "code" or _has_error(cell):
        return False
    tags = cell.metadata.get("tags", [])
    return ("parameters" in tags or "injected-parameters" in tags or _is_explorer(cell)
            or bool(VALIDATION_RE.search(_text(cell.source))))


def _clean_output(out: nbformat.NotebookNode) -> nbformat.NotebookNode | None:
    """An output as the report shows it, or None to drop it: stderr, widgets (tqdm bars), lab records with no
    readable part."""
    kind = out.get("output_type")
    if kind == "stream":
        return out if out.get("name") != "stderr" else None
    if kind not in ("display_data", "execute_result"):
        return out
    data = out.get("data", {})
    if WIDGET_MIMETYPE in data or (set(data) == {"text/plain"} and PATH_ECHO_RE.match(_text(data["text/plain"]))):
        return None
    kept = {k: v for k, v in data.items() if not k.startswith(LAB_MIMETYPE_PREFIX)}
    if not any(_text(v).strip() if isinstance(v, (str, list)) else v for v in kept.values()):
        return None
    out = nbformat.from_dict(dict(out))
    out["data"] = nbformat.from_dict(kept)
    return out


def _png_name(cell: nbformat.NotebookNode) -> str:
    """The file name of a cell's figure: from a printed path (save_fig's return value) or save_fig's name."""
    for out in cell.get("outputs", []):
        text = _text(out.get("text") or out.get("data", {}).get("text/plain", ""))
        m = PNG_NAME_RE.search(text)
        if m:
            return m[1]
    m = SAVE_FIG_RE.search(_text(cell.source))
    return f"{m[1]}.png" if m else ""


def _captions(cell: nbformat.NotebookNode) -> list[str]:
    """The captions the cell's figure records carry (save_fig(..., caption=...)), in the order the figures were
    saved — the order a cell's figures are shown in. A key-figure record repeats its figure's caption: not counted
    twice."""
    out: list[str] = []
    for o in cell.get("outputs", []):
        rec = o.get("data", {}).get(FIGURE_MIMETYPE)
        if isinstance(rec, dict) and rec.get("caption"):
            out.append(str(rec["caption"]))
    return out


def _split_title(cell: nbformat.NotebookNode) -> tuple[str, str] | None:
    """(H1 line, the rest) of a markdown cell that opens with an H1, else None."""
    lines = _text(cell.source).splitlines()
    for i, line in enumerate(lines):
        if line.startswith("# "):
            return "\n".join(lines[: i + 1]), "\n".join(lines[i + 1:]).strip("\n")
        if line.strip():
            return None
    return None


def _claim_outputs(cell: nbformat.NotebookNode) -> set[str]:
    """Which claim records a code cell displays: 'intro' (Claims.introduce's declaration), 'check' (claim records),
    'verdicts' (the NBVAL verdict lines), 'conclusion'."""
    kinds = set()
    for out in cell.get("outputs", []):
        data = out.get("data", {})
        if "application/vnd.lab.claims+json" in data:
            kinds.add("intro")
        if CLAIM_MIMETYPE in data:
            kinds.add("check")
        if "application/vnd.lab.conclusion+json" in data:
            kinds.add("conclusion")
    if _text(cell.source).lstrip().startswith(CHECK_MARKER):
        kinds.add("verdicts")
    return kinds


def run_record(nb: nbformat.NotebookNode, path: Path) -> str:
    """The run's record (status, source, commit, date, environment, parameters), folded under a one-line summary;
    a run that is not complete is flagged above it, unfolded."""
    state = run_status(nb)
    commit, when = provenance(nb, path)
    params = _params_text(run_parameters(nb)).removeprefix("Parameters: ")
    meta = [("run", "complete" if state == "complete" else _status_text(state)), ("source", Path(path).name),
            ("commit", commit), ("run date", when), ("environment", format_environment(parse_stamp(nb))),
            ("parameters", params)]
    summary = (f"Run record: {'complete' if state == 'complete' else state} · {commit.split(' ')[0]} · "
               f"{when.split(' (')[0]} · {params.rstrip('.').lower() if params.startswith('Default') else params}")
    return (_status_admonition(state) + f"<details class='lab-run'><summary>{html.escape(summary)}</summary>"
            + _meta_table(meta) + "</details>\n")


def stage_chapter(nb: nbformat.NotebookNode, path: Path, label: str,
                  margins: str | None = None, margins_png: Path | None = None) -> nbformat.NotebookNode:
    """A cleaned copy of an executed chapter for the report. It reads as the notebook does, question first: the title
    and its opening text, the run record folded under one line, the sections with their figures, then the claims once
    (a compact table with the details folded under it, and the margins chart) where the notebook prints its verdicts,
    and the conclusion. Parameters, validation and explorer cells, the claims' declaration and per-claim records,
    stderr, widgets and empty lab records are dropped; NBVAL comments removed; code folded (hide-input); figures
    captioned."""
    state = run_status(nb)
    claims = parse_claims(nb)
    header_cell = nbformat.v4.new_markdown_cell(run_record(nb, path), metadata={"tags": ["lab-run-header"]})
    block = f"**Claims of this run** — {_tally(claims, state)}\n\n" + compact_claims(claims) + "\n"
    if margins:
        block += "\n" + figure_block(
            margins, png_width(margins_png.read_bytes()) if margins_png and margins_png.is_file() else 0,
            f"margins of chapter {label}'s interval tests",
            f"Margins ({label}): how far each claim's 95% interval clears its threshold, relative to the "
            "threshold — green bars right of 0 pass, red bars left of it fail. Claims decided replicate by "
            "replicate have no interval and appear in the table only.") + "\n"
    claims_cell = nbformat.v4.new_markdown_cell(block, metadata={"tags": ["lab-claims"]})
    intro_cell = nbformat.v4.new_markdown_cell(
        f"*This chapter's {len(claims)} claims ({_kind_count(claims)}) are declared before the "
        f"data, with their tests and thresholds, in `notebooks/claims/{label}.yaml`; each is decided in the Claims "
        "section.*")
    cells, placed, claims_placed, figure_no = [], False, False, 0
    citations = citation_patterns() if BIBLIOGRAPHY.is_file() else []
    source_cells = list(nb.cells)
    for i, cell in enumerate(source_cells):
        if _drop_cell(cell):
            continue
        nxt = source_cells[i + 1] if i + 1 < len(source_cells) else None
        if (cell.cell_type == "markdown" and nxt is not None and _is_explorer(nxt) and not _has_error(nxt)
                and re.match(r"^#+ .*explorer", _text(cell.source).strip(), re.IGNORECASE)):
            continue  # the heading of an explorer the report leaves out
        cell = nbformat.from_dict(dict(cell))
        if cell.cell_type == "markdown":
            cell.source = cite(NOTE_FILE_RE.sub(_note_link, _text(cell.source)), citations)
            split = _split_title(cell) if not placed else None
            if split is not None:  # the title and its opening text (the question), then the run record
                cells.append(nbformat.v4.new_markdown_cell(split[0]))
                if split[1].strip():
                    cells.append(nbformat.v4.new_markdown_cell(split[1], metadata=dict(cell.metadata)))
                cells.append(header_cell)
                placed = True
                continue
            cells.append(cell)
            continue
        if cell.cell_type != "code":
            cells.append(cell)
            continue
        kinds = set() if _has_error(cell) else _claim_outputs(cell)
        if "intro" in kinds:
            cells.append(intro_cell)
            continue
        if "verdicts" in kinds:  # the verdict lines: the claims block takes their place
            cells.append(claims_cell)
            claims_placed = True
            continue
        cell.source = "\n".join(ln for ln in _text(cell.source).splitlines() if not NBVAL_LINE_RE.match(ln))
        tags = [t for t in cell.metadata.get("tags", []) if t not in ("nbval-skip", "skip-execution")]
        cell.metadata["tags"] = tags + ([] if "hide-input" in tags else ["hide-input"])
        outputs = [o for o in (_clean_output(o) for o in cell.get("outputs", [])) if o is not None]
        if "check" in kinds:  # the per-claim records repeat the table
            outputs = [o for o in outputs if "text/plain" not in o.get("data", {}) or len(o["data"]) > 1]
        name, captions = _png_name(cell) or "figure output", _captions(cell)
        if max((len(ln) for o in outputs if "image/png" not in o.get("data", {})
                for ln in _text(o.get("text") or o.get("data", {}).get("text/plain", "")).splitlines()),
               default=0) > TEXT_COLUMN_CHARS:  # a wide printout breaks out of the text column, not sideways
            cell.metadata["tags"] = [*cell.metadata["tags"], "full-width"]
        cell.outputs = []
        cells.append(cell)
        k = 0
        for out in outputs:  # each PNG in a cell of its own (no input shown): one numbered caption per figure
            if "image/png" not in out.get("data", {}):
                cells[-1].outputs.append(out)
                continue
            figure_no += 1
            what = captions[k] if k < len(captions) else (captions[0] if len(captions) == 1 else name)
            k += 1
            text = f"Figure {figure_no} ({label}): {what}"
            width = drawn_width(png_width(_text(out["data"]["image/png"])))  # shown at the size it was drawn
            image = {"alt": text, **({"width": f"{width}px"} if width else {})}
            cells.append(nbformat.v4.new_code_cell(f"# {text}", outputs=[out], metadata={  # myst-nb skips empty cells
                "tags": ["remove-input"] + (["full-width"] if width > TEXT_WIDTH_PX else []),
                "mystnb": {"figure": {"caption": text}, "image": image}}))
            cells.append(nbformat.v4.new_code_cell("# (continued)", metadata={"tags": ["remove-input"]}))
        if cells[-1].source == "# (continued)" and not cells[-1].outputs:
            cells.pop()  # the empty continuation after a cell's last figure
    if not claims_placed:
        cells.append(claims_cell)
    if not placed:
        cells.insert(0, header_cell)
    staged = nbformat.v4.new_notebook(cells=cells)
    staged.metadata = nbformat.from_dict({k: v for k, v in nb.metadata.items() if k in ("kernelspec", "language_info")})
    return staged


def _page_names(paths: list[Path]) -> list[str]:
    """One Sphinx page name per executed notebook: its stem with anything but letters, digits, '_' and '-' as
    '-' (a failed run's bad.failed.ipynb is bad-failed.html), made unique."""
    names: list[str] = []
    for p in paths:
        base = re.sub(r"[^A-Za-z0-9_-]", "-", p.stem) or "chapter"
        if base in ("index", "search", "genindex"):
            base = f"chapter-{base}"
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def _finding(chapter: str, claims: list[dict[str, Any]]) -> str:
    """The chapter's finding paragraph from this run's claims (lab.workbook.summary), or '' when it declares none
    or its template does not fit the run's numbers (a chapter run with other parameters may lack some)."""
    from lab.workbook.summary import summarize

    try:
        return summarize(chapter, claims)
    except (KeyError, ValueError, OSError):
        return ""


def _index_section(nb: nbformat.NotebookNode, path: Path, page: str, book: Path) -> str:
    """The index page's MyST section of one chapter: title, question, status, parameters, claims, key figure,
    link."""
    title, question = chapter_intro(nb)
    title = title or page
    state = run_status(nb)
    claims = parse_claims(nb)
    verdicts = ", ".join(f"{c['id']} {c['verdict'] or ('PASS' if c['passed'] else 'FAIL')}" for c in claims)
    parts = [f"({page}-summary)=\n## {title}\n", _status_admonition(state).rstrip()]
    if state != "complete":
        parts.append(f"**{_status_text(state)}**")
    parts.append(question)
    finding = _finding(path.name[:2], claims) if state == "complete" else ""
    if finding:
        parts.append(f"**What this run found.** {finding}")
    if run_parameters(nb):
        parts.append(f"*{_params_text(run_parameters(nb))}* Source: `{path.name}`.")
    other = [c for c in claims if (c.get("status") or ("PASS" if c["passed"] else "FAIL")) != "PASS"]
    parts.append(f"<p class='lab-tally'>{html.escape(_tally(claims, state))}"
                 + (f" ({html.escape(verdicts)})" if state != "complete" else
                    "".join(f"; {html.escape(c['id'])} {html.escape(str(c.get('status')))}" for c in other))
                 + "</p>")
    fig = _key_figure(nb, page, book / "figures" / page, path)
    if fig is not None:  # beside the text (floated right), opening at full size; right after the heading
        rel = fig.relative_to(book).as_posix()
        what = key_figure_caption(nb) or fig.name
        first = re.split(r"(?<=\.)\s", what, maxsplit=1)[0]
        parts.insert(1, f"```{{figure}} {rel}\n:figclass: lab-keyfig\n:width: 100%\n"
                        f":alt: key figure of {html.escape(title)}\n\n"
                        f"Key figure ({page}): {first} — click for full size\n```")
    parts.append(f"[Full chapter: {title}]({page}.ipynb)")
    return "\n\n".join(p for p in parts if p) + "\n"


# the bundled MathJax, copied to the report's mathjax/ (html_extra_path: Jupyter Book would load every .js under a
# static path as a script); Sphinx takes the path relative to _static/
MATHJAX = "../mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"
BIBLIOGRAPHY = NOTEBOOKS / "references.bib"  # every paper a chapter names, with its arXiv id or DOI


def citation_patterns(bib: Path = BIBLIOGRAPHY) -> list[tuple[re.Pattern[str], str]]:
    """(pattern, replacement) pairs that turn a chapter's 'Li et al. (2018)' into a textual citation of the entry and
    'Li et al. 2018' (inside parentheses) into a bare one, for every entry of the bibliography (sphinxcontrib-bibtex
    roles; author-year style). Names follow the entry's authors: 'Papyan', 'Moré & Wild', 'Li et al.'."""
    import codecs

    import latexcodec  # noqa: F401  (registers the 'ulatex' codec)
    from pybtex.database import parse_file

    out = []
    for key, entry in parse_file(str(bib)).entries.items():
        names = [codecs.decode(" ".join(p.last_names), "ulatex").replace("{", "").replace("}", "")
                 for p in entry.persons.get("author", [])]
        if not names:
            continue
        label = names[0] if len(names) == 1 else " & ".join(names) if len(names) == 2 else f"{names[0]} et al."
        year = str(entry.fields.get("year", ""))
        lab = re.escape(label).replace("\\ ", r"\s+")
        out.append((re.compile(rf"(?<![\w-]){lab}\s+\({year}\)"), f"{{cite:t}}`{key}`"))
        out.append((re.compile(rf"(?<![\w-]){lab},?\s+{year}(?!\d)"), f"{{cite:alp}}`{key}`"))
    return out


NOTE_FILE_RE = re.compile(r"`((\d{3})_[0-9a-f]{16}\.txt)`")  # a chapter's seed: a lab note's file name


def _note_link(m: re.Match[str]) -> str:
    """A lab note's file name in a chapter → 'lab note 001', linked to the note shipped with the report."""
    return f"<a href='_static/notes/{m[1]}'>lab note {m[2]}</a>"


def cite(text: str, patterns: list[tuple[re.Pattern[str], str]]) -> str:
    """A chapter's markdown with its author-year mentions turned into citations (code spans left alone)."""
    parts = re.split(r"(`[^`]*`)", text)
    for i in range(0, len(parts), 2):
        for pat, rep in patterns:
            parts[i] = pat.sub(rep, parts[i])
    return "".join(parts)


def mathjax_static() -> Path | None:
    """The MathJax 2 files jupyter-server-mathjax ships (a Jupyter project's package from PyPI), or None without it.
    Found without importing the package (which would import jupyter_server)."""
    import importlib.util

    spec = importlib.util.find_spec("jupyter_server_mathjax")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        if (Path(loc) / "static" / "MathJax.js").is_file():
            return Path(loc) / "static"
    return None


def book_config(title: str = TITLE) -> dict[str, Any]:
    """The Jupyter Book _config.yml: never execute, nothing from the network (no MathJax, thebe, launch or
    repository buttons, comments, analytics, search summaries, widget JavaScript), light mode, folded code."""
    theme = {"search_bar_text": "Search this report…", "use_download_button": False, "use_fullscreen_button": True,
             "use_repository_button": False, "use_issues_button": False, "use_edit_page_button": False,
             "use_source_button": False, "launch_buttons": {}, "repository_url": "", "home_page_in_toc": True,
             "show_navbar_depth": 1, "analytics": {}, "extra_footer": "", "announcement": "",
             "show_prev_next": True,
             "secondary_sidebar_items": {"**": ["page-toc"], "index": []}}  # the index uses the page's width
    return {
        "title": title, "author": "Loss-Landscape Lab", "copyright": "", "logo": "",
        "only_build_toc_files": True,
        "exclude_patterns": ["_build", "**.ipynb_checkpoints"],
        "execute": {"execute_notebooks": "off", "stderr_output": "remove"},
        "parse": {"myst_enable_extensions": ["colon_fence", "dollarmath"],
                  "myst_url_schemes": ["mailto", "http", "https"]},
        "html": {"use_repository_button": False, "use_issues_button": False, "use_edit_page_button": False,
                 "use_multitoc_numbering": False, "home_page_in_navbar": True, "baseurl": "",
                 "analytics": {}},
        "launch_buttons": {"thebe": False, "binderhub_url": "", "jupyterhub_url": "", "colab_url": "",
                           "deepnote_url": ""},
        "repository": {"url": "", "path_to_book": "", "branch": "main"},
        "latex": {"use_jupyterbook_latex": False},
        "sphinx": {"config": {
            "extensions": EXTENSIONS,
            "html_theme": "sphinx_book_theme",
            "html_theme_options": theme,
            "html_context": {"default_mode": "light"},
            "html_show_search_summary": False,
            "html_copy_source": False,
            "html_show_sourcelink": False,
            "html_last_updated_fmt": None,
            "html_static_path": ["_static"],
            "html_extra_path": ["_extra"],
            "bibtex_bibfiles": ["references.bib"],
            "bibtex_reference_style": "author_year",
            "bibtex_default_style": "unsrt",
            "mathjax_path": MATHJAX,  # the bundled MathJax 2 (lab.workbook.report.mathjax_static), never a CDN
            "mathjax2_config": {"messageStyle": "none", "showMathMenu": False,
                                # myst-nb marks notebook pages tex2jax_ignore: typeset Sphinx's math spans only
                                "tex2jax": {"inlineMath": [["\\(", "\\)"]], "displayMath": [["\\[", "\\]"]],
                                            "processEscapes": True, "processClass": "math|output_area",
                                            "ignoreClass": "tex2jax_ignore|mathjax_ignore"},
                                # the STIX-Web fonts it ships
                                "HTML-CSS": {"availableFonts": [], "preferredFont": None, "webFont": "STIX-Web",
                                             "imageFont": None}},
            "html_css_files": ["lab.css"],
            "nb_ipywidgets_js": {},
            "nb_output_stderr": "remove",
            "nb_execution_mode": "off",
            "numfig": False,
            "use_jupyterbook_latex": False,
            "use_multitoc_numbering": False,
            "suppress_warnings": ["myst.domains", "mystnb.unknown_mime_type"],
        }},
    }


NOTES = ROOT / "notes"                             # the lab notes, verbatim (lab note 000 ... 004)
SYNTHESIS = NOTEBOOKS / "claims" / "notes.yaml"    # the notes' questions → the claims that answer them
ANSWERS = ("confirmed", "refuted", "partly", "measured", "open")


def load_synthesis(path: Path = SYNTHESIS) -> list[dict[str, Any]]:
    """The synthesis declaration: one entry per question or conjecture of a lab note (note, says, answer, claims as
    'NN.Ck'). ValueError naming the entry when a field is missing or an answer or claim id is malformed."""
    import yaml

    entries = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    for i, e in enumerate(entries):
        where = f"{path.name} entry {i + 1}"
        if not isinstance(e, dict) or not {"note", "says", "answer", "claims"} <= set(e):
            raise ValueError(f"{where}: needs note, says, answer and claims")
        if e["answer"] not in ANSWERS:
            raise ValueError(f"{where}: answer {e['answer']!r}; allowed: {', '.join(ANSWERS)}")
        bad = [c for c in e["claims"] if not re.fullmatch(r"\d\d\.C\d+[a-z]?", str(c))]
        if bad or not e["claims"]:
            raise ValueError(f"{where}: claims must be a non-empty list of 'NN.Ck' ids, got {bad or e['claims']}")
    return entries


def synthesis_status(entry: dict[str, Any], claims: dict[str, dict[str, Any]]) -> str:
    """The answer this run gives to one entry: its declared answer when every claim it names PASSed; 'open: not run'
    when one is missing from the run, 'open: a claim failed' when one FAILed, 'not tested here' when one is NOT
    TESTED (no power, or a failed protocol check)."""
    states = [(claims.get(str(c)) or {}).get("status") for c in entry["claims"]]
    if any(st is None for st in states):
        return "open: not run"
    if any(st not in ("PASS", "NOT TESTED") for st in states):
        return "open: a claim failed"
    if "NOT TESTED" in states:
        return "not tested here"
    return str(entry["answer"])


def synthesis_table(claims: dict[str, dict[str, Any]], pages: dict[str, str], notes_href: str = "_static/notes",
                    path: Path = SYNTHESIS) -> str:
    """The index's synthesis: what each lab note said or asked → what this run found → where (HTML). `claims` maps
    'NN.Ck' to this run's claim records, `pages` a chapter number to its page."""
    files = {f.name[:3]: f.name for f in sorted(NOTES.glob("[0-9][0-9][0-9]_*.txt"))}
    rows = []
    for e in load_synthesis(path):
        if not any(str(c)[:2] in pages for c in e["claims"]):
            continue  # a report of some chapters only: the rows of the others are not this run's
        note = str(e["note"])
        status = synthesis_status(e, claims)
        cls = {"confirmed": "lab-PASS", "refuted": "lab-PASS", "measured": "lab-PASS", "partly": "lab-PASS",
               "not tested here": "lab-UNTESTED"}.get(status, "lab-FAIL")
        checks_only = all((claims.get(str(c)) or {}).get("kind") == "check" for c in e["claims"])
        where = ", ".join(
            f"<a href='{pages[c[:2]]}.html'>{html.escape(c[:2])} {html.escape(c[3:])}</a>" if c[:2] in pages
            else html.escape(c) for c in map(str, e["claims"]))
        link = (f"<a href='{notes_href}/{files[note]}'>lab note {html.escape(note)}</a>" if note in files
                else f"lab note {html.escape(note)}")
        rows.append(f"<tr><td>{link}</td><td>{html.escape(str(e['says']))}</td>"
                    f"<td class='{cls}'>{html.escape(status)}{' (by checks)' if checks_only else ''}</td>"
                    f"<td>{where}</td></tr>")
    return ("<table class='lab-table lab-synthesis'><thead><tr><th>note</th><th>the note says or asks</th>"
            "<th>this run</th><th>claims</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


ROBUSTNESS = ROOT / "results" / "robustness"   # the published robustness matrix (python -m lab robustness --publish)


def robustness_page(book: Path, source: Path = ROBUSTNESS) -> str | None:
    """The report's page on the published robustness matrix (its summary, heat map and per-claim table), written as
    robustness.md in the book; None when no matrix has been published."""
    import json

    summary, table = source / "conditions.json", source / "claims.md"
    if not summary.is_file() or not table.is_file():
        return None
    d = json.loads(summary.read_text(encoding="utf-8"))
    conds = "; ".join(f"{c['name']} (seeds {', '.join(map(str, c['seeds']))})" for c in d.get("conditions", []))
    skipped = "; ".join(f"{c[0]['name']}: {c[1]}" for c in d.get("skipped", []))
    when = git_output("log", "-1", "--format=%cd", "--date=format:%Y-%m-%d", "--", str(summary)) or "not recorded"
    passed = d.get("verdicts", 0) - d.get("fails", 0) - d.get("not_tested", 0)  # NOT TESTED is not a PASS
    flipping = ", ".join(map(str, d.get("flipping_claims") or [])) or "none"
    lines = ["# Robustness matrix", "",
             "Every chapter re-run over seeds and numeric conditions (CPU kernels via `ATEN_CPU_CAPABILITY`, threads),"
             " each claim decided in each run. This is the last **published** matrix (`results/robustness/`, "
             f"published {when}), not this report's runs: `make robustness` reruns it.", "",
             f"**{passed} of {d.get('verdicts', 0)} verdicts PASS** over {d.get('runs', '?')} chapter runs "
             f"({d.get('distinct_runs', '?')} distinct; {d.get('failed_runs', 0)} failed), on a CPU whose own kernels "
             f"are {d.get('native_kernels', '?')}. Claims that flip between runs: {flipping}.", "",
             f"Conditions: {conds}." + (f" Skipped: {skipped}." if skipped else ""), ""]
    if (source / "matrix.png").is_file():
        dest = book / "figures" / "robustness" / "matrix.png"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / "matrix.png", dest)
        lines += ["```{figure} figures/robustness/matrix.png", ":width: 100%", ":alt: the robustness matrix", "",
                  "The robustness matrix: share of runs in which each claim (rows) holds, per condition (columns).",
                  "```", ""]
    held = re.compile(r"\|\s*(\d+)/(\d+)\s*\|\s*$")  # the last column: runs where the claim holds
    rows = [ln for ln in table.read_text(encoding="utf-8").splitlines() if held.search(ln)]
    shaky = [ln for ln in rows if (m := held.search(ln)) and m[1] != m[2]]
    lines += [f"{len(rows) - len(shaky)} of {len(rows)} claims hold in every run of the matrix."
              + (" The others:" if shaky else "") + "\n"]
    if shaky:
        head = [ln for ln in table.read_text(encoding="utf-8").splitlines() if ln.startswith("|")][:2]
        lines += [*head, *shaky, ""]
    (book / "robustness.md").write_text("\n".join(lines), encoding="utf-8")
    return "robustness"


def _write_book(executed: list[Path], book: Path) -> None:
    """Stage the book in `book`: _config.yml, _toc.yml, index.md, one cleaned notebook per chapter, key figures,
    the stylesheet."""
    import yaml

    (book / "_static").mkdir(parents=True)
    (book / "_static" / "lab.css").write_text(_CSS, encoding="utf-8")
    shutil.copytree(FONTS, book / "_static" / "fonts", ignore=shutil.ignore_patterns("*.md"))
    mathjax = mathjax_static()
    if mathjax is None:
        raise RuntimeError("the report renders its maths with the MathJax that jupyter-server-mathjax ships: "
                           "pip install jupyter-server-mathjax (make install does)")
    shutil.copytree(mathjax, book / "_extra" / "mathjax",
                    ignore=shutil.ignore_patterns("SVG", "a11y", "localization", "*.map"))
    pages = _page_names(executed)
    built = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    sections, every, by_id, page_of = [], [], {}, {}
    for path, page in zip(executed, pages, strict=True):
        nb = nbformat.read(path, as_version=4)
        label = (nb.metadata.get("lab") or {}).get("chapter") or page.split("_", 1)[0]
        if run_status(nb) == "complete":  # an incomplete run's claims are not counted
            every += parse_claims(nb)
            by_id.update({f"{label}.{c['id']}": c for c in parse_claims(nb)})
        page_of.setdefault(str(label), page)
        chart = margin_chart(parse_claims(nb), book / "figures" / page / "margins.png", str(label))
        nbformat.write(stage_chapter(nb, path, str(label), chart.relative_to(book).as_posix() if chart else None,
                                     chart), book / f"{page}.ipynb")
        sections.append(_index_section(nb, path, page, book))
    robust = robustness_page(book)
    refs = None
    if BIBLIOGRAPHY.is_file():
        shutil.copy2(BIBLIOGRAPHY, book / "references.bib")
        (book / "references.md").write_text(
            "# References\n\nEvery paper the chapters name (`notebooks/references.bib`), with its arXiv identifier or "
            "DOI; the chapters link each mention here.\n\n```{bibliography}\n:all:\n```\n", encoding="utf-8")
        refs = "references"
    if NOTES.is_dir():
        shutil.copytree(NOTES, book / "_static" / "notes")
    synthesis = ""
    if SYNTHESIS.is_file() and any(str(c)[:2] in page_of for e in load_synthesis() for c in e["claims"]):
        synthesis = ("## What the lab notes asked, and what this run found\n\n"
                     "Each row is a question or conjecture of one of the five lab notes (linked, verbatim) and the "
                     "answer this run's claims give: the declared answer when every claim named PASSes, *not tested "
                     "here* when one lacked the power to see the alternative, *open* when one failed or did not run "
                     "(declared in `notebooks/claims/notes.yaml`).\n\n"
                     + synthesis_table(by_id, page_of) + "\n\n")
    index = (f"# {TITLE}\n\n<div class='lab-index'></div>\n\n{WORKBOOK_QUESTION}\n\n*Built {built} from "
             f"{len(executed)} executed chapter(s); nothing was re-executed. Code is folded: open a cell's input with "
             f"its toggle. The whole report as one PDF: <a href='{PDF_NAME}'>{PDF_NAME}</a>.*\n\n"
             + f"**{_kind_count(every)}** — {tally_text(every)}. A *finding* is a property of networks or training "
             "that could have come out otherwise (it names the alternative it rules out); a *check* is an identity, "
             "an implementation test or a protocol gate the measurements depend on; NOT TESTED marks a refutation "
             "whose test could not have seen the alternative at this size (no power) or a claim whose protocol "
             "check failed."
             + (f" [The robustness matrix]({robust}.md) re-runs every claim over seeds, CPU kernels and threads."
                if robust else "") + "\n\n"
             + synthesis + "## The chapters\n\n" + "\n".join(s.replace("\n## ", "\n### ", 1) for s in sections))
    (book / "index.md").write_text(index, encoding="utf-8")
    toc = {"format": "jb-book", "root": "index",
           "chapters": [{"file": p} for p in pages + [x for x in (robust, refs) if x]]}
    (book / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False), encoding="utf-8")
    (book / "_config.yml").write_text(yaml.safe_dump(book_config(), sort_keys=False, allow_unicode=True),
                                      encoding="utf-8")


def _run_build(book: Path, out: Path) -> Path:
    """Build the staged book with Jupyter Book (html, fresh, in a child Python); return the html folder."""
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build", str(book),
           "--path-output", str(out), "--builder", "html", "--all"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT, env=env, cwd=book)
    html_dir = out / "_build" / "html"
    if r.returncode != 0 or not (html_dir / "index.html").is_file():
        tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"the Jupyter Book build of the report failed (exit {r.returncode}):\n{tail}")
    return html_dir


def _replace_report(html_dir: Path, out_dir: Path) -> None:
    """Put the built html at out_dir: copied next to it first, then swapped in (the old report renamed aside and
    removed last). An existing out_dir that is neither empty nor a report (REPORT_MARK, or the index.html of the
    earlier plain report) is not ours to replace: ValueError."""
    import os
    import tempfile

    out_dir = Path(out_dir)
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ValueError(f"refusing to replace {out_dir}: it is a file, not a report folder")
        ours = (out_dir / REPORT_MARK).exists() or (out_dir / "index.html").exists() or not any(out_dir.iterdir())
        if not ours:
            raise ValueError(f"refusing to replace {out_dir}: it holds files and no lab report ({REPORT_MARK})")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    new = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".new", dir=out_dir.parent))
    old = None
    try:
        staged = new / "html"
        shutil.copytree(html_dir, staged, ignore=shutil.ignore_patterns(".buildinfo", ".doctrees", "*.map"))
        (staged / REPORT_MARK).write_text("built by lab.workbook.report.build_report\n", encoding="utf-8")
        if out_dir.exists():
            old = new / "old"
            os.replace(out_dir, old)
        os.replace(staged, out_dir)
    except BaseException:
        if old is not None and not out_dir.exists():
            os.replace(old, out_dir)  # put the previous report back
        raise
    finally:
        shutil.rmtree(new, ignore_errors=True)


CHROMIUM = Path("/usr/bin/chromium")  # Debian's; playwright drives it and downloads no browser of its own
PDF_NAME = "lab-report.pdf"


def print_pdf(html_dir: Path, pages: list[str], dest: Path, chromium: Path = CHROMIUM) -> Path | None:
    """Print the built pages (in reading order: index, chapters, robustness, references) with headless Chromium's
    print-to-PDF after MathJax has typeset them, and join them into one PDF at dest (A4, the print stylesheet: no
    sidebars, code folded). No TeX needed. Returns dest, or None (with a warning) when Chromium or playwright is
    missing."""
    import tempfile
    import warnings

    try:
        from playwright.sync_api import sync_playwright
        from pypdf import PdfWriter
    except ImportError as e:
        warnings.warn(f"no PDF of the report: {e.name} is not installed (make install installs it)", stacklevel=2)
        return None
    if not chromium.exists():
        warnings.warn(f"no PDF of the report: no browser at {chromium} (apt-get install chromium)", stacklevel=2)
        return None
    writer = PdfWriter()
    with tempfile.TemporaryDirectory(prefix="lab-pdf-") as tmp, sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(Path(tmp) / "profile", executable_path=str(chromium),
                                                    headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = ctx.new_page()
            page.emulate_media(media="print")
            for i, name in enumerate(pages):
                path = html_dir / f"{name}.html"
                if not path.is_file():
                    continue
                page.goto(path.resolve().as_uri(), wait_until="load")
                page.wait_for_function("() => !window.MathJax || (MathJax.isReady && MathJax.Hub.queue.pending === 0"
                                       " && MathJax.Hub.queue.running === 0)", timeout=30_000)
                part = Path(tmp) / f"{i:03d}.pdf"
                page.pdf(path=str(part), format="A4", print_background=True,
                         margin={"top": "14mm", "bottom": "14mm", "left": "12mm", "right": "12mm"})
                writer.append(str(part))
        finally:
            ctx.close()
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(dest, "wb") as f:
            writer.write(f)
    return dest


def build_report(executed: list[Path], out_dir: Path = REPORT) -> Path:
    """Build the lab report with Jupyter Book from executed chapters (never re-executed) into out_dir: index.html
    (each chapter's question, claims, verdicts, numbers and key figure) and one page per chapter; return the index
    path. The book is staged and built in a temporary folder, then swapped in for out_dir's previous report."""
    import tempfile

    executed = sorted(Path(p) for p in executed)
    if not executed:
        raise ValueError("no executed chapters to report")
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="lab-report-") as tmp:
        book = Path(tmp) / "book"
        _write_book(executed, book)
        html_dir = _run_build(book, Path(tmp) / "out")
        import yaml

        toc = yaml.safe_load((book / "_toc.yml").read_text(encoding="utf-8"))
        print_pdf(html_dir, ["index", *(c["file"] for c in toc.get("chapters", []))], html_dir / PDF_NAME)
        _replace_report(html_dir, out_dir)
    return out_dir / "index.html"


def preview_report(out_dir: Path | None = None) -> Path:
    """Build the report from the committed, executed chapters (notebooks/NN_*.ipynb) into runs/report-preview/
    (or out_dir); return the index path. Nothing is executed."""
    from lab.workbook.paths import RUNS

    chapters = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if not chapters:
        raise ValueError(f"no chapters found in {NOTEBOOKS}")
    return build_report(chapters, RUNS / "report-preview" if out_dir is None else out_dir)


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
