"""Is a latency measurement noisy? Coefficient of variation and tail ratio against thresholds.

A row is *noisy* when its per-query times spread too much (CV = std / mean above ``cv``) or its
tail runs away from its median (p99 / p50 above ``tail``; the raw 99th sample percentile when too
few queries ran for the early-stopping p99). Both happen on a loaded host; neither happens to a
quiet one running a settled engine. Noisy rows are marked in the table, the report and the gate.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

CV_LIMIT = 0.5  # std / mean of per-query latency
TAIL_LIMIT = 3.0  # p99 / p50


@dataclass(frozen=True)
class NoiseThresholds:
    """Limits above which a latency row is called noisy."""

    cv: float = CV_LIMIT
    tail: float = TAIL_LIMIT


def cv(times_ms) -> float:
    """Coefficient of variation of per-query latencies (0 for one sample)."""
    t = np.asarray(times_ms, dtype=np.float64)
    if t.size < 2 or t.mean() <= 0:
        return 0.0
    return float(t.std(ddof=1) / t.mean())


def assess(cv_value: float, p50_ms: float | None, p99_ms: float | None,
           limits: NoiseThresholds = NoiseThresholds()) -> tuple[bool, str | None]:
    """(noisy, reason in words) from a row's CV and tail; reason is None for a quiet row."""
    reasons = []
    if cv_value > limits.cv:
        reasons.append(f"CV {cv_value:.2f} > {limits.cv:g}")
    if p50_ms and p99_ms and p99_ms / p50_ms > limits.tail:
        reasons.append(f"p99/p50 {p99_ms / p50_ms:.1f} > {limits.tail:g}")
    return (bool(reasons), "; ".join(reasons) or None)


def host_load() -> dict:
    """1-minute load average against the core count: evidence recorded beside every measurement."""
    try:
        one, five, _ = os.getloadavg()
    except (OSError, AttributeError):  # not on every platform
        return {"loadavg_1m": None, "loadavg_5m": None, "cores": os.cpu_count()}
    return {"loadavg_1m": round(one, 2), "loadavg_5m": round(five, 2), "cores": os.cpu_count()}


#: smallest latency change (percent) that can count as real, whatever the runs' spread
NOISE_FLOOR_PCT = 5.0
#: a run whose spread is wider than this (the tail is longer than the median itself) is not judged
TOO_NOISY_PCT = 100.0


@dataclass(frozen=True)
class LatencyChange:
    """A p50 change between two runs of one engine, judged against the pair's noise."""

    verdict: str  # within noise | slower | faster | too noisy | n/a
    pct: float | None  # (new - base) / base, percent
    band_pct: float | None  # the noise band the change was judged against
    why: str = ""  # for "too noisy": which run said so

    @property
    def judged(self) -> bool:
        """Whether the pair can pass or fail a latency limit at all."""
        return self.verdict in ("within noise", "slower", "faster")


def spread_pct(lat: dict) -> float | None:
    """A run's own spread in percent of its median: ``(p90 - p50) / p50``, else its CV."""
    p50, p90 = lat.get("p50_ms"), lat.get("p90_ms")
    if isinstance(p50, (int, float)) and isinstance(p90, (int, float)) and p50 > 0 and np.isfinite(p90):
        return 100.0 * max(0.0, p90 - p50) / p50
    c = lat.get("cv")
    return 100.0 * c if isinstance(c, (int, float)) and np.isfinite(c) else None


def latency_change(base: dict, new: dict, floor_pct: float = NOISE_FLOOR_PCT) -> LatencyChange:
    """Judge ``new``'s p50 against ``base``'s (two ``latency`` dicts of a report): a change is real only
    beyond the band (the larger of ``floor_pct`` and each run's spread); a pair in which either run
    marked itself noisy, or whose band passes ``TOO_NOISY_PCT``, is "too noisy" to judge either way."""
    b, n = base.get("p50_ms"), new.get("p50_ms")
    if not (isinstance(b, (int, float)) and isinstance(n, (int, float)) and b > 0):
        return LatencyChange("n/a", None, None)
    pct = 100.0 * (n - b) / b
    band = max([floor_pct] + [s for s in (spread_pct(base), spread_pct(new)) if s is not None])
    noisy = [f"{who} run noisy ({lat.get('noise_reason') or 'marked noisy'})"
             for who, lat in (("base", base), ("new", new)) if lat.get("noisy")]
    if noisy:
        return LatencyChange("too noisy", pct, band, "; ".join(noisy))
    if band > TOO_NOISY_PCT:
        return LatencyChange("too noisy", pct, band, f"noise band ±{band:.0f}% > {TOO_NOISY_PCT:g}%")
    if abs(pct) <= band:
        return LatencyChange("within noise", pct, band)
    return LatencyChange("slower" if pct > 0 else "faster", pct, band)
