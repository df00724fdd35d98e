"""`make lab` (issue #31): a JupyterLab session writes nothing committed. Opening a chapter and letting autosave run,
or Run All, rewrote notebooks/07_flatness.ipynb (the kernel's language_info, claim numbers 10.0 → 10, outputs): the
session's contents manager (lab.workbook.jupyter.ChapterGuard, with the configuration `make lab` uses) serves the
committed folders read-only and refuses writes there, saying where to save."""
from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

pytest.importorskip("jupyter_server", reason="jupyter_server is not installed (pip install -e '.[dev]' installs it)")

from tornado.web import HTTPError  # noqa: E402
from traitlets.config import Config  # noqa: E402

from lab.workbook import jupyter  # noqa: E402
from lab.workbook.paths import ROOT, RUNS  # noqa: E402

CHAPTER = "notebooks/07_flatness.ipynb"


def _manager(**config: object) -> jupyter.ChapterGuard:
    """The contents manager as `make lab` configures it (root: the repository)."""
    cfg = jupyter.lab_config(**config)
    return jupyter.ChapterGuard(config=Config(cfg), root_dir=cfg["ServerApp"]["root_dir"])


def _git_status(*paths: str) -> str:
    """git status of paths (other sessions may be changing other chapters meanwhile)."""
    return subprocess.run(["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=all", "--",
                           *paths], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def _as_jupyterlab_rewrites_it(model: dict) -> dict:
    """What JupyterLab's autosave sent after opening and Run All: the kernel's full language_info, claim numbers in
    int form, a new output."""
    model = copy.deepcopy(model)
    nb = model["content"]
    nb["metadata"]["language_info"] = {"codemirror_mode": {"name": "ipython", "version": 3}, "file_extension": ".py",
                                       "mimetype": "text/x-python", "name": "python", "nbconvert_exporter": "python",
                                       "pygments_lexer": "ipython3", "version": sys.version.split()[0]}
    code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    code["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "a new output\n"}]
    return model


def test_make_lab_serves_the_committed_chapters_read_only_and_refuses_to_save_them() -> None:
    cm = _manager()
    checkpoint = ROOT / "notebooks" / ".ipynb_checkpoints" / "07_flatness-checkpoint.ipynb"  # git-ignored
    before, status, had_checkpoint = (ROOT / CHAPTER).read_bytes(), _git_status(CHAPTER), checkpoint.exists()
    targets = ["notebooks/Untitled.ipynb", "notebooks/07_copy.ipynb", "notebooks/07_renamed.ipynb",
               "notebooks/README.md", "figures/new"]
    assert not [t for t in targets if (ROOT / t).exists()]

    async def session() -> None:
        model = await cm.get(CHAPTER)
        assert model["writable"] is False  # JupyterLab skips autosave (and Ctrl-S says "use Save as…")
        assert (await cm.get("notebooks", content=False))["writable"] is False
        with pytest.raises(HTTPError) as e:
            await cm.save(_as_jupyterlab_rewrites_it(model), CHAPTER)
        assert e.value.status_code == 403 and "runs/lab/07_flatness.ipynb" in e.value.log_message
        assert "make lab EDIT=1" in e.value.log_message and "%" not in e.value.log_message
        for write in (cm.save(_as_jupyterlab_rewrites_it(model), "notebooks/Untitled.ipynb"),
                      cm.new_untitled(path="notebooks", type="notebook"),
                      cm.copy(CHAPTER, "notebooks/07_copy.ipynb"),
                      cm.rename(CHAPTER, "notebooks/07_renamed.ipynb"),
                      cm.rename("README.md", "notebooks/README.md"),
                      cm.delete(CHAPTER),
                      cm.save({"type": "directory"}, "figures/new"),
                      cm.restore_checkpoint("checkpoint", CHAPTER)):
            with pytest.raises(HTTPError, match="is committed"):
                await write

    asyncio.run(session())
    assert (ROOT / CHAPTER).read_bytes() == before  # byte-identical
    assert _git_status(CHAPTER) == status and (ROOT / "README.md").exists()
    assert not [t for t in targets if (ROOT / t).exists()] and not list((ROOT / "notebooks").glob("Untitled*"))
    assert checkpoint.exists() == had_checkpoint


def test_a_copy_saves_under_runs_lab(tmp_path: Path) -> None:
    """Saving is not taken away: Save As runs/lab/… works (the folder is made when missing)."""
    cm = _manager()
    name = f"runs/lab/test-{uuid.uuid4().hex[:8]}/07_flatness.ipynb"

    async def session() -> dict:
        model = _as_jupyterlab_rewrites_it(await cm.get(CHAPTER))
        return await cm.save(model, name)

    try:
        saved = asyncio.run(session())
        assert saved["writable"] is True and "a new output" in (ROOT / name).read_text()
    finally:
        import shutil

        shutil.rmtree((ROOT / name).parent, ignore_errors=True)
    assert (ROOT / name).parent.parent == RUNS / "lab"


def test_edit_chapters_lets_the_session_save_over_them(tmp_path: Path) -> None:
    """make lab EDIT=1 opts in (on a copy of the layout: the guard's folders are configurable)."""
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "01_x.ipynb").write_text(json.dumps(
        {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    results = {}
    for edit in (False, True):
        cfg = Config({"ChapterGuard": {"edit_chapters": edit, "protected": [str(tmp_path / "notebooks")]}})
        cm = jupyter.ChapterGuard(config=cfg, root_dir=str(tmp_path))

        async def session(cm: jupyter.ChapterGuard = cm) -> str:
            model = await cm.get("notebooks/01_x.ipynb")
            model["content"]["metadata"]["edited"] = True
            try:
                await cm.save(model, "notebooks/01_x.ipynb")
            except HTTPError as e:
                return e.log_message
            return "saved"

        results[edit] = (cm.is_writable("notebooks/01_x.ipynb"), asyncio.run(session()))
    assert results[False][0] is False and "is committed" in results[False][1]
    assert results[True] == (True, "saved") and "edited" in (tmp_path / "notebooks" / "01_x.ipynb").read_text()


def test_make_lab_runs_jupyterlab_with_this_configuration(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    recipe = re.search(r"^lab:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M)[1]
    assert "-m lab.workbook.jupyter" in recipe and "EDIT" in recipe and "jupyter lab notebooks/" not in recipe
    calls = []
    monkeypatch.setattr(jupyter.os, "execv", lambda exe, args: calls.append(args))
    monkeypatch.setattr(jupyter, "WORKING", RUNS / "lab")
    jupyter.main(["--no-browser"])
    jupyter.main(["--edit-chapters", "--no-browser"])
    assert calls[0][1:3] == ["-m", "jupyterlab"] and calls[0][-1] == "--no-browser"
    assert f"--ServerApp.contents_manager_class={jupyter.MANAGER}" in calls[0]
    assert f"--ServerApp.root_dir={ROOT}" in calls[0] and "--ChapterGuard.edit_chapters=False" in calls[0]
    assert "--ChapterGuard.edit_chapters=True" in calls[1] and "--edit-chapters" not in calls[1]
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "read-only" in err[0] and "runs/lab/" in err[0] and "EDIT=1" in err[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_jupyter_server_with_make_labs_options_refuses_a_put_over_a_chapter(tmp_path: Path) -> None:
    """End to end: jupyter_server started with lab_args() (what `make lab` passes), driven over its REST API as
    JupyterLab's autosave drives it."""
    port, token = _free_port(), uuid.uuid4().hex
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"),
           "JUPYTER_DATA_DIR": str(tmp_path / "data")}
    server = subprocess.Popen([sys.executable, "-m", "jupyter_server", *jupyter.lab_args(), f"--port={port}",
                               "--ip=127.0.0.1", f"--IdentityProvider.token={token}", "--no-browser", "--allow-root",
                               "--ServerApp.port_retries=0"], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/api/contents/"

    def call(method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        req = urllib.request.Request(base + path, method=method, data=None if body is None else
                                     json.dumps(body).encode(), headers={"Authorization": f"token {token}"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    before, status = (ROOT / CHAPTER).read_bytes(), _git_status(CHAPTER)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                code, model = call("GET", CHAPTER)
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline and server.poll() is None, "the server did not start"
                time.sleep(0.5)
        assert code == 200 and model["writable"] is False
        code, reply = call("PUT", CHAPTER, _as_jupyterlab_rewrites_it(model))
        assert code == 403 and "runs/lab/07_flatness.ipynb" in reply["message"]
        copy_path = f"runs/lab/test-{uuid.uuid4().hex[:8]}.ipynb"
        code, saved = call("PUT", copy_path, _as_jupyterlab_rewrites_it(model))
        assert code in (200, 201) and saved["writable"] is True
    finally:
        server.terminate()
        server.wait(timeout=30)
        for p in [*(RUNS / "lab").glob("test-*.ipynb"), *(RUNS / "lab" / ".ipynb_checkpoints").glob("test-*")]:
            p.unlink()
    assert (ROOT / CHAPTER).read_bytes() == before and _git_status(CHAPTER) == status
