"""Command line: python -m lab {run,workbook,refresh,report,sweep,robustness,registry,readme,new}."""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml


def _seconds(text: str) -> float:
    """--timeout: a positive number of seconds."""
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return v


def _count(text: str) -> int:
    """--workers, --max-points: a positive integer."""
    try:
        v = int(text, 10)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _parser() -> argparse.ArgumentParser:
    """The argparse parser for all subcommands."""
    p = argparse.ArgumentParser(prog="python -m lab", description="Run and report the Loss-Landscape Lab.")
    sub = p.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="execute one chapter into runs/ (optionally with parameters)")
    run.add_argument("nb", help="chapter: 01, 01_noise_floor or notebooks/01_noise_floor.ipynb")
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="override a parameter (value parsed like YAML: 3, 1e-3, -1e-3, true, [1,2], float64; "
                          "the two words after -p are always NAME and VALUE, even when VALUE begins with '-')")
    run.add_argument("-y", "--yaml", default=None, help="parameters as a YAML mapping string")
    run.add_argument("--name", default=None, help="output notebook name (default derived from the parameters: a "
                     "rerun with the same parameters replaces the earlier run). A --name that exists is refused "
                     "unless --replace is given; a name beginning with another chapter's number (01_…) or ending "
                     "in .failed is always refused")
    run.add_argument("--replace", action="store_true", help="with --name: replace an existing run of that name")
    run.add_argument("--out-dir", default=None, help="folder of the run (default runs/; inside the repository "
                     "only under runs/)")
    run.add_argument("--timeout", type=_seconds, default=None, help="per-cell timeout in seconds")
    run.add_argument("--no-progress", action="store_true", help="hide the per-cell progress bar")
    run.add_argument("--help-params", action="store_true", help="list the chapter's parameters (type, default, "
                     "allowed values, comment) and run nothing")
    wb = sub.add_parser("workbook", help="run all (or the given) chapters at defaults and build the report")
    wb.add_argument("nb", nargs="*", help="chapters to run (default: all)")
    ref = sub.add_parser("refresh", help="re-execute chapters in place at defaults (source keeps outputs)")
    ref.add_argument("nb", nargs="*", help="chapters to refresh (default: all)")
    rep = sub.add_parser("report", help="rebuild report/ (Jupyter Book) from the existing default runs in runs/")
    rep.add_argument("--committed", action="store_true", help="build from the committed, executed chapters in "
                     "notebooks/ instead (a preview; nothing is executed), into runs/report-preview/")
    rep.add_argument("--out-dir", default=None, help="report folder (default report/, or runs/report-preview/ with "
                     "--committed)")
    sw = sub.add_parser("sweep", help="run a chapter over a grid of parameters on Dask into runs/<sweep>/ (resumable)")
    sw.add_argument("nb", help="chapter: 01, 01_noise_floor or a notebook path")
    sw.add_argument("--grid", required=True, help="YAML grid: {param: [values]} for the full product, or "
                    "{grid: {...}, rows: [{...}], fixed: {...}, plot: {x: PARAM, y: COLUMN}, name: SWEEP}")
    sw.add_argument("--scheduler", default=None, metavar="ADDRESS",
                    help="an existing Dask scheduler (tcp://host:8786); default: a LocalCluster on this machine")
    sw.add_argument("--workers", type=_count, default=None, metavar="N",
                    help="local workers (default: one per core, at most one per point); with --scheduler: wait "
                         "until N workers have joined")
    sw.add_argument("--name", default=None, help="sweep name (default <notebook stem>__<grid file stem>)")
    sw.add_argument("--out-dir", default=None, help="parent folder of the sweep folder (default runs/)")
    sw.add_argument("--timeout", type=_seconds, default=None, help="per-cell timeout in seconds")
    sw.add_argument("--plot", nargs="+", default=[], metavar="AXIS=COLUMN",
                    help="summary plot axes, e.g. x=max_width y=C6.alpha: a parameter, a claim column C<n>.<number>, "
                         "seconds or claims_passed (default: from the grid file or guessed)")
    sw.add_argument("--max-points", type=_count, default=None, metavar="N",
                    help="refuse grids of more than N points (default 10,000): counted before anything is expanded")
    sw.add_argument("--dry-run", action="store_true", help="validate the grid and list the points; run nothing")
    sw.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    rb = sub.add_parser("robustness", help="run chapters over seeds and numeric conditions (CPU kernels, threads, "
                                           "CUDA) into runs/robustness/: a claim x condition verdict matrix")
    rb.add_argument("nb", nargs="*", help="chapters (default: all)")
    rb.add_argument("--matrix", default="default", help="conditions: default (seeds 0-4 native kernels 2 threads; "
                    "seeds 0-1 ATEN_CPU_CAPABILITY=default and avx2; seed 0 one thread; 2 seeds drawn at random "
                    "per matrix folder; CUDA when present) or ci "
                    "(seed 1, default kernels, one thread)")
    rb.add_argument("--seeds", default=None, help="comma-separated seeds replacing every condition's seeds")
    rb.add_argument("--workers", type=_count, default=None, metavar="N", help="workers per thread count "
                    "(default: cores // threads)")
    rb.add_argument("--name", default=None, help="output folder name under runs/ (default robustness[-MATRIX])")
    rb.add_argument("--out-dir", default=None, help="parent folder (default runs/)")
    rb.add_argument("--timeout", type=_seconds, default=None, help="per-cell timeout in seconds")
    rb.add_argument("--dry-run", action="store_true", help="list the runs; run nothing")
    rb.add_argument("--fresh", action="store_true", help="discard the chosen chapters' earlier results in this "
                    "matrix first instead of resuming")
    rb.add_argument("--collect", action="store_true", help="run nothing: rebuild the matrix tables and heat map from "
                    "the records already there")
    rb.add_argument("--publish", default=None, metavar="DIR", help="copy the small results (summary.csv, "
                    "matrix.png, claims.csv, claims.md, conditions.json) to DIR, e.g. results/robustness")
    rb.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    reg = sub.add_parser("registry", help="rebuild results/claims_registry.csv (every version of every claim's "
                                          "threshold, from git history)")
    reg.add_argument("--check", action="store_true", help="exit 1 when the registry is not current")
    rd = sub.add_parser("readme", help="rewrite README.md's chapter table from the committed chapters' runs")
    rd.add_argument("--check", action="store_true", help="exit 1 when the table is not current")
    new = sub.add_parser("new", help="start a chapter: notebooks/NN_name.ipynb from notebooks/template.ipynb")
    new.add_argument("number", help="the chapter's two digits, e.g. 07 (not taken by another chapter)")
    new.add_argument("name", help="a lowercase identifier, e.g. flatness")
    return p


