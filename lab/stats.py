"""Statistics over replicates: intervals that claims are tested against (NaN never passes a test).

A claim is a finding only when it holds at any seed: the chapter measures it over replicates (seeds inside the
run) and tests an interval of the replicate statistic against a threshold from theory. `Estimate` carries the
value, its interval and how it was made; its tests (`above`, `below`, `within`, `excludes`) are False whenever
the interval is not finite.

Attributes:
    LEVEL: the default confidence level of every interval here, 0.95.
"""
from __future__ import annotations

import math
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from lab.checks import not_allowed, require_int, require_level

__all__ = ["LEVEL", "Estimate", "t_interval", "median_interval", "bootstrap_interval", "kendall_interval", "proportion",
           "replicate_seeds"]

LEVEL = 0.95


def _finite(*xs: float) -> bool:
    return all(isinstance(x, (int, float, np.floating, np.integer)) and math.isfinite(float(x)) for x in xs)


def _margin(test: str, low: float, high: float, b: list[float]) -> float:
    """The signed distance from the interval [low, high] to the test's bounds, positive when it passes."""
    if test == "above":
        return low - b[0]
    if test == "below":
        return b[0] - high
    if test == "within":
        return min(low - b[0], b[1] - high)
    return max(low - b[0], b[0] - high)          # excludes


_TESTS: dict[int, list[dict]] = {}   # id(estimate) -> the tests made on it, until a claim takes them (tests_made)


def _num(x: float) -> float | None:
    return float(x) if _finite(x) else None


