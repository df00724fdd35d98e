"""Command line: python -m lab {run,workbook,refresh,report}."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import yaml


def _parser() -> argparse.ArgumentParser:
    """The argparse parser for all subcommands."""
    p = argparse.ArgumentParser(prog="python -m lab", description="Run and report the Loss-Landscape Lab.")
    sub = p.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="execute one chapter into runs/ (optionally with parameters)")
    run.add_argument("nb", help="chapter: 01, 01_noise_floor or notebooks/01_noise_floor.ipynb")
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="override a parameter (value parsed like YAML: 3, 1e-3, true, [1,2], float64)")
    run.add_argument("-y", "--yaml", default=None, help="parameters as a YAML mapping string")
    run.add_argument("--name", default=None, help="output notebook name (default derived from parameters)")
    run.add_argument("--timeout", type=float, default=None, help="per-cell timeout in seconds")
    run.add_argument("--no-progress", action="store_true", help="hide the per-cell progress bar")
    wb = sub.add_parser("workbook", help="run all (or the given) chapters at defaults and build the report")
    wb.add_argument("nb", nargs="*", help="chapters to run (default: all)")
    ref = sub.add_parser("refresh", help="re-execute chapters in place at defaults (source keeps outputs)")
    ref.add_argument("nb", nargs="*", help="chapters to refresh (default: all)")
    sub.add_parser("report", help="rebuild report/ from the existing default runs in runs/")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = _parser().parse_args(argv)
    from papermill.exceptions import PapermillExecutionError

    from lab import runner

    try:
        if args.cmd == "run":
            params: dict = {}
            if args.yaml:
                loaded = yaml.safe_load(args.yaml)
                if not isinstance(loaded, dict):
                    raise ValueError(f"-y expects a YAML mapping, got {args.yaml!r}")
                params.update(loaded)
            params.update(runner.parse_cli_params(args.parameter))
            out = runner.run_chapter(args.nb, params or None, name=args.name, progress=not args.no_progress,
                                     timeout=args.timeout)
            print(out)
        elif args.cmd == "workbook":
            runner.run_workbook(args.nb or None)
        elif args.cmd == "refresh":
            chapters = [runner.resolve_notebook(n) for n in args.nb] if args.nb else runner.list_chapters()
            if not chapters:
                raise ValueError("no chapters to refresh")
            for nb in chapters:
                print(f"refreshed {runner.refresh_chapter(nb)}")
        elif args.cmd == "report":
            from lab.paths import RUNS
            from lab.report import build_report, default_runs

            runs = default_runs(RUNS)
            if not runs:
                raise ValueError(f"no executed chapters in {RUNS}; run `python -m lab workbook` first")
            print(build_report(runs))
    except (ValueError, yaml.YAMLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except runner.WorkbookError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except PapermillExecutionError as exc:
        print(f"error: cell {exc.exec_count} failed: {exc.ename}: {exc.evalue}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
