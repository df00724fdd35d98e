"""Property-based tests (Hypothesis) over the public functions of lab.curvature, lab.landscape, lab.stats and
lab.numerics (issue #31, "no silent wrong answer"): every call either returns the right value, checked against a
dense float64 reference or a closed form, or raises a one-line error that names the argument.

Budgets are fixed (``derandomize=True``: the same examples every run) so that the file runs in well under a minute
on two cores.
"""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from lab import curvature as C  # noqa: E402
from lab import landscape as L  # noqa: E402
from lab import numerics as N  # noqa: E402
from lab import stats as S  # noqa: E402
from lab.checks import NonFiniteError  # noqa: E402

FAST = settings(max_examples=60, deadline=None, derandomize=True)
SLOW = settings(max_examples=20, deadline=None, derandomize=True)

BAD_NUMBERS = st.sampled_from([float("nan"), float("inf"), -float("inf")])
NON_INTEGERS = st.one_of(st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: x != int(x)),
                         st.just(True), st.text(max_size=3))


def names_it(err: BaseException, *names: str) -> bool:
    """The error is one line and names one of the arguments ('k', or θ/theta for the point)."""
    msg = str(err)
    return "\n" not in msg and any(f"'{n}" in msg or (not n.isascii() and n in msg) for n in names)


def spectrum(seed: int, p: int, n_distinct: int, zero: bool) -> tuple[np.ndarray, np.ndarray]:
    """A symmetric P × P matrix with few distinct eigenvalues (repeated ones, zero, identity multiples), rotated by
    a random orthogonal matrix: (matrix, its eigenvalues ascending)."""
    rng = np.random.default_rng(seed)
    pool = rng.choice([-2.0, 0.5, 1.0, 3.5, 7.0], size=n_distinct, replace=False)
    if zero:
        pool[0] = 0.0
    vals = rng.choice(pool, size=p)
    q, _ = np.linalg.qr(rng.standard_normal((p, p)))
    h = (q * vals) @ q.T
    return (h + h.T) / 2, np.sort(vals)


# ---------------------------------------------------------------------------------------------- lab.curvature
@FAST
@given(seed=st.integers(0, 2**16), p=st.integers(2, 12), n_distinct=st.integers(1, 3), zero=st.booleans(),
       which=st.sampled_from(["LA", "SA"]), data=st.data(),
       dtype=st.sampled_from([torch.float64, torch.float32]))
def test_top_eigs_matches_the_dense_spectrum_with_repeated_eigenvalues(seed, p, n_distinct, zero, which, data,
                                                                       dtype) -> None:
    h, vals = spectrum(seed, p, n_distinct, zero)
    k = data.draw(st.integers(1, p - 1), label="k")
    tol, atol = (1e-8, 1e-7) if dtype == torch.float64 else (1e-5, 1e-4)
    e = C.top_eigs(C.DenseOperator(torch.from_numpy(h).to(dtype)), k=k, which=which, tol=tol, seed=seed)
    want = vals[::-1][:k] if which == "LA" else vals[:k][::-1]
    assert e.values.shape == (k,) and e.vectors.shape == (p, k) and e.vectors.dtype == dtype
    assert np.sort(e.values) == pytest.approx(np.sort(want), abs=atol * max(1.0, np.abs(vals).max()))


@FAST
@given(p=st.integers(2, 10), c=st.sampled_from([0.0, 1.0, -3.0, 1e-8, 1e6]), data=st.data())
def test_estimators_on_multiples_of_the_identity_are_exact(p, c, data) -> None:
    op = C.DenseOperator(c * torch.eye(p, dtype=torch.float64))
    k = data.draw(st.integers(1, p - 1), label="k")
    assert C.top_eigs(op, k=k).values == pytest.approx([c] * k, abs=1e-9 * max(1.0, abs(c)))
    assert C.power_iteration(op, k=k, iters=5).values == pytest.approx([c] * k, abs=1e-9 * max(1.0, abs(c)))
    assert C.hutchinson_trace(op, n=4)[0] == pytest.approx(c * p, abs=1e-9 * max(1.0, abs(c)))
    assert C.xtrace(op, n=8)[0] == pytest.approx(c * p, abs=1e-6 * max(1.0, abs(c) * p))
    nodes, w = C.slq_density(op, n_runs=2, m=3)
    assert nodes == pytest.approx(np.full_like(nodes, c), abs=1e-9 * max(1.0, abs(c))) and w.sum() == pytest.approx(1)


