"""The workbook: the machinery that runs, checks and reports the chapters (needs `pip install .[workbook]`).

- `start_chapter` (lab.workbook.chapter): one call at the top of a chapter — validation, seeds, device, style, stamp.
- `lab.workbook.validate`: parameter rules (integer, real, choice, ...); a wrong value stops the run naming it.
- `lab.workbook.claims`: claims declared once (statement, test, threshold, margin, conclusion) and checked.
- `lab.workbook.figures`: the house style, `save_fig` (with `key=True` for the chapter's key figure), plot helpers.
- `lab.workbook.paths`, `lab.workbook.repro`: where things go; seeds and the environment stamp.
- `lab.workbook.runner`, `lab.workbook.report`, `lab.workbook.sweep`, `lab.workbook.robustness`, `lab.workbook.cli`:
  papermill runs into runs/, the HTML report, Dask sweeps, the robustness matrix, `python -m lab`.

The science (`lab.curvature`, `lab.landscape`, ...) never imports this package.
"""
from lab.workbook.chapter import Chapter
from lab.workbook.chapter import start as start_chapter
from lab.workbook.validate import ParameterError, boolean, choice, int_csv, int_list, integer, real, subset, validate

__all__ = ["Chapter", "start_chapter", "ParameterError", "validate", "integer", "real", "boolean", "choice", "subset",
           "int_list", "int_csv"]
