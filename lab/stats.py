"""Statistics over replicates: intervals that claims are tested against (NaN never passes a test).

A claim is a finding only when it holds at any seed: the chapter measures it over replicates (seeds inside the
run) and tests an interval of the replicate statistic against a threshold from theory. `Estimate` carries the
value, its interval and how it was made; its tests (`above`, `below`, `within`, `excludes`) are False whenever
the interval is not finite.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.95


def _finite(*xs: float) -> bool:
    return all(isinstance(x, (int, float, np.floating, np.integer)) and math.isfinite(float(x)) for x in xs)


@dataclass(frozen=True)
class Estimate:
    """A replicate statistic with a confidence interval: value, [low, high], the number of replicates, the method."""

    value: float
    low: float
    high: float
    n: int
    method: str
    level: float = LEVEL

    @property
    def finite(self) -> bool:
        """True when value and both interval ends are finite numbers."""
        return _finite(self.value, self.low, self.high)

    def above(self, threshold: float) -> bool:
        """The whole interval lies above threshold (False when anything is NaN)."""
        return self.finite and _finite(threshold) and self.low > threshold

    def below(self, threshold: float) -> bool:
        """The whole interval lies below threshold (False when anything is NaN)."""
        return self.finite and _finite(threshold) and self.high < threshold

    def within(self, lo: float, hi: float) -> bool:
        """The whole interval lies inside [lo, hi] (False when anything is NaN)."""
        return self.finite and _finite(lo, hi) and lo <= self.low and self.high <= hi

    def excludes(self, value: float) -> bool:
        """The interval does not contain value (False when anything is NaN: a NaN interval excludes nothing)."""
        return self.finite and _finite(value) and not self.low <= value <= self.high

    def numbers(self, name: str) -> dict[str, float | int]:
        """{name, name_low, name_high, name_n}: the estimate as claim numbers."""
        return {name: float(self.value), f"{name}_low": float(self.low), f"{name}_high": float(self.high),
                f"{name}_n": int(self.n)}

    def __format__(self, spec: str) -> str:
        spec = spec or ".3g"
        return f"{format(self.value, spec)} [{format(self.low, spec)}, {format(self.high, spec)}]"

    def __str__(self) -> str:
        return format(self, "")


def _clean(values: Iterable[float]) -> np.ndarray:
    a = np.asarray(list(values), dtype=np.float64).ravel()
    return a


def _nan(n: int, method: str, level: float) -> Estimate:
    return Estimate(float("nan"), float("nan"), float("nan"), n, method, level)


def t_interval(values: Iterable[float], level: float = LEVEL, log: bool = False) -> Estimate:
    """Mean of the replicates with a Student-t interval; `log=True` works on log values and reports the geometric
    mean and its interval (for positive ratios and scales). Any NaN or non-positive value under log gives NaN.

    >>> e = t_interval([1.0, 2.0, 3.0]); round(e.value, 3), round(e.low, 3), round(e.high, 3)
    (2.0, -0.484, 4.484)
    """
    a = _clean(values)
    method = "t-interval of the " + ("geometric mean" if log else "mean")
    n = len(a)
    if n < 2 or not np.all(np.isfinite(a)) or (log and np.any(a <= 0)):
        return _nan(n, method, level)
    x = np.log(a) if log else a
    m, s = float(x.mean()), float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * s / math.sqrt(n)
    lo, hi = m - half, m + half
    if log:
        return Estimate(math.exp(m), math.exp(lo), math.exp(hi), n, method, level)
    return Estimate(m, lo, hi, n, method, level)


def median_interval(values: Iterable[float], level: float = LEVEL) -> Estimate:
    """Median of the replicates with a distribution-free (order-statistic) interval, scipy.stats.quantile_test.

    Needs at least 6 replicates for a 95% interval (with fewer the interval is NaN, so any test on it fails).
    """
    a = _clean(values)
    n = len(a)
    method = "median, order-statistic interval"
    if n < 2 or not np.all(np.isfinite(a)):
        return _nan(n, method, level)
    med = float(np.median(a))
    ci = stats.quantile_test(a, q=med, p=0.5).confidence_interval(level)
    return Estimate(med, float(ci.low), float(ci.high), n, method, level)


def bootstrap_interval(values: Iterable[float], statistic=np.median, level: float = LEVEL, n_resamples: int = 2000,
                       seed: int = 0) -> Estimate:
    """A statistic of pooled measurements with a BCa bootstrap interval (scipy.stats.bootstrap); for samples of
    dozens of values or more (few replicates are better served by t_interval)."""
    a = _clean(values)
    n = len(a)
    method = f"{getattr(statistic, '__name__', 'statistic')}, BCa bootstrap interval"
    if n < 3 or not np.all(np.isfinite(a)):
        return _nan(n, method, level)
    value = float(statistic(a))
    if np.all(a == a[0]):
        return Estimate(value, value, value, n, method, level)
    res = stats.bootstrap((a,), statistic, confidence_level=level, n_resamples=n_resamples, method="BCa",
                          random_state=np.random.default_rng(seed))
    return Estimate(value, float(res.confidence_interval.low), float(res.confidence_interval.high), n, method, level)


def proportion(successes: int | Iterable[bool], n: int | None = None, level: float = LEVEL) -> Estimate:
    """The share of replicates in which something holds, with the exact (Clopper-Pearson) binomial interval.

    >>> p = proportion([True] * 8); p.value, round(p.low, 3)
    (1.0, 0.631)
    """
    if n is None:
        flags = [bool(x) for x in successes]  # type: ignore[union-attr]
        k, n = sum(flags), len(flags)
    else:
        k = int(successes)  # type: ignore[arg-type]
    method = "share, Clopper-Pearson interval"
    if n < 1:
        return _nan(0, method, level)
    ci = stats.binomtest(k, n).proportion_ci(level, method="exact")
    return Estimate(k / n, float(ci.low), float(ci.high), n, method, level)


def replicate_seeds(seed: int, n_reps: int) -> list[int]:
    """The seeds of n_reps replicates for chapter seed `seed`: disjoint blocks of 1,000, so that runs at different
    chapter seeds never share a replicate.

    >>> replicate_seeds(0, 3), replicate_seeds(2, 2)
    ([0, 1, 2], [2000, 2001])
    """
    if not 1 <= n_reps <= 1000:
        raise ValueError(f"parameter 'n_reps' = {n_reps} is not allowed: expected an integer in [1, 1000]")
    return [1000 * seed + r for r in range(n_reps)]
