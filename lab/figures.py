"""One house style for figures and a saver that writes figures/<chapter>/<name>.png."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import seaborn as sns

from lab.paths import figure_dir

DPI = 120


def style() -> None:
    """Apply the workbook's plotting style (seaborn whitegrid, readable sizes)."""
    sns.set_theme(style="whitegrid", context="notebook", palette="colorblind")
    plt.rcParams.update({"figure.dpi": 90, "savefig.dpi": DPI, "axes.titlesize": 11, "axes.labelsize": 10,
                         "legend.fontsize": 8, "figure.autolayout": False})


def save_fig(fig: plt.Figure, chapter: str, name: str) -> Path:
    """Save fig as figures/<chapter>/<name>.png at the house dpi; return the path."""
    if not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"figure name {name!r}: use letters, digits, '_' and '-' only")
    path = figure_dir(chapter) / f"{name}.png"
    fig.savefig(path, dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    return path
