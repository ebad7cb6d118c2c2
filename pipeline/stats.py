"""The one home of the statistics every caller reports (results.json, the report, the server)."""

from __future__ import annotations

import math


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
