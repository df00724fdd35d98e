"""Progress bars for long loops: tqdm when it is installed (the workbook installs it), else none."""
from __future__ import annotations

from collections.abc import Iterable


def progress_bar(it: Iterable, desc: str = "", disable: bool = False, leave: bool = False) -> Iterable:
    """`it`, wrapped in a tqdm bar unless disabled or tqdm is missing (the library needs only torch, numpy, scipy)."""
    if disable:
        return it
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - optional
        return it
    return tqdm(it, desc=desc, leave=leave)
