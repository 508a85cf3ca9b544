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
