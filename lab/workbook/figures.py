"""One house style for figures, a saver that writes figures/<chapter>/<name>.png (and declares the chapter's key
figure), and the plots several chapters draw."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from lab.workbook.paths import figure_dir

DPI = 120
KEY_FIGURE_MIMETYPE = "application/vnd.lab.key-figure+json"
FIGURE_MIMETYPE = "application/vnd.lab.figure+json"   # a figure's caption, where the report reads it
# Okabe & Ito's colour-blind-safe palette (its yellow swapped for grey, which is readable on white)
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#999999")
LINESTYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LOG10_LOSS = r"$\log_{10} L$  ($L$ in nats)"


def style() -> None:
    """Apply the workbook's plotting style (seaborn whitegrid, readable sizes)."""
    sns.set_theme(style="whitegrid", context="notebook", palette="colorblind")
    plt.rcParams.update({"figure.dpi": 90, "savefig.dpi": DPI, "axes.titlesize": 11, "axes.labelsize": 10,
                         "legend.fontsize": 8, "figure.autolayout": False})


def _declare(mimetype: str, record: dict) -> None:
    """Display a figure record in the run's outputs, where the report reads it (nothing outside IPython)."""
    try:
        from IPython import get_ipython
        from IPython.display import display
        if get_ipython() is not None:
            display({mimetype: record, "text/plain": ""}, raw=True)
    except ImportError:  # pragma: no cover
        pass


def save_fig(fig: plt.Figure, chapter: str, name: str, key: bool = False, caption: str = "") -> Path:
    """Save fig as figures/<chapter>/<name>.png at the house dpi; return the path.

    `key=True` declares it the chapter's key figure: the one the README and the report's index show (exactly one
    per chapter; tests/workbook/test_notebooks.py checks it). `caption` says what to see in it: the report prints
    it under the figure, numbered.
    """
    if not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"figure name {name!r}: use letters, digits, '_' and '-' only")
    path = figure_dir(chapter) / f"{name}.png"
    fig.savefig(path, dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    rel = f"figures/{chapter}/{name}.png"
    if caption:
        _declare(FIGURE_MIMETYPE, {"chapter": chapter, "path": rel, "caption": str(caption)})
    if key:
        _declare(KEY_FIGURE_MIMETYPE, {"chapter": chapter, "path": rel, **({"caption": caption} if caption else {})})
    return path


def loss_contourf(ax: plt.Axes, surf, levels: int | np.ndarray = 30, cmap: str = "viridis",
                  label: str = LOG10_LOSS, colorbar: bool = True):
    """Filled contours of log10 of a surface's loss (a `lab.landscape.Surface`) on ax, with a colour bar unless
    `colorbar=False`; returns the contour set. `levels` may be an array (see `shared_levels`) so that several panels
    share one colour scale. Axes labels are the caller's (they name the directions)."""
    cs = ax.contourf(surf.a, surf.b, np.log10(surf.loss), levels=levels, cmap=cmap)
    if colorbar:
        ax.figure.colorbar(cs, ax=ax, label=label)
    return cs


def shared_levels(surfaces, n: int = 30) -> np.ndarray:
    """About n contour levels of log10 loss, at round values, spanning every given surface: one colour scale for
    several panels."""
    logs = [np.log10(np.asarray(s.loss, dtype=float)) for s in surfaces]
    lo = min(float(np.nanmin(v[np.isfinite(v)])) for v in logs)
    hi = max(float(np.nanmax(v[np.isfinite(v)])) for v in logs)
    return MaxNLocator(n).tick_values(lo, hi if hi > lo else lo + 1e-12)   # round numbers on the colour bar


def distinct_styles(n: int) -> list[dict]:
    """n line styles that stay apart without colour vision: the Okabe–Ito colour-blind-safe palette together with
    cycled line styles and markers (keys color, ls, marker: pass them to ax.plot)."""
    shift = [i + i // len(OKABE_ITO) for i in range(n)]   # past 8 colours, the styles shift: no two entries alike
    return [dict(color=OKABE_ITO[i % len(OKABE_ITO)], ls=LINESTYLES[k % len(LINESTYLES)],
                 marker=MARKERS[k % len(MARKERS)]) for i, k in zip(range(n), shift, strict=True)]


__all__ = ["DPI", "KEY_FIGURE_MIMETYPE", "FIGURE_MIMETYPE", "OKABE_ITO", "LINESTYLES", "MARKERS", "LOG10_LOSS",
           "style", "save_fig", "loss_contourf", "shared_levels", "distinct_styles"]