@dataclass(frozen=True)
class Estimate:
    """A replicate statistic with a confidence interval: value, [low, high], the number of replicates, the method.

    Made by `t_interval`, `median_interval`, `bootstrap_interval` and `proportion`; immutable. A method that cannot
    give an interval (too few replicates, a NaN among them) returns NaN value and ends, and every test on such an
    estimate is False, so a claim can never pass on missing data. ``format(e, ".2f")`` and ``str(e)`` give
    "value [low, high]" (".3g" by default).

    An interval of zero width made from n >= 2 identical values is `degenerate`: identical replicates carry no
    estimate of the spread (a seed that is not applied, a quantity that does not depend on it), so every test on
    it is False unless the caller passes ``allow_degenerate=True`` — for a quantity known to be exact.

    Attributes:
        value: the statistic (mean, geometric mean, median, share, ...), a float.
        low: the interval's lower end.
        high: the interval's upper end.
        n: the number of values (replicates or measurements) it was computed from.
        method: how it was made, e.g. "t-interval of the mean".
        level: the confidence level of [low, high] (LEVEL by default), in (0, 1).
        degenerate: True for a zero-width interval from n >= 2 identical values (see above).

    Raises:
        ValueError: low > high, n < 0 or a level outside (0, 1) (a finite interval must be an interval).

    Example:
        >>> from lab.stats import Estimate
        >>> e = Estimate(1.0, 0.5, 1.5, 5, "demo")
        >>> e.above(0.4), e.below(1.2), e.within(0.0, 2.0), e.excludes(2.0), f"{e:.2f}"
        (True, False, True, True, '1.00 [0.50, 1.50]')
        >>> Estimate(float("nan"), 0.0, 1.0, 3, "demo").above(-1.0)
        False
        >>> same = Estimate(2.0, 2.0, 2.0, 3, "demo", degenerate=True)
        >>> same.above(1.0), same.above(1.0, allow_degenerate=True)
        (False, True)
    """

    value: float
    low: float
    high: float
    n: int
    method: str
    level: float = LEVEL
    degenerate: bool = False

    def __post_init__(self) -> None:
        where = "lab.stats.Estimate"
        for name in ("value", "low", "high"):
            x = getattr(self, name)
            if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, float, np.integer, np.floating)):
                raise TypeError(not_allowed(name, x, "a number (NaN for a missing estimate)", where))
        require_int(self.n, "n", where, lo=0)
        require_level(self.level, where)
        if _finite(self.low, self.high) and self.low > self.high:
            raise ValueError(f"{where}: parameters 'low' = {self.low!r} and 'high' = {self.high!r} are not allowed: "
                             "expected low <= high")

    def _ok(self, allow_degenerate: bool) -> bool:
        return self.finite and (allow_degenerate or not self.degenerate)

    @property
    def finite(self) -> bool:
        """True when value and both interval ends are finite numbers."""
        return _finite(self.value, self.low, self.high)

    def above(self, threshold: float, allow_degenerate: bool = False) -> bool:
        """The whole interval lies above threshold (False when anything is NaN, or the interval is degenerate).

        Args:
            threshold: the number to compare with (e.g. from theory).
            allow_degenerate: let a degenerate interval (identical replicates) pass, for a quantity known to be exact.

        Returns:
            True when low > threshold and everything is finite.
        """
        return self._record("above", (threshold,),
                            self._ok(allow_degenerate) and _finite(threshold) and self.low > threshold)

    def below(self, threshold: float, allow_degenerate: bool = False) -> bool:
        """The whole interval lies below threshold (False when anything is NaN, or the interval is degenerate).

        Args:
            threshold: the number to compare with.
            allow_degenerate: as for `above`.

        Returns:
            True when high < threshold and everything is finite.
        """
        return self._record("below", (threshold,),
                            self._ok(allow_degenerate) and _finite(threshold) and self.high < threshold)

    def within(self, lo: float, hi: float, allow_degenerate: bool = False) -> bool:
        """The whole interval lies inside [lo, hi] (False when anything is NaN, or the interval is degenerate).

        Args:
            lo: lower bound of the allowed range.
            hi: upper bound of the allowed range, >= lo.
            allow_degenerate: as for `above`.

        Returns:
            True when lo <= low and high <= hi and everything is finite.

        Raises:
            ValueError: lo > hi (an empty range: the test could never pass).
        """
        if _finite(lo, hi) and lo > hi:
            raise ValueError(f"lab.stats.Estimate.within: parameters 'lo' = {lo!r} and 'hi' = {hi!r} are not "
                             "allowed: expected lo <= hi")
        return self._record("within", (lo, hi), self._ok(allow_degenerate) and _finite(lo, hi) and lo <= self.low
                            and self.high <= hi)

    def excludes(self, value: float, allow_degenerate: bool = False) -> bool:
        """The interval does not contain value (False when anything is NaN: a NaN interval excludes nothing; False
        on a degenerate interval).

        Args:
            value: the number that should lie outside, e.g. 0 for "there is an effect" or 1 for "the ratio differs
                from 1".
            allow_degenerate: as for `above`.

        Returns:
            True when value < low or value > high and everything is finite.
        """
        return self._record("excludes", (value,),
                            self._ok(allow_degenerate) and _finite(value) and not self.low <= value <= self.high)

    def _record(self, test: str, bounds: tuple[float, ...], passed: bool) -> bool:
        """Remember a test made on this estimate (for `tests_made`, which `Claims.check` reads) and return its
        result. Entries go with the estimate."""
        key = id(self)
        if key not in _TESTS:
            _TESTS[key] = []
            weakref.finalize(self, _TESTS.pop, key, None)
        _TESTS[key].append({"test": test, "bounds": [_num(b) for b in bounds], "passed": bool(passed)})
        return passed

    def tests_made(self, clear: bool = True) -> list[dict]:
        """The tests (`above`, `below`, `within`, `excludes`) made on this estimate so far, oldest first: each
        {"test", "bounds", "passed", "margin"}, where margin is the signed distance from the interval to the
        threshold (positive when the test passes: low − t for above, t − high for below, the smaller of low − lo and
        hi − high for within, the gap to the value for excludes; None when not finite). `Claims.check` records
        them with the claim, so a report can show each threshold and its margin. With clear, they are forgotten.

        Example:
            >>> e = Estimate(1.0, 0.8, 1.2, 5, "demo")
            >>> e.above(0.5), e.within(0.0, 1.1)
            (True, False)
            >>> [(t["test"], t["bounds"], round(t["margin"], 3)) for t in e.tests_made()]
            [('above', [0.5], 0.3), ('within', [0.0, 1.1], -0.1)]
        """
        out = []
        for t in (_TESTS.pop(id(self), []) if clear else list(_TESTS.get(id(self), []))):
            b = t["bounds"]
            margin = _margin(t["test"], self.low, self.high, b) if self.finite and None not in b else None
            out.append({**t, "margin": margin})
        return out

    def numbers(self, name: str) -> dict[str, float | int]:
        """{name, name_low, name_high, name_n}: the estimate as claim numbers.

        Args:
            name: the key prefix, e.g. "slope".

        Returns:
            A dict with the value, the two ends (floats) and n (an int) under those four keys.
        """
        return {name: float(self.value), f"{name}_low": float(self.low), f"{name}_high": float(self.high),
                f"{name}_n": int(self.n)}

    def __format__(self, spec: str) -> str:
        spec = spec or ".3g"
        return f"{format(self.value, spec)} [{format(self.low, spec)}, {format(self.high, spec)}]"

    def __str__(self) -> str:
        return format(self, "")


