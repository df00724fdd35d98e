"""Benchmark the training loop of chapter 06 (item 2 of issue #8): the seed-002 net, Adam, exponential lr decay
3e-1 → 3e-3, fresh N(0, I₃) batches every step.

Three loops over the same work: a naive one (nn.Module, torch.optim.Adam, `loss.item()` every step, as in the notes),
`lab.training.train_stream` (pure function of the flat vector, losses kept on the device, no per-step sync) and
`train_stream` with the fused Adam kernel. Each is timed over `--steps` steps and projected to the notes' 50,000.

usage: .venv/bin/python benchmarks/bench_schedules.py [--device cpu|cuda] [--steps 500] [--batch 10000]
"""
from __future__ import annotations

import argparse
import time

import torch

from lab.data import ratio_target
from lab.flat import make_forward
from lab.models import ReLURegressionNet
from lab.training import make_schedule, train_stream


def naive(net: ReLURegressionNet, steps: int, batch: int, device: str) -> list[float]:
    """The notes' loop: module forward, optimizer step, and a host sync for the loss every step."""
    opt = torch.optim.Adam(net.parameters(), lr=0.3)
    sched = make_schedule("exp", opt, steps, lr_end=3e-3)
    losses = []
    for _ in range(steps):
        x = torch.randn(batch, 3, device=device)
        loss = torch.nn.functional.mse_loss(net(x).reshape(-1), ratio_target(x))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses


def timed(fn) -> float:
    """Wall time of fn() in seconds, synchronising CUDA at the end."""
    t = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t


def main() -> None:
    """Print seconds per step and the projected time for 50,000 steps for each loop."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--batch", type=int, default=10_000)
    a = ap.parse_args()
    torch.manual_seed(0)
    net = ReLURegressionNet().to(a.device)
    forward, theta, _ = make_forward(net)
    def stream(n: int, **opt_kwargs) -> object:
        return train_stream(forward, theta, ratio_target, n, batch=a.batch, lr=0.3, opt_kwargs=opt_kwargs,
                            schedule=lambda o: make_schedule("exp", o, n, lr_end=3e-3))

    loops = {
        "naive (module, .item() per step)": lambda n: naive(ReLURegressionNet().to(a.device), n, a.batch, a.device),
        "lab.training.train_stream": stream,
        "train_stream + fused Adam": lambda n: stream(n, fused=True),
    }
    name = torch.cuda.get_device_name() if a.device == "cuda" else f"{torch.get_num_threads()} CPU threads"
    print(f"seed-002 net (P = {theta.numel():,}), batch {a.batch}, {a.steps} steps, {name}, torch {torch.__version__}")
    print(f"{'loop':36s} {'ms/step':>8s} {'50k steps (s)':>14s}")
    for label, fn in loops.items():
        timed(lambda fn=fn: fn(20))                      # warm-up: allocator, kernels, lazy initialisation
        sec = timed(lambda fn=fn: fn(a.steps))
        print(f"{label:36s} {1e3 * sec / a.steps:8.2f} {50_000 * sec / a.steps:14.1f}")

if __name__ == "__main__":
    main()
