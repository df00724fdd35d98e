"""One call starts a chapter; save_fig(key=True) declares the key figure the report reads; loss_contourf."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lab.workbook import ParameterError, choice, integer, start_chapter


def test_start_chapter_validates_seeds_and_stamps() -> None:
    ns = {"seed": 2, "n_reps": 3, "device": "cpu", "width": 8}
    c = start_chapter("99", ns, {"seed": integer(0), "n_reps": integer(2), "device": choice("cpu", "cuda"),
                                 "width": integer(1)})
    assert c.name == "99" and c.device == torch.device("cpu") and c.reps == [2000, 2001, 2002]
    assert c.stamp["seed"] == 2
    a = torch.rand(3)
    start_chapter("99", ns, {"seed": integer(0)})
    assert torch.equal(torch.rand(3), a)                  # seeded: the same stream after every start


def test_start_chapter_stops_at_the_first_bad_parameter() -> None:
    with pytest.raises(ParameterError, match="'width'"):
        start_chapter("99", {"seed": 0, "width": "x"}, {"seed": integer(0), "width": integer(1)})
    with pytest.raises(ParameterError, match="'width'.*below"):
        start_chapter("99", {"seed": 0, "width": 9}, {"seed": integer(0), "width": integer(1)},
                      relations=[("width", lambda: False, "must be below 9")])


def test_key_figure_is_declared_in_the_outputs_and_read_by_the_report(tmp_path, monkeypatch) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nbformat

    from lab.landscape import Surface
    from lab.workbook import figures, report

    monkeypatch.setattr(figures, "figure_dir", lambda ch: tmp_path)
    shown = []
    monkeypatch.setattr(figures, "_declare", lambda mime, rec: shown.append((mime, rec)))
    fig, ax = plt.subplots()
    a = np.linspace(-1, 1, 5)
    cs = figures.loss_contourf(ax, Surface(a, a, np.exp(np.add.outer(a, a))))
    assert len(fig.axes) == 2 and cs.levels.size > 2          # the plot and its colour bar
    figures.save_fig(fig, "99", "plain")
    figures.save_fig(fig, "99", "key", key=True)
    assert shown == [(figures.KEY_FIGURE_MIMETYPE, {"chapter": "99", "path": "figures/99/key.png"})]
    assert (tmp_path / "key.png").is_file()
    shown.clear()
    figures.save_fig(fig, "99", "key", key=True, caption="what to see")
    rec = {"chapter": "99", "path": "figures/99/key.png", "caption": "what to see"}
    assert shown == [(figures.FIGURE_MIMETYPE, rec), (figures.KEY_FIGURE_MIMETYPE, rec)]
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("save_fig(fig, CH, 'key', key=True)")
    cell.outputs = [nbformat.v4.new_output("display_data", data={
        figures.KEY_FIGURE_MIMETYPE: {"chapter": "99", "path": "figures/99/key.png"}, "text/plain": ""})]
    nb.cells = [cell]
    assert report.key_figure_path(nb) == "figures/99/key.png"
    nb.cells = []
    nb.metadata["lab"] = {"key_figure": "figures/99/old.png"}   # runs made before the declaration
    assert report.key_figure_path(nb) == "figures/99/old.png"
    plt.close(fig)
