"""The Jupyter Book report in a real browser: Debian's headless Chromium, driven by playwright (which downloads no
browser of its own), loads every page over file:// with no network and finds no console error, no failed request,
no broken image and no internal link to a missing file. Screenshots go to runs/report-screens/ (git-ignored)."""
from __future__ import annotations

import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from lab.workbook import runner
from lab.workbook.paths import RUNS
from lab.workbook.report import CHROMIUM, build_report

FIXTURES = Path(__file__).parent.parent / "fixtures"
SCREENS = RUNS / "report-screens"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no browser: {CHROMIUM} is absent (make test installs "
                                "Debian's chromium where it can: apt-get install chromium)")


def check_pages(index: Path, screens: Path | None = None, prefix: str = "") -> dict[str, dict]:
    """Load index.html and every page it reaches in headless Chromium; return, per page, its console errors,
    failed or external requests, broken images and internal links to missing files (all empty when it is sound).
    With `screens`, save a full-page screenshot of each page there."""
    from playwright.sync_api import sync_playwright

    root = index.parent.resolve()
    pages = [root / "index.html"] + sorted(p for p in root.glob("*.html") if p.name != "index.html")
    found: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="lab-chromium-") as profile, sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(profile, executable_path=str(CHROMIUM), headless=True,
                                                    args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 900})
        try:
            for path in pages:
                problems: dict[str, list] = {"console": [], "requests": [], "images": [], "links": []}
                page = ctx.new_page()
                page.on("console", lambda m, p=problems: p["console"].append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e, p=problems: p["console"].append(str(e)))
                page.on("requestfailed", lambda r, p=problems: p["requests"].append(f"{r.url}: {r.failure}"))
                page.on("request", lambda r, p=problems: None if r.url.startswith(("file:", "data:", "about:"))
                        else p["requests"].append(f"external: {r.url}"))
                page.goto(path.as_uri(), wait_until="load")
                page.wait_for_timeout(150)  # deferred theme scripts
                images = page.eval_on_selector_all(
                    "img", "els => els.map(i => [i.currentSrc || i.src, i.complete, i.naturalWidth])")
                problems["images"] = [src for src, complete, width in images if not complete or width <= 0]
                hrefs = page.eval_on_selector_all("a[href]", "els => els.map(a => a.href)")
                for href in hrefs:
                    url = urlsplit(href)
                    if url.scheme != "file":
                        continue
                    target = Path(unquote(url.path))
                    if not target.exists():
                        problems["links"].append(href)
                    elif url.fragment and target.resolve() == path and not page.query_selector(
                            f"[id='{unquote(url.fragment)}']"):
                        problems["links"].append(href)
                if screens is not None:
                    screens.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(screens / f"{prefix}{path.stem}.png"), full_page=True)
                found[path.name] = {**problems, "images_seen": len(images), "links_seen": len(hrefs)}
                page.close()
        finally:
            ctx.close()
    return found


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A report of two fixture chapters (prev/next between them; one with a figure, a progress bar, stderr and an
    explorer), built once."""
    runs = tmp_path_factory.mktemp("runs")
    executed = [runner.run_chapter(FIXTURES / "fixture.ipynb", out_dir=runs, progress=False),
                runner.run_chapter(FIXTURES / "98_report.ipynb", out_dir=runs, progress=False)]
    return build_report(executed, out_dir=tmp_path_factory.mktemp("report"))


def test_every_page_loads_offline_with_no_error(report: Path) -> None:
    found = check_pages(report, SCREENS, prefix="fixture-")
    assert {"index.html", "fixture.html", "98_report.html"} <= set(found)
    for name, problems in found.items():
        for kind in ("console", "requests", "images", "links"):
            assert problems[kind] == [], f"{name}: {kind}: {problems[kind]}"
    assert found["index.html"]["images_seen"] >= 1  # the key figure, and it decoded
    assert found["98_report.html"]["images_seen"] >= 1
    assert (SCREENS / "fixture-index.png").stat().st_size > 0


def test_pages_link_prev_and_next_and_open_the_key_figure_full_size(report: Path) -> None:
    root = report.parent
    index = report.read_text(encoding="utf-8")
    first = (root / "98_report.html").read_text(encoding="utf-8")
    second = (root / "fixture.html").read_text(encoding="utf-8")
    assert 'class="right-next"' in index and 'href="98_report.html"' in index
    assert 'class="left-prev"' in first and 'class="right-next"' in first and 'href="fixture.html"' in first
    assert 'class="left-prev"' in second and 'href="98_report.html"' in second
    assert '<a class="reference internal image-reference" href="_images/slope_line.png">' in index
    assert (root / "_images" / "slope_line.png").is_file()
    assert "Figure 1 (98): The line rises with slope 2: what to see." in first  # save_fig's caption, numbered
    assert "Key figure (98_report): The line rises with slope 2" in index
    for gone in ("stderr-output", "progress-marker: ", "it/s]", "explorer-marker", "Explorer", "validated x=",
                 "NBVAL_"):
        assert gone not in first, gone  # stderr, the tqdm widget, the explorer, the validation cell, nbval markers
    for page in (index, first, second):  # nothing from a CDN (MathJax is bundled, on pages with maths), no thebe
        assert "https://" not in "".join(ln for ln in page.splitlines() if "<script" in ln or "<link" in ln)
        assert "mathjax.js" not in page.lower() and "thebe" not in page.lower()


def _layout(index: Path) -> dict[str, dict]:
    """Per page of a built report, at a 1,400 px window: its height, where the question, the run record and the
    first table sit, each figure's displayed and drawn width, printed outputs wider than their box, raw LaTeX."""
    from playwright.sync_api import sync_playwright

    from lab.workbook.report import drawn_width

    root = index.parent.resolve()
    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="lab-chromium-") as profile, sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(profile, executable_path=str(CHROMIUM), headless=True,
                                                    args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 900})
        try:
            page = ctx.new_page()
            for path in [root / "index.html", *sorted(root.glob("[0-9][0-9]_*.html"))]:
                page.goto(path.as_uri(), wait_until="load")
                page.wait_for_function("() => !window.MathJax || (MathJax.isReady && MathJax.Hub.queue.pending === 0"
                                       " && MathJax.Hub.queue.running === 0)", timeout=20_000)
                m = page.evaluate("""() => {
                  const top = s => { const e = document.querySelector(s); return e ? e.getBoundingClientRect().top
                                     + window.scrollY : null; };
                  return {height: document.documentElement.scrollHeight,
                          question: top('article h1 ~ p, article h1 + p, article section > p'),
                          record: top('details.lab-run'), table: top('article table'),
                          figures: [...document.querySelectorAll('article .cell_output img')].map(
                            i => [i.naturalWidth, i.getBoundingClientRect().width]),
                          sideways: [...document.querySelectorAll('article .cell_output pre')]
                            .filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.textContent.slice(0, 60)),
                          latex: (document.querySelector('article').innerText.match(
                            /\\$[^$\\n]*\\\\[a-z]+|\\\\\\(|\\\\\\[/g) || [])};
                }""")
                m["figures"] = [(n, w, drawn_width(n)) for n, w in m["figures"]]
                out[path.name] = m
        finally:
            ctx.close()
    return out


