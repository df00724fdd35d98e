"""The data-parallel Hessian operator (lab.curvature.distributed) on 2 gloo processes against the single-process
operator on the full data: products, top-3 eigenvalues and Hutch++ agree to rounding in float64, for unequal shards
(37 and 63 samples) and tuple/dict inputs; a rank's failure reaches every rank; disagreeing ranks are refused."""
from __future__ import annotations

import datetime
import os
import sys
import time
import traceback
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from lab.curvature import (
    DistributedHessianOperator,
    DistributedOperator,
    distributed_hvp_operator,
    hutchpp_trace,
    hvp_operator,
    minibatch_hvp_operator,
    shard,
    top_eigs,
)
from lab.flat import make_batch_loss_fn, make_loss_fn

N, SPLIT = 100, 37          # shards of 37 and 63 samples
TIMEOUT = 60                # seconds: a hung rank fails the test instead of blocking the suite
# fork: no re-import of torch in the children (5 s instead of 15 s on 2 shared cores); each child runs on 1 thread
START = "fork" if sys.platform == "linux" else "spawn"


class Two(nn.Module):
    """An MLP taking (x, scale) or {"x": x, "scale": scale}."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))

    def forward(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return self.net(x * scale)


def _problem(kind: str):
    """(model, x, y) in float64, the same in every process (seeded)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (N,), generator=g)
    torch.manual_seed(0)
    if kind == "tensor":
        model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double().eval()
        return model, x, y
    model = Two().double().eval()
    scale = 1 + torch.rand(N, 1, generator=g, dtype=torch.float64)
    return model, ((x, scale) if kind == "tuple" else {"x": x, "scale": scale}), y


def _vectors(p: int) -> torch.Tensor:
    return torch.randn(p, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def _take(x, lo: int, hi: int):
    if isinstance(x, dict):
        return {k: v[lo:hi] for k, v in x.items()}
    if isinstance(x, tuple):
        return tuple(v[lo:hi] for v in x)
    return x[lo:hi]


def _run_rank(rank: int, kind: str) -> dict:
    """What one rank computes on its shard of the `kind` problem."""
    model, x, y = _problem(kind)
    loss_on_batch, theta, _ = make_batch_loss_fn(model)
    lo, hi = (0, SPLIT) if rank == 0 else (SPLIT, N)
    op = DistributedHessianOperator(loss_on_batch, theta, _take(x, lo, hi), y[lo:hi])
    vs = _vectors(theta.numel())
    res = {"hv": op(vs[:, 0]), "hV": op.matmat(vs), "eigs": top_eigs(op, k=3, tol=1e-10).values,
           "hutchpp": hutchpp_trace(op, n=30, seed=3)[0], "weights": op.weights, "count": op.count}
    # sync="check" with the same vectors everywhere passes; a rank-dependent vector is refused on every rank
    chk = distributed_hvp_operator(loss_on_batch, theta, _take(x, lo, hi), y[lo:hi], sync="check")
    res["hv_check"] = chk(vs[:, 0])
    try:
        chk(vs[:, 0] + rank)
        res["refused"] = False
    except RuntimeError as e:
        res["refused"] = "differs from rank 0" in str(e)
    # broadcast (the default): rank 1's own vector is ignored, rank 0's is applied on every rank
    res["hv_bcast"] = op(vs[:, 0] if rank == 0 else torch.zeros_like(vs[:, 0]))
    # an empty shard (rank 1 holds nothing, rank 0 everything) contributes nothing and costs no product
    lo0, hi0 = (0, N) if rank == 0 else (N, N)
    res["hv_empty"] = DistributedHessianOperator(loss_on_batch, theta, _take(x, lo0, hi0), y[lo0:hi0])(vs[:, 0])
    # a non-finite product on rank 1 alone raises on every rank (none is left waiting in the all-reduce)
    factor = torch.inf if rank == 1 else 1.0
    bad = DistributedHessianOperator(lambda t, xb, yb: loss_on_batch(t, xb, yb) * factor, theta,
                                     _take(x, lo, hi), y[lo:hi])
    try:
        bad(vs[:, 0])
        res["failure"] = "none"
    except Exception as e:  # noqa: BLE001
        res["failure"] = f"{type(e).__name__}: {e}"
    return res


def _worker(rank: int, world: int, init: str, kinds: tuple, out_dir: str) -> None:
    """One process: its rank's results for every problem kind, saved for the parent."""
    torch.set_num_threads(1)
    try:
        dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=TIMEOUT))
        torch.save({k: _run_rank(rank, k) for k in kinds}, os.path.join(out_dir, f"rank{rank}.pt"))
    except BaseException:   # the parent reads the traceback
        Path(out_dir, f"rank{rank}.err").write_text(traceback.format_exc())
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _spawn(tmp_path: Path, kinds: tuple, world: int = 2) -> list[dict]:
    """Every rank's results, from `world` spawned processes; a failing or hung rank fails the test (it is killed)."""
    init = f"file://{tmp_path / 'rendezvous'}"
    ctx = mp.start_processes(_worker, args=(world, init, kinds, str(tmp_path)), nprocs=world, join=False,
                             start_method=START)
    try:
        deadline = time.monotonic() + 2 * TIMEOUT
        while not ctx.join(timeout=1):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the {world} ranks did not finish in {2 * TIMEOUT} s")
    except Exception:
        errs = "\n".join(p.read_text() for p in sorted(tmp_path.glob("*.err")))
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
        raise AssertionError(f"a rank failed:\n{errs}") from None
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world)]


