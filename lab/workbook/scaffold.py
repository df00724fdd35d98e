"""Start a chapter from notebooks/template.ipynb: `python -m lab new 07 flatness`, or `make new NB=07 NAME=flatness`."""
from __future__ import annotations

import re
from pathlib import Path

import nbformat

from lab.workbook.paths import NOTEBOOKS

TEMPLATE = "template.ipynb"  # in NOTEBOOKS; outside the chapter glob, so no runner, report or nbval treats it as one
PLACEHOLDER = re.compile(r"\bNN\b")  # the chapter number in the template: title, CH, figures/NN/, NB=NN
TITLE = re.compile(r"^# NN · Title$", re.M)
NAME = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")  # a lowercase identifier; no "__" (runs/<stem>__<params>)
_VOLATILE = ("papermill", "execution", "collapsed", "scrolled")


def _check_number(number: str, folder: Path) -> None:
    """Refuse a number that is not two digits 01..99 or that an existing chapter already has."""
    if not isinstance(number, str) or not re.fullmatch(r"[0-9]{2}", number) or number == "00":
        raise ValueError(f"parameter 'number' = {number!r} is not allowed: expected two digits from '01' to '99', "
                         "e.g. '07'")
    taken = sorted(p.name for p in folder.glob(f"{number}_*.ipynb"))
    if taken:
        used = {p.name[:2] for p in folder.glob("[0-9][0-9]_*.ipynb")}
        free = next((f"{i:02d}" for i in range(1, 100) if f"{i:02d}" not in used), None)
        raise ValueError(f"parameter 'number' = {number!r} is not allowed: chapter {number} exists ({taken[0]})"
                         + (f"; the next free number is {free}" if free else ""))


def _check_name(name: str) -> None:
    """Refuse a name that is not a lowercase identifier (letters, digits, single underscores)."""
    if not isinstance(name, str) or not NAME.fullmatch(name) or len(name) > 60:
        raise ValueError(f"parameter 'name' = {name!r} is not allowed: expected a lowercase identifier of at most "
                         "60 characters (letters, digits and single underscores, starting with a letter), "
                         "e.g. 'flatness'")


def new_chapter(number: str, name: str) -> Path:
    """Create notebooks/<number>_<name>.ipynb from notebooks/template.ipynb (and its claims,
    notebooks/claims/<number>.yaml, from notebooks/claims/NN.yaml) and return its path.

    The number is filled into the title, `CH` and the figure folder (figures/<number>/), the title gets the name;
    every cell gets a fresh id (c<number>-00, c<number>-01, ...) and no outputs or execution counts. Nothing is
    overwritten: a number already taken, a bad number or name stops with a ValueError naming the parameter.

    Args:
        number: the chapter's two digits, "01" … "99", not used by another chapter.
        name: a lowercase identifier, e.g. "flatness" (the file is notebooks/07_flatness.ipynb).

    Returns:
        The path of the new notebook.

    Example:
        >>> new_chapter("7", "flatness")
        Traceback (most recent call last):
        ...
        ValueError: parameter 'number' = '7' is not allowed: expected two digits from '01' to '99', e.g. '07'
    """
    folder = Path(NOTEBOOKS)
    _check_number(number, folder)
    _check_name(name)
    template = folder / TEMPLATE
    if not template.is_file():
        raise FileNotFoundError(f"no chapter template at {template}")
    nb = nbformat.read(template, as_version=4)
    if not nb.cells or not TITLE.search(nb.cells[0].source):
        raise ValueError(f"{template.name}: its first cell must start with the title placeholder '# NN · Title'")
    nb.cells[0].source = TITLE.sub(f"# NN · {name.replace('_', ' ').capitalize()}", nb.cells[0].source, count=1)
    for i, cell in enumerate(nb.cells):
        cell.source = PLACEHOLDER.sub(number, cell.source)
        cell["id"] = f"c{number}-{i:02d}"
        for key in _VOLATILE:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    lab_meta = nb.metadata.get("lab", {})
    if "key_figure" in lab_meta:
        lab_meta["key_figure"] = PLACEHOLDER.sub(number, lab_meta["key_figure"])
    nb.metadata.pop("papermill", None)
    nbformat.validate(nb)
    path = folder / f"{number}_{name}.ipynb"
    claims_src, claims_dst = folder / "claims" / "NN.yaml", folder / "claims" / f"{number}.yaml"
    if claims_dst.exists():
        raise ValueError(f"parameter 'number' = {number!r} is not allowed: {claims_dst} exists (another chapter's "
                         "claims)")
    try:
        with path.open("x", encoding="utf-8") as fh:  # exclusive: never overwrites, even when raced
            fh.write(nbformat.writes(nb))
    except FileExistsError:
        raise ValueError(f"parameter 'name' = {name!r} is not allowed: {path.name} exists") from None
    if claims_src.is_file():  # the template's claims, to be replaced by the chapter's own
        claims_dst.parent.mkdir(parents=True, exist_ok=True)
        with claims_dst.open("x", encoding="utf-8") as fh:
            fh.write(claims_src.read_text(encoding="utf-8").replace("chapter: NN", f"chapter: '{number}'", 1))
    return path
