"""The one home of the statistics every caller reports (results.json, the report, the server).

- `stderr`, `mean_stderr`: an accuracy and its standard error (the ± of every table).
- `binomial_interval`: the exact (Clopper-Pearson) interval of an accuracy.
- `paired_difference`: the difference between two conditions' accuracies on the same items, with
  McNemar's exact test and the interval that agrees with it (why not a bootstrap: its docstring).

Everything here is exact and deterministic: no resampling, no seed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple


def stderr(values: list[float]) -> float | None:
    """Standard error of a mean of 0/1 outcomes (sample standard deviation, as lm-eval); None for n < 2."""
    n = len(values)
    if n < 2:
        return None
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def mean_stderr(values: list[float]) -> tuple[float, float | None]:
    """(mean, standard error) of `values`; see `stderr`."""
    if not values:
        raise ValueError("mean of no values")
    return sum(values) / len(values), stderr(values)


def _at_least(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p); the tail away from the mode is summed, the other side is
    one minus it, so every sum runs over falling terms and stops once they are negligible."""
    if k <= 0 or p >= 1.0:
        return 1.0
    if k > n or p <= 0.0:
        return 0.0
    if k > n * p:
        return _tail(k, n, p, +1)
    return 1.0 - _tail(k - 1, n, p, -1)


def _tail(start: int, n: int, p: float, step: int) -> float:
    """Sum of the Binomial(n, p) probabilities from `start` away from the mode (step +1: up to n,
    -1: down to 0), in log space relative to the first term (no overflow at large n)."""
    lp, lq = math.log(p), math.log1p(-p)
    first = math.lgamma(n + 1) - math.lgamma(start + 1) - math.lgamma(n - start + 1) + start * lp + (n - start) * lq
    total, term, j = 0.0, first, start
    while term > first - 60:  # later terms are below e^-60 of the first
        total += math.exp(term - first)
        if (step > 0 and j == n) or (step < 0 and j == 0):
            break
        term += (math.log(n - j) - math.log(j + 1) + lp - lq) if step > 0 else (math.log(j) - math.log(n - j + 1) + lq - lp)
        j += step
    return math.exp(first) * total


def _lower_bound(k: int, n: int, alpha: float) -> float:
    """The p at which P(X >= k) = alpha / 2 (Clopper-Pearson's lower bound), by bisection."""
    if k == 0:
        return 0.0
    lo, hi = 0.0, 1.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if _at_least(k, n, mid) < alpha / 2:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return (lo + hi) / 2


def binomial_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) `level` interval of a proportion: `successes` of `n`.

    Its coverage is at least `level` for every true proportion (conservative at small n), and it
    stays honest at 0/n and n/n, where a normal interval collapses to a point.
    """
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"binomial interval of {successes} successes of {n}: need 0 <= successes <= n, n > 0")
    alpha = 1 - level
    return _lower_bound(successes, n, alpha), 1.0 - _lower_bound(n - successes, n, alpha)


def mcnemar_p(a_only: int, b_only: int) -> float:
    """McNemar's exact two-sided p-value: the items only A gets right (`a_only`) against those
    only B gets right (`b_only`), which under "no difference" split Binomial(a_only + b_only, 1/2)."""
    m = a_only + b_only
    if m == 0:
        return 1.0
    tail = term = 1  # sum of C(m, j) for j <= the smaller count, in exact integers
    for j in range(1, min(a_only, b_only) + 1):
        term = term * (m - j + 1) // j
        tail += term
    return min(1.0, 2 * tail / 2**m)


class PairedDifference(NamedTuple):
    diff: float  # accuracy of A minus accuracy of B, on the same items
    lo: float
    hi: float
    p: float  # McNemar's exact two-sided p-value
    n: int  # items
    a_only: int  # items A gets right and B wrong
    b_only: int  # items B gets right and A wrong


def paired_difference(a: Mapping[str, float], b: Mapping[str, float], level: float = 0.95) -> PairedDifference:
    """acc(A) - acc(B) on the same items, with McNemar's exact test and its `level` interval.

    `a` and `b` map item ids to 0/1 outcomes; they must hold the same items (pairing is by id, so
    order does not matter; a mismatch is an error naming the items). With paired 0/1 outcomes
    everything the data say about the difference is in the two discordant counts: items only A
    gets right (a_only) and only B gets right (b_only); diff = (a_only - b_only) / n. Given
    m = a_only + b_only, "no difference" means a_only ~ Binomial(m, 1/2): McNemar's exact test.
    The interval is the Clopper-Pearson interval (p_lo, p_hi) of a_only / m, mapped to the
    difference scale, (m / n) * (2 p - 1). It excludes 0 exactly when the exact test rejects at
    1 - level, so a verdict read off the interval always agrees with the p-value. It is exact
    given m, and ignores the randomness of m itself: somewhat narrower than an unconditional
    interval when the difference is large; whether it excludes 0 is unaffected.

    Why not a paired percentile bootstrap: with few discordant items it is anti-conservative (A
    right on 5 more items of 100 and never worse: the bootstrap's 95% interval is [0.01, 0.10],
    excluding 0, while the exact p is 0.0625), and it collapses to a point when the conditions
    agree or one is always right; it also needs a seed. This needs none.
    """
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    if only_a or only_b:
        raise ValueError(f"a paired comparison needs the same items: {len(only_a)} only in A {only_a[:3]}, "
                         f"{len(only_b)} only in B {only_b[:3]}")
    if not a:
        raise ValueError("a paired comparison of no items")
    for outcomes in (a, b):
        bad = next((k for k, v in outcomes.items() if v not in (0, 1)), None)
        if bad is not None:
            raise ValueError(f"item {bad!r}: outcome {outcomes[bad]!r} is not 0 or 1")
    n = len(a)
    a_only = sum(1 for k in a if a[k] == 1 and b[k] == 0)
    b_only = sum(1 for k in a if a[k] == 0 and b[k] == 1)
    m = a_only + b_only
    lo = hi = 0.0
    if m:
        p_lo, p_hi = binomial_interval(a_only, m, level)
        lo, hi = m / n * (2 * p_lo - 1), m / n * (2 * p_hi - 1)
    return PairedDifference((a_only - b_only) / n, lo, hi, mcnemar_p(a_only, b_only), n, a_only, b_only)
