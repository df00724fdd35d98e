"""lab against its peers on the same work, in one run: `make bench` (or `python benchmarks/bench_peers.py`).

Each row times lab and the peers that do the same job (PyHessian, curvlinops, hessian-eigenthings, loss-landscapes,
torch-lr-finder — `pip install -e .[bench]`) on one model and data set, interleaving the methods over `--reps`
repetitions so that a noisy, shared machine slows them alike. It prints a table — accuracy, operator products
(HVPs), time (min and median), the lab / best-peer time ratio — and writes it to results/bench.csv with the machine
and versions. Accuracy is against a float64 reference (eigenvalues: lab's Lanczos at tol 1e-12 on the float64
operator; traces: the dense Hessian of a 49-16-10 net, P = 970). `--quick` runs a tiny net once: a seconds-long
correctness check (tests/test_bench.py), no timing claims.

PyHessian's `density()` calls `torch.eig`, which torch removed in 2.x: the benchmark shims it with `torch.linalg.eigh`
(the tridiagonal is symmetric) and says so in the row.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lab.curvature import (  # noqa: E402
    dense_hessian,
    hutchinson_trace,
    hutchpp_trace,
    hvp_operator,
    slq_density,
    top_eigs,
    xtrace,
)
from lab.data import mnist, pooled  # noqa: E402
from lab.flat import make_loss_fn  # noqa: E402
from lab.landscape import plane  # noqa: E402
from lab.models import SimpleMLP  # noqa: E402
from lab.training import lr_range_test_model  # noqa: E402


def _peer(name: str):
    try:
        return __import__(name)
    except ImportError:
        return None


class Counter:
    """Counts calls of a wrapped function (a peer's HVP)."""

    def __init__(self, fn: Callable):
        self.fn, self.count = fn, 0

    def __call__(self, *a, **k):
        self.count += 1
        return self.fn(*a, **k)


def timed(fn: Callable) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def setup(width: int, n_train: int, seed: int = 0):
    data = mnist(n_train=n_train, n_test=min(1000, n_train), seed=seed, dtype=torch.float32)
    torch.manual_seed(seed)
    model = SimpleMLP(width=width, depth=2).eval()
    loss_fn, theta, spec = make_loss_fn(model, data.x_train, data.y_train)
    return data, model, loss_fn, theta, spec


# ----------------------------------------------------------------------------------------------------- the rows
def row_hvp(model, data, loss_fn, theta, reps):
    """One HVP, and one gradient for the floor; lab's set-up reported apart."""
    pyh = _peer("pyhessian")
    v = torch.randn(theta.numel())
    res = {}
    setup_t, op = timed(lambda: (lambda o: (o(v), o)[1])(hvp_operator(loss_fn, theta)))
    grad_t, hvp_t, peer_t = [], [], []
    if pyh is not None:
        from pyhessian import hessian as PyH
        from pyhessian.utils import hessian_vector_product
        h = PyH(model, torch.nn.functional.cross_entropy, data=(data.x_train, data.y_train), cuda=False)
        vs = [vi.reshape(p.shape) for vi, p in zip(v.split([p.numel() for p in h.params]), h.params, strict=True)]
    for _ in range(reps):
        grad_t.append(timed(lambda: torch.func.grad(loss_fn)(theta))[0])
        hvp_t.append(timed(lambda: op(v))[0])
        if pyh is not None:
            peer_t.append(timed(lambda: hessian_vector_product(h.gradsH, h.params, vs))[0])
    g_med, h_med = statistics.median(grad_t), statistics.median(hvp_t)
    res["lab hvp_operator"] = dict(hvps=1, times=hvp_t, note=f"set-up {setup_t:.3f} s once per θ; gradient "
                                   f"{g_med * 1e3:.1f} ms; HVP/gradient {h_med / g_med:.2f}")
    if peer_t:
        res["PyHessian (graph reuse)"] = dict(hvps=1, times=peer_t, note="")
    return res


def row_eigs(model, data, loss_fn, theta, reps, k, which, ref):
    """Top-k / bottom-k to 1e-6 (relative residual), accuracy against the float64 reference."""
    he = _peer("hessian_eigenthings")
    res = {}
    for _ in range(reps):
        op = hvp_operator(loss_fn, theta)
        t, e = timed(lambda op=op: top_eigs(op, k=k, which=which, tol=1e-6))
        r = res.setdefault("lab top_eigs (Lanczos)", dict(times=[], hvps=e.n_hvp, note=""))
        r["times"].append(t)
        r["err"] = float(np.max(np.abs(e.values - ref) / np.abs(ref).max()))
        op = hvp_operator(loss_fn, theta)
        t, e = timed(lambda op=op: top_eigs(op, k=k, which=which, tol=1e-6, method="arpack"))
        r = res.setdefault("lab top_eigs (ARPACK)", dict(times=[], hvps=e.n_hvp, note=""))
        r["times"].append(t)
        r["err"] = float(np.max(np.abs(e.values - ref) / np.abs(ref).max()))
        if he is not None:
            from hessian_eigenthings import HessianOperator, lanczos, supervised_loss
            loader = [(data.x_train, data.y_train)]
            hop = HessianOperator(model, loader, supervised_loss(torch.nn.functional.cross_entropy))
            hop.matvec = Counter(hop.matvec)
            max_iter = {("LA", 1): 20, ("LA", 5): 30}.get((which, k), 150)
            t, out = timed(lambda hop=hop, mi=max_iter: lanczos(hop, k=k, which=which, tol=1e-6, max_iter=mi,
                                                   reorthogonalize=True, seed=0))
            vals = np.sort(out.eigenvalues.double().numpy())[::-1] if which == "LA" else np.sort(
                out.eigenvalues.double().numpy())[:k][::-1]
            r = res.setdefault("hessian-eigenthings lanczos (reorth.)", dict(times=[], hvps=hop.matvec.count,
                                                                             note=f"max_iter {max_iter}"))
            r["times"].append(t)
            r["err"] = float(np.max(np.abs(np.sort(vals)[::-1] - ref) / np.abs(ref).max()))
    return res


def row_trace(small, reps, n=30):
    """Trace at n HVPs on the small net (dense reference)."""
    loss_s, th_s = small
    h = dense_hessian(loss_s, th_s.double())
    tr = float(torch.trace(h))
    cl = _peer("curvlinops")
    res = {}
    for rep in range(reps):
        op = hvp_operator(loss_s, th_s)
        op(torch.zeros(th_s.numel()))           # set-up paid before timing, as curvlinops' operator is built first
        for name, f in (("lab hutchinson_trace", hutchinson_trace), ("lab hutchpp_trace", hutchpp_trace),
                        ("lab xtrace", xtrace)):
            t, (est, _) = timed(lambda f=f, op=op, rep=rep: f(op, n=n, seed=rep))
            r = res.setdefault(name, dict(times=[], hvps=n, errs=[], note=""))
            r["times"].append(t)
            r["errs"].append(abs(est - tr) / abs(tr))
        if cl is not None:
            from curvlinops import hutchinson_trace as cl_hutch
            from curvlinops import xtrace as cl_xtrace
            dense = h.float()
            for name, f in (("curvlinops hutchinson_trace", cl_hutch), ("curvlinops xtrace", cl_xtrace)):
                torch.manual_seed(rep)
                t, est = timed(lambda f=f, dense=dense: float(f(dense, n)))
                r = res.setdefault(name, dict(times=[], hvps=n, errs=[], note="on the dense matrix"))
                r["times"].append(t)
                r["errs"].append(abs(est - tr) / abs(tr))
    for r in res.values():
        r["err"] = float(np.median(r.pop("errs")))
    return res


def row_plane(model, loss_fn, theta, reps, steps):
    ll = _peer("loss_landscapes")
    a = np.linspace(-1, 1, steps)
    d1, d2 = torch.randn(theta.numel()), torch.randn(theta.numel())
    res = {}
    for _ in range(reps):
        t, s = timed(lambda: plane(loss_fn, theta, d1, d2, a, a))
        res.setdefault("lab plane", dict(times=[], hvps=0, note=f"{steps}×{steps}"))["times"].append(t)

        def loop():
            out = np.empty((steps, steps))
            with torch.no_grad():
                for j, bj in enumerate(a):
                    for i, ai in enumerate(a):
                        out[j, i] = float(loss_fn(theta + ai * d1 + bj * d2))
            return out
        t, _ = timed(loop)
        res.setdefault("weight-copy loop (lab loss_fn)", dict(times=[], hvps=0, note=""))["times"].append(t)
        if ll is not None:
            import copy

            from loss_landscapes import random_plane
            from loss_landscapes.metrics import Loss
            m = copy.deepcopy(model)
            x, y = _XY
            metric = Loss(torch.nn.functional.cross_entropy, x, y)
            t, _ = timed(lambda m=m, metric=metric: random_plane(m, metric, distance=1, steps=steps,
                                                                 normalization="filter", deepcopy_model=True))
            res.setdefault("loss-landscapes random_plane", dict(times=[], hvps=0, note=""))["times"].append(t)
    return res


def row_lr(model, data, reps, steps=300):
    tl = _peer("torch_lr_finder")
    from torch.utils.data import DataLoader, TensorDataset
    loader = DataLoader(TensorDataset(data.x_train, data.y_train), batch_size=128, shuffle=False)
    res = {}
    for _ in range(reps):
        t, rt = timed(lambda: lr_range_test_model(model, loader, steps=steps, lr_min=1e-5, lr_max=1.0))
        res.setdefault("lab lr_range_test_model", dict(times=[], hvps=0, note=f"suggests {rt.suggestion:.2g}"))[
            "times"].append(t)
        if tl is not None:
            import copy

            from torch_lr_finder import LRFinder
            m = copy.deepcopy(model).train()
            opt = torch.optim.Adam(m.parameters(), lr=1e-5)
            finder = LRFinder(m, opt, torch.nn.CrossEntropyLoss(), device="cpu")
            with contextlib.redirect_stdout(None):
                t, _ = timed(lambda f=finder: f.range_test(loader, end_lr=1.0, num_iter=steps, step_mode="exp"))
            res.setdefault("torch-lr-finder", dict(times=[], hvps=0, note=""))["times"].append(t)
    return res


def row_slq(model, data, loss_fn, theta, reps, runs=1, m=100):
    pyh = _peer("pyhessian")
    res = {}
    for _ in range(reps):
        op = hvp_operator(loss_fn, theta)
        t, _ = timed(lambda op=op: slq_density(op, n_runs=runs, m=m))
        res.setdefault("lab slq_density", dict(times=[], hvps=op.count, note="")).update()
        res["lab slq_density"]["times"].append(t)
        if pyh is not None:
            from pyhessian import hessian as PyH
            def _eig(a, eigenvectors=True):   # the shim: torch.eig only raises in torch 2 (removed)
                w, v = torch.linalg.eigh(a)
                return torch.stack([w, torch.zeros_like(w)], 1), v

            h = PyH(model, torch.nn.functional.cross_entropy, data=(data.x_train, data.y_train), cuda=False)
            saved, torch.eig = torch.eig, _eig
            try:
                t, _ = timed(lambda h=h: h.density(iter=m, n_v=runs))
            finally:
                torch.eig = saved
            res.setdefault("PyHessian density (torch.eig shimmed)", dict(times=[], hvps=m * runs, note=""))[
                "times"].append(t)
    return res


_XY: tuple = ()


def main(argv=None) -> int:
    global _XY
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=100)
    ap.add_argument("--n-train", type=int, default=4000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--plane-steps", type=int, default=21)
    ap.add_argument("--quick", action="store_true", help="a tiny net, one repetition: correctness only")
    ap.add_argument("--out", default=str(ROOT / "results" / "bench.csv"))
    a = ap.parse_args(argv)
    if a.quick:
        a.width, a.n_train, a.reps, a.plane_steps = 8, 200, 1, 5
    torch.set_grad_enabled(True)
    data, model, loss_fn, theta, _ = setup(a.width, a.n_train)
    _XY = (data.x_train, data.y_train)
    x_small = pooled(data.x_train)
    torch.manual_seed(0)
    small = SimpleMLP(width=16, depth=1, in_dim=x_small.shape[1]).eval()
    loss_s, th_s, _ = make_loss_fn(small, x_small, data.y_train)
    loss64 = make_loss_fn(model.double(), data.x_train, data.y_train)[0]
    model.float()
    ref = {w: top_eigs(hvp_operator(loss64, theta.double()), k=5, which=w, tol=1e-12).values for w in ("LA", "SA")}
    rows = {
        "one HVP": row_hvp(model, data, loss_fn, theta, max(a.reps, 5)),
        "top-1 eigenvalue": row_eigs(model, data, loss_fn, theta, a.reps, 1, "LA", ref["LA"][:1]),
        "top-5 eigenvalues": row_eigs(model, data, loss_fn, theta, a.reps, 5, "LA", ref["LA"]),
        "bottom-1 eigenvalue": row_eigs(model, data, loss_fn, theta, a.reps, 1, "SA", ref["SA"][-1:]),
        "trace, 30 HVPs (P = 970)": row_trace((loss_s, th_s), a.reps * 3),
        "2D plane": row_plane(model, loss_fn, theta, a.reps, a.plane_steps),
        "LR range test, 300 steps": row_lr(model, data, a.reps, 300 if not a.quick else 60),
        "SLQ density, 100 HVPs": row_slq(model, data, loss_fn, theta, a.reps, m=100 if not a.quick else 20),
    }
    out = []
    for work, res in rows.items():
        lab_best = min(statistics.median(r["times"]) for n, r in res.items() if n.startswith("lab"))
        peers = [statistics.median(r["times"]) for n, r in res.items() if not n.startswith("lab")]
        for name, r in res.items():
            med = statistics.median(r["times"])
            out.append(dict(work=work, method=name, hvps=r.get("hvps", ""), err=r.get("err", ""),
                            t_min=min(r["times"]), t_median=med, note=r.get("note", ""),
                            lab_over_best_peer=(lab_best / min(peers)) if peers and name.startswith("lab") else ""))
    stamp = dict(date=datetime.date.today().isoformat(), machine=platform.processor() or platform.machine(),
                 threads=torch.get_num_threads(), torch=torch.__version__, n_train=a.n_train, width=a.width,
                 P=theta.numel(), reps=a.reps)
    print(" · ".join(f"{k}={v}" for k, v in stamp.items()))
    print(f"{'work':26} {'method':40} {'HVPs':>5} {'error':>9} {'min s':>8} {'median s':>9} {'lab/best':>8}  note")
    for r in out:
        err = f"{r['err']:.1e}" if r["err"] != "" else ""
        ratio = f"{r['lab_over_best_peer']:.2f}" if r["lab_over_best_peer"] != "" else ""
        print(f"{r['work']:26} {r['method']:40} {r['hvps']!s:>5} {err:>9} {r['t_min']:8.3f} {r['t_median']:9.3f} "
              f"{ratio:>8}  {r['note']}")
    if not a.quick:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        with open(a.out, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=[*out[0], *stamp])
            w.writeheader()
            for r in out:
                w.writerow({**r, **stamp})
        print(f"written: {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
