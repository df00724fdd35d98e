"""Execute chapters with papermill: parameterized runs into runs/, in-place refreshes, the whole workbook."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import nbformat
import yaml

from lab.workbook.paths import COMMITTED_FIGURES, NOTEBOOKS, REPORT, ROOT, RUNS

CHAPTER_GLOB = "[0-9][0-9]_*.ipynb"
FLOAT_RE = re.compile(  # a float as text, e.g. 1e-10 (which YAML 1.1 reads as a string)
    r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^[+-]?(inf|nan)$", re.IGNORECASE)
_MAX_NAME = 80
PART = ".part"  # suffix of write_atomic's temporary files


class WorkbookError(RuntimeError):
    """Raised by run_workbook when one or more chapters failed to execute."""


def list_chapters() -> list[Path]:
    """All chapter notebooks (notebooks/NN_name.ipynb), in order."""
    return sorted(NOTEBOOKS.glob(CHAPTER_GLOB))


def resolve_notebook(nb: str | Path) -> Path:
    """Map "01", "01_noise_floor", "notebooks/01_noise_floor.ipynb" or an existing path to a notebook."""
    p = Path(nb)
    if p.suffix == ".ipynb" and p.is_file():
        return p.resolve()
    key = p.name.removesuffix(".ipynb")
    chapters = list_chapters()
    exact = [c for c in chapters if c.stem == key]
    matches = exact or [c for c in chapters if c.stem.startswith(key + "_")] or [
        c for c in chapters if c.stem.startswith(key)]
    if len(matches) == 1 and key:
        return matches[0].resolve()
    available = ", ".join(c.stem for c in chapters) or "(none)"
    what = "is ambiguous" if len(matches) > 1 and key else "matches no chapter"
    raise ValueError(f"notebook {str(nb)!r} {what}; available chapters: {available}")


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 core scalars: decimal ints (010 is 10, not 8), floats with or without a
    dot (1e-3), true/false, null — and nothing else implicit (no sexagesimal 1:40 = 100, no yes/no booleans, no
    dates)."""


_Yaml12Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag.rsplit(":", 1)[-1] not in ("bool", "int", "float", "null", "timestamp")]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                    list("tTfF"))
_Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^[-+]?[0-9][0-9_]*$"), list("-+0123456789"))
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\.[0-9][0-9_]*|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?$"
               r"|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."))
_Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|None|)$"),
                                    ["~", "n", "N", ""])
_Yaml12Loader.add_constructor("tag:yaml.org,2002:int", lambda loader, node: int(loader.construct_scalar(node), 10))
_Yaml12Loader.add_constructor("tag:yaml.org,2002:float",
                              lambda loader, node: float(loader.construct_scalar(node).replace("_", "")
                                                         .replace(".inf", "inf").replace(".Inf", "inf")
                                                         .replace(".INF", "inf").lower().replace(".nan", "nan")))

# Numbers in another base: hexadecimal, octal and binary literals, and YAML 1.1's base 60 (1:40 is 100). YAML reads
# them as numbers, papermill as text: refused wherever they appear unquoted (a quoted '0x10' is text).
AMBIGUOUS_RE = re.compile(r"^[-+]?0[xX][0-9a-fA-F_]+$|^[-+]?0[oO][0-7_]+$|^[-+]?0[bB][01_]+$"
                          r"|^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$")
_AMBIGUOUS_TAG = "tag:lab,2026:ambiguous"


