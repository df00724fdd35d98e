"""The results of a sweep: collecting every point's record into one table (a row per point with its status,
parameters and claim columns), written atomically as results.csv and, when pyarrow is there, results.parquet, and
the summary plot summary.png (a chosen or guessed claim number against the first swept parameter, and the
fraction of claims passed per point)."""
from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path
from typing import Any

from lab.workbook.runner import write_atomic
from lab.workbook.sweep.plan import Sweep, point_state, read_record


def _cell(value: Any) -> Any:
    """A table cell: scalars as they are, lists and dicts as compact JSON."""
    if isinstance(value, (list, dict, tuple)):
        return json.dumps(value, default=str)
    return value


def collect(sweep: Sweep) -> Any:
    """The results table (pandas): one row per point with id, status, error, seconds, parameters, claims.

    Parameters a point does not set show the chapter's default. Each claim gives columns `<id>.passed` and
    `<id>.<number>`; `claims_passed` is the fraction of a point's claims that passed. A point with no record
    yet has status "pending"; one finished by another version of the chapter's code, "stale" (claims left out).
    """
    import pandas as pd

    rows = []
    params = list(dict.fromkeys([*sweep.swept, *(k for p in sweep.points.values() for k in p),
                                 *(c for c in sweep.plot.values() if c in sweep.defaults)]))
    for pid, p in sweep.points.items():
        rec = read_record(sweep.record_path(pid)) or {}
        status = rec.get("status", "pending")
        if status == "ok":
            state = point_state(sweep, pid)
            status = "ok" if state == "done" else state
        row: dict[str, Any] = {"point": pid, "status": status, "error": rec.get("error"),
                               "seconds": rec.get("seconds"), "worker": rec.get("worker")}
        for k in params:
            row[k] = _cell(p.get(k, sweep.defaults.get(k)))
        claims = (rec.get("claims") or []) if status == "ok" else []
        row["claims_passed"] = (sum(bool(c.get("passed")) for c in claims) / len(claims)) if claims else math.nan
        for c in claims:
            row[f"{c['id']}.passed"] = bool(c.get("passed"))
            for k, v in (c.get("numbers") or {}).items():
                row[f"{c['id']}.{k}"] = _cell(v)
        rows.append(row)
    return pd.DataFrame(rows)