@FAST
@given(bad=BAD_NUMBERS, where=st.sampled_from(["all", "one"]), est=st.sampled_from(
    ["top_eigs", "arpack", "power", "hutchinson", "hutchpp", "xtrace", "slq", "lanczos", "matmat"]))
def test_a_non_finite_product_never_becomes_a_result(bad, where, est) -> None:
    def mv(v: torch.Tensor) -> torch.Tensor:
        out = v * torch.arange(1.0, 7.0, dtype=torch.float64)
        if where == "all":
            return out * bad
        out[2] = bad
        return out

    op = C.LinearOperator(mv, size=6, dtype=torch.float64)
    call = {"top_eigs": lambda: C.top_eigs(op, k=2), "arpack": lambda: C.top_eigs(op, k=2, method="arpack"),
            "power": lambda: C.power_iteration(op), "hutchinson": lambda: C.hutchinson_trace(op, n=4),
            "hutchpp": lambda: C.hutchpp_trace(op, n=9), "xtrace": lambda: C.xtrace(op, n=8),
            "slq": lambda: C.slq_density(op, n_runs=2, m=3),
            "lanczos": lambda: C.lanczos(op, torch.ones(6, dtype=torch.float64), 3),
            "matmat": lambda: op.matmat(torch.ones(6, 3))}[est]
    with pytest.raises(NonFiniteError, match="operator product is not finite"):
        call()


@FAST
@given(arg=st.sampled_from(["k", "max_steps", "tol", "seed", "v0"]), data=st.data())
def test_top_eigs_refuses_bad_arguments_by_name(arg, data) -> None:
    op = C.DenseOperator(torch.diag(torch.arange(1.0, 7.0, dtype=torch.float64)))
    bad = {"k": st.one_of(NON_INTEGERS, st.integers(-5, 0), st.integers(6, 50)),
           "max_steps": st.one_of(NON_INTEGERS.filter(lambda x: not isinstance(x, bool)), st.integers(-5, 2)),
           "tol": st.one_of(BAD_NUMBERS, st.floats(-10, 0)),
           "seed": st.integers(-100, -1),
           "v0": st.sampled_from([torch.zeros(6), torch.ones(5), torch.full((6,), float("nan")), torch.ones(7)])}
    value = data.draw(bad[arg], label=arg)
    kwargs = {"k": 3, arg: value}
    with pytest.raises((TypeError, ValueError)) as info:
        C.top_eigs(op, **kwargs)
    assert names_it(info.value, arg), str(info.value)


@FAST
@given(m=st.one_of(st.integers(-3, 0), NON_INTEGERS), scale=st.floats(1e-3, 1e3))
def test_lanczos_refuses_bad_m_and_normalises_q0(m, scale) -> None:
    op = C.DenseOperator(torch.diag(torch.arange(1.0, 6.0, dtype=torch.float64)))
    q = torch.ones(5, dtype=torch.float64)
    with pytest.raises((TypeError, ValueError)) as info:
        C.lanczos(op, q, m)
    assert names_it(info.value, "m")
    a, b = C.lanczos(op, scale * q, 5)
    a1, b1 = C.lanczos(op, q / math.sqrt(5), 5)
    assert a == pytest.approx(a1, rel=1e-10) and b == pytest.approx(b1, rel=1e-10)


@FAST
@given(n=st.one_of(st.integers(-3, 1), NON_INTEGERS), fn=st.sampled_from(["hutchinson", "hutchpp", "xtrace"]))
def test_trace_estimators_refuse_bad_probe_counts(n, fn) -> None:
    op = C.DenseOperator(torch.eye(4, dtype=torch.float64))
    f = {"hutchinson": C.hutchinson_trace, "hutchpp": C.hutchpp_trace, "xtrace": C.xtrace}[fn]
    with pytest.raises((TypeError, ValueError)) as info:
        f(op, n=n)
    assert names_it(info.value, "n")


@FAST
@given(size=st.integers(1, 6), extra=st.integers(1, 3))
def test_operators_refuse_vectors_of_the_wrong_length(size, extra) -> None:
    op = C.DenseOperator(torch.eye(size, dtype=torch.float64))
    with pytest.raises(ValueError) as info:
        op(torch.ones(size + extra))
    assert names_it(info.value, "v")
    with pytest.raises(ValueError) as info:
        op.matmat(torch.ones(size + extra, 2))
    assert names_it(info.value, "vs")