def _tally(res: dict) -> str:
    """'70/77 verdicts PASS, 5 NOT TESTED, 2 FAIL': NOT TESTED (no power, or a failed protocol check) is neither."""
    nt = int(res.get("not_tested") or 0)
    return (f"{res['verdicts'] - res['fails'] - nt}/{res['verdicts']} verdicts PASS, {nt} NOT TESTED, "
            f"{res['fails']} FAIL")


def _robustness(args: argparse.Namespace) -> int:
    """The robustness subcommand: plan, run pending points, write the matrix; 1 if any verdict FAILs or a run
    failed."""
    from lab.workbook import robustness
    from lab.workbook.paths import RUNS

    seeds = None
    if args.seeds is not None:
        try:
            seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError as exc:
            raise ValueError(f"--seeds expects comma-separated integers, got {args.seeds!r}") from exc
        if not seeds or min(seeds) < 0:
            raise ValueError(f"--seeds expects non-negative integers, got {args.seeds!r}")
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be a positive integer, got {args.workers}")
    p = robustness.make_plan(args.nb or None, matrix=args.matrix, seeds=seeds, out_root=args.out_dir or RUNS,
                             name=args.name)
    for c, why in p.skipped:
        print(f"skipping condition {c.name}: {why}")
    if args.collect and args.fresh:
        raise ValueError("--collect rebuilds the matrix from its records and --fresh deletes them: give one")
    if args.dry_run or args.collect:
        return _robustness_locked(args, p)
    from lab.workbook.sweep import folder_lock

    p.out_dir.mkdir(parents=True, exist_ok=True)
    with folder_lock(p.out_dir):  # --fresh must not delete the records of a run in progress
        return _robustness_locked(args, p)