def _reference(kind: str) -> dict:
    model, x, y = _problem(kind)
    loss_fn, theta, _ = make_loss_fn(model, x, y)
    op = hvp_operator(loss_fn, theta)
    vs = _vectors(theta.numel())
    return {"hv": op(vs[:, 0]), "hV": op.matmat(vs), "eigs": top_eigs(op, k=3, tol=1e-10).values,
            "hutchpp": hutchpp_trace(op, n=30, seed=3)[0]}


KINDS = ("tensor", "dict")


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    return _spawn(tmp_path_factory.mktemp("dist"), KINDS)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_two_ranks_agree_with_the_full_data_operator(two_ranks: list[dict], kind: str) -> None:
    ranks = [res[kind] for res in two_ranks]
    ref = _reference(kind)
    scale = float(ref["hv"].abs().max())
    for r, res in enumerate(ranks):
        assert res["weights"] == [37.0, 63.0]
        assert float((res["hv"] - ref["hv"]).abs().max()) <= 1e-13 * scale, r
        assert float((res["hV"] - ref["hV"]).abs().max()) <= 1e-13 * scale, r
        assert float((res["hv_check"] - ref["hv"]).abs().max()) <= 1e-13 * scale, r
        assert float((res["hv_bcast"] - ref["hv"]).abs().max()) <= 1e-13 * scale, r     # rank 0's vector
        assert float((res["hv_empty"] - ref["hv"]).abs().max()) <= 1e-13 * scale, r
        assert abs(res["eigs"] - ref["eigs"]).max() <= 1e-10 * abs(ref["eigs"]).max(), (r, res["eigs"], ref["eigs"])
        assert abs(res["hutchpp"] - ref["hutchpp"]) <= 1e-10 * abs(ref["hutchpp"]), (r, res["hutchpp"])
        assert res["refused"], r
        assert "NonFiniteError" in res["failure"] if r == 1 else "failed on 1 other rank" in res["failure"], \
            (r, res["failure"])
    assert torch.equal(ranks[0]["hv"], ranks[1]["hv"]) and (ranks[0]["eigs"] == ranks[1]["eigs"]).all()


def _single(tmp_path: Path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'single'}", rank=0, world_size=1)


def test_one_rank_equals_the_minibatch_operator_and_refuses_bad_input(tmp_path: Path) -> None:
    model, x, y = _problem("tuple")
    loss_on_batch, theta, _ = make_batch_loss_fn(model)
    with pytest.raises(RuntimeError, match="not initialised"):
        distributed_hvp_operator(loss_on_batch, theta, x, y)
    _single(tmp_path)
    try:
        op = distributed_hvp_operator(loss_on_batch, theta, x, y)
        ref = minibatch_hvp_operator(loss_on_batch, theta, [(x, y)])
        v = _vectors(theta.numel())[:, 0]
        assert torch.allclose(op(v), ref(v), rtol=1e-12, atol=1e-14)
        assert op.count == 1 and op.local.count == 1
        with pytest.raises(ValueError, match="'sync'"):
            distributed_hvp_operator(loss_on_batch, theta, x, y, sync="all")
        with pytest.raises(ValueError, match="one target per input"):
            distributed_hvp_operator(loss_on_batch, theta, x, y[:-1])
        with pytest.raises(RuntimeError, match="sum to 0"):
            DistributedOperator(op.local, weight=0)
        with pytest.raises(TypeError, match="'local'"):
            DistributedOperator(lambda v: v, weight=1)
    finally:
        dist.destroy_process_group()


def test_shard_splits_every_structure_contiguously() -> None:
    _, x, y = _problem("dict")
    parts = [shard(x, y, r, 3) for r in range(3)]
    assert [len(p[1]) for p in parts] == [33, 33, 34]
    assert torch.equal(torch.cat([p[0]["scale"] for p in parts]), x["scale"])
    assert torch.equal(torch.cat([p[1] for p in parts]), y)
    with pytest.raises(ValueError, match="'rank'"):
        shard(x, y, 3, 3)
