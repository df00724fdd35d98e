"""The peer benchmark's smoke run (`benchmarks/bench_peers.py --quick`, seconds): every row runs, lab's answers are
right, every installed peer ran — correctness only, no timing asserts (timings are ratios in `make bench`)."""
from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick_table() -> tuple:
    spec = importlib.util.spec_from_file_location("bench_peers", ROOT / "benchmarks" / "bench_peers.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_peers"] = mod
    spec.loader.exec_module(mod)
    return mod.main(["--quick", "--out", "/nonexistent/never-written.csv"]), mod


def test_every_row_runs_lab_and_every_installed_peer(quick_table) -> None:
    rows, mod = quick_table
    works = {r["work"] for r in rows}
    assert len(works) == 15 and sum(w.startswith("LM (") for w in works) == 4     # 11 MLP rows, 4 transformer rows
    for w in works:
        lab = [r for r in rows if r["work"] == w and r["kind"] == "lab"]
        assert lab and all(math.isfinite(r["t_median"]) and r["t_median"] > 0 for r in lab), w
    names = " ".join(r["method"] for r in rows)
    for module, dist in mod.PEERS.items():
        label = {"pyhessian": "PyHessian", "curvlinops": "curvlinops", "hessian_eigenthings": "hessian-eigenthings",
                 "loss_landscapes": "loss-landscapes", "torch_lr_finder": "torch-lr-finder"}[module]
        assert (label in names) == (mod._peer(module) is not None), dist


def test_lab_answers_are_right(quick_table) -> None:
    rows, _ = quick_table
    by = {(r["work"], r["method"]): r for r in rows}
    for work in ("top-1 eigenvalue", "top-5 eigenvalues", "bottom-1 eigenvalue"):
        for m in ("lab top_eigs (Lanczos)", "lab top_eigs (ARPACK)"):
            r = by[work, m]
            assert r["err"] < 1e-5 and r["hvps"] >= 1, (work, m, r["err"])
    for (work, m), r in by.items():
        if work.startswith("2D plane") and m.startswith("lab"):
            assert r["err"] < 1e-5, (m, r["err"])              # float32 against the float64 plane
        if work.startswith("trace") and "P = 970" in work:
            assert 0 <= r["err"] < 0.5, (m, r["err"])          # 30 probes of a P = 970 trace: a loose check
    warm, cold = by["λmax tracking, 5 points", "lab top_eigs warm (v0)"], by["λmax tracking, 5 points",
                                                                              "lab top_eigs cold"]
    assert warm["hvps"] <= cold["hvps"]
    peers = [r for r in rows if r["kind"] == "peer" and r["err"] != "" and "eigenvalue" in r["work"]
             and not r["work"].startswith("LM (")]
    for r in peers:                                             # the peers agree with the float64 reference too
        assert r["err"] < 1e-3, (r["work"], r["method"], r["err"])
    lm = {(w[w.index(") ") + 2:], m): r for (w, m), r in by.items() if w.startswith("LM (")}
    assert lm["top-5 eigenvalues", "lab top_eigs (Lanczos)"]["err"] < 1e-4            # float32 against float64
    assert lm["one GGN product", "lab ggn_operator"]["err"] < 1e-5
    ef = {m: r for (w, m), r in by.items() if w.startswith("empirical Fisher")}  # lab and curvlinops, vs float64
    assert ef and all(r["err"] < 1e-5 for r in ef.values()), {m: r["err"] for m, r in ef.items()}
    for (work, m), r in lm.items():                             # every peer's LM product agrees (PyHessian's power
        if r["kind"] == "peer" and r["err"] != "" and "PyHessian" not in m:   # iteration at maxIter 20 may not)
            assert r["err"] < 1e-3, (work, m, r["err"])


def test_peak_memory_is_measured_where_linux_allows(quick_table) -> None:
    rows, mod = quick_table
    if not mod._memory_supported():
        pytest.skip("/proc/self/clear_refs is not writable here: the peak-memory column is left empty")
    assert all(r["peak_mb"] != "" and r["peak_mb"] >= 0 for r in rows)
    big = mod.peak_mb(lambda: __import__("torch").ones(50_000_000).sum())      # 200 MB
    assert 150 < big < 400


def test_a_subset_run_replaces_only_its_own_rows_in_the_csv(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("bench_peers_write", ROOT / "benchmarks" / "bench_peers.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_peers_write"] = mod          # dataclasses look their module up
    spec.loader.exec_module(mod)
    path = tmp_path / "bench.csv"
    mod._write(str(path), [{"work": "one HVP", "method": "lab", "t": 1}, {"work": "LM (P = 5) one HVP",
                                                                         "method": "lab", "t": 2}], {"date": "d1"}, {})
    mod._write(str(path), [{"work": "LM (P = 5) one HVP", "method": "lab", "t": 3, "cpu": 4}], {"date": "d2"},
               {"LM (P = 5) one HVP": {"P": 5}})
    rows = list(__import__("csv").DictReader(open(path)))
    assert [(r["work"], r["t"], r["date"], r["P"], r["cpu"]) for r in rows] == [
        ("one HVP", "1", "d1", "", ""), ("LM (P = 5) one HVP", "3", "d2", "5", "4")]