def _clean(values: Iterable[float], name: str = "values", where: str = "lab.stats") -> np.ndarray:
    """The values as a flat float64 array (NaN kept: the interval functions turn it into a NaN estimate)."""
    try:
        items = list(values) if not isinstance(values, np.ndarray) else values
        a = np.asarray(items, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise TypeError(not_allowed(name, values, "an iterable of numbers", where)) from None
    return a


def _degenerate(a: np.ndarray) -> bool:
    """n >= 2 finite values, all identical: a zero-width interval that measured no spread."""
    return len(a) >= 2 and bool(np.all(np.isfinite(a))) and bool(np.all(a == a[0]))


def _nan(n: int, method: str, level: float) -> Estimate:
    return Estimate(float("nan"), float("nan"), float("nan"), n, method, level)


def t_interval(values: Iterable[float], level: float = LEVEL, log: bool = False) -> Estimate:
    """Mean of the replicates with a Student-t interval; `log=True` works on log values and reports the geometric
    mean and its interval (for positive ratios and scales). Any NaN or non-positive value under log gives NaN.

    Args:
        values: one number per replicate (any iterable of floats; flattened).
        level: confidence level of the interval.
        log: work on log values and report the geometric mean and its interval (exp of the log-scale ends).

    Returns:
        An `Estimate` (method "t-interval of the mean" or "... of the geometric mean"); all NaN with fewer than 2
        values, any non-finite value, or a value <= 0 under log; `degenerate` (every test False unless allowed) when
        all values are identical.

    Raises:
        ValueError: level outside (0, 1). TypeError: values that are not numbers.

    Example:
        >>> from lab.stats import t_interval
        >>> e = t_interval([1.0, 2.0, 3.0]); round(e.value, 3), round(e.low, 3), round(e.high, 3)
        (2.0, -0.484, 4.484)
    """
    level = require_level(level, "lab.stats.t_interval")
    a = _clean(values, "values", "lab.stats.t_interval")
    method = "t-interval of the " + ("geometric mean" if log else "mean")
    n = len(a)
    if n < 2 or not np.all(np.isfinite(a)) or (log and np.any(a <= 0)):
        return _nan(n, method, level)
    x = np.log(a) if log else a
    m, s = float(x.mean()), float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * s / math.sqrt(n)
    lo, hi = m - half, m + half
    if log:
        return Estimate(math.exp(m), math.exp(lo), math.exp(hi), n, method, level, degenerate=_degenerate(a))
    return Estimate(m, lo, hi, n, method, level, degenerate=_degenerate(a))


def median_interval(values: Iterable[float], level: float = LEVEL) -> Estimate:
    """Median of the replicates with a distribution-free (order-statistic) interval, scipy.stats.quantile_test.

    Needs at least 6 replicates for a 95% interval (with fewer the interval is NaN, so any test on it fails).

    Args:
        values: one number per replicate (any iterable of floats; flattened).
        level: confidence level of the interval.

    Returns:
        An `Estimate` whose ends are order statistics of the values; value, low and high are all NaN with fewer
        than 2 values or any non-finite one, and low/high are NaN when there are too few values for `level`.

    Example:
        >>> from lab.stats import median_interval
        >>> e = median_interval(range(1, 11))
        >>> e.value, e.low, e.high, median_interval([1.0, 2.0, 3.0]).finite
        (5.5, 2.0, 9.0, False)
    """
    level = require_level(level, "lab.stats.median_interval")
    a = _clean(values, "values", "lab.stats.median_interval")
    n = len(a)
    method = "median, order-statistic interval"
    if n < 2 or not np.all(np.isfinite(a)):
        return _nan(n, method, level)
    med = float(np.median(a))
    ci = stats.quantile_test(a, q=med, p=0.5).confidence_interval(level)
    return Estimate(med, float(ci.low), float(ci.high), n, method, level, degenerate=_degenerate(a))


def bootstrap_interval(values: Iterable[float], statistic=np.median, level: float = LEVEL, n_resamples: int = 2000,
                       seed: int = 0) -> Estimate:
    """A statistic of pooled measurements with a BCa bootstrap interval (scipy.stats.bootstrap); for samples of
    dozens of values or more (few replicates are better served by t_interval).

    Args:
        values: the pooled measurements (any iterable of floats; flattened).
        statistic: a function of a 1-D float64 array returning a number (np.median, np.mean, ...); given an
            `axis` argument scipy calls it vectorized.
        level: confidence level of the interval.
        n_resamples: bootstrap resamples.
        seed: seed of the resampling generator (the interval is reproducible for a given seed).

    Returns:
        An `Estimate`: statistic(values) with the BCa interval; all NaN with fewer than 3 values or any non-finite
        one; a zero-width `degenerate` interval when all values are equal.

    Example:
        >>> import numpy as np
        >>> from lab.stats import bootstrap_interval
        >>> e = bootstrap_interval(np.random.default_rng(0).normal(size=50), n_resamples=200)
        >>> e.n, e.method, bool(e.low <= e.value <= e.high)
        (50, 'median, BCa bootstrap interval', True)
    """
    where = "lab.stats.bootstrap_interval"
    level = require_level(level, where)
    n_resamples = require_int(n_resamples, "n_resamples", where, lo=1)
    seed = require_int(seed, "seed", where, lo=0)
    if not callable(statistic):
        raise TypeError(not_allowed("statistic", statistic, "a callable of a 1-D array", where))
    a = _clean(values, "values", where)
    n = len(a)
    method = f"{getattr(statistic, '__name__', 'statistic')}, BCa bootstrap interval"
    if n < 3 or not np.all(np.isfinite(a)):
        return _nan(n, method, level)
    value = float(statistic(a))
    if np.all(a == a[0]):
        return Estimate(value, value, value, n, method, level, degenerate=True)
    res = stats.bootstrap((a,), statistic, confidence_level=level, n_resamples=n_resamples, method="BCa",
                          random_state=np.random.default_rng(seed))
    return Estimate(value, float(res.confidence_interval.low), float(res.confidence_interval.high), n, method, level)


def kendall_interval(x: Iterable[float], y: Iterable[float], level: float = LEVEL, n_resamples: int = 2000,
                     seed: int = 0) -> Estimate:
    """Kendall's rank correlation τ_b of paired measurements, with a paired percentile bootstrap interval
    (scipy.stats.kendalltau over pairs resampled by scipy.stats.bootstrap).

    Args:
        x, y: the paired measurements, equal lengths (e.g. a sharpness measure and the generalization gap of each
            trained net).
        level: confidence level of the interval.
        n_resamples: bootstrap resamples.
        seed: seed of the resampling generator.

    Returns:
        An `Estimate` of τ in [-1, 1]; all NaN with fewer than 4 pairs, a non-finite value or a constant x or y.

    Raises:
        ValueError: x and y differ in length.

    Example:
        >>> import numpy as np
        >>> from lab.stats import kendall_interval
        >>> x = np.arange(20.0); y = x + np.random.default_rng(0).normal(0, 3, 20)
        >>> e = kendall_interval(x, y, n_resamples=500)
        >>> e.method, bool(0 < e.low < e.value < e.high <= 1)
        ("Kendall's tau-b, paired percentile bootstrap interval", True)
    """
    where = "lab.stats.kendall_interval"
    level = require_level(level, where)
    n_resamples = require_int(n_resamples, "n_resamples", where, lo=1)
    seed = require_int(seed, "seed", where, lo=0)
    a, b = _clean(x, "x", where), _clean(y, "y", where)
    if len(a) != len(b):
        raise ValueError(f"parameters 'x' and 'y' have {len(a)} and {len(b)} values: expected pairs (equal lengths)")
    method = "Kendall's tau-b, paired percentile bootstrap interval"
    n = len(a)
    if n < 4 or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))) or np.all(a == a[0]) or np.all(b == b[0]):
        return _nan(n, method, level)

    def tau(u: np.ndarray, v: np.ndarray) -> float:
        t = stats.kendalltau(u, v).statistic
        return float(t) if np.isfinite(t) else 0.0      # a resample with a constant column carries no ranking

    res = stats.bootstrap((a, b), tau, paired=True, vectorized=False, confidence_level=level,
                          n_resamples=n_resamples, method="percentile", random_state=np.random.default_rng(seed))
    return Estimate(tau(a, b), float(res.confidence_interval.low), float(res.confidence_interval.high), n, method,
                    level)


