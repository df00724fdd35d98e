"""The library stands alone: its science imports only torch, numpy and scipy (never the workbook), and works on a
user's model and DataLoader with nothing else installed."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

LAB = Path(__file__).resolve().parent.parent / "lab"
SCIENCE = ["flat", "checks", "stats", "data", "models", "behavior", "regression", "curvature", "landscape", "numerics",
           "training", "_progress"]
ALLOWED = {"torch", "numpy", "scipy", "lab", "__future__"}
OPTIONAL = {"tqdm", "threadpoolctl", "torchvision", "mlxtend"}  # imported inside functions, each with a fallback
STDLIB = set(sys.stdlib_module_names)


def _science_files() -> list[Path]:
    out = []
    for name in SCIENCE:
        p = LAB / name
        out += sorted(p.rglob("*.py")) if p.is_dir() else [LAB / f"{name}.py"]
    return out


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module, at top level) for every import in a file."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, id(node) in top))
    return out


@pytest.mark.parametrize("path", _science_files(), ids=lambda p: str(p.relative_to(LAB)))
def test_science_imports_only_torch_numpy_scipy(path: Path) -> None:
    for module, at_top in _imports(path):
        root = module.split(".")[0]
        assert not module.startswith("lab.workbook"), f"{path.name} imports the workbook ({module})"
        if root in STDLIB or root in ALLOWED:
            continue
        assert root in OPTIONAL and not at_top, f"{path.name} imports {module}{' at top level' if at_top else ''}"


# What the workbook extra adds: absent from the library's environment below.
BLOCKED = {"matplotlib", "mpl_toolkits", "seaborn", "pandas", "tqdm", "threadpoolctl", "torchvision", "mlxtend",
           "sklearn", "papermill", "nbformat", "nbconvert", "nbclient", "yaml", "_yaml", "dask", "distributed",
           "pyarrow", "ipywidgets", "IPython", "ipykernel", "jupyter_client", "jupyter_core", "nbval", "pytest"}


def _library_site(tmp: Path) -> Path:
    """A site-packages of links to this environment's packages except the workbook's: the library's environment
    as `pip install .` leaves it (torch and its own dependencies, numpy, scipy)."""
    import sysconfig

    site = Path(sysconfig.get_paths()["purelib"])
    out = tmp / "site"
    out.mkdir()
    for entry in site.iterdir():
        top = entry.name.split("-")[0].split(".")[0]
        if top in BLOCKED or entry.suffix == ".pth" or top.lower() in {b.lower() for b in BLOCKED}:
            continue
        (out / entry.name).symlink_to(entry)
    return out


SCRIPT = f"""
import sys
for name in {sorted(BLOCKED)!r}:
    try:
        __import__(name)
    except ImportError:
        continue
    raise SystemExit(name + " is importable: the environment is not the library's")
import torch
from torch.utils.data import DataLoader, TensorDataset
import lab.flat, lab.curvature, lab.landscape, lab.numerics, lab.training, lab.behavior, lab.regression, lab.stats
import lab.data, lab.models, lab.checks
from lab.curvature import dataloader_hvp_operator, hutchpp_trace, hvp_operator, slq_density, top_eigs
from lab.flat import make_batch_loss_fn, make_loss_fn
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
x, y = torch.randn(50, 4, dtype=torch.float64), torch.randint(0, 3, (50,))
f, theta, _ = make_loss_fn(model, x, y)
batch_loss, _, _ = make_batch_loss_fn(model)
op = dataloader_hvp_operator(batch_loss, theta, DataLoader(TensorDataset(x, y), batch_size=16))
full = top_eigs(hvp_operator(f, theta), k=2, tol=1e-10).values
loader = top_eigs(op, k=2, tol=1e-10).values
assert abs(full - loader).max() <= 1e-9 * abs(full).max(), (full, loader)
hutchpp_trace(op, n=12); slq_density(op, n_runs=1, m=5)
lab.training.train(f, theta, steps=3, progress=True)
assert not any(m.split(".")[0] in {sorted(BLOCKED)!r} for m in sys.modules)
print("ok")
"""


def test_library_runs_with_only_torch_numpy_scipy(tmp_path: Path) -> None:
    """The science, in an environment without any workbook dependency, computes a DataLoader Hessian's top
    eigenvalues equal to the full-batch ones (batches of 16, 16, 16 and 2, weighted exactly)."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = os.pathsep.join([str(LAB.parent), str(_library_site(tmp_path))])
    r = subprocess.run([sys.executable, "-S", "-c", SCRIPT], capture_output=True, text=True, timeout=300, env=env,
                       cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]