@FAST
@given(seed=st.integers(0, 1000), p=st.integers(2, 8), bad=BAD_NUMBERS)
def test_rank_refuses_non_finite_matrices_and_is_exact_on_finite_ones(seed, p, bad) -> None:
    rng = np.random.default_rng(seed)
    r = int(rng.integers(0, p + 1))
    a = rng.standard_normal((p, r)) @ rng.standard_normal((r, p))
    assert C.numerical_rank(a).rank == r
    a[0, 0] = bad
    with pytest.raises(NonFiniteError, match="'a'"):
        C.numerical_rank(a)


# ---------------------------------------------------------------------------------------------- lab.landscape
def _quad(t: torch.Tensor) -> torch.Tensor:
    return 0.5 * (t * t).sum()


@FAST
@given(p=st.integers(2, 8), seed=st.integers(0, 1000), na=st.integers(1, 4), nb=st.integers(1, 4))
def test_plane_of_a_quadratic_is_exact(p, seed, na, nb) -> None:
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(p, generator=g, dtype=torch.float64)
    d1, d2 = torch.randn(p, generator=g, dtype=torch.float64), torch.randn(p, generator=g, dtype=torch.float64)
    a, b = np.linspace(-1, 1, na), np.linspace(-0.5, 2, nb)
    s = L.plane(_quad, theta, d1, d2, a, b)
    want = [[float(_quad(theta + ai * d1 + bj * d2)) for ai in a] for bj in b]
    assert s.loss.shape == (nb, na) and s.loss == pytest.approx(np.array(want), rel=1e-12)


@SLOW
@given(defect=st.sampled_from(["short d1", "long d2", "zero d1", "parallel", "short theta", "empty a", "2-D b",
                               "nan a", "zero d line", "short d line", "empty t"]),
       method=st.sampled_from(["auto", "plain"]), c=st.floats(-3, 3).filter(lambda x: abs(x) > 1e-3))
def test_plane_and_line_refuse_bad_directions_and_grids_with_any_method(defect, method, c) -> None:
    from torch import nn

    from lab.flat import make_loss_fn
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double().eval()
    f, theta, _ = make_loss_fn(model, torch.randn(6, 3, dtype=torch.float64), torch.randint(0, 2, (6,)))
    p, g = theta.numel(), np.linspace(-0.1, 0.1, 3)
    d1, d2 = torch.randn(p, dtype=torch.float64), torch.randn(p, dtype=torch.float64)
    calls = {
        "short d1": (lambda: L.plane(f, theta, d1[:-2], d2, g, g, method=method), "d1"),
        "long d2": (lambda: L.plane(f, theta, d1, torch.cat([d2, d2[:1]]), g, g, method=method), "d2"),
        "zero d1": (lambda: L.plane(f, theta, 0 * d1, d2, g, g, method=method), "d1"),
        "parallel": (lambda: L.plane(f, theta, d1, c * d1, g, g, method=method), "d1"),
        "short theta": (lambda: L.plane(f, theta[:-1], d1[:-1], d2[:-1], g, g, method=method), "theta"),
        "empty a": (lambda: L.plane(f, theta, d1, d2, np.array([]), g, method=method), "a"),
        "2-D b": (lambda: L.plane(f, theta, d1, d2, g, np.ones((2, 2)), method=method), "b"),
        "nan a": (lambda: L.plane(f, theta, d1, d2, np.array([0.0, np.nan]), g, method=method), "a"),
        "zero d line": (lambda: L.line(f, theta, 0 * d1, g, method=method), "d"),
        "short d line": (lambda: L.line(f, theta, d1[:-2], g, method=method), "d"),
        "empty t": (lambda: L.line(f, theta, d1, np.array([]), method=method), "t"),
    }
    call, name = calls[defect]
    with pytest.raises((TypeError, ValueError)) as info:
        call()
    assert names_it(info.value, name), str(info.value)


@FAST
@given(seed=st.integers(0, 1000), na=st.integers(3, 7), nb=st.integers(3, 7), sign=st.sampled_from([1.0, -1.0]),
       flip=st.booleans())