def proportion(successes: int | Iterable[bool], n: int | None = None, level: float = LEVEL) -> Estimate:
    """The share of replicates in which something holds, with the exact (Clopper-Pearson) binomial interval.

    Args:
        successes: either one flag per replicate (an iterable of bools), or, with `n`, the number of successes.
        n: the number of replicates when `successes` is a count; None when it is a list of flags.
        level: confidence level of the interval.

    Returns:
        An `Estimate` of the share k / n in [0, 1]; all NaN when there are no replicates.

    Raises:
        ValueError: a flag that is not True/False or 1/0 (NaN included), a count outside [0, n], n < 0, or a level
            outside (0, 1). TypeError: a count or n that is not an integer.

    Example:
        >>> from lab.stats import proportion
        >>> p = proportion([True] * 8); p.value, round(p.low, 3)
        (1.0, 0.631)
    """
    where = "lab.stats.proportion"
    level = require_level(level, where)
    if n is None:
        if isinstance(successes, (int, np.integer)) and not isinstance(successes, (bool, np.bool_)):
            raise TypeError(not_allowed("successes", successes, "an iterable of flags, or a count with n", where))
        flags = []
        for i, x in enumerate(successes):  # type: ignore[union-attr]
            if isinstance(x, (bool, np.bool_)):
                flags.append(bool(x))
            elif isinstance(x, (int, float, np.integer, np.floating)) and float(x) in (0.0, 1.0):
                flags.append(float(x) == 1.0)       # 0/1 numbers (NaN is neither: refused below)
            else:
                raise ValueError(not_allowed(f"successes[{i}]", x, "a flag: True/False or 1/0 (a NaN or any other "
                                             "number is neither a success nor a failure)", where))
        k, n = sum(flags), len(flags)
    else:
        n = require_int(n, "n", where, lo=0)
        k = require_int(successes, "successes", where, lo=0, hi=n)
    method = "share, Clopper-Pearson interval"
    if n < 1:
        return _nan(0, method, level)
    ci = stats.binomtest(k, n).proportion_ci(level, method="exact")
    return Estimate(k / n, float(ci.low), float(ci.high), n, method, level)


