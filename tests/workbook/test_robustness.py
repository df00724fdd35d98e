"""Tests for lab.workbook.robustness: conditions become kernel environments, identical conditions share their
runs, and the matrix records every verdict with the kernels and threads the run actually used."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from lab.workbook import robustness as rb
from lab.workbook.cli import main

FIXTURE = Path(__file__).parent.parent / "fixtures" / "97_robustness.ipynb"


def test_condition_environment_and_effective_kernels() -> None:
    c = rb.Condition("default·1t", (1,), kernels="default", threads=1)
    assert c.env() == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "ATEN_CPU_CAPABILITY": "default"}
    assert "ATEN_CPU_CAPABILITY" not in rb.Condition("n", (0,)).env()
    assert rb.effective(rb.Condition("n", (0,)), "avx2") == ("avx2", 2, "cpu")
    assert rb.effective(rb.Condition("a", (0,), kernels="avx2"), "avx2") == ("avx2", 2, "cpu")   # same runs
    assert rb.effective(rb.Condition("b", (0,), kernels="avx512"), "avx2") == ("avx2", 2, "cpu")  # ATen caps it
    assert rb.effective(rb.Condition("d", (0,), kernels="default"), "avx512") == ("default", 2, "cpu")


def test_default_matrix_is_the_issue_s() -> None:
    m = {c.name: c for c in rb.MATRICES["default"]}
    assert m["native·2t"].seeds == (0, 1, 2, 3, 4) and m["native·1t"].threads == 1
    assert m["default·1t"].kernels == "default" and m["default·1t"].threads == 1
    assert m["avx2·2t"].seeds == (0, 1) and m["cuda"].device == "cuda"
    assert rb.MATRICES["ci"] == (rb.Condition("default·1t", (1,), kernels="default", threads=1),)


def test_plan_shares_identical_conditions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(rb.MATRICES, "t", (rb.Condition("native·2t", (0, 1)),
                                            rb.Condition("avx2·2t", (1, 2), kernels="avx2"),
                                            rb.Condition("cuda", (0,), device="cuda")))
    monkeypatch.setattr(rb, "native_kernels", lambda: "avx2")
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    p = rb.make_plan([str(FIXTURE)], matrix="t", out_root=tmp_path)
    assert [c.name for c, _ in p.skipped] == ["cuda"]
    assert len(p.sweeps) == 1                                     # native and avx2 are one configuration here
    (sw,) = p.sweeps.values()
    assert sorted(q["seed"] for q in sw.points.values()) == [0, 1, 2]
    with pytest.raises(ValueError, match="unknown matrix"):
        rb.make_plan([str(FIXTURE)], matrix="nope", out_root=tmp_path)


def test_matrix_records_verdicts_kernels_and_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(rb.MATRICES, "t", (rb.Condition("native·1t", (0,), threads=1),
                                            rb.Condition("default·1t", (0, 1), kernels="default", threads=1)))
    # the CPU's own kernels, even when the suite itself runs under ATEN_CPU_CAPABILITY=default
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    monkeypatch.setattr(rb, "native_kernels", lambda: "avx2")
    code = main(["robustness", str(FIXTURE), "--matrix", "t", "--out-dir", str(tmp_path), "--name", "m",
                 "--no-progress"])
    assert code == 1                                              # C2 fails under the native kernels
    df = pd.read_csv(tmp_path / "m" / "matrix.csv")
    assert len(df) == 6 and set(df.condition) == {"native·1t", "default·1t"}
    assert (df.threads == 1).all()
    d = df[df.condition == "default·1t"]
    assert (d.cpu_kernels == "DEFAULT").all() and d.passed.all()
    n = df[(df.condition == "native·1t") & (df.claim == "C2")]
    assert not n.passed.any() and (n.cpu_kernels != "DEFAULT").all()
    summary = pd.read_csv(tmp_path / "m" / "summary.csv")
    assert set(summary.columns) == {"chapter", "claim", "condition", "passed", "runs"}
    assert (tmp_path / "m" / "matrix.png").stat().st_size > 1000
    out = capsys.readouterr().out
    assert "5/6 verdicts PASS" in out and "97 C2" in out
    # resuming runs nothing new; --fresh starts over
    assert main(["robustness", str(FIXTURE), "--matrix", "t", "--out-dir", str(tmp_path), "--name", "m",
                 "--no-progress"]) == 1
    assert "0 to run" in capsys.readouterr().out
    assert main(["robustness", str(FIXTURE), "--matrix", "t", "--out-dir", str(tmp_path), "--name", "m",
                 "--no-progress", "--fresh", "--dry-run"]) == 0
    assert main(["robustness", str(FIXTURE), "--matrix", "t", "--out-dir", str(tmp_path), "--name", "m",
                 "--collect", "--publish", str(tmp_path / "pub")]) == 1
    shares = pd.read_csv(tmp_path / "pub" / "claims.csv")
    c2 = shares[shares.claim == "C2"].iloc[0]
    assert (c2.conditions_held, c2.conditions, c2.runs_held, c2.runs) == (1, 2, 2, 3)
    assert {p.name for p in (tmp_path / "pub").iterdir()} == {"summary.csv", "matrix.png", "claims.csv",
                                                             "conditions.json", "claims.md"}
    assert "| 97 | C2 | 1/2 (50%) | 2/3 |" in (tmp_path / "pub" / "claims.md").read_text()
    meta = json.loads((tmp_path / "pub" / "conditions.json").read_text())
    assert meta["run_seconds"] > 0 and 0 < meta["scheduled_seconds"] <= meta["run_seconds"]
    assert set(meta["chapter_seconds"]) == {"97_robustness"}
    assert set(meta["chapter_seconds"]["97_robustness"]) == {"1"}         # both conditions ran at 1 thread
    assert rb.published_seconds(tmp_path / "pub" / "conditions.json") == meta["chapter_seconds"]
    assert rb.published_seconds(tmp_path / "missing.json") == {}


def test_fresh_seeds_are_drawn_once_per_matrix_folder(tmp_path) -> None:
    """The default matrix's fresh·2t condition runs at seeds drawn at random outside 0–4, recorded in the matrix
    folder and reused when it resumes; another folder draws its own."""
    from lab.workbook import robustness as rb

    a = rb.fresh_seeds(tmp_path / "m1")
    assert len(a) == rb.N_FRESH and all(5 <= s < 10**6 for s in a)
    assert rb.fresh_seeds(tmp_path / "m1") == a
    assert (tmp_path / "m1" / "fresh_seeds.json").is_file()
    assert any(c.seeds == rb.FRESH for c in rb.MATRICES["default"])
    assert not any(c.seeds == rb.FRESH for c in rb.MATRICES["ci"])