def test_nonconvex_fraction_is_exact_for_quadratics_on_any_monotone_grid(seed, na, nb, sign, flip) -> None:
    rng = np.random.default_rng(seed)
    a = np.cumsum(rng.uniform(0.1, 2.0, na))               # uneven, increasing
    b = np.cumsum(rng.uniform(0.1, 2.0, nb))
    if flip:
        a = a[::-1].copy()
    loss = a[None, :] ** 2 + sign * b[:, None] ** 2         # a bowl (0 non-convex) or a saddle (all of it)
    assert L.nonconvex_fraction(L.Surface(a, b, loss)) == (0.0 if sign > 0 else 1.0)


@FAST
@given(t=st.integers(2, 9), k=st.integers(1, 4), seed=st.integers(0, 100))
def test_trajectory_pca_shapes_and_k_range(t, k, seed) -> None:
    g = torch.Generator().manual_seed(seed)
    thetas = torch.randn(t, 5, generator=g, dtype=torch.float64)
    if k > min(t, 5):
        with pytest.raises(ValueError, match="'k'"):
            L.trajectory_pca(thetas, k=k)
        return
    dirs, coords, ratio = L.trajectory_pca(thetas, k=k)
    assert dirs.shape == (5, k) and coords.shape == (t, k) and np.all(np.isfinite(ratio)) and ratio.sum() <= 1 + 1e-12


# ---------------------------------------------------------------------------------------------- lab.stats
@FAST
@given(level=st.one_of(BAD_NUMBERS, st.floats(-5, 0), st.floats(1, 5)),
       fn=st.sampled_from(["t", "median", "bootstrap", "proportion", "kendall"]))
def test_every_interval_refuses_a_level_outside_0_1(level, fn) -> None:
    call = {"t": lambda: S.t_interval([1.0, 2.0, 3.0], level=level),
            "median": lambda: S.median_interval(range(10), level=level),
            "bootstrap": lambda: S.bootstrap_interval(range(10), level=level, n_resamples=50),
            "proportion": lambda: S.proportion([True, False], level=level),
            "kendall": lambda: S.kendall_interval(range(6), range(6), level=level, n_resamples=50)}[fn]
    with pytest.raises(ValueError) as info:
        call()
    assert names_it(info.value, "level")


@FAST
@given(values=st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=12), level=st.floats(0.5, 0.999))
def test_t_interval_is_an_interval_and_flags_identical_values(values, level) -> None:
    e = S.t_interval(values, level=level)
    assert e.low <= e.value <= e.high and e.n == len(values)
    same = len(set(values)) == 1
    assert e.degenerate == same
    if same:
        assert not (e.above(e.low - 1) or e.below(e.high + 1) or e.within(e.low - 1, e.high + 1))
    elif e.high > e.low:
        assert e.above(e.low - 1) and e.within(e.low - 1, e.high + 1)


@FAST
@given(flags=st.lists(st.one_of(st.booleans(), st.sampled_from([0, 1, 0.0, 1.0])), max_size=20),
       bad=st.sampled_from([float("nan"), 2, -1, 0.5, "x", None]), at=st.integers(0, 20))
def test_proportion_counts_flags_and_refuses_anything_else(flags, bad, at) -> None:
    e = S.proportion(flags)
    if flags:
        assert e.value == pytest.approx(sum(bool(f) for f in flags) / len(flags)) and e.low <= e.value <= e.high
    else:
        assert not e.finite
    spoiled = flags[:at] + [bad] + flags[at:]
    with pytest.raises(ValueError) as info:
        S.proportion(spoiled)
    assert names_it(info.value, "successes")


@FAST
@given(seed=st.integers(-1000, 1000), n_reps=st.integers(-5, 1200))
def test_replicate_seeds_are_non_negative_disjoint_blocks_or_refused(seed, n_reps) -> None:
    if seed < 0 or not 1 <= n_reps <= 1000:
        with pytest.raises(ValueError) as info:
            S.replicate_seeds(seed, n_reps)
        assert names_it(info.value, "seed", "n_reps")
        return
    out = S.replicate_seeds(seed, n_reps)
    assert out == list(range(1000 * seed, 1000 * seed + n_reps)) and min(out) >= 0


