"""`make lab`: JupyterLab on the repository that never writes the committed chapters (notebooks/, figures/).

JupyterLab's autosave rewrote a chapter merely opened (the kernel's full `language_info`, claim numbers losing their
float form) and, after Run All, every new output. Here the contents manager, `ChapterGuard`, serves notebooks/ and
figures/ read-only: JupyterLab then never autosaves them (it skips documents that are not writable), Ctrl-S says
"read-only, use Save as…", and any save, rename, delete or checkpoint restore there is refused (HTTP 403) with a
message saying where to save: a copy under runs/lab/ (git-ignored), or `make lab EDIT=1`
(`python -m lab.workbook.jupyter --edit-chapters`) to save over the chapters themselves. Everything else of the
repository saves as usual. Run as `python -m lab.workbook.jupyter [jupyter lab options]` (what `make lab` does).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from lab.workbook.paths import COMMITTED_FIGURES, NOTEBOOKS, ROOT, RUNS

WORKING = RUNS / "lab"  # where a session's copies of the chapters are saved
MANAGER = "lab.workbook.jupyter.ChapterGuard"


def lab_config(edit_chapters: bool = False) -> dict[str, dict[str, Any]]:
    """The server configuration `make lab` runs JupyterLab with (section → trait → value), as a plain dict."""
    return {"ServerApp": {"root_dir": str(ROOT), "contents_manager_class": MANAGER},
            "FileContentsManager": {"preferred_dir": NOTEBOOKS.relative_to(ROOT).as_posix()},
            "ChapterGuard": {"edit_chapters": edit_chapters}}


def lab_args(edit_chapters: bool = False) -> list[str]:
    """lab_config as command-line options: --Section.trait=value."""
    return [f"--{section}.{trait}={value}" for section, traits in lab_config(edit_chapters).items()
            for trait, value in traits.items()]


def refusal(path: str) -> str:
    """Why a save to the committed file at API path `path` is refused, and where to save instead (one line)."""
    name = Path(path).name
    return (f"{path} is committed: this JupyterLab session does not write notebooks/ or figures/ (only `make refresh` "
            f"does). Save a copy with File > Save Notebook As... runs/lab/{name} (git-ignored), or restart with "
            "`make lab EDIT=1` to edit the chapters themselves")


try:
    from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager
    from tornado.web import HTTPError
    from traitlets import Bool, List, Unicode
except ImportError:  # the [jupyter] and [dev] extras install jupyter_server; without it there is no session to guard
    AsyncLargeFileManager = None

if AsyncLargeFileManager is not None:

    class ChapterGuard(AsyncLargeFileManager):
        """jupyter_server's default contents manager, with the committed folders read-only unless edit_chapters."""

        edit_chapters = Bool(False, config=True, help="let the session save over the committed chapters and "
                             "figures (make lab EDIT=1); commit a chapter only after `make refresh`")
        protected = List(Unicode(), default_value=[str(NOTEBOOKS), str(COMMITTED_FIGURES)], config=True,
                         help="folders the session never writes (absolute paths)")

        def _guarded(self, path: str) -> bool:
            """True when the API path lies in a protected folder and editing them was not asked for."""
            if self.edit_chapters:
                return False
            target = Path(self._get_os_path(path.strip("/"))).resolve()
            return any(target.is_relative_to(Path(p).resolve()) for p in self.protected)

        def _refuse(self, *paths: str) -> None:
            for path in paths:
                if self._guarded(path):
                    raise HTTPError(403, refusal(path.strip("/")))

        def is_writable(self, path: str) -> bool:
            """False in the protected folders: JupyterLab neither autosaves nor checkpoints what is not writable."""
            return not self._guarded(path) and super().is_writable(path)

        async def save(self, model: dict[str, Any], path: str = "") -> dict[str, Any]:
            self._refuse(path)
            os_path = Path(self._get_os_path(path.strip("/")))
            if os_path.resolve().is_relative_to(RUNS.resolve()):  # Save As runs/lab/x.ipynb works on a fresh clone
                os_path.parent.mkdir(parents=True, exist_ok=True)
            return await super().save(model, path)

        async def rename_file(self, old_path: str, new_path: str) -> None:
            self._refuse(old_path, new_path)
            return await super().rename_file(old_path, new_path)

        async def delete_file(self, path: str) -> None:
            self._refuse(path)
            return await super().delete_file(path)

        async def restore_checkpoint(self, checkpoint_id: str, path: str) -> None:
            self._refuse(path)
            return await super().restore_checkpoint(checkpoint_id, path)


def main(argv: list[str] | None = None) -> None:
    """Start JupyterLab (never returns): the repository as root, notebooks/ open, the chapters read-only unless
    --edit-chapters; other arguments go to `jupyter lab`."""
    args = list(sys.argv[1:] if argv is None else argv)
    edit = "--edit-chapters" in args
    args = [a for a in args if a != "--edit-chapters"]
    WORKING.mkdir(parents=True, exist_ok=True)
    if edit:
        print("make lab: EDIT=1, this session saves over the chapters in notebooks/ (autosave included): refresh "
              "a chapter (make refresh NB=…) before committing it", file=sys.stderr)
    else:
        print("make lab: the committed chapters (notebooks/, figures/) open read-only and are never saved; keep your "
              "changes with File > Save Notebook As... runs/lab/<name>.ipynb, or run `make lab EDIT=1` to edit the "
              "chapters themselves", file=sys.stderr)
    os.execv(sys.executable, [sys.executable, "-m", "jupyterlab", *lab_args(edit), *args])


if __name__ == "__main__":
    main()
