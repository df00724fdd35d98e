"""Fuzz the public entry points of lab.curvature, lab.landscape, lab.stats and lab.numerics with bad and edge inputs.

Each case calls one function with one bad or edge input and classifies the outcome:

- refused: an exception whose message names the argument (or the thing) that is wrong;
- correct: a return value that a check verifies (edge inputs with a known right answer);
- silent: a return value that is wrong, NaN or empty, with no error;
- unhelpful: an exception whose message names no argument (e.g. an IndexError from deep inside torch).

Goal: silent = 0 and unhelpful = 0 (issue #31). Run: ``python benchmarks/fuzz_library.py [-v]``.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lab import curvature as C
from lab import landscape as L
from lab import numerics as N
from lab import stats as S
from lab.flat import make_loss_fn
from lab.landscape import directions as D


@dataclass
class Case:
    name: str
    fn: Callable[[], object]
    names: tuple[str, ...]                       # what a good error message names
    check: Callable[[object], bool] | None = None  # verifies a right answer; None: any return value is silent


CASES: list[Case] = []


def case(name: str, names: str | tuple[str, ...], fn: Callable[[], object],
         check: Callable[[object], bool] | None = None) -> None:
    CASES.append(Case(name, fn, (names,) if isinstance(names, str) else names, check))


def _names_it(msg: str, names: tuple[str, ...]) -> bool:
    for n in names:
        quoted = f"'{n}'" in msg or f"'{n}[" in msg or f".{n}'" in msg
        bare = (len(n) >= 2 or not n.isascii()) and re.search(r"(?<![\w'])" + re.escape(n) + r"(?![\w'])", msg)
        if quoted or bare:
            return True
    return False


def classify(c: Case) -> tuple[str, str]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = c.fn()
    except Exception as err:  # noqa: BLE001 - classifying every failure is the point
        msg = f"{type(err).__name__}: {err}".splitlines()[0][:160]
        return ("refused" if _names_it(str(err), c.names) else "unhelpful"), msg
    if c.check is not None:
        try:
            ok = bool(c.check(out))
        except Exception as err:  # noqa: BLE001
            ok, out = False, f"check failed: {err}"
        if ok:
            return "correct", repr(out)[:120]
    return "silent", repr(out)[:120]


# ---------------------------------------------------------------------------------------------- fixtures
torch.manual_seed(0)
NAN, INF = float("nan"), float("inf")


def dense(vals) -> C.DenseOperator:
    return C.DenseOperator(torch.diag(torch.tensor(vals, dtype=torch.float64)))


def nan_op(p: int = 6) -> C.LinearOperator:
    return C.LinearOperator(lambda v: v * float("nan"), size=p, dtype=torch.float64)


def inf_op(p: int = 6) -> C.LinearOperator:
    return C.LinearOperator(lambda v: v * float("inf"), size=p, dtype=torch.float64)


def sometimes_nan_op(p: int = 6) -> C.LinearOperator:
    def mv(v):
        out = v * torch.arange(1.0, p + 1, dtype=torch.float64)
        out[-1] = float("nan")
        return out
    return C.LinearOperator(mv, size=p, dtype=torch.float64)


def close(x, y, tol=1e-6) -> bool:
    return bool(np.allclose(np.asarray(x, dtype=float), np.asarray(y, dtype=float), atol=tol, rtol=tol))


_MLP = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double().eval()
_X = torch.randn(8, 3, dtype=torch.float64)
_Y = torch.randint(0, 2, (8,))
LOSS, THETA, SPEC = make_loss_fn(_MLP, _X, _Y)
P = THETA.numel()
E1 = torch.zeros(P, dtype=torch.float64)
E1[0] = 1.0
E2 = torch.zeros(P, dtype=torch.float64)
E2[1] = 1.0
GRID = np.linspace(-0.1, 0.1, 3)


def quad(t):
    return (t * t).sum()


# ---------------------------------------------------------------------------------------------- lab.curvature
def curvature_cases() -> None:
    eye5 = dense([2.0] * 6)
    case("top_eigs k=2.5", "k", lambda: C.top_eigs(dense([1, 2, 3, 4]), k=2.5))
    case("top_eigs k=0", "k", lambda: C.top_eigs(dense([1, 2, 3, 4]), k=0))
    case("top_eigs k=-1", "k", lambda: C.top_eigs(dense([1, 2, 3, 4]), k=-1))
    case("top_eigs k=P", "k", lambda: C.top_eigs(dense([1, 2, 3, 4]), k=4))
    case("top_eigs k=True", "k", lambda: C.top_eigs(dense([1, 2, 3, 4]), k=True))
    case("top_eigs k='2'", "k", lambda: C.top_eigs(dense([1, 2, 3, 4]), k="2"))
    case("top_eigs tol=0", "tol", lambda: C.top_eigs(dense([1, 2, 3, 4]), k=1, tol=0))
    case("top_eigs tol=nan", "tol", lambda: C.top_eigs(dense([1, 2, 3, 4]), k=1, tol=NAN))
    case("top_eigs which='LM'", "which", lambda: C.top_eigs(dense([1, 2, 3, 4]), k=1, which="LM"))
    case("top_eigs method='x'", "method", lambda: C.top_eigs(dense([1, 2, 3, 4]), k=1, method="x"))
    case("top_eigs max_steps=0", "max_steps", lambda: C.top_eigs(dense([1, 2, 3, 4]), k=2, max_steps=0))
    case("top_eigs max_steps=-3", "max_steps", lambda: C.top_eigs(dense([1, 2, 3, 4]), k=2, max_steps=-3))
    case("top_eigs max_steps=1<k", "max_steps", lambda: C.top_eigs(dense([1, 2, 3, 4, 5]), k=3, max_steps=1))
    case("top_eigs max_steps=2.5", "max_steps", lambda: C.top_eigs(dense([1, 2, 3, 4]), k=1, max_steps=2.5))
    case("top_eigs v0 wrong length", "v0", lambda: C.top_eigs(dense([1, 2, 3, 4]), k=1, v0=torch.ones(3)))
    case("top_eigs v0 zero", "v0", lambda: C.top_eigs(dense([1, 2, 3, 4]), k=1, v0=torch.zeros(4)))
    case("top_eigs v0 nan", "v0", lambda: C.top_eigs(dense([1, 2, 3, 4]), k=1, v0=torch.full((4,), NAN)))
    case("top_eigs seed=-1", "seed", lambda: C.top_eigs(dense([1, 2, 3, 4]), k=1, seed=-1),
         lambda e: close(e.values, [4.0]))
    case("top_eigs 2I k=2", "k", lambda: C.top_eigs(eye5, k=2), lambda e: close(e.values, [2, 2]))
    case("top_eigs zero k=1", "k", lambda: C.top_eigs(dense([0.0] * 5), k=1), lambda e: close(e.values, [0]))
    case("top_eigs zero k=3", "k", lambda: C.top_eigs(dense([0.0] * 5), k=3), lambda e: close(e.values, [0, 0, 0]))
    case("top_eigs -3I SA k=2", "k", lambda: C.top_eigs(dense([-3.0] * 6), k=2, which="SA"),
         lambda e: close(e.values, [-3, -3]))
    rep = [1, 1, 1, 2, 2, 2, 3, 3, 3, 3]
    case("top_eigs repeated k=4", "k", lambda: C.top_eigs(dense(rep), k=4), lambda e: close(e.values, [3, 3, 3, 3]))
    case("top_eigs repeated k=6", "k", lambda: C.top_eigs(dense(rep), k=6),
         lambda e: close(e.values, [3, 3, 3, 3, 2, 2]))
    case("top_eigs repeated SA k=3", "k", lambda: C.top_eigs(dense(rep), k=3, which="SA"),
         lambda e: close(e.values, [1, 1, 1]))
    case("top_eigs rank-1 k=2", "k", lambda: C.top_eigs(dense([5.0, 0, 0, 0]), k=2), lambda e: close(e.values, [5, 0]))
    case("top_eigs arpack 2I", "k", lambda: C.top_eigs(eye5, k=2, method="arpack"), lambda e: close(e.values, [2, 2]))
    case("top_eigs NaN operator", ("operator", "product"), lambda: C.top_eigs(nan_op(), k=1))
    case("top_eigs inf operator", ("operator", "product"), lambda: C.top_eigs(inf_op(), k=1))
    case("top_eigs one NaN entry", ("operator", "product"), lambda: C.top_eigs(sometimes_nan_op(), k=1))
    case("top_eigs theta nan", ("θ", "theta"), lambda: C.top_eigs(quad, torch.tensor([1.0, NAN, 0.0]), k=1))
    case("top_eigs theta wrong size", ("θ", "theta"), lambda: C.top_eigs(dense([1, 2, 3]), torch.zeros(4), k=1))
    case("top_eigs no theta", ("θ", "theta"), lambda: C.top_eigs(quad, k=1))
    case("top_eigs not callable", ("op_or_loss", "operator"), lambda: C.top_eigs(3, torch.zeros(3), k=1))
    case("power_iteration k=0", "k", lambda: C.power_iteration(dense([1, 2, 3]), k=0))
    case("power_iteration k=1.5", "k", lambda: C.power_iteration(dense([1, 2, 3]), k=1.5))
    case("power_iteration iters=0", "iters", lambda: C.power_iteration(dense([1, 2, 3]), iters=0))
    case("power_iteration iters=2.5", "iters", lambda: C.power_iteration(dense([1, 2, 3]), iters=2.5))
    case("power_iteration NaN op", ("operator", "product"), lambda: C.power_iteration(nan_op()))
    case("power_iteration zero op", "k", lambda: C.power_iteration(dense([0.0] * 4), k=2),
         lambda e: close(e.values, [0, 0]))
    case("power_iteration 2I", "k", lambda: C.power_iteration(eye5, k=3), lambda e: close(e.values, [2, 2, 2]))
    q0 = torch.tensor([1.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    case("lanczos m=0", "m", lambda: C.lanczos(dense([1, 2, 3, 4]), q0 / 2, 0))
    case("lanczos m=-2", "m", lambda: C.lanczos(dense([1, 2, 3, 4]), q0 / 2, -2))
    case("lanczos m=2.5", "m", lambda: C.lanczos(dense([1, 2, 3, 4]), q0 / 2, 2.5))
    case("lanczos q0 zero", "q0", lambda: C.lanczos(dense([1, 2, 3, 4]), torch.zeros(4, dtype=torch.float64), 3))
    case("lanczos q0 nan", "q0", lambda: C.lanczos(dense([1, 2, 3, 4]), torch.full((4,), NAN, dtype=torch.float64), 3))
    case("lanczos q0 wrong length", "q0", lambda: C.lanczos(dense([1, 2, 3, 4]), torch.ones(3, dtype=torch.float64), 3))
    case("lanczos q0 not unit", "q0", lambda: C.lanczos(dense([1, 2, 3, 4]), q0 * 3, 4),
         lambda ab: close(np.sort(np.linalg.eigvalsh(np.diag(ab[0]) + np.diag(ab[1], 1) + np.diag(ab[1], -1))),
                          [1, 2, 3, 4]))
    case("lanczos NaN op", ("operator", "product"), lambda: C.lanczos(nan_op(4), q0 / 2, 3))
    case("slq_density n_runs=0", "n_runs", lambda: C.slq_density(dense([1, 2]), n_runs=0))
    case("slq_density m=0", "m", lambda: C.slq_density(dense([1, 2]), m=0))
    case("slq_density m=1.5", "m", lambda: C.slq_density(dense([1, 2]), m=1.5))
    case("slq_density NaN op", ("operator", "product"), lambda: C.slq_density(nan_op(4), n_runs=2, m=3))
    case("slq_density zero op", "m", lambda: C.slq_density(dense([0.0] * 4), n_runs=2, m=3),
         lambda nw: close(nw[0], 0) and close(nw[1].sum(), 1))
    case("spectral_density sigma=0", "sigma", lambda: C.spectral_density(np.zeros(2), np.ones(2) / 2, np.zeros(3), 0))
    case("spectral_density sigma=nan", "sigma",
         lambda: C.spectral_density(np.zeros(2), np.ones(2) / 2, np.zeros(3), NAN))
    case("spectral_density nodes/weights shapes", ("nodes", "weights"),
         lambda: C.spectral_density(np.zeros(3), np.ones(2), np.zeros(3), 1.0))
    case("spectral_density nan weights", ("nodes", "weights"),
         lambda: C.spectral_density(np.zeros(2), np.array([NAN, 1.0]), np.zeros(3), 1.0))
    case("hutchinson n=1", "n", lambda: C.hutchinson_trace(dense([1, 2]), n=1))
    case("hutchinson n=2.5", "n", lambda: C.hutchinson_trace(dense([1, 2]), n=2.5))
    case("hutchinson NaN op", ("operator", "product"), lambda: C.hutchinson_trace(nan_op(), n=4))
    case("hutchinson inf op", ("operator", "product"), lambda: C.hutchinson_trace(inf_op(), n=4))
    case("hutchinson zero op", "n", lambda: C.hutchinson_trace(dense([0.0] * 4), n=4), lambda r: close(r, [0, 0]))
    case("hutchpp n=3", "n", lambda: C.hutchpp_trace(dense([1, 2]), n=3))
    case("hutchpp n=5.5", "n", lambda: C.hutchpp_trace(dense([1, 2]), n=5.5))
    case("hutchpp NaN op", ("operator", "product"), lambda: C.hutchpp_trace(nan_op(), n=9))
    case("hutchpp 3I", "n", lambda: C.hutchpp_trace(dense([3.0] * 5), n=9),
         lambda r: abs(r[0] - 15) <= 4 * r[1] + 1e-9)
    case("xtrace n=3", "n", lambda: C.xtrace(dense([1, 2]), n=3))
    case("xtrace n=4.5", "n", lambda: C.xtrace(dense([1, 2]), n=4.5))
    case("xtrace NaN op", ("operator", "product"), lambda: C.xtrace(nan_op(), n=8))
    case("xtrace zero op", "n", lambda: C.xtrace(dense([0.0] * 6), n=8), lambda r: close(r[0], 0))
    case("xtrace 2I", "n", lambda: C.xtrace(dense([2.0] * 6), n=8), lambda r: close(r[0], 12))
    case("DenseOperator 1-D", "matrix", lambda: C.DenseOperator(torch.ones(3)))
    case("DenseOperator nan", "matrix", lambda: C.DenseOperator(torch.full((2, 2), NAN))(torch.ones(2)))
    case("LinearOperator size=0", "size", lambda: C.LinearOperator(lambda v: v, size=0))
    case("LinearOperator size=-2", "size", lambda: C.LinearOperator(lambda v: v, size=-2))
    case("LinearOperator size=2.5", "size", lambda: C.LinearOperator(lambda v: v, size=2.5))
    case("LinearOperator wrong output shape", ("matvec", "operator"),
         lambda: C.LinearOperator(lambda v: v[:2], size=3)(torch.ones(3)))
    case("LinearOperator wrong input length", ("v", "vector"),
         lambda: C.LinearOperator(lambda v: v, size=3)(torch.ones(4)))
    case("matmat wrong rows", ("vs", "vectors"), lambda: dense([1, 2, 3]).matmat(torch.ones(4, 2)))
    case("HessianOperator theta nan", ("θ", "theta"), lambda: C.hvp_operator(quad, torch.tensor([NAN, 1.0])))
    case("HessianOperator batch=0", "batch", lambda: C.hvp_operator(quad, torch.zeros(2), batch=0))
    case("HessianOperator batch=1.5", "batch", lambda: C.hvp_operator(quad, torch.zeros(2), batch=1.5))
    case("HessianOperator theta 2-D", ("θ", "theta"), lambda: C.hvp_operator(quad, torch.zeros(2, 2))(torch.ones(4)),
         lambda r: close(r.reshape(-1), 2 * np.ones(4)))
    case("HessianOperator int theta", ("θ", "theta"), lambda: C.hvp_operator(quad, torch.zeros(2, dtype=torch.long)))
    case("HessianOperator overflowing loss", ("θ", "product", "Hessian-vector"),
         lambda: C.hvp_operator(lambda t: torch.exp(t * 1e4).sum(), torch.ones(2))(torch.ones(2)))
    case("hvp v wrong length", "v", lambda: C.hvp(quad, torch.zeros(3), torch.ones(2)))
    case("directional_curvature zero d", "d", lambda: C.directional_curvature(quad, torch.zeros(3), torch.zeros(3)))
    case("minibatch_hvp_operator empty", "batches", lambda: C.minibatch_hvp_operator(lambda t, x, y: quad(t),
                                                                                       torch.zeros(2), []))
    case("WeightedSum mismatched", ("weights", "ops"), lambda: C.WeightedSum([dense([1, 2])], [0.5, 0.5]))
    case("WeightedSum sizes differ", ("ops", "size"), lambda: C.WeightedSum([dense([1, 2]), dense([1, 2, 3])],
                                                                            [0.5, 0.5])(torch.ones(2)))
    case("WeightedSum nan weight", "weights", lambda: C.WeightedSum([dense([1, 2])], [NAN])(torch.ones(2)))
    case("dense_hessian max_bytes", "max_bytes", lambda: C.dense_hessian(quad, torch.zeros(100), max_bytes=10))
    case("numerical_rank empty", "a", lambda: C.numerical_rank(np.zeros((0, 0))), lambda r: r.rank == 0)
    case("numerical_rank nan", "a", lambda: C.numerical_rank(np.array([[NAN, 0], [0, 1.0]])))
    case("numerical_rank zero", "a", lambda: C.numerical_rank(np.zeros((3, 3))), lambda r: r.rank == 0)
    case("condition_number nan", "a", lambda: C.condition_number(np.array([[NAN, 0], [0, 1.0]])))
    case("rank_tolerance nan", "values", lambda: C.rank_tolerance(np.array([NAN, 1.0]), 3))
    case("rescale alpha=0", "alpha", lambda: C.rescale(THETA, SPEC, 0.0))
    case("rescale alpha=nan", "alpha", lambda: C.rescale(THETA, SPEC, NAN))
    case("rescale layer=5", "layer", lambda: C.rescale(THETA, SPEC, 2.0, layer=5))
    case("filter_normalized_curvature n_dirs=0", "n_dirs",
         lambda: C.filter_normalized_curvature(LOSS, THETA, SPEC, n_dirs=0))
    case("epsilon_sharpness eps=-1", "eps", lambda: C.epsilon_sharpness(LOSS, THETA, eps=-1.0))
    case("epsilon_sharpness eps=nan", "eps", lambda: C.epsilon_sharpness(LOSS, THETA, eps=NAN))
    case("adaptive_operator theta nan", ("θ", "theta"), lambda: C.adaptive_operator(LOSS, THETA * NAN))


# ---------------------------------------------------------------------------------------------- lab.landscape
def landscape_cases() -> None:
    short, long_ = torch.ones(P - 2, dtype=torch.float64), torch.ones(P + 1, dtype=torch.float64)
    for method in ("auto", "plain"):
        case(f"plane d1 P-2 ({method})", "d1", lambda m=method: L.plane(LOSS, THETA, short, E2, GRID, GRID, method=m))
        case(f"plane d2 P+1 ({method})", "d2", lambda m=method: L.plane(LOSS, THETA, E1, long_, GRID, GRID, method=m))
        case(f"plane theta P-1 ({method})", ("θ", "theta"),
             lambda m=method: L.plane(LOSS, THETA[:-1], E1[:-1], E2[:-1], GRID, GRID, method=m))
        case(f"plane zero d1 ({method})", "d1", lambda m=method: L.plane(LOSS, THETA, 0 * E1, E2, GRID, GRID, method=m))
        case(f"plane d1 == d2 ({method})", ("d1", "d2"),
             lambda m=method: L.plane(LOSS, THETA, E1, E1.clone(), GRID, GRID, method=m))
        case(f"plane d2 = -3 d1 ({method})", ("d1", "d2"),
             lambda m=method: L.plane(LOSS, THETA, E1, -3 * E1, GRID, GRID, method=m))
        case(f"plane empty a ({method})", "a", lambda m=method: L.plane(LOSS, THETA, E1, E2, np.array([]), GRID,
                                                                        method=m))
        case(f"plane 2-D b ({method})", "b", lambda m=method: L.plane(LOSS, THETA, E1, E2, GRID, np.ones((2, 2)),
                                                                      method=m))
        case(f"plane nan in a ({method})", "a", lambda m=method: L.plane(LOSS, THETA, E1, E2, np.array([0, NAN]), GRID,
                                                                         method=m))
        case(f"line d P-2 ({method})", "d", lambda m=method: L.line(LOSS, THETA, short, GRID, method=m))
        case(f"line zero d ({method})", "d", lambda m=method: L.line(LOSS, THETA, 0 * E1, GRID, method=m))
        case(f"line empty t ({method})", "t", lambda m=method: L.line(LOSS, THETA, E1, np.array([]), method=m))
        case(f"line 2-D t ({method})", "t", lambda m=method: L.line(LOSS, THETA, E1, np.ones((2, 2)), method=m))
    case("plane method='x'", "method", lambda: L.plane(LOSS, THETA, E1, E2, GRID, GRID, method="x"))
    case("plane chunk_size=0", "chunk_size", lambda: L.plane(LOSS, THETA, E1, E2, GRID, GRID, chunk_size=0))
    case("plane d1 nan", "d1", lambda: L.plane(LOSS, THETA, E1 * NAN, E2, GRID, GRID))
    case("plane theta 2-D", ("θ", "theta"), lambda: L.plane(quad, torch.zeros(2, 2, dtype=torch.float64), E1[:4],
                                                            E2[:4], GRID, GRID))
    case("plane quad correct", "a", lambda: L.plane(quad, torch.zeros(2, dtype=torch.float64), E1[:2], E2[:2],
                                                    np.array([-1.0, 0, 1]), np.array([0.0, 1])),
         lambda s: close(s.loss, [[1, 0, 1], [2, 1, 2]]))
    uneven = np.array([0.0, 0.1, 1.0, 1.1, 3.0])
    case("nonconvex_fraction uneven a", "a", lambda: L.nonconvex_fraction(
        L.Surface(uneven, np.linspace(-1, 1, 5), uneven[None, :] ** 2 + np.linspace(-1, 1, 5)[:, None] ** 2)),
         lambda f: f == 0.0)
    case("nonconvex_fraction 2x5", ("surf", "surface"), lambda: L.nonconvex_fraction(
        L.Surface(np.arange(5.0), np.arange(2.0), np.zeros((2, 5)))))
    case("nonconvex_fraction shape mismatch", ("surf", "surface", "loss"), lambda: L.nonconvex_fraction(
        L.Surface(np.arange(4.0), np.arange(5.0), np.zeros((4, 4)))))
    case("nonconvex_fraction decreasing a", "a", lambda: L.nonconvex_fraction(
        L.Surface(np.linspace(1, -1, 5), np.linspace(-1, 1, 5), np.add.outer(np.linspace(-1, 1, 5) ** 2,
                                                                              np.linspace(1, -1, 5) ** 2))),
         lambda f: f == 0.0)
    case("nonconvex_fraction repeated a", "a", lambda: L.nonconvex_fraction(
        L.Surface(np.zeros(4), np.arange(4.0), np.zeros((4, 4)))))
    case("interpolate t=1", "t", lambda: L.interpolate(quad, torch.zeros(2), torch.ones(2), 1))
    case("interpolate t=0", "t", lambda: L.interpolate(quad, torch.zeros(2), torch.ones(2), 0))
    case("interpolate shape mismatch", ("theta_a", "theta_b"), lambda: L.interpolate(quad, torch.zeros(2),
                                                                                     torch.ones(3)))
    case("barrier empty", "loss", lambda: L.barrier(np.array([])))
    case("barrier nan", "loss", lambda: L.barrier(np.array([1.0, NAN, 1.0])))
    case("is_monotone empty", "loss", lambda: L.is_monotone(np.array([])))
    case("is_monotone tol nan", "tol", lambda: L.is_monotone(np.array([1.0, 0.5]), tol=NAN))
    case("trajectory_pca k=0", "k", lambda: L.trajectory_pca(torch.randn(5, 4), k=0))
    case("trajectory_pca k=2.5", "k", lambda: L.trajectory_pca(torch.randn(5, 4), k=2.5))
    case("trajectory_pca k too big", "k", lambda: L.trajectory_pca(torch.randn(3, 4), k=5))
    case("trajectory_pca 1 point", "thetas", lambda: L.trajectory_pca(torch.randn(1, 4), k=1))
    case("trajectory_pca 1-D", "thetas", lambda: L.trajectory_pca(torch.randn(4), k=1))
    case("trajectory_pca nan", "thetas", lambda: L.trajectory_pca(torch.full((3, 4), NAN), k=1))
    case("trajectory_pca constant", "thetas", lambda: L.trajectory_pca(torch.ones(3, 4), k=1))
    case("random_walk_pca k=0", "k", lambda: L.random_walk_pca(np.ones(4), 10, k=0))
    case("random_walk_pca n_walks=0", "n_walks", lambda: L.random_walk_pca(np.ones(4), 10, n_walks=0))
    case("random_walk_pca dim=0", "dim", lambda: L.random_walk_pca(np.ones(4), 0))
    case("random_walk_pca nan step", "step_lengths", lambda: L.random_walk_pca(np.array([1.0, NAN, 1.0]), 10))
    case("D.gaussian int theta", "theta", lambda: D.gaussian(torch.zeros(0)))
    case("D.gradient zero", "grad", lambda: D.gradient(torch.zeros(3)))
    case("D.origin zero", "theta", lambda: D.origin(torch.zeros(3)))
    case("D.between equal", ("theta_a", "theta_b"), lambda: D.between(torch.ones(3), torch.ones(3)))
    case("D.between shapes", ("theta_a", "theta_b"), lambda: D.between(torch.ones(3), torch.ones(4)))
    case("D.gradient nan", "grad", lambda: D.gradient(torch.tensor([NAN, 1.0])))
    case("D.filter_normalized bias='x'", "bias", lambda: D.filter_normalized(THETA, SPEC, bias="x"))
    case("D.filter_normalized wrong theta", ("theta", "spec"), lambda: D.filter_normalized(THETA[:-1], SPEC))


# ---------------------------------------------------------------------------------------------- lab.stats
def stats_cases() -> None:
    v = [1.0, 2.0, 3.0, 4.0]
    case("t_interval level=0", "level", lambda: S.t_interval(v, level=0))
    case("t_interval level=1", "level", lambda: S.t_interval(v, level=1))
    case("t_interval level=1.5", "level", lambda: S.t_interval(v, level=1.5))
    case("t_interval level=nan", "level", lambda: S.t_interval(v, level=NAN))
    case("t_interval level=-0.5", "level", lambda: S.t_interval(v, level=-0.5))
    case("t_interval level='x'", "level", lambda: S.t_interval(v, level="x"))
    case("t_interval 2-D values", "values", lambda: S.t_interval(np.ones((2, 2)) + np.eye(2)),
         lambda e: e.n == 4 and close(e.value, 1.5))
    case("t_interval strings", "values", lambda: S.t_interval(["a", "b"]))
    case("t_interval identical", "values", lambda: S.t_interval([2.0, 2.0, 2.0]),
         lambda e: getattr(e, "degenerate", False) and not e.above(1.0) and not e.excludes(2.5))
    case("t_interval one value", "values", lambda: S.t_interval([1.0]), lambda e: not e.finite)
    case("t_interval nan value", "values", lambda: S.t_interval([1.0, NAN, 2.0]), lambda e: not e.finite)
    case("median_interval level=2", "level", lambda: S.median_interval(range(10), level=2))
    case("median_interval level=0", "level", lambda: S.median_interval(range(10), level=0))
    case("median_interval identical", "values", lambda: S.median_interval([1.0] * 10),
         lambda e: getattr(e, "degenerate", False) and not e.above(0.5))
    case("bootstrap level=0", "level", lambda: S.bootstrap_interval(range(10), level=0))
    case("bootstrap level=nan", "level", lambda: S.bootstrap_interval(range(10), level=NAN))
    case("bootstrap n_resamples=0", "n_resamples", lambda: S.bootstrap_interval(range(10), n_resamples=0))
    case("bootstrap n_resamples=2.5", "n_resamples", lambda: S.bootstrap_interval(range(10), n_resamples=2.5))
    case("bootstrap identical", "values", lambda: S.bootstrap_interval([1.0] * 10),
         lambda e: getattr(e, "degenerate", False) and not e.above(0.5))
    case("kendall level=1.5", "level", lambda: S.kendall_interval(range(8), range(8), level=1.5))
    case("kendall lengths", ("x", "y"), lambda: S.kendall_interval(range(8), range(7)))
    case("kendall n_resamples=-1", "n_resamples", lambda: S.kendall_interval(range(8), range(8), n_resamples=-1))
    case("proportion nan flags", "successes", lambda: S.proportion([1, NAN, 0, NAN]))
    case("proportion 2 in flags", "successes", lambda: S.proportion([1, 2, 0]))
    case("proportion -1 in flags", "successes", lambda: S.proportion([1, -1, 0]))
    case("proportion 0.5 in flags", "successes", lambda: S.proportion([1, 0.5, 0]))
    case("proportion count > n", ("successes", "n"), lambda: S.proportion(5, 3))
    case("proportion count < 0", ("successes", "n"), lambda: S.proportion(-1, 3))
    case("proportion count 1.5", ("successes", "n"), lambda: S.proportion(1.5, 3))
    case("proportion n=-1", "n", lambda: S.proportion(0, -1))
    case("proportion n=2.5", "n", lambda: S.proportion(1, 2.5))
    case("proportion level=0", "level", lambda: S.proportion([True, False], level=0))
    case("proportion numpy bools", "successes", lambda: S.proportion(np.array([True, False, True, True])),
         lambda e: e.value == 0.75 and e.n == 4)
    case("proportion empty", "successes", lambda: S.proportion([]), lambda e: not e.finite)
    case("replicate_seeds seed=-1", "seed", lambda: S.replicate_seeds(-1, 3))
    case("replicate_seeds seed=1.5", "seed", lambda: S.replicate_seeds(1.5, 3))
    case("replicate_seeds n_reps=2.5", "n_reps", lambda: S.replicate_seeds(0, 2.5))
    case("replicate_seeds n_reps=0", "n_reps", lambda: S.replicate_seeds(0, 0))
    case("replicate_seeds seed=True", "seed", lambda: S.replicate_seeds(True, 2))
    case("Estimate low > high", ("low", "high"), lambda: S.Estimate(1.0, 2.0, 0.0, 3, "x").within(-5, 5))
    # a BCa or percentile bootstrap interval need not contain its point estimate: allowed, and kept as given
    case("Estimate value outside", ("value", "low", "high"), lambda: S.Estimate(5.0, 0.0, 1.0, 3, "x"),
         lambda e: (e.value, e.low, e.high) == (5.0, 0.0, 1.0) and e.above(-1.0))
    case("Estimate n=-1", "n", lambda: S.Estimate(1.0, 0.0, 2.0, -1, "x"))
    case("Estimate level=2", "level", lambda: S.Estimate(1.0, 0.0, 2.0, 3, "x", level=2.0))
    case("Estimate within lo > hi", ("lo", "hi"), lambda: S.Estimate(1.0, 0.5, 1.5, 3, "x").within(2.0, 0.0))
    case("Estimate nan value tests", "value", lambda: S.Estimate(NAN, 0.0, 1.0, 3, "x").above(-1.0),
         lambda r: r is False)


# ---------------------------------------------------------------------------------------------- lab.numerics
def numerics_cases() -> None:
    t32 = torch.tensor([1.0, 2.0], dtype=torch.float32)
    case("dtype_of bad", "dtype", lambda: N.dtype_of("float8"))
    case("unit_roundoff int dtype", "dtype", lambda: N.unit_roundoff(torch.int32))
    case("unit_roundoff str", "dtype", lambda: N.unit_roundoff("float32"))
    case("neighbour int tensor", "x", lambda: N.neighbour(torch.tensor([1, 2]), torch.ones(2)))
    case("neighbour float8-size tensor", "x", lambda: N.neighbour(torch.tensor([1.0, 2.0]).to(torch.uint8),
                                                                   torch.ones(2)))
    case("neighbour nan direction", "direction", lambda: N.neighbour(t32, torch.tensor([NAN, 1.0])))
    case("ulp int dtype", "dtype", lambda: N.ulp(t32, torch.int32))
    case("ulp inf", "x", lambda: N.ulp(torch.tensor([INF])))
    case("ecnoise 3 points", "fvals", lambda: N.ecnoise(np.ones(3)))
    case("ecnoise nan", "fvals", lambda: N.ecnoise(np.array([1.0] * 6 + [NAN])))
    case("ecnoise 2-D", "fvals", lambda: N.ecnoise(np.ones((8, 2))))
    case("ecnoise max_ratio=0", "max_ratio", lambda: N.ecnoise(1 + 1e-8 * np.random.default_rng(0).normal(size=9),
                                                               max_ratio=0))
    case("rounding_model u<0", "u", lambda: N.rounding_model(-1e-8, 1.0))
    case("rounding_model nan loss", "loss", lambda: N.rounding_model(1e-8, NAN))
    case("fd_noise sigma<0", "sigma", lambda: N.fd_noise(-1.0))
    # a missing noise estimate (ecnoise's NaN) stays missing: documented, and the chapters rely on it
    case("fd_noise nan", "sigma", lambda: N.fd_noise(NAN), lambda r: math.isnan(r))
    case("fd_noise inf", "sigma", lambda: N.fd_noise(INF))
    case("default_spacing int", "dtype", lambda: N.default_spacing(torch.int64))
    case("step_change points=1", "points", lambda: N.step_change(torch.float32, points=1))
    case("step_change points=0", "points", lambda: N.step_change(torch.float32, points=0))
    case("crossover_h nan sigma", "sigma", lambda: N.crossover_h(NAN, 1.0))
    case("crossover_h curvature 0", "curvature", lambda: N.crossover_h(1e-8, 0.0))
    case("scaled_fd_noise f0=0", "f0", lambda: N.scaled_fd_noise(1e-8, 0.0, np.ones(3), np.ones(3)))
    case("scaled_fd_noise sigma nan", "sigma", lambda: N.scaled_fd_noise(NAN, 1.0, np.ones(3), np.ones(3)))
    case("observed_crossover empty", "h", lambda: N.observed_crossover(np.array([]), np.array([]), np.array([])))
    case("observed_crossover lengths", ("h", "fd", "fd_ref"),
         lambda: N.observed_crossover(np.ones(4), np.ones(3), np.ones(4)))
    case("observed_crossover window=0", "window",
         lambda: N.observed_crossover(np.ones(4), np.ones(4), np.ones(4), window=0))
    case("fit_exponent level=0", "level", lambda: N.fit_exponent(np.arange(1.0, 5), np.arange(1.0, 5)[None].repeat(2, 0)
                                                                 * [[1], [1.1]], level=0))
    case("fit_exponent nan", "x", lambda: N.fit_exponent(np.array([1.0, NAN, 3.0]), np.ones((2, 3))))
    case("fit_exponent 1 point", "x", lambda: N.fit_exponent(np.array([1.0]), np.ones((2, 1))))
    case("fit_exponent lengths", ("x", "y_by_seed"), lambda: N.fit_exponent(np.arange(1.0, 5), np.ones((2, 3))))
    case("minibatch_loss_std n_batches=1", "n_batches", lambda: N.minibatch_loss_std(np.arange(10.0), [2],
                                                                                      n_batches=1))
    case("minibatch_loss_std b=0", "batch_sizes", lambda: N.minibatch_loss_std(np.arange(10.0), [0]))
    case("minibatch_loss_std nan", ("per_sample", "per-sample"), lambda: N.minibatch_loss_std(np.array([1.0, NAN]),
                                                                                                [1]))
    case("power_law negative y", "y", lambda: N.power_law(np.arange(1.0, 4), np.array([1.0, -1.0, 2.0])))
    case("power_law lengths", ("x", "y"), lambda: N.power_law(np.arange(1.0, 4), np.arange(1.0, 3)))
    case("power_law one point", ("x", "y"), lambda: N.power_law(np.array([1.0]), np.array([1.0])))
    case("power_law x=0", "x", lambda: N.power_law(np.array([0.0, 1.0, 2.0]), np.arange(1.0, 4)))
    case("doubling_h h_min=0", "h_min", lambda: N.doubling_h(0.0))
    case("doubling_h h_min<0", "h_min", lambda: N.doubling_h(-1e-3))
    case("doubling_h decades=0", "decades", lambda: N.doubling_h(1e-12, 0.0))
    case("doubling_h decades=nan", "decades", lambda: N.doubling_h(1e-12, NAN))
    case("points_along perturb='x'", "perturb", lambda: N.points_along(torch.zeros(2).double(), torch.ones(2).double(),
                                                                       np.ones(3), torch.float32, perturb="x"))
    case("points_along lengths", ("theta64", "direction64"),
         lambda: N.points_along(torch.zeros(2).double(), torch.ones(3).double(), np.ones(3), torch.float32))
    case("ulp_threshold zero direction", "direction", lambda: N.ulp_threshold(t32, torch.zeros(2), torch.float32))
    case("ulp_threshold lengths", ("theta", "direction"), lambda: N.ulp_threshold(t32, torch.ones(3), torch.float32))
    case("local_slope lengths", ("h", "y"), lambda: N.local_slope(np.arange(1.0, 5), np.arange(1.0, 4)))
    case("local_slope 1 point", ("h", "y"), lambda: N.local_slope(np.array([1.0]), np.array([1.0])))
    case("local_slope h<=0", "h", lambda: N.local_slope(np.array([0.0, 1.0, 2.0]), np.arange(1.0, 4)))
    case("label_regimes fd_noise<0", "fd_noise", lambda: N.label_regimes(np.logspace(-8, 0, 9), np.logspace(-8, 0, 9),
                                                                         -1.0))
    case("label_regimes fd_noise nan", "fd_noise", lambda: N.label_regimes(np.logspace(-8, 0, 9),
                                                                           np.logspace(-8, 0, 9), NAN))
    case("label_regimes lengths", ("h", "fd"), lambda: N.label_regimes(np.logspace(-8, 0, 9), np.ones(5), 1e-9))
    case("crossover_batch err 0", "err_norm", lambda: N.crossover_batch(1.0, 0.0), lambda r: r == INF)  # documented
    case("crossover_batch nan", "trace", lambda: N.crossover_batch(NAN, 1.0))
    case("crossover_batch err<0", "err_norm", lambda: N.crossover_batch(1.0, -1.0))
    case("round_to int dtype", "dtype", lambda: N.round_to(t32, torch.int32))
    case("round_stochastic wider", "dtype", lambda: N.round_stochastic(t32, torch.float64))
    case("lost_updates lengths", ("theta", "update"), lambda: N.lost_updates(t32, torch.ones(3)))
    case("lost_updates nan update", "update", lambda: N.lost_updates(t32, torch.tensor([NAN, 1.0])))
    case("fit_law 2 points", ("widths", "depths", "errors"), lambda: N.fit_law([1, 2], [1, 2], [1.0, 2.0]))
    case("fit_law lengths", ("widths", "depths", "errors"), lambda: N.fit_law([1, 2, 3], [1, 2], [1.0, 2.0, 3.0]))
    case("fit_law collinear", ("widths", "depths"), lambda: N.fit_law([1, 2, 4], [1, 2, 4], [1.0, 2.0, 3.0]))
    case("grad_error float64", "dtype", lambda: N.grad_error(quad, torch.ones(2), torch.float64))
    case("grad_error zero gradient", ("gradient", "theta"), lambda: N.grad_error(quad, torch.zeros(2), torch.float32),
         lambda r: r.rel == 0.0 and r.err_norm == 0.0)
    case("batch_noise batch=0", "batch", lambda: N.batch_noise(lambda t, x, y: ((x @ t - y) ** 2).mean(),
                                                               torch.zeros(2), torch.ones(4, 2), torch.ones(4),
                                                               batch=0))
    case("batch_noise n_batches=0", "n_batches", lambda: N.batch_noise(lambda t, x, y: ((x @ t - y) ** 2).mean(),
                                                                       torch.zeros(2), torch.ones(4, 2), torch.ones(4),
                                                                       batch=2, n_batches=0))
    case("train_lowprec steps=0", "steps", lambda: N.train_lowprec(lambda t, x, y: ((x @ t - y) ** 2).mean(),
                                                                   torch.zeros(2), torch.ones(4, 2), torch.ones(4),
                                                                   steps=0, lr=0.1))
    case("train_lowprec lr=nan", "lr", lambda: N.train_lowprec(lambda t, x, y: ((x @ t - y) ** 2).mean(),
                                                               torch.zeros(2), torch.ones(4, 2), torch.ones(4),
                                                               steps=2, lr=NAN))
    case("train_lowprec mode='x'", "mode", lambda: N.train_lowprec(lambda t, x, y: ((x @ t - y) ** 2).mean(),
                                                                   torch.zeros(2), torch.ones(4, 2), torch.ones(4),
                                                                   steps=2, lr=0.1, mode="x"))
    case("tail_excess fraction=0", "fraction", lambda: N.tail_excess(_run(), 0.0, fraction=0))
    case("tail_excess l_star nan", "l_star", lambda: N.tail_excess(_run(), NAN))
    case("loss_noise n_dirs=0", "n_dirs", lambda: N.loss_noise(quad, torch.ones(3), torch.float32, n_dirs=0))
    case("loss_noise points=3", "points", lambda: N.loss_noise(quad, torch.ones(3), torch.float32, points=3))
    case("loss_noise spacing<0", "spacing", lambda: N.loss_noise(quad, torch.ones(3), torch.float32, spacing=-1.0))
    case("loss_noise theta nan", ("θ", "theta"), lambda: N.loss_noise(quad, torch.tensor([NAN, 1.0]), torch.float32))
    case("noise_by_dtype empty", "dtypes", lambda: N.noise_by_dtype(quad, torch.ones(3), []))
    case("doubling_probe lengths", ("theta", "direction"),
         lambda: N.doubling_probe(quad, torch.ones(3), torch.ones(2), decades=1))
    case("doubling_probe zero direction", "direction",
         lambda: N.doubling_probe(quad, torch.ones(3), torch.zeros(3), decades=1))


def _run():
    return N.train_lowprec(lambda t, x, y: ((x @ t - y) ** 2).mean(), torch.zeros(2), torch.ones(4, 2),
                           torch.ones(4), steps=4, lr=0.1, progress=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-v", "--verbose", action="store_true", help="print every case, not only the bad ones")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    for build in (curvature_cases, landscape_cases, stats_cases, numerics_cases):
        build()
    counts: Counter[str] = Counter()
    for c in CASES:
        kind, detail = classify(c)
        counts[kind] += 1
        if args.verbose or kind in ("silent", "unhelpful"):
            print(f"{kind:9s} {c.name:45s} {detail}")
    print(f"cases {len(CASES)}: refused by name {counts['refused']}, correct {counts['correct']}, "
          f"silent {counts['silent']}, unhelpful {counts['unhelpful']}")
    return 0 if counts["silent"] == counts["unhelpful"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