def _robustness_locked(args: argparse.Namespace, p: object) -> int:
    """The robustness subcommand once planned (and, unless it only reads, with the matrix folder locked)."""

    from lab.workbook import robustness
    from lab.workbook.sweep import point_state

    if args.fresh and not args.dry_run:
        import shutil

        for sw in p.sweeps.values():
            if sw.out_dir.exists():
                shutil.rmtree(sw.out_dir)
    if args.collect:
        res = robustness.write_matrix(p)
        prev = p.out_dir / "robustness.json"
        if prev.exists():  # keep the wall time of the last run
            res["seconds"] = json.loads(prev.read_text(encoding="utf-8")).get("seconds")
        from lab.workbook.runner import write_atomic

        write_atomic(prev, json.dumps(res, indent=1))
        print(f"robustness {p.out_dir.name}: {_tally(res)} over "
              f"{res['runs']} run(s) of {res['claims']} claims, {res['failed_runs']} run(s) failed or missing")
        if args.publish:
            for f in robustness.publish(p.out_dir, args.publish):
                print(f)
        return 1 if res["fails"] or res["failed_runs"] else 0
    if args.dry_run:
        for sw in p.sweeps.values():
            states = [point_state(sw, pid) for pid in sw.points]
            print(f"{sw.name}: seeds {sorted(q['seed'] for q in sw.points.values())}, env {sw.env}, "
                  f"{states.count('done')}/{len(states)} done")
        return 0
    res = robustness.run(p, workers=args.workers, timeout=args.timeout, progress=not args.no_progress)
    print(f"robustness {p.out_dir.name}: {_tally(res)} over "
          f"{res['runs']} run(s) of {res['claims']} claims, {res['failed_runs']} run(s) failed, {res['seconds']:.0f} s")
    if res["flipping_claims"]:
        print("claims that FAIL somewhere: " + ", ".join(res["flipping_claims"]))
    for f in ("matrix.csv", "summary.csv", "matrix.png"):
        print(p.out_dir / f)
    if args.publish:
        for f in robustness.publish(p.out_dir, args.publish):
            print(f)
    return 1 if res["fails"] or res["failed_runs"] else 0


def _sweep(args: argparse.Namespace) -> int:
    """The sweep subcommand: validate, run pending points, print the summary; 1 if any point failed."""
    from lab.workbook import sweep
    from lab.workbook.paths import RUNS

    plot = {}
    for item in args.plot:
        axis, sep, col = item.partition("=")
        if not sep or axis not in ("x", "y") or not col:
            raise ValueError(f"--plot expects x=PARAM and/or y=COLUMN, got {item!r}")
        plot[axis] = col
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be a positive integer, got {args.workers}")
    out_root = args.out_dir or RUNS
    limit = {"max_points": args.max_points} if args.max_points else {}
    if args.dry_run:
        plan = sweep.plan(args.nb, args.grid, name=args.name, out_root=out_root, plot=plot or None, **limit)
        print(f"sweep {plan.name}: {len(plan.points)} point(s) of {plan.notebook.name} into {plan.out_dir}")
        states = {"done": "done", "pending": "to run", "stale": "to run (the chapter's code changed)"}
        for pid, params in plan.points.items():
            print(f"  {pid}  {states[sweep.point_state(plan, pid)]}  {params}")
        return 0
    try:
        res = sweep.run_sweep(args.nb, args.grid, name=args.name, scheduler=args.scheduler, workers=args.workers,
                              out_root=out_root, timeout=args.timeout, plot=plot or None,
                              progress=not args.no_progress, **limit)
    except KeyboardInterrupt:
        print("interrupted: finished points are kept; rerun the same command to resume", file=sys.stderr)
        return 130
    n = len(res.table)
    print(f"sweep {res.sweep.name}: {n - res.n_failed}/{n} point(s) ok ({len(res.ran)} run now, "
          f"{len(res.skipped)} already done)")
    for _, row in res.table[res.table["status"] != "ok"].iterrows():
        print(f"  {row['point']} {row['status']}: {row['error']}", file=sys.stderr)
    for f in res.files:
        print(f)
    return 1 if res.n_failed else 0


