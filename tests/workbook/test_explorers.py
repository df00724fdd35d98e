"""The chapters' widget explorers, drawn headless from small synthetic inputs at two slider settings each, without
executing a chapter; and every chapter's explorer cell draws through lab.workbook.explorers."""
from __future__ import annotations

import types

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from lab.workbook import explorers as ex  # noqa: E402
from lab.workbook.runner import list_chapters  # noqa: E402


def _probe(h_min: float, decades: float, floor: float = 1e-16, curvature: float = 0.5):
    """A quadratic plus rounding-like noise along a doubling grid; below the floor FD is exactly 0."""
    h = h_min * 2.0 ** np.arange(int(decades * np.log2(10)) + 1)
    rng = np.random.default_rng(0)
    fd = curvature * h**2 + floor * rng.standard_normal(len(h))
    fd[h < h_min * 8] = 0.0
    return types.SimpleNamespace(h=h, fd=fd)


def _texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


@pytest.mark.parametrize("h_min, decades", [(1e-12, 13), (1e-6, 4)])
def test_probe_figure_two_settings(h_min: float, decades: float) -> None:
    fig = ex.probe_figure(_probe(h_min, decades), fd_noise=1e-15, title="SimpleMLP 8×1")
    assert len(fig.axes) == 3
    for ax in fig.axes:
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
        assert ax.get_xlabel() == ex.H_LABEL
    assert fig.axes[0].get_ylabel() == "loss units (nats)"
    assert any("noise" in line.get_label() for line in fig.axes[0].lines)
    assert ex.ALL_ZERO not in _texts(fig)


def test_probe_figure_all_zero_says_so() -> None:
    p = types.SimpleNamespace(h=np.logspace(-12, -9, 10), fd=np.zeros(10))
    fig = ex.probe_figure(p, fd_noise=1e-9, quantities=("fd", "grit"))
    assert _texts(fig).count(ex.ALL_ZERO) == 2
    assert all(not ax.lines for ax in fig.axes)


def test_probe_figure_rejects_unknown_quantity() -> None:
    with pytest.raises(ValueError, match="quantities"):
        ex.probe_figure(_probe(1e-8, 4), quantities=("tangent",))


@pytest.mark.parametrize("span, resolution", [(1.0, 5), (1e-3, 9)])
def test_surface_figure_two_settings(span: float, resolution: int) -> None:
    a = np.linspace(-span, span, resolution)
    surf = types.SimpleNamespace(a=a, b=a, loss=0.1 + np.add.outer(a**2, 2 * a**2))
    fig = ex.surface_figure(surf, "top eigenvectors")
    assert fig.axes[0].get_title() == "top eigenvectors"
    assert "log_{10}" in fig.axes[1].get_ylabel()          # the colour bar names log10 L


@pytest.mark.parametrize("width, n_fits", [(1, 0), (8, 40)])
def test_fits_figure_two_settings(width: int, n_fits: int) -> None:
    x = np.linspace(-2, 2, 41)
    fits = np.sin(np.outer(np.arange(1, n_fits + 1), x) / width)
    fig = ex.fits_figure(x, fits, x_train=np.array([-1.5, 0.5]), y_train=np.array([1.0, 0.3]), title=f"width {width}")
    ax = fig.axes[0]
    assert len(ax.lines) == min(n_fits, 30) + 1
    assert ("no interpolating fit here" in _texts(fig)) == (n_fits == 0)


@pytest.mark.parametrize("window, with_lr", [(10, False), (50, True)])
def test_rolling_std_figure_two_settings(window: int, with_lr: bool) -> None:
    rng = np.random.default_rng(1)
    loss = np.exp(rng.normal(size=300)) * np.linspace(10, 1, 300)
    lr = np.full(300, 0.03) if with_lr else None
    fig = ex.rolling_std_figure(loss, window, 0.075, floor_steps=np.array([0, 100, 200]),
                                floor=np.array([0.3, 0.3, 0.3]), lr=lr, title="constant")
    left, right = fig.axes
    assert left.get_ylabel() == (r"lr $\eta$" if with_lr else "MSE $L$")
    assert right.get_ylabel() == r"rolling std of $\log_{10} L$"
    labels = [line.get_label() for line in right.lines]
    assert f"rolling std, window {window}" in labels and "intrinsic floor (probe)" in labels


@pytest.mark.parametrize("path", list_chapters(), ids=lambda p: p.stem)
def test_chapter_explorers_draw_through_lab(path) -> None:
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code" and "skip-execution" in c.metadata.get("tags", [])]
    assert cells, "a chapter ends with an explorer"
    src = "\n".join(c.source for c in cells)
    assert "lab.workbook.explorers" in src
    assert "continuous_update=False" in src or "interact_manual" in src or "IntSlider" not in src

@pytest.mark.parametrize("n_steps", [5, 60])
def test_lowprec_figure_two_settings(n_steps: int) -> None:
    ev = np.arange(0, n_steps + 1, max(n_steps // 5, 1))
    loss = np.linspace(2.3, 1.0, len(ev))
    share = np.linspace(0.9, 0.5, n_steps)
    fig = ex.lowprec_figure(ev, loss, loss * 0.9, share, share + 0.01, "rtn bfloat16")
    left, right = fig.axes
    assert [ln.get_label() for ln in left.lines] == ["float32", "rtn bfloat16"]
    assert right.get_ylabel() == "share of updates lost" and len(right.lines[0].get_xdata()) == n_steps


@pytest.mark.parametrize("n", [2, 41])
def test_profile_figure_two_settings(n: int) -> None:
    t = np.linspace(-1, 1, n)
    fig = ex.profile_figure(t, {"B = 16": 1 + t**2, "B = 1000": 1 + 3 * t**2}, "t along a direction", "title")
    (ax,) = fig.axes
    assert [ln.get_label() for ln in ax.lines] == ["B = 16", "B = 1000"] and len(ax.lines[0].get_xdata()) == n
    assert ax.get_yscale() == "log" and ax.get_ylabel() == "training loss (nats)"


@pytest.mark.parametrize("n", [3, 61])
def test_eigen_profile_figure_two_settings(n: int) -> None:
    t = np.linspace(-2, 2, n)
    fig = ex.eigen_profile_figure(t, 1 + 0.5 * t**2, 1 - 0.5 * t**2, "init: λ = -1")
    (ax,) = fig.axes
    assert [ln.get_label() for ln in ax.lines] == ["loss", "second-order model"] and len(ax.lines[0].get_xdata()) == n
    assert ax.get_yscale() == "linear" and ax.get_title() == "init: λ = -1"
