"""Saving the science's results with their metadata (the library itself writes no files)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lab.landscape.surfaces import Surface


def save_surface(surf: Surface, path: str | Path) -> Path:
    """Write a surface's coordinates, values and metadata (JSON) to an .npz file; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, a=surf.a, b=surf.b, loss=surf.loss, meta=json.dumps(surf.meta))
    return path


def load_surface(path: str | Path) -> Surface:
    """Read a surface written by save_surface."""
    z = np.load(path, allow_pickle=False)
    return Surface(z["a"], z["b"], z["loss"], json.loads(str(z["meta"])))
