"""The robustness matrix: every chapter's claims over seeds and numeric conditions (CPU kernel sets, thread counts,
CUDA), on the sweep engine — resumable, one table claim × condition → verdict, and a heat map.

A claim is a finding only if it holds at any seed and on any machine. A condition is an environment the chapter's
kernel runs in: `ATEN_CPU_CAPABILITY` picks torch's CPU kernels (default = scalar code, avx2, avx512; each sums in
its own order) and `OMP_NUM_THREADS` the thread count (which splits reductions differently). Conditions that are the
same configuration on this machine (avx2 where the CPU's own kernels are avx2) share their runs.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lab.workbook.paths import RUNS

KERNELS = ("native", "default", "avx2", "avx512")


@dataclass(frozen=True)
class Condition:
    """One column group of the matrix: the seeds run under one numeric condition."""

    name: str
    seeds: tuple[int, ...]
    kernels: str = "native"
    threads: int = 2
    device: str = "cpu"

    def env(self) -> dict[str, str]:
        """The kernel's environment for this condition."""
        out = {"OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}
        if self.kernels != "native":
            out["ATEN_CPU_CAPABILITY"] = self.kernels
        return out


FRESH: tuple[int, ...] = (-1,)  # placeholder: a matrix's fresh seeds, drawn once per matrix folder (fresh_seeds)
N_FRESH = 2


def fresh_seeds(out_dir: Path, n: int = N_FRESH) -> tuple[int, ...]:
    """The matrix's fresh seeds: drawn at random (from [5, 10⁶), outside the chapters' usual 0–4) the first time
    the matrix folder is planned, recorded in its fresh_seeds.json (and in the published conditions.json) and reused
    when it resumes; a new matrix folder, or deleting the file, draws anew.
    No threshold is tuned to seeds nobody has seen."""
    import json
    import secrets

    path = Path(out_dir) / "fresh_seeds.json"
    if path.is_file():
        seeds = json.loads(path.read_text(encoding="utf-8")).get("seeds") or []
        if seeds:
            return tuple(int(x) for x in seeds)
    rng = secrets.SystemRandom()
    seeds = sorted(rng.sample(range(5, 10**6), n))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"seeds": seeds, "drawn": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n",
                    encoding="utf-8")
    return tuple(seeds)


MATRICES: dict[str, tuple[Condition, ...]] = {
    "default": (
        Condition("native·2t", (0, 1, 2, 3, 4)),
        Condition("avx2·2t", (0, 1), kernels="avx2"),
        Condition("default·1t", (0, 1), kernels="default", threads=1),
        Condition("native·1t", (0,), threads=1),
        Condition("fresh·2t", FRESH),  # seeds drawn at random for this matrix (fresh_seeds.json), never tuned on
        Condition("cuda", (0,), device="cuda"),
    ),
    "ci": (Condition("default·1t", (1,), kernels="default", threads=1),),
}


def native_kernels() -> str:
    """The ATen CPU kernel set this machine uses by default, lower case (e.g. 'avx2')."""
    import torch

    return str(torch.backends.cpu.get_cpu_capability()).lower()


def effective(cond: Condition, native: str) -> tuple[str, int, str]:
    """(kernels, threads, device) that actually run: 'native' and an explicit request for the native set (or one the
    CPU lacks, which ATen caps at its best) are the same runs."""
    order = ["default", "avx2", "avx512"]
    k = native if cond.kernels == "native" else cond.kernels
    if k in order and native in order and order.index(k) > order.index(native):
        k = native
    return (k if cond.device == "cpu" else "cuda", cond.threads, cond.device)


def run_folder_name(chapter_stem: str, key: tuple[str, int, str]) -> str:
    """The sweep folder of one chapter under one effective condition."""
    kernels, threads, device = key
    return f"{chapter_stem}__{device}-{kernels}-{threads}t" if device == "cpu" else f"{chapter_stem}__cuda"


@dataclass
class Plan:
    """What a robustness run will do: the chapters, the conditions kept, and the sweeps (one per chapter and
    effective condition) with the seeds each must run."""

    chapters: list[Path]
    conditions: list[Condition]
    skipped: list[tuple[Condition, str]]
    out_dir: Path
    native: str
    sweeps: dict[tuple[str, tuple[str, int, str]], Any] = field(default_factory=dict)  # (stem, key) -> Sweep

    def key(self, cond: Condition) -> tuple[str, int, str]:
        """The effective condition of cond on this machine."""
        return effective(cond, self.native)


