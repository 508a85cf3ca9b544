"""Is a latency measurement noisy? Judged on the figures the row shows, with robust statistics.

A row is *noisy* when
- its tail runs away from its median: the shown p99 / p50 above ``tail`` (the shown p90 / p50 where
  too few queries ran for a p99);
- its per-query times spread too much: the robust spread 1.4826 x MAD / median above ``spread`` (one
  preempted query does not move it; a bimodal run does);
- its repeats disagree: the p50 of each quarter of the run (in time order) differ by more than
  ``repeats`` x (a host whose load changed during the run).
All happen on a loaded host; none happens to a quiet one running a settled engine. The CV is kept in
the report for reference; it is not a criterion (a single 100 ms stall makes it explode). Noisy rows
are marked in the table, the report and the gate.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

TAIL_LIMIT = 3.0  # shown p99 / p50
SPREAD_LIMIT = 0.3  # 1.4826 x MAD / median of per-query latency
REPEATS_LIMIT = 1.5  # largest / smallest p50 of the run's quarters
REPEATS = 4
MIN_PER_REPEAT = 16  # fewer queries per quarter: no repeat comparison


@dataclass(frozen=True)
class NoiseThresholds:
    """Limits above which a latency row is called noisy."""

    tail: float = TAIL_LIMIT
    spread: float = SPREAD_LIMIT
    repeats: float = REPEATS_LIMIT


def cv(times_ms) -> float:
    """Coefficient of variation of per-query latencies (0 for one sample); reported, not judged."""
    t = np.asarray(times_ms, dtype=np.float64)
    if t.size < 2 or t.mean() <= 0:
        return 0.0
    return float(t.std(ddof=1) / t.mean())


def robust_spread(times_ms) -> float:
    """1.4826 x median absolute deviation / median (equals the CV for normal data; robust to outliers)."""
    t = np.asarray(times_ms, dtype=np.float64)
    if t.size < 2:
        return 0.0
    med = float(np.median(t))
    if med <= 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(t - med)) / med)


def repeat_p50s(times_ms, repeats: int = REPEATS) -> list[float]:
    """The median of each of ``repeats`` consecutive slices of the run (empty when a slice would hold
    fewer than ``MIN_PER_REPEAT`` queries)."""
    t = np.asarray(times_ms, dtype=np.float64)
    if t.size < repeats * MIN_PER_REPEAT:
        return []
    return [round(float(np.median(part)), 6) for part in np.array_split(t, repeats)]


def assess(row: dict, limits: NoiseThresholds = NoiseThresholds()) -> tuple[bool, str | None]:
    """(noisy, reason in words) of a latency row from the figures it shows (``p50_ms``, ``p90_ms``,
    ``p99_ms``, ``spread``, ``p50_repeats_ms``); reason is None for a quiet row."""
    reasons = []
    p50 = row.get("p50_ms")
    for tail_key in ("p99_ms", "p90_ms"):
        tail = row.get(tail_key)
        if p50 and tail:
            if tail / p50 > limits.tail:
                reasons.append(f"{tail_key[:3]}/p50 {tail / p50:.2f} > {limits.tail:g}")
            break
    spread = row.get("spread")
    if spread is not None and spread > limits.spread:
        reasons.append(f"spread (MAD/median) {spread:.2f} > {limits.spread:g}")
    reps = [r for r in (row.get("p50_repeats_ms") or []) if r > 0]
    if len(reps) >= 2 and max(reps) / min(reps) > limits.repeats:
        reasons.append(f"p50 of the run's quarters moves {max(reps) / min(reps):.2f}x > {limits.repeats:g}x "
                       f"({', '.join(f'{r:.3g}' for r in reps)} ms)")
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