def _refuse_ambiguous(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    raise ValueError(f"value {loader.construct_scalar(node)!r} is ambiguous (YAML reads it as a number in another "
                     "base — hexadecimal, octal, binary or base 60 — papermill as text): write the number in "
                     "decimal, or quote it to mean text")


_Yaml12Loader.add_implicit_resolver(_AMBIGUOUS_TAG, AMBIGUOUS_RE, list("-+0123456789"))
_Yaml12Loader.add_constructor(_AMBIGUOUS_TAG, _refuse_ambiguous)


def load_yaml(text: str) -> Any:
    """YAML text as the workbook reads it everywhere (CLI values, -y mappings, grid files): YAML 1.2 core scalars,
    ambiguous numbers refused (ValueError)."""
    return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 - a SafeLoader subclass


def _parse_value(text: str) -> Any:
    """One CLI value to a python value, as papermill's -p would (plus YAML 1.2 lists and dicts).

    A value that YAML 1.1 and papermill read differently and that no chapter could mean as text — hexadecimal,
    octal or binary literals (0x10), sexagesimal numbers (1:40) — is refused with a ValueError naming it.
    """
    s = text.strip()
    if s in ("None", "null", "~"):
        return None
    if FLOAT_RE.match(s) and not re.fullmatch(r"[+-]?\d+", s):
        return float(s)
    try:
        value = load_yaml(s)
    except yaml.YAMLError:
        return text
    if value is None or not isinstance(value, (bool, int, float, str, list, dict)):
        return text  # e.g. empty strings stay as typed
    return value


def parse_cli_params(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Turn (name, string value) pairs into typed parameters: int, float, bool, list, dict or str."""
    out: dict[str, Any] = {}
    for name, text in pairs:
        if not name.isidentifier():
            raise ValueError(f"parameter name {name!r} is not a valid python identifier")
        try:
            out[name] = _parse_value(text)
        except ValueError as exc:
            raise ValueError(f"parameter '{name}': {exc}") from None
    return out


def declared_parameters(nb_path: str | Path) -> dict[str, dict[str, Any]]:
    """The parameters declared in the notebook's `parameters` cell, as papermill infers them."""
    import papermill

    return dict(papermill.inspect_notebook(str(nb_path)))


SPEC_RE = re.compile(r'^\s*"(\w+)":\s*(\w+\(.*\)),?\s*$')


def _rules_in(source: str) -> dict[str, str]:
    """name → its rule's source text, from the rules dict passed to start_chapter(...) or validate(...) in a
    chapter's validation cell (several rules on one line are told apart); a line-by-line reading when the cell
    does not parse."""
    import ast

    src = "\n".join(ln for ln in source.splitlines() if not ln.lstrip().startswith(("%", "!")))  # no magics
    try:
        tree = ast.parse(src)
    except SyntaxError:
        tree = None
    out: dict[str, str] = {}
    if tree is not None:
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in (
                    "start_chapter", "start", "validate"):
                for arg in [*node.args, *(k.value for k in node.keywords)]:
                    if isinstance(arg, ast.Dict):
                        for k, v in zip(arg.keys, arg.values, strict=True):
                            if isinstance(k, ast.Constant) and isinstance(k.value, str):
                                out[k.value] = " ".join((ast.get_source_segment(src, v) or "?").split())
        if out:
            return out
    for line in source.splitlines():
        m = SPEC_RE.match(line)
        if m:
            out[m[1]] = m[2]
    return out


def parameter_help(nb: str | Path) -> str:
    """A chapter's parameters, one a line: name, type, default, what `start_chapter` allows, and the comment —
    from the `parameters` cell (papermill's reading) and the validation cell after it."""
    path = resolve_notebook(nb)
    declared = declared_parameters(path)
    allowed: dict[str, str] = {}
    cells = nbformat.read(path, as_version=4).cells
    for i, cell in enumerate(cells):
        if "parameters" in cell.metadata.get("tags", []) and i + 1 < len(cells):
            allowed = _rules_in(cells[i + 1].source)
            break
    width = max((len(n) for n in declared), default=4)
    lines = [f"{path.name}: {len(declared)} parameters (python -m lab run {path.stem[:2]} -p NAME VALUE)"]
    for name, p in declared.items():
        typ = p.get("inferred_type_name") or "?"
        lines.append(f"  {name:<{width}}  {typ:<5} = {p.get('default')!s:<12} allowed: {allowed.get(name, '-')}"
                     + (f"  # {p['help']}" if p.get("help") else ""))
    return "\n".join(lines)


def check_params(nb_path: str | Path, params: dict[str, Any] | None) -> None:
    """Raise ValueError if any parameter name is not declared in the notebook's `parameters` cell."""
    if not params:
        return
    declared = declared_parameters(nb_path)
    unknown = sorted(set(params) - set(declared))
    if unknown:
        allowed = ", ".join(f"{k} (default {v.get('default')})" for k, v in declared.items()) or "(none)"
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)} for {Path(nb_path).name}; "
                         f"allowed: {allowed}")


