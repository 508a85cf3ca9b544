"""Early-stopping percentile estimates, the rule MLPerf LoadGen applies to single-stream latency.

With ``n`` measured queries, the estimate of the p-th percentile is the latency that, with 99%
confidence, at most a (1 - p) share of *future* queries would exceed: discard as many of the
slowest queries as the binomial bound allows and take the next one. Too few queries give no
estimate at all (64 for p90, 662 for p99), so a report never shows a tail it did not measure.
The built-in timer uses this module; LoadGen computes the same numbers itself.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

CONFIDENCE = 0.99


def _binom_cdf(k: int, n: int, q: float) -> float:
    """P(X <= k) for X ~ Binomial(n, q), summed in log space (n up to millions)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    lq, l1q = math.log(q), math.log1p(-q)
    lgn = math.lgamma(n + 1)
    total = 0.0
    for i in range(k + 1):
        total += math.exp(lgn - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lq + (n - i) * l1q)
    return min(total, 1.0)


@lru_cache(maxsize=4096)
def overlatency_allowed(n: int, percentile: float, confidence: float = CONFIDENCE) -> int:
    """How many of ``n`` queries may sit above the estimate: the largest ``t`` with
    P(at most t of n queries exceed the true percentile) < 1 - confidence. 0: too few queries."""
    q = 1.0 - percentile / 100.0
    if n <= 0 or not 0.0 < q < 1.0:
        return 0
    lo, hi = 0, n  # cdf is increasing in t: binary search for the last t with cdf < 1 - c
    if _binom_cdf(1, n, q) >= 1.0 - confidence:
        return 0
    lo = 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _binom_cdf(mid, n, q) < 1.0 - confidence:
            lo = mid
        else:
            hi = mid
    return lo


@lru_cache(maxsize=16)
def min_queries(percentile: float, confidence: float = CONFIDENCE) -> int:
    """The fewest queries that give an early-stopping estimate (64 for p90, 662 for p99)."""
    n = 1
    while overlatency_allowed(n, percentile, confidence) < 1:
        n = n * 2
    lo = n // 2
    while n - lo > 1:  # smallest n with at least one allowed over-latency query
        mid = (lo + n) // 2
        if overlatency_allowed(mid, percentile, confidence) >= 1:
            n = mid
        else:
            lo = mid
    return n


def estimate(latencies_ms, percentile: float, confidence: float = CONFIDENCE) -> float | None:
    """The early-stopping estimate of ``percentile`` from per-query latencies; None when too few."""
    t = np.sort(np.asarray(latencies_ms, dtype=np.float64))
    allowed = overlatency_allowed(int(t.size), float(percentile), confidence)
    if allowed < 1:
        return None
    return float(t[t.size - allowed])
