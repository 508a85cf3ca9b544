"""Exact one-sided binomial tests on counts of correct images: does a baseline beat chance, and is it
consistent with the accuracy it is expected to have? Decisions on counts, so they mean the same at any
class count and set size."""
from __future__ import annotations

import math
from dataclasses import dataclass


def _log_pmf(k: int, n: int, p: float) -> float:
    return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
            + (k * math.log(p) if k else 0.0) + ((n - k) * math.log1p(-p) if n - k else 0.0))


def _tail(ks: range, n: int, p: float) -> float:
    """Sum of the binomial pmf over ``ks``, in log space (no underflow for large n)."""
    logs = [_log_pmf(k, n, p) for k in ks]
    if not logs:
        return 0.0
    top = max(logs)
    return min(1.0, math.exp(top) * math.fsum(math.exp(v - top) for v in logs))


def p_at_least(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p): the one-sided p-value of k successes against rate p."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    try:
        from scipy.stats import binomtest

        return float(binomtest(k, n, p, alternative="greater").pvalue)
    except ImportError:  # pragma: no cover - scipy ships with scikit-learn; the exact sum is the same number
        return _tail(range(k, n + 1), n, p)


def p_at_most(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p): the one-sided p-value of only k successes against rate p."""
    if k >= n:
        return 1.0
    if k < 0:
        return 0.0
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    try:
        from scipy.stats import binomtest

        return float(binomtest(k, n, p, alternative="less").pvalue)
    except ImportError:  # pragma: no cover
        return _tail(range(0, k + 1), n, p)


@dataclass(frozen=True)
class ChanceTest:
    """``correct`` of ``n`` against a chance rate: the exact one-sided p-value and the verdict at ``alpha``."""

    correct: int
    n: int
    chance: float  # the rate a model that ignores its input reaches (1 / classes, or the majority class share)
    p_value: float
    alpha: float
    needed: int | None  # the fewest correct of n that beat chance at alpha (None: not even n of n does)

    @property
    def beats_chance(self) -> bool:
        return self.p_value < self.alpha


def chance_test(correct: int, n: int, chance: float, alpha: float) -> ChanceTest:
    """Exact one-sided binomial test of ``correct`` of ``n`` against ``chance`` at level ``alpha``."""
    lo, hi = 0, n + 1  # the smallest k with P(X >= k) < alpha (monotone in k), by bisection
    while lo < hi:
        mid = (lo + hi) // 2
        if p_at_least(mid, n, chance) < alpha:
            hi = mid
        else:
            lo = mid + 1
    return ChanceTest(correct, n, chance, p_at_least(correct, n, chance), alpha, lo if lo <= n else None)


def fewest_images(chance: float, alpha: float, limit: int = 100_000) -> int | None:
    """The smallest set on which a model right on every image beats ``chance`` at ``alpha``: chance**n < alpha."""
    if not 0.0 < chance < 1.0:
        return None
    n = math.floor(math.log(alpha) / math.log(chance)) + 1
    return n if n <= limit else None


def fmt_p(p: float) -> str:
    """A p-value for people: ``p = 0.042``, ``p = 3.1e-15``, or ``p < 1e-300``."""
    if p <= 0.0:
        return "p < 1e-300"
    return f"p = {p:.2g}" if p >= 1e-3 else f"p = {p:.1e}"


__all__ = ["p_at_least", "p_at_most", "ChanceTest", "chance_test", "fewest_images", "fmt_p"]