@pytest.fixture(scope="module")
def workbook_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report built from the committed, executed chapters (nothing executed: make report-preview)."""
    from lab.workbook.report import preview_report

    return preview_report(tmp_path_factory.mktemp("preview"))


def test_the_workbook_report_reads_as_a_report(workbook_report: Path) -> None:
    """#32's layout, measured in Chromium at 1,400 px on the real chapters: the index (the workbook's abstract, with
    the synthesis table and no claims tables) fits in 9,000 px; every chapter page opens with its question before the
    run record and before any table; figures show at the size they were drawn (or as wide as the page allows: never
    shrunk below 1,000 px when drawn wider); no printed output scrolls sideways; no raw LaTeX."""
    pages = _layout(workbook_report)
    index = pages.pop("index.html")
    assert index["height"] <= 9000, index["height"]
    assert "lab-claims" not in workbook_report.read_text(encoding="utf-8")
    assert "lab-synthesis" in workbook_report.read_text(encoding="utf-8")
    assert len(pages) >= 8
    for name, m in pages.items():
        assert m["question"] is not None and m["question"] < m["record"] < m["table"], (name, m)
        for natural, shown, drawn in m["figures"]:
            assert shown >= min(drawn, 1000) - 2, (name, natural, shown, drawn)
        assert m["sideways"] == [], (name, m["sideways"])
        assert m["latex"] == [], (name, m["latex"])
    pdf = workbook_report.parent / "lab-report.pdf"  # the whole report, printed by Chromium (no TeX)
    from pypdf import PdfReader

    assert len(PdfReader(pdf).pages) >= 2 * len(pages)
    assert "lab-report.pdf" in workbook_report.read_text(encoding="utf-8")
    found = check_pages(workbook_report)  # every link (lab notes, references, the PDF) and image resolves
    for name, problems in found.items():
        assert problems["links"] == [] and problems["images"] == [], (name, problems["links"], problems["images"])
    mathjax = (workbook_report.parent / "08_low_precision.html").read_text(encoding="utf-8")
    assert 'src="_static/../mathjax/MathJax.js' in mathjax  # typeset offline by the bundled MathJax
    assert (workbook_report.parent / "mathjax" / "MathJax.js").is_file()
