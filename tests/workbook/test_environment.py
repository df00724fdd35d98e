"""pyproject.toml and environment.yml list the same dependencies, with the same torch ceiling."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (requires-python >= 3.10)
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent.parent
CONDA_TO_PIP = {"pytorch": "torch"}
TORCH_CEILING = Version("2.14.1")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pyproject() -> dict[str, SpecifierSet]:
    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in proj["dependencies"] + proj["optional-dependencies"]["workbook"]
            + proj["optional-dependencies"]["dev"] + proj["optional-dependencies"]["report"]]
    return {_norm(r.name): r.specifier for r in reqs}


def _conda() -> dict[str, SpecifierSet]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    out = {}
    for dep in env["dependencies"]:
        if not isinstance(dep, str):  # the pip: [-e .] block
            continue
        m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*(.*?)\s*", dep)
        assert m, dep
        name, spec = _norm(m.group(1)), m.group(2).replace(" ", "")
        if name in ("python", "pip"):
            continue
        out[CONDA_TO_PIP.get(name, name)] = SpecifierSet(spec)
    return out


def test_same_dependency_names() -> None:
    pip, conda = _pyproject(), _conda()
    assert len(pip) >= 15
    assert sorted(pip) == sorted(conda), (set(pip) ^ set(conda))
    assert {"torch", "pytest", "nbval", "ruff", "mlxtend", "papermill"} <= set(pip)


@pytest.mark.parametrize("source", ["pyproject", "conda"])
def test_torch_upper_bound(source: str) -> None:
    spec = (_pyproject if source == "pyproject" else _conda)()["torch"]
    uppers = [s for s in spec if s.operator in ("<", "<=", "==", "~=")]
    assert uppers, f"{source}: torch has no upper bound ({spec})"
    for s in uppers:
        if s.operator != "<":
            assert Version(s.version) <= TORCH_CEILING, f"{source}: torch bound {s} is above {TORCH_CEILING}"
    for above in ("2.14.2", "2.15.0", "3.0"):
        assert not spec.contains(above), f"{source}: torch {above} allowed by {spec}"
    assert spec.contains("2.14.1") and spec.contains("2.4.0")


def test_installed_torch_within_pins() -> None:
    spec = _pyproject()["torch"]
    assert spec.contains(Version(torch.__version__).public), (torch.__version__, str(spec))