def replicate_seeds(seed: int, n_reps: int) -> list[int]:
    """The seeds of n_reps replicates for chapter seed `seed`: disjoint blocks of 1,000, so that runs at different
    chapter seeds never share a replicate.

    Args:
        seed: the chapter's seed, a non-negative int.
        n_reps: number of replicates, 1 <= n_reps <= 1000.

    Returns:
        [1000·seed, 1000·seed + 1, ..., 1000·seed + n_reps − 1], a list of ints.

    Raises:
        ValueError: when seed < 0 or n_reps is outside [1, 1000]. TypeError: when either is not an integer.

    Example:
        >>> from lab.stats import replicate_seeds
        >>> replicate_seeds(0, 3), replicate_seeds(2, 2)
        ([0, 1, 2], [2000, 2001])
    """
    seed = require_int(seed, "seed", "lab.stats.replicate_seeds", lo=0)
    n_reps = require_int(n_reps, "n_reps", "lab.stats.replicate_seeds", lo=1, hi=1000)
    return [1000 * seed + r for r in range(n_reps)]


def cluster_means(values: Iterable[float], clusters: Iterable[Any]) -> np.ndarray:
    """The mean of the values within each cluster (replicate), in order of first appearance: the independent units
    when several measurements share a replicate (nets trained on one data split, curves of one network).

    Args:
        values: one measurement per row (floats).
        clusters: the replicate of each row (any hashable labels), the same length.

    Returns:
        A float64 array with one mean per cluster.

    Example:
        >>> from lab.stats import cluster_means
        >>> cluster_means([1.0, 3.0, 10.0, 20.0], ["a", "a", "b", "b"]).tolist()
        [2.0, 15.0]
    """
    v = np.asarray(list(values), dtype=np.float64).reshape(-1)
    c = list(clusters)
    if len(c) != len(v):
        raise ValueError(f"parameters 'values' and 'clusters' have {len(v)} and {len(c)} entries: expected one "
                         "cluster label per value")
    order = list(dict.fromkeys(c))
    index = {k: i for i, k in enumerate(order)}
    idx = np.array([index[k] for k in c], dtype=np.int64)
    return np.bincount(idx, weights=v, minlength=len(order)) / np.bincount(idx, minlength=len(order))