@FAST
@given(lo=st.floats(-10, 10), hi=st.floats(-10, 10))
def test_estimate_is_an_interval(lo, hi) -> None:
    if lo > hi:
        with pytest.raises(ValueError, match="'low'"):
            S.Estimate(0.0, lo, hi, 3, "x")
    else:
        e = S.Estimate((lo + hi) / 2, lo, hi, 3, "x")
        assert e.within(lo, hi) and not e.excludes((lo + hi) / 2)


# ---------------------------------------------------------------------------------------------- lab.numerics
@FAST
@given(x=st.floats(-1e30, 1e30, allow_subnormal=False).filter(lambda v: v != 0),
       dtype=st.sampled_from([torch.float64, torch.float32, torch.bfloat16, torch.float16]))
def test_neighbour_and_ulp_are_the_adjacent_representable_value(x, dtype) -> None:
    t = torch.tensor([x], dtype=torch.float64).to(dtype)
    if not bool(torch.isfinite(t).all()):
        with pytest.raises(NonFiniteError, match="'x'"):
            N.ulp(t)
        return
    up = N.neighbour(t, torch.ones(1))
    assert float(up) > float(t)
    assert float(N.ulp(t)) == pytest.approx(abs(float(N.neighbour(t.abs(), torch.ones(1))) - abs(float(t))), rel=0)


@FAST
@given(dtype=st.sampled_from([torch.int32, torch.int64, torch.bool, "float32", 3]))
def test_dtype_arguments_refuse_non_floating_dtypes(dtype) -> None:
    for call in (lambda: N.unit_roundoff(dtype), lambda: N.ulp(torch.ones(2), dtype)):
        with pytest.raises(TypeError) as info:
            call()
        assert names_it(info.value, "dtype")


@FAST
@given(fn=st.sampled_from(["fd_noise", "rounding_model", "doubling_h", "crossover_batch", "label_regimes",
                           "scaled_fd_noise", "step_change", "minibatch_loss_std", "power_law", "local_slope"]),
       bad=st.sampled_from([-1.0, float("inf"), -float("inf"), 0.0]))
def test_numerics_refuse_bad_scalars_by_name(fn, bad) -> None:
    h = np.logspace(-8, 0, 9)
    calls = {"fd_noise": (lambda: N.fd_noise(bad), "sigma", bad == 0.0),
             "rounding_model": (lambda: N.rounding_model(bad, 1.0), "u", bad == 0.0),
             "doubling_h": (lambda: N.doubling_h(bad), "h_min", False),
             "crossover_batch": (lambda: N.crossover_batch(1.0, bad), "err_norm", bad == 0.0),
             "label_regimes": (lambda: N.label_regimes(h, h, bad), "fd_noise", bad == 0.0),
             "scaled_fd_noise": (lambda: N.scaled_fd_noise(1e-8, bad, np.ones(3), np.ones(3)), "f0", bad == -1.0),
             "step_change": (lambda: N.step_change(torch.float32, points=int(bad) if math.isfinite(bad) else bad),
                             "points", False),
             "minibatch_loss_std": (lambda: N.minibatch_loss_std(np.arange(10.0), [2], n_batches=int(bad)
                                                                 if math.isfinite(bad) else bad), "n_batches", False),
             "power_law": (lambda: N.power_law(np.arange(1.0, 4.0), np.array([1.0, bad, 2.0])), "y", False),
             "local_slope": (lambda: N.local_slope(np.array([bad, 1.0, 2.0]), np.ones(3)), "h", False)}
    call, name, allowed = calls[fn]
    if allowed:
        out = call()
        assert out is not None and not (isinstance(out, float) and math.isnan(out))
        return
    with pytest.raises((TypeError, ValueError)) as info:
        call()
    assert names_it(info.value, name), str(info.value)


@FAST
@given(n=st.integers(0, 12), extra=st.integers(0, 3))
def test_curve_functions_refuse_mismatched_lengths(n, extra) -> None:
    h, y = np.logspace(-6, 0, n), np.ones(n + extra)
    calls = [(lambda: N.local_slope(h, y), 2), (lambda: N.observed_crossover(h, y, y), 1),
             (lambda: N.power_law(h, y), 2), (lambda: N.label_regimes(h, y, 1e-9), 2)]
    for call, least in calls:
        if extra == 0 and n >= least:
            call()                                           # well-formed: returns
            continue
        with pytest.raises(ValueError) as info:
            call()
        msg = str(info.value)
        assert "\n" not in msg and re.search(r"'(h|y|fd|x)'", msg), msg