def make_plan(chapters: Sequence[str] | None = None, matrix: str = "default", seeds: Sequence[int] | None = None,
              out_root: str | Path = RUNS, name: str | None = None) -> Plan:
    """Resolve chapters and conditions and plan one sweep per chapter and effective condition (nothing runs).

    `seeds` replaces every condition's seeds. CUDA conditions are skipped (and listed) without a GPU.
    """
    import torch

    from lab.workbook.runner import check_out_dir, list_chapters, resolve_notebook
    from lab.workbook.sweep import SweepError, plan

    if matrix not in MATRICES:
        raise SweepError(f"unknown matrix {matrix!r}; allowed: {', '.join(MATRICES)}")
    nbs = [resolve_notebook(c) for c in chapters] if chapters else list_chapters()
    if not nbs:
        raise SweepError("no chapters to run")
    out_dir = check_out_dir(out_root, "robustness output") / (name or ("robustness" if matrix == "default"
                                                                 else f"robustness-{matrix}"))
    native = native_kernels()
    conds, skipped = [], []
    for c in MATRICES[matrix]:
        if seeds is not None:
            c = Condition(c.name, tuple(int(s) for s in seeds), c.kernels, c.threads, c.device)
        elif c.seeds == FRESH:
            c = Condition(c.name, fresh_seeds(out_dir), c.kernels, c.threads, c.device)
        if c.device == "cuda" and not torch.cuda.is_available():
            skipped.append((c, "no CUDA GPU on this machine"))
            continue
        conds.append(c)
    p = Plan(nbs, conds, skipped, out_dir, native)
    for nb in nbs:
        by_key: dict[tuple[str, int, str], set[int]] = {}
        for c in conds:
            by_key.setdefault(p.key(c), set()).update(c.seeds)
        for key, ss in by_key.items():
            grid = {"seed": sorted(ss)} if key[2] == "cpu" else {"grid": {"seed": sorted(ss)},
                                                                  "fixed": {"device": "cuda"}}
            env = next(c for c in conds if p.key(c) == key).env()
            p.sweeps[nb.stem, key] = plan(nb, grid, name=run_folder_name(nb.stem, key), out_root=out_dir, env=env)
    return p


def run(p: Plan, workers: int | None = None, timeout: float | None = None, progress: bool = True) -> dict[str, Any]:
    """Run every pending point of the plan, one Dask cluster per thread count (cores // threads single-threaded
    workers, so that conditions never oversubscribe the cores), then write the matrix; return its summary. The
    matrix folder is locked for the duration (a second run on it is refused, naming the holder)."""
    from lab.workbook.sweep import folder_lock

    p.out_dir.mkdir(parents=True, exist_ok=True)
    with folder_lock(p.out_dir):
        return _run(p, workers, timeout, progress)