def _slug(value: Any) -> str:
    """A short filename-safe rendering of a parameter value."""
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", str(value)).strip("-") or "x"


def output_name(stem: str, params: dict[str, Any] | None) -> str:
    """The run file name: <stem>.ipynb at defaults, else <stem>__k-v_k-v.ipynb (hashed when too long)."""
    if not params:
        return f"{stem}.ipynb"
    tag = "_".join(f"{k}-{_slug(v)}" for k, v in sorted(params.items()))
    if len(tag) > _MAX_NAME:
        tag = hashlib.sha1(repr(sorted(params.items())).encode()).hexdigest()[:10]
    return f"{stem}__{tag}.ipynb"


def is_inside(path: Path, folder: Path) -> bool:
    """True when path lies inside folder."""
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


def write_atomic(path: str | Path, content: str | bytes | Callable[[Path], None]) -> Path:
    """Write path through a temporary file in the same folder and os.replace, so no reader ever sees it half
    written: content is text, bytes, or a function that writes the file at the path it is given.

    The temporary file is hidden (.<name>.<random>.part) and removed on failure; the result keeps the mode of
    the file it replaces (0o644 for a new file).
    """
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=PART, dir=path.parent)
    tmp = Path(tmp_name)
    try:
        if callable(content):
            os.close(fd)
            content(tmp)
        else:
            with os.fdopen(fd, "wb" if isinstance(content, bytes) else "w",
                           **({} if isinstance(content, bytes) else {"encoding": "utf-8"})) as fh:
                fh.write(content)
        if path.exists():
            shutil.copymode(path, tmp)
        else:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


@contextlib.contextmanager
def _kernel_env(env: dict[str, str] | None = None) -> Iterator[None]:
    """Make the repository importable in the kernel (prepend ROOT to PYTHONPATH) and set `env` for the duration
    (the kernel inherits the environment when it starts)."""
    changes = {"PYTHONPATH": os.pathsep.join([str(ROOT)] + ([os.environ["PYTHONPATH"]]
                                                             if os.environ.get("PYTHONPATH") else [])),
               **(env or {})}
    saved = {k: os.environ.get(k) for k in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _quiet_kernel_manager(log: Path) -> type:
    """A jupyter_client kernel manager whose kernel writes its own stdout and stderr (IPKernelApp's log: the
    unencrypted-TCP warning, the KeyboardInterrupt that a shutdown's interrupt makes it log, zmq tracebacks when the
    runner stops it) to the file log instead of the terminal. Cell outputs still go to the notebook."""
    from jupyter_client.manager import AsyncKernelManager

    class QuietKernelManager(AsyncKernelManager):
        async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
            with open(log, "ab") as fh:  # the kernel keeps its own copy of the descriptor
                kw["stdout"] = kw["stderr"] = fh
                await super()._async_launch_kernel(kernel_cmd, **kw)

    return QuietKernelManager


def execute(src: Path, out: Path, params: dict[str, Any] | None, progress: bool,
            timeout: float | None, env: dict[str, str] | None = None, kernel_log: Path | None = None) -> None:
    """Run papermill on src into out, with the python3 kernel in the notebook's folder and `env` set for it; the
    kernel's own log goes to the file kernel_log (default: nowhere), never to the terminal."""
    import papermill

    kwargs: dict[str, Any] = {}
    if timeout is not None:
        kwargs["execution_timeout"] = timeout
    log = Path(kernel_log) if kernel_log is not None else Path(os.devnull)
    with _kernel_env(env):
        papermill.execute_notebook(str(src), str(out), parameters=params or None, kernel_name="python3",
                                   cwd=str(src.parent), progress_bar=progress,
                                   kernel_manager_class=_quiet_kernel_manager(log), **kwargs)


NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,119}$")
RUN_MARK = "lab_run"  # notebook metadata key of a run: parameters, status, where its figures and tables are, commit


