"""Tests for lab.stats: intervals against scipy and textbook values, NaN never passing, replicate seeds."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sst

from lab.stats import Estimate, bootstrap_interval, median_interval, proportion, replicate_seeds, t_interval


def test_t_interval_matches_the_textbook_formula() -> None:
    x = np.array([2.1, 1.9, 2.4, 2.0, 1.6])
    e = t_interval(x)
    half = sst.t.ppf(0.975, 4) * x.std(ddof=1) / math.sqrt(5)
    assert e.value == pytest.approx(x.mean()) and e.low == pytest.approx(x.mean() - half)
    assert e.high == pytest.approx(x.mean() + half) and e.n == 5
    g = t_interval(np.exp(x), log=True)
    assert g.value == pytest.approx(math.exp(x.mean())) and g.low == pytest.approx(math.exp(e.low))


def test_t_interval_covers_the_mean_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(2000):
        e = t_interval(rng.normal(3.0, 2.0, 4))
        covered += e.low <= 3.0 <= e.high
    assert 0.93 < covered / 2000 < 0.97


@pytest.mark.parametrize("bad", [[1.0], [1.0, float("nan")], [1.0, -1.0]])
def test_nan_estimates_fail_every_test(bad) -> None:
    e = t_interval(bad, log=True)
    assert not e.finite
    assert not (e.above(-1e300) or e.below(1e300) or e.within(-1e300, 1e300) or e.excludes(0.5))


def test_tests_on_a_finite_interval() -> None:
    e = Estimate(1.0, 0.8, 1.2, 5, "t")
    assert e.above(0.5) and not e.above(0.9) and e.below(1.5) and not e.below(1.1)
    assert e.within(0.8, 1.2) and not e.within(0.9, 2) and e.excludes(0.5) and not e.excludes(1.0)
    assert not e.above(float("nan")) and format(e, ".2f") == "1.00 [0.80, 1.20]"
    assert e.numbers("x") == {"x": 1.0, "x_low": 0.8, "x_high": 1.2, "x_n": 5}


def test_median_interval_is_distribution_free() -> None:
    x = np.arange(10.0)
    e = median_interval(x)
    assert e.value == 4.5 and (e.low, e.high) == (1.0, 8.0)      # order statistics 2 and 9 of 10
    assert not median_interval(np.arange(5.0)).finite              # five replicates cannot give 95%


def test_proportion_is_clopper_pearson() -> None:
    p = proportion(8, 10)
    ci = sst.binomtest(8, 10).proportion_ci(0.95, method="exact")
    assert (p.value, p.low, p.high) == (0.8, pytest.approx(ci.low), pytest.approx(ci.high))
    assert proportion([True, True, False]).value == pytest.approx(2 / 3)
    assert not proportion(0, 0).finite


def test_bootstrap_interval_brackets_the_statistic() -> None:
    rng = np.random.default_rng(1)
    x = rng.lognormal(0.0, 0.5, 60)
    e = bootstrap_interval(x, statistic=lambda z: np.sqrt(np.mean(z**2)), seed=0)
    assert e.low < e.value < e.high and e.n == 60
    assert bootstrap_interval(np.ones(10)).low == 1.0


def test_replicate_seeds_are_disjoint_blocks() -> None:
    assert replicate_seeds(0, 4) == [0, 1, 2, 3] and replicate_seeds(3, 2) == [3000, 3001]
    assert not set(replicate_seeds(1, 5)) & set(replicate_seeds(2, 5))
    with pytest.raises(ValueError, match="n_reps"):
        replicate_seeds(0, 0)


def test_kendall_interval_against_scipy_and_edge_cases():
    import numpy as np
    from scipy.stats import kendalltau

    from lab.stats import kendall_interval

    rng = np.random.default_rng(1)
    x = rng.normal(size=30)
    y = x + rng.normal(size=30)
    e = kendall_interval(x, y, n_resamples=400)
    assert e.value == kendalltau(x, y).statistic and e.low < e.value < e.high and e.n == 30
    assert e.above(0.0)                                   # a real positive correlation is resolved
    z = rng.normal(size=30)
    assert not kendall_interval(x, z, n_resamples=400).above(0.2)
    assert np.isnan(kendall_interval([1, 2, 3], [1, 2, 3]).value)          # too few pairs
    assert np.isnan(kendall_interval(np.ones(10), np.arange(10.0)).value)  # a constant column
    assert not kendall_interval([1, 2, np.nan, 4, 5], [1, 2, 3, 4, 5]).above(-1.0)
    import pytest
    with pytest.raises(ValueError, match="parameters 'x' and 'y'"):
        kendall_interval([1, 2, 3, 4], [1, 2, 3])


# ---------------------------------------------------------------- issue #31: no silent wrong answer
@pytest.mark.parametrize("level", [0, 1, 1.5, -0.5, float("nan")])
def test_interval_levels_outside_0_1_are_refused_by_name(level) -> None:
    for call in (lambda: t_interval([1.0, 2.0, 3.0], level=level), lambda: median_interval(range(10), level=level),
                 lambda: bootstrap_interval(range(10), level=level), lambda: proportion([True, False], level=level)):
        with pytest.raises(ValueError, match="parameter 'level'"):
            call()


def test_level_zero_no_longer_gives_a_zero_width_interval_that_excludes_a_near_value() -> None:
    with pytest.raises(ValueError, match="'level'"):
        t_interval([1.0, 2.0, 3.0, 4.0], level=0).excludes(2.6)


@pytest.mark.parametrize("flags", [[1, float("nan"), 0, float("nan")], [1, 2, 0], [1, -1, 0], [1, 0.5, 0],
                                   ["yes", 0]])
def test_proportion_refuses_flags_that_are_not_0_or_1(flags) -> None:
    with pytest.raises(ValueError, match="parameter 'successes"):
        proportion(flags)


def test_proportion_counts_and_flags() -> None:
    assert proportion([1, 0, 1.0, True, np.bool_(False)]).value == pytest.approx(3 / 5)
    for k, n in ((5, 3), (-1, 3)):
        with pytest.raises(ValueError, match="'successes'"):
            proportion(k, n)
    with pytest.raises(TypeError, match="'successes'"):
        proportion(1.5, 3)
    with pytest.raises(ValueError, match="'n'"):
        proportion(0, -1)


@pytest.mark.parametrize("seed, n_reps, exc, name", [(-1, 3, ValueError, "seed"), (1.5, 3, TypeError, "seed"),
                                                     (True, 2, TypeError, "seed"), (0, 2.5, TypeError, "n_reps")])
def test_replicate_seeds_refuses_negative_and_non_integer_seeds(seed, n_reps, exc, name) -> None:
    with pytest.raises(exc, match=f"parameter '{name}'"):
        replicate_seeds(seed, n_reps)


def test_estimate_refuses_low_above_high() -> None:
    with pytest.raises(ValueError, match="'low'.*'high'"):
        Estimate(1.0, 2.0, 0.0, 3, "x")
    with pytest.raises(ValueError, match="'level'"):
        Estimate(1.0, 0.0, 2.0, 3, "x", level=2.0)
    with pytest.raises(ValueError, match="'lo'.*'hi'"):
        Estimate(1.0, 0.5, 1.5, 3, "x").within(2.0, 0.0)
    assert Estimate(5.0, 0.0, 1.0, 3, "bootstrap").value == 5.0       # a bootstrap interval may miss its estimate


def test_identical_replicates_give_a_degenerate_interval_that_passes_no_test_unless_allowed() -> None:
    for e in (t_interval([2.0, 2.0, 2.0]), t_interval([2.0, 2.0, 2.0], log=True), median_interval([2.0] * 10),
              bootstrap_interval([2.0] * 10)):
        assert e.degenerate and e.finite and e.low == e.high == 2.0
        assert not (e.above(1.0) or e.below(3.0) or e.within(0.0, 5.0) or e.excludes(2.5))
        assert e.above(1.0, allow_degenerate=True) and e.excludes(2.5, allow_degenerate=True)
    assert not t_interval([2.0, 2.0, 2.1]).degenerate and t_interval([2.0, 2.0, 2.1]).above(1.0)
