"""One house style for figures, a saver that writes figures/<chapter>/<name>.png (and declares the chapter's key
figure), and the plots several chapters draw."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from lab.workbook.paths import figure_dir

DPI = 120
KEY_FIGURE_MIMETYPE = "application/vnd.lab.key-figure+json"


def style() -> None:
    """Apply the workbook's plotting style (seaborn whitegrid, readable sizes)."""
    sns.set_theme(style="whitegrid", context="notebook", palette="colorblind")
    plt.rcParams.update({"figure.dpi": 90, "savefig.dpi": DPI, "axes.titlesize": 11, "axes.labelsize": 10,
                         "legend.fontsize": 8, "figure.autolayout": False})


def _declare_key(chapter: str, name: str) -> None:
    """Display the key-figure record (figures/<chapter>/<name>.png) in the run's outputs, where the report reads it."""
    record = {"chapter": chapter, "path": f"figures/{chapter}/{name}.png"}
    try:
        from IPython import get_ipython
        from IPython.display import display
        if get_ipython() is not None:
            display({KEY_FIGURE_MIMETYPE: record, "text/plain": ""}, raw=True)
    except ImportError:  # pragma: no cover
        pass


def save_fig(fig: plt.Figure, chapter: str, name: str, key: bool = False) -> Path:
    """Save fig as figures/<chapter>/<name>.png at the house dpi; return the path.

    `key=True` declares it the chapter's key figure: the one the README and the report's index show (exactly one
    per chapter; tests/workbook/test_notebooks.py checks it).
    """
    if not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"figure name {name!r}: use letters, digits, '_' and '-' only")
    path = figure_dir(chapter) / f"{name}.png"
    fig.savefig(path, dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    if key:
        _declare_key(chapter, name)
    return path


def loss_contourf(ax: plt.Axes, surf, levels: int = 30, cmap: str = "viridis", label: str = "log10 loss"):
    """Filled contours of log10 of a surface's loss (a `lab.landscape.Surface`) on ax, with a colour bar; returns
    the contour set. Axes labels are the caller's (they name the directions)."""
    cs = ax.contourf(surf.a, surf.b, np.log10(surf.loss), levels=levels, cmap=cmap)
    ax.figure.colorbar(cs, ax=ax, label=label)
    return cs


__all__ = ["DPI", "KEY_FIGURE_MIMETYPE", "style", "save_fig", "loss_contourf"]