def _take_parameters(argv: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """argv without the `-p NAME VALUE` (or --parameter) triples of the run subcommand, and their pairs in order.

    argparse reads a VALUE beginning with '-' (-1e-3, -inf) as an option and fails ("expected 2 arguments"): the two
    words after -p are taken here as they are. A -p missing its words is left for argparse to report."""
    first = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    if first is None or argv[first] != "run":
        return argv, []
    rest, pairs, i = argv[:first + 1], [], first + 1
    while i < len(argv):
        a = argv[i]
        if a == "--":
            rest.extend(argv[i:])
            break
        if a in ("-p", "--parameter") and i + 2 < len(argv):
            pairs.append((argv[i + 1], argv[i + 2]))
            i += 3
            continue
        rest.append(a)
        i += 1
    return rest, pairs


def _interrupted(args: argparse.Namespace, exc: KeyboardInterrupt) -> str:
    """What was running when Ctrl-C came, in a few words (runner.Interrupted says it itself)."""
    what = getattr(exc, "what", None)
    if what:
        return what
    if args.cmd == "refresh":
        return "refresh (a chapter is replaced only when it ran to the end: the one running now is unchanged)"
    if args.cmd in ("sweep", "robustness"):
        return f"{args.cmd} (finished points are kept: rerun the same command to resume)"
    nbs = getattr(args, "nb", None)
    return " ".join([args.cmd] + ([nbs] if isinstance(nbs, str) else list(nbs or [])))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    from_command_line = argv is None
    argv, taken = _take_parameters(list(sys.argv[1:] if argv is None else argv))
    args = _parser().parse_args(argv)
    if args.cmd == "run":
        args.parameter = taken + args.parameter
    from papermill.exceptions import PapermillExecutionError

    from lab.workbook import runner

    try:
        if args.cmd == "run" and args.help_params:
            print(runner.parameter_help(args.nb))
        elif args.cmd == "run":
            params: dict = {}
            if args.yaml:
                loaded = runner.load_yaml(args.yaml)
                if not isinstance(loaded, dict):
                    raise ValueError(f"-y expects a YAML mapping, got {args.yaml!r}")
                params.update(loaded)
            params.update(runner.parse_cli_params(args.parameter))
            if args.replace and args.name is None:
                raise ValueError("--replace goes with --name (a run without --name always replaces the earlier run "
                                 "of the same parameters)")
            out_dir = {"out_dir": Path(args.out_dir)} if args.out_dir else {}
            out = runner.run_chapter(args.nb, params or None, name=args.name, progress=not args.no_progress,
                                     timeout=args.timeout, replace=args.replace, **out_dir)
            print(out)
        elif args.cmd == "workbook":
            runner.run_workbook(args.nb or None)
        elif args.cmd == "refresh":
            chapters = [runner.resolve_notebook(n) for n in args.nb] if args.nb else runner.list_chapters()
            if not chapters:
                raise ValueError("no chapters to refresh")
            for nb in chapters:
                print(f"refreshed {runner.refresh_chapter(nb)}")
        elif args.cmd == "sweep":
            return _sweep(args)
        elif args.cmd == "robustness":
            return _robustness(args)
        elif args.cmd == "readme":
            from lab.workbook.summary import update_readme

            ok = update_readme(check=args.check)
            print("README.md: the chapter table is " + ("current" if ok else "not current: run `python -m lab readme`"))
            return 0 if ok else 1
        elif args.cmd == "registry":
            from lab.workbook.registry import main as registry_main

            return registry_main(["--check"] if args.check else [])
        elif args.cmd == "new":
            from lab.workbook.scaffold import new_chapter

            print(new_chapter(args.number, args.name))
        elif args.cmd == "report":
            from lab.workbook.paths import REPORT, RUNS
            from lab.workbook.report import build_report, default_runs, preview_report

            if args.committed:
                print(preview_report(args.out_dir))
                return 0
            runs = default_runs(RUNS)
            if not runs:
                raise ValueError(f"no executed chapters in {RUNS}; run `python -m lab workbook` first")
            print(build_report(runs, args.out_dir or REPORT))
    except (ValueError, yaml.YAMLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        import errno

        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC):
            raise
        why = {errno.ENOSPC: "no space left on the device"}.get(exc.errno, "permission denied")
        print(f"error: cannot write {exc.filename or ''}: {why} (is runs/ read-only? point --out-dir or "
              "LAB_FIGURES/LAB_RESULTS elsewhere)", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        if from_command_line:  # the process exits next: a second Ctrl-C meanwhile prints no traceback (never
            import signal  # ignored in a caller's process, a test's: every child it starts would inherit SIG_IGN)

            signal.signal(signal.SIGINT, signal.SIG_IGN)
        print(f"interrupted: {_interrupted(args, exc)}", file=sys.stderr)
        return 130
    except runner.WorkbookError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except PapermillExecutionError as exc:
        print(f"error: cell {exc.exec_count} failed: {exc.ename}: {exc.evalue}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