def source_commit() -> str | None:
    """The repository's commit as a run records it (git describe --always --dirty: a hash, '-dirty' when the
    working tree has changes), or None outside a git checkout."""
    from lab.workbook.paths import git_output

    return git_output("describe", "--always", "--dirty", "--abbrev=10") or None


def check_name(name: str) -> str:
    """A run's file name (…ipynb added): a plain name inside runs/ — no folders, not hidden, no '..'."""
    stem = name.removesuffix(".ipynb")
    if not NAME_RE.match(stem) or ".." in stem or stem.endswith(".part"):
        raise ValueError(f"parameter 'name' = {name!r} is not allowed: expected a plain file name of letters, "
                         "digits, '_', '-', '+' and '.' (no folders, not hidden, no '..'), written inside runs/")
    return f"{stem}.ipynb"


FILES_SUFFIX = ".files"  # runs/<name>.files/ holds a run's figures and tables
FILES_MARK = ".lab-run"  # marker file inside it: only a folder carrying it is ever replaced


def run_files(out: Path) -> Path:
    """The folder of a run's figures and tables: runs/<name>.files/ beside runs/<name>.ipynb (a suffix no other
    folder of runs/ — results/, figures/, a sweep — carries)."""
    out = Path(out)
    return out.with_name(out.stem + FILES_SUFFIX)


def check_out_dir(out_dir: Path, what: str = "run output") -> Path:
    """out_dir resolved, refused when it lies inside the repository but outside runs/: runs never write among the
    committed notebooks, figures, results, tests or sources."""
    d = Path(out_dir).expanduser().resolve()
    if is_inside(d, ROOT) and not is_inside(d, RUNS):
        raise ValueError(f"refusing to write {what} to {d}: inside the repository a run writes only under "
                         f"{RUNS} (committed files are written by `lab refresh` alone)")
    return d