def _parquet_ready(df: Any) -> Any:
    """A copy whose object columns hold one type each (mixed columns become strings), as parquet needs."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object:
            kinds = {type(v) for v in out[col] if v is not None and not (isinstance(v, float) and math.isnan(v))}
            if len(kinds) > 1:
                out[col] = [None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
                            for v in out[col]]
    return out


def write_results(sweep: Sweep) -> tuple[Any, list[Path]]:
    """Write results.csv (and results.parquet when pyarrow is importable) and summary.png, each atomically;
    return the table and the files. A plot that fails is a warning: the table is never lost."""
    df = collect(sweep)
    files = [sweep.out_dir / "results.csv"]
    write_atomic(files[0], df.to_csv(index=False))
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        pass
    else:
        pq = sweep.out_dir / "results.parquet"
        write_atomic(pq, lambda tmp: _parquet_ready(df).to_parquet(tmp, index=False))
        files.append(pq)
    try:
        png = plot_summary(sweep, df)
    except Exception as exc:  # noqa: BLE001 - the table is the result; the plot is a convenience
        warnings.warn(f"summary.png not written ({type(exc).__name__}: {exc}); the results table is complete",
                      stacklevel=2)
        png = None
    if png is not None:
        files.append(png)
    return df, files


def _numeric(df: Any, col: str) -> bool:
    """True when the column is numeric (not bool) with at least one finite value."""
    import pandas as pd

    s = df[col]
    return (pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
            and bool(pd.to_numeric(s, errors="coerce").notna().any()))


def choose_axes(sweep: Sweep, df: Any) -> tuple[str | None, str]:
    """(x, y) of the summary plot: the grid's plot choice, else the first numeric swept parameter and the
    first claim number that varies over the finished points, else the fraction of claims passed.

    An x or y that is not a column (claims are only known once points have run) falls back, with a warning, to
    the guess for x and to claims_passed for y.
    """
    ok = df[df["status"] == "ok"]
    x = sweep.plot.get("x")
    if x is not None and x not in df.columns:
        warnings.warn(f"plot x {x!r} is not a column of the results (columns: {', '.join(df.columns)}); "
                      "plotting against the first numeric swept parameter instead", stacklevel=2)
        x = None
    x = x or next((p for p in sweep.swept if p in df and _numeric(df, p)), None)
    y = sweep.plot.get("y")
    if y is None:
        claim_cols = [c for c in df.columns if re.match(r"^C\d+[a-z]?\.", c) and not c.endswith(".passed")]
        y = next((c for c in claim_cols if _numeric(ok, c) and ok[c].nunique() > 1), "claims_passed")
    if y not in df.columns:  # the sweep has run by now: fall back rather than lose the plot
        warnings.warn(f"plot y {y!r} is not a column of the results (columns: {', '.join(df.columns)}); "
                      "plotting claims_passed instead", stacklevel=2)
        y = "claims_passed"
    return x, y


def plot_summary(sweep: Sweep, df: Any) -> Path | None:
    """summary.png: y against the first swept parameter (one line per other swept combination) and the
    fraction of claims passed per point; None when no point has finished."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import pandas as pd

    ok = df[df["status"] == "ok"]
    if ok.empty:
        return None
    x, y = choose_axes(sweep, df)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 2]})
    others = [p for p in sweep.swept if p != x and p in df]
    if x is not None:
        groups = ok.groupby(others, dropna=False, sort=True) if others else [((), ok)]
        for key, g in groups:
            key = key if isinstance(key, tuple) else (key,)
            g = g.assign(_x=pd.to_numeric(g[x], errors="coerce"), _y=pd.to_numeric(g[y], errors="coerce"))
            g = g.sort_values("_x")
            label = ", ".join(f"{k}={v}" for k, v in zip(others, key, strict=True)) or None
            ax.plot(g["_x"], g["_y"], "o-", label=label)
        xs = pd.to_numeric(ok[x], errors="coerce").dropna()
        if len(xs) and (xs > 0).all() and xs.max() / xs.min() >= 8:
            ax.set_xscale("log", base=2 if all(float(v).is_integer() for v in xs) else 10)
        ax.set_xlabel(x)
        if others:
            ax.legend(fontsize=8)
    else:
        ax.plot(range(len(ok)), pd.to_numeric(ok[y], errors="coerce"), "o")
        ax.set_xticks(range(len(ok)), ok["point"], rotation=45, fontsize=7)
        ax.set_xlabel("point")
    ax.set_ylabel(y)
    ax.set_title(f"{y} over the sweep")
    frac = pd.to_numeric(df["claims_passed"], errors="coerce").fillna(0.0)
    colors = ["tab:green" if s == "ok" else "tab:red" for s in df["status"]]
    labels = [(", ".join(f"{p}={r[p]}" for p in sweep.swept) or r["point"]) + ("" if r["status"] == "ok" else
              f" ({r['status']})") for _, r in df.iterrows()]
    ax2.barh(range(len(df)), frac, color=colors)
    ax2.set_yticks(range(len(df)), labels, fontsize=7)
    ax2.set_xlim(0, 1)
    ax2.invert_yaxis()
    ax2.set_xlabel("fraction of claims passed")
    ax2.set_title(f"{int((df['status'] == 'ok').sum())}/{len(df)} points ok")
    fig.suptitle(f"sweep {sweep.name}")
    fig.tight_layout()
    out = sweep.out_dir / "summary.png"
    try:
        write_atomic(out, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    finally:
        plt.close(fig)
    return out