def cluster_kendall_interval(x: Iterable[float], y: Iterable[float], clusters: Iterable[Any],
                             level: float = LEVEL, n_resamples: int = 2000, seed: int = 0) -> Estimate:
    """Kendall's τ_b of paired measurements that come in clusters (nets sharing a replicate), with a cluster
    bootstrap percentile interval: whole clusters are resampled with replacement, so the interval's units are the
    independent replicates, not the nets.

    Args:
        x, y: the paired measurements, equal lengths.
        clusters: the replicate of each pair (hashable labels), the same length.
        level: confidence level of the interval.
        n_resamples: bootstrap resamples of the clusters.
        seed: seed of the resampling generator.

    Returns:
        An `Estimate` of τ in [-1, 1] with n = the number of clusters; all NaN with fewer than 3 clusters, fewer
        than 4 pairs, a non-finite value or a constant x or y.

    Example:
        >>> import numpy as np
        >>> from lab.stats import cluster_kendall_interval
        >>> rng = np.random.default_rng(0)
        >>> x = np.tile(np.arange(6.0), 5); y = x + rng.normal(0, 1, 30); c = np.repeat(np.arange(5), 6)
        >>> e = cluster_kendall_interval(x, y, c, n_resamples=300)
        >>> e.n, bool(0 < e.low < e.value < e.high <= 1)
        (5, True)
    """
    a, b = _clean(x), _clean(y)
    c = list(clusters)
    if not (len(a) == len(b) == len(c)):
        raise ValueError(f"parameters 'x', 'y' and 'clusters' have {len(a)}, {len(b)} and {len(c)} entries: "
                         "expected equal lengths")
    if not 0 < level < 1:
        raise ValueError(f"parameter 'level' = {level!r} is not allowed: expected a number in (0, 1)")
    method = "Kendall's tau-b, cluster bootstrap interval"
    labels = list(dict.fromkeys(c))
    k = len(labels)
    if (k < 3 or len(a) < 4 or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b)))
            or np.all(a == a[0]) or np.all(b == b[0])):
        return _nan(k, method, level)
    members = [np.flatnonzero(np.array([ci == lab for ci in c])) for lab in labels]

    def tau(idx: np.ndarray) -> float:
        t = stats.kendalltau(a[idx], b[idx]).statistic
        return float(t) if np.isfinite(t) else 0.0

    rng = np.random.default_rng(seed)
    boot = np.array([tau(np.concatenate([members[j] for j in rng.integers(0, k, k)])) for _ in range(n_resamples)])
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return Estimate(tau(np.arange(len(a))), float(lo), float(hi), k, method, level)
