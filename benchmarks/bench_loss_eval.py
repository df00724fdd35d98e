"""Benchmark: loss evaluations per second at many parameter points, vmap-batched vs a Python loop.

usage: .venv/bin/python benchmarks/bench_loss_eval.py [--device cpu|cuda] [--points 64] [--width 100]
"""
from __future__ import annotations

import argparse

import torch
from timing import best_time

from lab.data import mnist
from lab.flat import batched, make_loss_fn
from lab.models import SimpleMLP
from lab.numerics import DTYPES


def rate(fn, n_points: int, repeats: int = 3) -> float:
    """Best-of-`repeats` loss evaluations per second."""
    return n_points / best_time(fn, repeats)


def main() -> None:
    """Print evaluations/s for each dtype, looped and batched."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--points", type=int, default=64)
    ap.add_argument("--width", type=int, default=100)
    ap.add_argument("--chunk", type=int, default=64)
    a = ap.parse_args()
    data = mnist(dtype=torch.float64, device=a.device)
    loss_fn, theta, _ = make_loss_fn(SimpleMLP(a.width, 1), data.x_train, data.y_train)
    print(f"{data.describe()}; device={a.device}; {a.points} points; width {a.width}")
    for name, dt in DTYPES.items():
        pts = (theta.to(a.device, torch.float64)[None] + 1e-3 * torch.randn(a.points, theta.numel(),
                                                                            device=a.device, dtype=torch.float64))
        pts = pts.to(dt)
        with torch.no_grad():
            loop = rate(lambda p=pts: [loss_fn(q) for q in p], a.points)
            vm = rate(lambda p=pts: batched(loss_fn, p, a.chunk), a.points)
        print(f"{name:9s} loop {loop:8.1f}/s   vmap {vm:8.1f}/s   speed-up {vm / loop:5.2f}×")


if __name__ == "__main__":
    main()
