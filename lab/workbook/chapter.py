"""One call starts a chapter: validate its parameters, seed every generator, choose the device, apply the house
style and show the environment stamp."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from lab.stats import replicate_seeds
from lab.workbook import repro
from lab.workbook.figures import style
from lab.workbook.validate import Rule, validate


@dataclass
class Chapter:
    """A started chapter: its id (e.g. "01"), the torch device, the environment stamp and the replicate seeds
    (replicate r of chapter seed s uses 1000·s + r; empty when the chapter has no `n_reps`)."""

    name: str
    device: torch.device
    stamp: dict
    reps: list[int] = field(default_factory=list)


def start(name: str, namespace: Mapping[str, Any], rules: Mapping[str, Rule],
          relations: Iterable[tuple[str, Callable[[], bool], str]] = ()) -> Chapter:
    """Validate every parameter in `namespace` (a chapter's globals()) against `rules` and `relations` — a wrong
    value stops the run here, naming the parameter — then seed (`seed`, default 0), choose the device (`device`,
    default "cpu"), apply the house plotting style and display the environment stamp.

    Args:
        name: the chapter's id, "01" … "99".
        namespace: the parameters, usually globals() of the notebook.
        rules: parameter name → `lab.workbook.validate` rule (integer, real, choice, ...); every parameter of the
            chapter's parameters cell needs one.
        relations: (parameter, predicate, message) checked after every type check.

    Returns:
        A `Chapter` with the device, the stamp and the replicate seeds.
    """
    validate(namespace, rules, relations=list(relations))
    seed, device = namespace.get("seed", 0), namespace.get("device", "cpu")
    stamp = repro.setup(seed=seed, device=device)
    style()
    repro.show(stamp)
    reps = replicate_seeds(seed, namespace["n_reps"]) if "n_reps" in namespace else []
    return Chapter(name=name, device=repro.get_device(device), stamp=stamp, reps=reps)