def _run(p: Plan, workers: int | None, timeout: float | None, progress: bool) -> dict[str, Any]:
    """run's body, with the matrix folder locked."""
    from tqdm.auto import tqdm

    from lab.workbook.sweep import _clean_partials, _write_json, connect, point_state, submit_points

    p.out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    by_threads: dict[int, list[tuple[Any, str]]] = {}
    for (_, key), sw in p.sweeps.items():
        sw.out_dir.mkdir(parents=True, exist_ok=True)
        _write_json(sw.out_dir / "sweep.json", {"notebook": str(sw.notebook), "name": sw.name, "code_hash": sw.code,
                                                "env": sw.env, "points": sw.points})
        _clean_partials(sw.out_dir)
        for pid in sw.points:
            if point_state(sw, pid) != "done":
                by_threads.setdefault(key[1], []).append((sw, pid))
    total = sum(len(v) for v in by_threads.values())
    tqdm.write(f"robustness: {len(p.chapters)} chapter(s) × {len(p.conditions)} condition(s), "
               f"{sum(len(s.points) for s in p.sweeps.values())} run(s), {total} to run (native kernels: {p.native})")
    hints = published_seconds()
    for threads, items in sorted(by_threads.items()):  # 1-thread runs first: both cores busy
        # longest runs first (as last published), so that the short ones fill in beside them
        items.sort(key=lambda it: -hints.get(Path(it[0].notebook).stem, {}).get(str(threads), 0.0))
        n = workers or max(1, (os.cpu_count() or 1) // threads)
        with connect(None, min(n, len(items)), len(items), dashboard_address=None) as client:
            submit_points(client, items, timeout, retries=1, progress=progress, desc=f"{threads} thread(s)")
    summary = write_matrix(p)
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    _write_json(p.out_dir / "robustness.json", summary)
    return summary


def records(p: Plan) -> list[dict[str, Any]]:
    """One row per (chapter, condition, seed, claim) — plus one per run that failed to execute (claim None)."""
    from lab.workbook.sweep import point_id, read_record

    rows = []
    for nb in p.chapters:
        for c in p.conditions:
            sw = p.sweeps[nb.stem, p.key(c)]
            declared = {pid: prm for pid, prm in sw.points.items()}
            for seed in c.seeds:
                pid = next((i for i, prm in declared.items() if prm.get("seed") == seed), point_id({"seed": seed}))
                rec = read_record(sw.record_path(pid)) or {}
                base = {"chapter": nb.stem[:2], "notebook": nb.stem, "condition": c.name, "seed": seed,
                        "status": rec.get("status", "pending"), "seconds": rec.get("seconds"),
                        "cpu_kernels": (rec.get("stamp") or {}).get("cpu_kernels"),
                        "threads": (rec.get("stamp") or {}).get("threads"),
                        "device": (rec.get("stamp") or {}).get("device"), "run": f"{sw.name}/{pid}"}
                claims = rec.get("claims") or []
                if rec.get("status") != "ok" or not claims:
                    rows.append({**base, "claim": None, "passed": False, "numbers": None,
                                 "error": rec.get("error") or ("no claims recorded" if rec else "not run")})
                    continue
                for cl in claims:
                    rows.append({**base, "claim": cl["id"], "passed": bool(cl["passed"]),
                                 "verdict": cl.get("status") or ("PASS" if cl["passed"] else "FAIL"),
                                 "statement": cl.get("statement"), "numbers": json.dumps(cl.get("numbers") or {}),
                                 "error": None})
    return rows


def write_matrix(p: Plan) -> dict[str, Any]:
    """matrix.csv (every verdict with its numbers), summary.csv (per claim and condition: passed / runs) and
    matrix.png (the heat map) in the plan's folder; return the headline numbers."""
    import pandas as pd

    from lab.workbook.runner import write_atomic

    df = pd.DataFrame(records(p))
    write_atomic(p.out_dir / "matrix.csv", df.to_csv(index=False))
    ok = df[df["claim"].notna()]
    summary = (ok.groupby(["chapter", "claim", "condition"], sort=False)["passed"].agg(["sum", "count"])
               .reset_index().rename(columns={"sum": "passed", "count": "runs"}))
    write_atomic(p.out_dir / "summary.csv", summary.to_csv(index=False))
    failed_runs = df[df["claim"].isna()]
    # a FAIL is a verdict of FAIL; NOT TESTED (lost power, a failed protocol check) is reported, not a failure
    is_fail = (ok["verdict"] == "FAIL") if "verdict" in ok else ~ok["passed"].astype(bool)
    out = {"conditions": [asdict(c) for c in p.conditions], "skipped": [[asdict(c), why] for c, why in p.skipped],
           "native_kernels": p.native, "chapters": [nb.stem for nb in p.chapters],
           "runs": int(df.groupby(["notebook", "condition", "seed"]).ngroups) if len(df) else 0,
           "failed_runs": int(len(failed_runs)), "verdicts": int(len(ok)), "fails": int(is_fail.sum()),
           "not_tested": int((ok["verdict"] == "NOT TESTED").sum()) if "verdict" in ok else 0,
           "claims": int(ok.groupby(["chapter", "claim"]).ngroups) if len(ok) else 0,
           "flipping_claims": sorted({f"{r.chapter} {r.claim}" for r in ok[is_fail].itertuples()})}
    runs = df.drop_duplicates("run")
    out["distinct_runs"] = int(len(runs))  # conditions that are one configuration here share their runs
    out["run_seconds"] = round(float(runs["seconds"].fillna(0).sum()), 1)  # the runs' own times, summed
    # the wall time those runs need when scheduled as run() does (cores // threads side by side)
    cores = os.cpu_count() or 1
    out["scheduled_seconds"] = round(float(sum(g["seconds"].fillna(0).sum() / max(1, cores // max(1, int(t)))
                                               for t, g in runs.groupby(runs["threads"].fillna(1)))), 1)
    try:
        plot_matrix(df, p.out_dir / "matrix.png")
    except Exception as exc:  # noqa: BLE001 - the table is the result
        out["plot_error"] = f"{type(exc).__name__}: {exc}"
    return out


def claim_shares(df: Any) -> Any:
    """Per claim: the conditions in which it held at every seed run there, and the runs in which it held."""
    import pandas as pd

    ok = df[df["claim"].notna()]
    rows = []
    order = sorted(ok.groupby(["chapter", "claim"]).groups, key=lambda k: (str(k[0]), int(str(k[1]).lstrip("C") or 0)))
    for chapter, claim in order:
        g = ok[(ok["chapter"] == chapter) & (ok["claim"] == claim)]
        by_cond = g.groupby("condition")["passed"].all()
        statement = g["statement"].iloc[0] if "statement" in g else ""
        rows.append({"chapter": chapter, "claim": claim, "statement": statement,
                     "conditions_held": int(by_cond.sum()), "conditions": int(len(by_cond)),
                     "runs_held": int(g["passed"].sum()), "runs": int(len(g))})
    return pd.DataFrame(rows)


def publish(out_dir: str | Path, dest: str | Path) -> list[Path]:
    """Copy a matrix's small results — summary.csv, matrix.png — to dest and write claims.csv (claim_shares), its
    Markdown table claims.md and conditions.json (the conditions, the native kernels, the run times): what the
    repository commits."""
    import shutil

    import pandas as pd

    from lab.workbook.runner import write_atomic

    src, dest = Path(out_dir), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    files = []
    for name in ("summary.csv", "matrix.png"):
        files.append(Path(shutil.copyfile(src / name, dest / name)))
    df = pd.read_csv(src / "matrix.csv", dtype={"chapter": str})
    files.append(write_atomic(dest / "claims.csv", claim_shares(df).to_csv(index=False)))
    meta = json.loads((src / "robustness.json").read_text(encoding="utf-8"))
    keep = {k: meta.get(k) for k in ("conditions", "skipped", "native_kernels", "chapters", "runs", "failed_runs",
                                     "verdicts", "fails", "claims", "flipping_claims", "distinct_runs",
                                     "run_seconds", "scheduled_seconds")}
    runs = df.drop_duplicates("run").dropna(subset=["seconds"])
    keep["chapter_seconds"] = {nb: {str(int(t)): round(float(g2["seconds"].median()), 1)
                                    for t, g2 in g.groupby(g["threads"].fillna(1))}
                               for nb, g in runs.groupby("notebook")}  # median run time per chapter and threads
    files.append(write_atomic(dest / "conditions.json", json.dumps(keep, indent=1)))
    files.append(write_atomic(dest / "claims.md", claims_markdown(claim_shares(df))))
    return files


PUBLISHED = Path(__file__).resolve().parent.parent.parent / "results" / "robustness" / "conditions.json"


def published_seconds(path: str | Path = PUBLISHED) -> dict[str, dict[str, float]]:
    """Median run time per chapter and thread count from the last published matrix ({} when there is none)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8")).get("chapter_seconds") or {}
    except (OSError, ValueError):
        return {}


def claims_markdown(shares: Any) -> str:
    """The per-claim shares as a Markdown table (what the README shows)."""
    lines = ["| chapter | claim | conditions where it holds at every seed | runs where it holds |",
             "| --- | --- | --- | --- |"]
    for r in shares.itertuples():
        lines.append(f"| {r.chapter} | {r.claim} | {r.conditions_held}/{r.conditions} "
                     f"({100 * r.conditions_held / max(1, r.conditions):.0f}%) | {r.runs_held}/{r.runs} |")
    return "\n".join(lines) + "\n"


def plot_matrix(df: Any, path: Path) -> Path:
    """The heat map: one row per claim, one column per condition and seed; green PASS, red FAIL, grey no run."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import ListedColormap

    from lab.workbook.runner import write_atomic

    ok = df[df["claim"].notna()]
    cols = list(dict.fromkeys(f"{r.condition} s{r.seed}" for r in df.itertuples()))
    rows = list(dict.fromkeys(f"{r.chapter} {r.claim}" for r in ok.itertuples()))
    grid = np.full((len(rows), len(cols)), np.nan)
    for r in ok.itertuples():
        grid[rows.index(f"{r.chapter} {r.claim}"), cols.index(f"{r.condition} s{r.seed}")] = float(r.passed)
    fig, ax = plt.subplots(figsize=(2.2 + 0.45 * len(cols), 1.2 + 0.18 * len(rows)))
    ax.imshow(np.where(np.isnan(grid), 0.5, grid), cmap=ListedColormap(["#cf222e", "#d0d7de", "#1a7f37"]),
              vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(cols)), cols, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=6)
    share = np.nanmean(grid) if np.isfinite(grid).any() else float("nan")
    ax.set_title(f"robustness matrix: {np.nansum(grid):.0f} of {np.isfinite(grid).sum()} verdicts PASS "
                 f"({share:.1%}); green PASS, red FAIL, grey not run", fontsize=9)
    ax.set_xlabel("condition (kernels · threads) and seed")
    fig.tight_layout()
    try:
        write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png", metadata={"Software": None}))
    finally:
        plt.close(fig)
    return path