def _rewrite(nb: nbformat.NotebookNode, old: str, new: str) -> None:
    """Replace the path prefix old by new in every cell output's text (figure paths printed by the chapter)."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            path_free(cell.get("outputs", []), old, new)


def _move_tree(src: Path, dest: Path, marker: str | None = None) -> None:
    """Replace dest by src (a folder), leaving nothing of an earlier dest behind: the old folder is renamed aside
    first and removed last, so a crash never leaves dest missing. With `marker`, an existing dest that lacks that
    marker file is not the caller's to replace: ValueError."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if dest.exists():
        if marker is not None and not (dest / marker).exists():
            raise ValueError(f"refusing to replace {dest}: it exists and was not made by a run (no {marker} in it); "
                             "choose another --name")
        old = dest.with_name(f".{dest.name}.{os.getpid()}.old{PART}")
        os.replace(dest, old)
    os.replace(src, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class Interrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C (SIGINT); what says what was running and what was kept, in a few words."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


_CHAPTER_NUMBER = re.compile(r"^([0-9][0-9])_")


def check_run_name(src: Path, name: str) -> str:
    """A --name for a run of src (check_name's rules, …ipynb added), refused when it is another chapter's: a name
    beginning with another chapter's number (01_noise_floor, 01_x) is what the report reads as that chapter's runs,
    and one ending in .failed is where a failed run is kept."""
    fname = check_name(name)
    stem = fname.removesuffix(".ipynb")
    if stem.endswith(".failed"):
        raise ValueError(f"--name {name!r} is not allowed: <name>.failed.ipynb is where a failed run of <name> is "
                         "kept; choose a name not ending in .failed")
    m = _CHAPTER_NUMBER.match(stem)
    own = _CHAPTER_NUMBER.match(Path(src).stem)
    if m and not (own and own[1] == m[1]):
        owner = next((c for c in list_chapters() if c.stem[:2] == m[1]), None)
        if owner is not None:
            what = ("is chapter {n}'s default run name" if stem == owner.stem else
                    "begins with chapter {n}'s number").format(n=m[1])
            raise ValueError(f"--name {name!r} is not allowed for {Path(src).name}: it {what}, and the report reads "
                             f"runs named {m[1]}_… as chapter {m[1]}'s results ({owner.stem}); choose a name not "
                             "beginning with another chapter's number")
    return fname


OWNER = "owner.json"  # inside a run's temporary folder: who made it (pid, host), when, for which run name
_STARTED = time.time()  # this process's start, as far as the runner knows: a folder made before it is not ours


def _pid_alive(pid: int) -> bool:
    """True when a process with this id exists on this machine (one we may not signal exists too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


_PART_DIR = re.compile(r"^\.(?P<stem>.+)\.[A-Za-z0-9_]{8}\.part$")  # run_chapter's mkdtemp(prefix=.<stem>., …)


def stale_parts(out_dir: Path = RUNS) -> list[dict[str, Any]]:
    """The temporary folders (.<name>.<random>.part) that killed runs left in out_dir: made before this process
    started, by a process of this machine that is gone (a folder without an owner record counts as gone; one made on
    another host is never judged). Each as {"path", "name" (the run's file name), "pid", "host", "started"}."""
    out = []
    d = Path(out_dir)
    if not d.is_dir():
        return out
    for folder in sorted(d.glob(f".*{PART}")):
        m = _PART_DIR.match(folder.name)
        if not m or not folder.is_dir():
            continue
        rec: dict[str, Any] = {}
        try:
            rec = json.loads((folder / OWNER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            rec = {}
        try:
            started = float(rec.get("started") or folder.stat().st_mtime)
        except (OSError, TypeError, ValueError):
            continue
        if started >= _STARTED or rec.get("host", socket.gethostname()) != socket.gethostname():
            continue
        pid = rec.get("pid")
        if isinstance(pid, int) and _pid_alive(pid):
            continue
        out.append({"path": folder, "name": rec.get("name") or f"{m['stem']}.ipynb", "pid": pid,
                    "host": rec.get("host"), "started": started})
    return out


def _describe(parts: list[dict[str, Any]]) -> str:
    """Stale folders as 'runs/.a.x1.part (pid 12, 2026-12-07 16:02)', comma-separated."""
    def one(p: dict[str, Any]) -> str:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(p["started"]))
        who = f"pid {p['pid']}, " if p["pid"] is not None else ""
        return f"{p['path'].parent.name}/{p['path'].name} ({who}{when})"

    return ", ".join(one(p) for p in parts)


def report_stale_parts(out_dir: Path = RUNS, but: str | None = None) -> str | None:
    """One line naming the stale temporary folders of killed runs in out_dir (except those of the run name `but`,
    which that run cleans), or None when there are none."""
    parts = [p for p in stale_parts(out_dir) if p["name"] != but]
    if not parts:
        return None
    return (f"note: {len(parts)} folder(s) left by killed runs: {_describe(parts)}; each is removed at the next run "
            "of its name (or delete it)")


def clean_stale_parts(out_dir: Path, fname: str) -> str | None:
    """Remove the stale temporary folders that killed runs named fname left in out_dir; one line saying so, or
    None when there were none."""
    parts = [p for p in stale_parts(out_dir) if p["name"] == fname]
    for p in parts:
        shutil.rmtree(p["path"], ignore_errors=True)
    if not parts:
        return None
    return f"removed {len(parts)} folder(s) left by killed runs of {fname}: {_describe(parts)}"


def run_chapter(nb: str | Path, params: dict[str, Any] | None = None, out_dir: Path = RUNS,
                name: str | None = None, progress: bool = True, timeout: float | None = None,
                replace: bool = False, report_stale: bool = True) -> Path:
    """Execute a chapter (optionally parameterized) into out_dir and return the executed notebook's path.

    The run writes to a hidden temporary folder in out_dir and appears only on success: out_dir/<name>.ipynb and
    its figures and tables in out_dir/<name>.files/ (never the committed figures/). A run that fails is kept as
    out_dir/<name>.failed.ipynb (the error inside) and the exception re-raised (Ctrl-C: `Interrupted`); one that is
    killed leaves only its hidden temporary folder (.<name>.<random>.part, with its owner's pid), which no report
    reads and the next run of that name removes, saying so on stderr (report_stale: other names' are listed too).

    Without `name`, the run's name comes from its parameters and replaces the earlier run of the same chapter and
    parameters. A `name` must not be another chapter's (`check_run_name`), and an existing run of that name is
    replaced only with replace=True (ValueError otherwise).
    """
    src = resolve_notebook(nb)
    check_params(src, params)
    fname = output_name(src.stem, params) if name is None else check_run_name(src, name)
    if name is not None and params and fname == output_name(src.stem, None):
        raise ValueError(f"parameter 'name' = {name!r} is not allowed with parameters: it is the name of the "
                         "chapter's default run, which the report shows as the chapter's result")
    out_dir = check_out_dir(out_dir)
    out = out_dir / fname
    if is_inside(out, NOTEBOOKS) or out.resolve() == src:
        raise ValueError(f"refusing to write run output {out} over/among the source notebooks")
    if name is not None and out.exists() and not replace:
        raise ValueError(f"--name {name!r}: {out} exists (an earlier run); pass --replace to replace it, or choose "
                         "another --name")
    files = run_files(out)
    if files.exists() and not (files / FILES_MARK).exists():
        raise ValueError(f"refusing to replace {files}: it exists and was not made by a run; choose another --name")
    out_dir.mkdir(parents=True, exist_ok=True)
    for line in (clean_stale_parts(out_dir, fname), report_stale_parts(out_dir, but=fname) if report_stale else None):
        if line:
            print(line, file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.stem}.", suffix=PART, dir=out_dir))
    (tmp / OWNER).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                                         "name": fname, "source": src.name}), encoding="utf-8")
    env = {"LAB_FIGURES": str(tmp / "files" / "figures"), "LAB_RESULTS": str(tmp / "files" / "results")}
    part = tmp / fname
    failed = out.with_name(f"{out.stem}.failed.ipynb")
    status, error, commit, kept = "complete", None, source_commit(), "nothing was kept"
    try:
        execute(src, part, params, progress, timeout, env)
    except BaseException as exc:
        status, error = ("interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"), exc
    try:
        if part.exists():
            done = nbformat.read(part, as_version=4)
            complete = status == "complete"
            # a failed run's files are discarded: its notebook points at none (never at an earlier run's)
            _rewrite(done, str(tmp / "files"), str(files) if complete else "(discarded: the run did not complete)")
            done.metadata[RUN_MARK] = {"parameters": dict(params or {}), "status": status,
                                       "files": files.name if complete else None, "source": src.name,
                                       "commit": commit}
            if complete:
                staged = tmp / "files"
                staged.mkdir(exist_ok=True)
                (staged / FILES_MARK).write_text(f"{fname}\n", encoding="utf-8")
                _move_tree(staged, files, FILES_MARK)
                write_atomic(out, lambda t: nbformat.write(done, str(t)))
                failed.unlink(missing_ok=True)  # an earlier failed attempt of this run
            else:
                write_atomic(failed, lambda t: nbformat.write(done, str(t)))
                kept = f"the partial run is kept as {failed}"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if isinstance(error, KeyboardInterrupt):
        raise Interrupted(f"run of {src.name} into {out}; {kept}") from None
    if error is not None:
        raise error
    return out


_VOLATILE_CELL_KEYS = ("papermill", "execution")


def path_free(outputs: list, root: Path | str = ROOT, replacement: str = "") -> list:
    """Cell outputs with the project's absolute root removed from their text (e.g. the repr of a saved figure's
    path reads PosixPath('figures/01/x.png')): committed notebooks carry no machine paths. With `replacement`,
    root is replaced by it instead (a run's temporary folder by its final one)."""
    prefix = str(root).rstrip("/") + "/"
    target = replacement.rstrip("/") + "/" if replacement else ""

    def clean(text: Any) -> Any:
        if isinstance(text, list):
            return [clean(t) for t in text]
        return text.replace(prefix, target) if isinstance(text, str) else text

    for out in outputs:
        if "text" in out:
            out["text"] = clean(out["text"])
        for mime in ("text/plain", "text/html", "text/markdown"):
            if mime in out.get("data", {}):
                out["data"][mime] = clean(out["data"][mime])
    return outputs


_STYLER_ID = re.compile(r"(?<![A-Za-z0-9_])T_[0-9a-f]{5}(?=[_\"' ])")
_ADDRESS = re.compile(r"(<[\w.]+ (?:object )?at )0x[0-9a-f]{6,16}>")  # <pandas...Styler at 0x7f...>
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def stable_ids(outputs: list, cell_index: int) -> list:
    """Cell outputs with the ids a run draws at random replaced by ids derived from the cell's position: pandas
    Styler tables (T_1a2b3), widget model ids (tqdm bars) and memory addresses in reprs (<… at 0x7f…>). A refresh
    of an unchanged chapter then rewrites nothing; a different table still differs."""
    def fix(text: Any, k: int) -> Any:
        if isinstance(text, list):
            return [fix(t, k) for t in text]
        if not isinstance(text, str):
            return text
        seen: dict[str, str] = {}  # each distinct random id of the output gets its own stable one
        text = _ADDRESS.sub(r"\g<1>(address)>", text)
        return _STYLER_ID.sub(lambda m: seen.setdefault(m[0], f"T_c{cell_index}o{k}t{len(seen)}"), text)

    for k, out in enumerate(outputs):
        data = out.get("data", {})
        for mime in ("text/html", "text/plain"):
            if mime in data:
                data[mime] = fix(data[mime], k)
        widget = data.get(WIDGET_MIME)
        if isinstance(widget, dict) and "model_id" in widget:
            widget["model_id"] = hashlib.sha1(f"cell {cell_index} output {k}".encode()).hexdigest()
    return outputs


def without_widgets(outputs: list) -> list:
    """Cell outputs without widget views (tqdm's notebook progress bars): a saved notebook keeps no widget state,
    so JupyterLab would show each bar frozen at its first frame ("0%|")."""
    return [o for o in outputs if WIDGET_MIME not in o.get("data", {})]


def _merge_outputs(original: nbformat.NotebookNode, executed: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The original notebook with outputs and execution counts taken from the executed copy."""
    ran = [c for c in executed.cells if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    by_id = {c.get("id"): c for c in ran if c.get("id")}
    for i, cell in enumerate(original.cells):
        for key in _VOLATILE_CELL_KEYS:
            cell.metadata.pop(key, None)
        if cell.cell_type != "code":
            continue
        done = by_id.get(cell.get("id")) if cell.get("id") else None
        if done is None:
            done = ran[i] if i < len(ran) else None
        if done is None or done.source != cell.source:
            raise RuntimeError(f"executed notebook does not line up with the source at cell {i}")
        cell.outputs = stable_ids(path_free(without_widgets(done.outputs)), i)
        cell.execution_count = done.execution_count
    original.metadata.pop("papermill", None)
    return original


def refresh_chapter(nb: str | Path, progress: bool = True, timeout: float | None = None) -> Path:
    """Re-execute a chapter at defaults and atomically replace the source with outputs (only on success).

    The only writer of the committed notebooks/ and figures/: the chapter's figures are made in a temporary folder
    and replace figures/<chapter>/ only when the whole chapter ran (a crash half way changes nothing)."""
    src = resolve_notebook(nb)
    with tempfile.TemporaryDirectory(prefix="lab-refresh-") as tmp:
        out, figs = Path(tmp) / src.name, Path(tmp).resolve() / "figures"  # as lab.workbook.paths resolves LAB_FIGURES
        execute(src, out, None, progress, timeout, {"LAB_FIGURES": str(figs)})
        executed = nbformat.read(out, as_version=4)
        _rewrite(executed, str(figs), str(COMMITTED_FIGURES))
        original = nbformat.read(src, as_version=4)
        merged = _merge_outputs(original, executed)
        if figs.exists():
            for chapter in sorted(p for p in figs.iterdir() if p.is_dir()):
                staged = COMMITTED_FIGURES / f".{chapter.name}{PART}"
                if staged.exists():
                    shutil.rmtree(staged)
                shutil.copytree(chapter, staged)
                _move_tree(staged, COMMITTED_FIGURES / chapter.name)
    return write_atomic(src, lambda tmp: nbformat.write(merged, str(tmp)))


def _counts(path: Path) -> tuple[int, int]:
    """PASS and FAIL verdict counts of an executed notebook (NOT TESTED is neither)."""
    from lab.workbook.report import parse_claims

    try:
        claims = parse_claims(nbformat.read(path, as_version=4))
    except (OSError, ValueError):
        return 0, 0
    return (sum(c["verdict"] == "PASS" for c in claims), sum(c["verdict"] == "FAIL" for c in claims))


def run_workbook(chapters: Iterable[str | Path] | None = None, out_dir: Path = RUNS,
                 report_dir: Path = REPORT) -> list[Path]:
    """Run every chapter (or the given ones) at defaults, build the report, raise if any chapter failed."""
    from tqdm.auto import tqdm

    from lab.workbook.report import build_report

    sources = [resolve_notebook(c) for c in chapters] if chapters else list_chapters()
    if not sources:
        raise ValueError(f"no chapters found in {NOTEBOOKS}")
    start = time.perf_counter()
    stale = report_stale_parts(out_dir)
    if stale:
        print(stale, file=sys.stderr)
    executed: list[Path] = []
    failed: list[str] = []
    bar = tqdm(sources, desc="workbook", unit="chapter")
    for src in bar:
        bar.set_postfix_str(src.stem)
        t0 = time.perf_counter()
        out = Path(out_dir) / output_name(src.stem, None)
        try:
            run_chapter(src, out_dir=out_dir, progress=False, report_stale=False)
            status = "ok"
        except Exception as exc:  # noqa: BLE001 - report and keep going
            failed.append(src.stem)
            status = f"ERROR {type(exc).__name__}: {getattr(exc, 'evalue', exc)}"
        if status != "ok":  # the failed run is reported as such (from <stem>.failed.ipynb), never an older one
            out = out.with_name(f"{out.stem}.failed.ipynb")
        npass, nfail = _counts(out) if out.exists() else (0, 0)
        if out.exists():
            executed.append(out)
        tqdm.write(f"{src.stem:<32} {time.perf_counter() - t0:7.1f} s  {npass} PASS  {nfail} FAIL  {status}")
    bar.close()
    if executed:
        index = build_report(executed, out_dir=report_dir)
        tqdm.write(f"report: {index}")
    tqdm.write(f"total: {time.perf_counter() - start:.1f} s for {len(sources)} chapter(s)")
    if failed:
        raise WorkbookError(f"{len(failed)} chapter(s) failed: {', '.join(failed)}")
    return executed
