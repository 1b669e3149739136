"""Percentiles, one definition for the demo and the bench.

Nearest rank: the p-th percentile of n sorted values is the value at rank
ceil(p * n), so p99 of 1..100 is 99 and p50 of 1..100 is 50.
"""

from __future__ import annotations

import math


def quantile(values: list[float], q: float) -> float:
    """The nearest-rank `q`-quantile (0 < q <= 1); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "p999": None, "mean": None, "max": None, "count": 0}
    ordered = sorted(values)
    n = len(ordered)

    def q(p: float) -> float:
        return ordered[min(n - 1, max(0, math.ceil(p * n) - 1))]

    return {"p50": q(0.50), "p95": q(0.95), "p99": q(0.99), "p999": q(0.999),
            "mean": sum(ordered) / n, "max": ordered[-1], "count": n}
