"""Benchmark lab.curvature: HVPs and wall time to the top-5 eigenvalues (Lanczos vs deflated power iteration), and the
cost of one Hessian-vector product relative to one gradient.

usage: .venv/bin/python benchmarks/bench_hessian.py [--device cpu|cuda] [--width 100] [--n-train 2000]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from timing import best_time
from torch.func import grad

from lab.curvature import hvp, hvp_operator, power_iteration, top_eigs
from lab.data import mnist
from lab.flat import make_loss_fn
from lab.models import SimpleMLP
from lab.training import train


def main() -> None:
    """Print the comparison table."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--width", type=int, default=100)
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--k", type=int, default=5)
    a = ap.parse_args()
    data = mnist(n_train=a.n_train, dtype=torch.float64, device=a.device)
    torch.manual_seed(0)
    loss_fn, theta, spec = make_loss_fn(SimpleMLP(a.width, 1), data.x_train, data.y_train)
    theta, _ = train(loss_fn, theta.to(a.device), 50, opt="adam", lr=3e-3, progress=False)
    theta = theta.double()
    print(f"{data.describe()}; SimpleMLP {a.width}×1, P = {spec.size}, float64, device={a.device}")
    t_grad = best_time(lambda: grad(loss_fn)(theta))
    v = torch.randn_like(theta)
    t_hvp = best_time(lambda: hvp(loss_fn, theta, v))
    op = hvp_operator(loss_fn, theta)
    op(v)                                                     # linearizes the gradient at θ once
    t_op = best_time(lambda: op(v))
    print(f"gradient {t_grad * 1e3:.1f} ms; HVP {t_hvp * 1e3:.1f} ms from scratch (jvp of grad, ratio "
          f"{t_hvp / t_grad:.2f}); {t_op * 1e3:.1f} ms per product of hvp_operator at a fixed θ "
          f"(ratio {t_op / t_grad:.2f}, mode {op.mode})")
    ref = top_eigs(loss_fn, theta, k=a.k + 5, which="LA", tol=1e-10, seed=1).values[: a.k]
    t0 = time.perf_counter()
    lz = top_eigs(loss_fn, theta, k=a.k, which="LA", tol=1e-4, seed=0)
    t_lz = time.perf_counter() - t0
    err_lz = float(np.max(np.abs(lz.values - ref) / np.abs(ref)))
    row = [("Lanczos (eigsh, tol 1e-4)", lz.n_hvp, t_lz, err_lz)]
    for iters in (20, 50, 100, 200, 400):
        t0 = time.perf_counter()
        pw = power_iteration(loss_fn, theta, k=a.k, iters=iters, seed=0)
        t_pw = time.perf_counter() - t0
        err = float(np.max(np.abs(np.sort(pw.values)[::-1] - ref) / np.abs(ref)))
        row.append((f"deflated power, {iters} iters/eigenpair", pw.n_hvp, t_pw, err))
        if err <= 1e-4:
            break
    print(f"\n| method | HVPs | wall time (s) | max rel. error of top-{a.k} |\n|---|---|---|---|")
    for name, n, t, e in row:
        print(f"| {name} | {n} | {t:.2f} | {e:.1e} |")


if __name__ == "__main__":
    main()
