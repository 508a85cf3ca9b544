"""Choose between engines by latency only when the difference is beyond the measured noise.

Engines are timed in interleaved rounds (the order rotates every round, and every switch waits for
the previous engine's worker pools to park), so load from other processes falls on all of them
alike. Each candidate's speed is a ratio to the *simplest* engine (the first given): the per-round
median ratio, with a t confidence interval over rounds on its logarithm. A candidate wins only when
the whole interval lies below ``1 - min_gain``; otherwise the simplest one stays, and the verdict is
"tie".
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from edgerep.bench.threads import settle
from edgerep.engines.base import Engine

CONFIDENCE = 0.95
MIN_GAIN = 0.03  # a win must be worth at least 3% of the simplest engine's latency


@dataclass
class Ratio:
    """Latency of one engine over the simplest one's: estimate and confidence interval."""

    estimate: float
    low: float
    high: float
    rounds: int

    def __str__(self) -> str:
        return f"{self.estimate:.2f}x (95% CI {self.low:.2f}-{self.high:.2f}, {self.rounds} rounds)"


@dataclass
class Ranking:
    """What the interleaved rounds showed and which engine they chose."""

    chosen: str
    verdict: str  # "simplest" (nothing else to compare), "tie", or "faster"
    reason: str
    latency_ms: dict[str, float] = field(default_factory=dict)  # median over all timed runs
    ratios: dict[str, Ratio] = field(default_factory=dict)  # vs the simplest candidate

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ratios"] = {k: asdict(v) for k, v in self.ratios.items()}
        return d


def interleaved_rounds(engines: dict[str, Engine], x: np.ndarray, *, rounds: int = 8, per_round: int = 5,
                       budget_s: float = 8.0, settle_s: float = 0.2) -> dict[str, list[list[float]]]:
    """Per engine, per round, ``per_round`` latencies (ms); the order rotates each round, and each
    switch settles the previous engine's pools first. Stops early (after 3 rounds) past ``budget_s``."""
    names = list(engines)
    out: dict[str, list[list[float]]] = {k: [] for k in names}
    for e in engines.values():
        e.run(x)
    t_end = time.perf_counter() + budget_s
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for k in order:
            settle(max_wait_s=settle_s)
            engines[k].run(x)  # refill caches after the switch
            times = []
            for _ in range(per_round):
                t0 = time.perf_counter()
                engines[k].run(x)
                times.append((time.perf_counter() - t0) * 1000.0)
            out[k].append(times)
        if time.perf_counter() > t_end and r >= 2:
            break
    return out


def _t_quantile(confidence: float, df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + confidence / 2.0, df))


def paired_ratio(candidate: list[list[float]], reference: list[list[float]], confidence: float = CONFIDENCE,
                 statistic: str = "median") -> Ratio:
    """Candidate / reference latency from per-round medians (or minima: the least disturbed run of a
    round, for a loaded host), paired by round (shared load conditions)."""
    stat = {"median": np.median, "min": np.min}[statistic]
    logs = np.log([stat(c) / stat(r) for c, r in zip(candidate, reference)])
    n = len(logs)
    est = float(np.exp(logs.mean()))
    if n < 2:
        return Ratio(est, 0.0, math.inf, n)
    half = _t_quantile(confidence, n - 1) * float(logs.std(ddof=1)) / math.sqrt(n)
    return Ratio(est, float(np.exp(logs.mean() - half)), float(np.exp(logs.mean() + half)), n)


def choose_within_noise(engines: dict[str, Engine], x: np.ndarray, *, among: list[str] | None = None,
                        min_gain: float = MIN_GAIN, confidence: float = CONFIDENCE, **round_kw) -> Ranking:
    """Time ``engines`` (simplest first) in interleaved rounds; choose among ``among`` (default all)
    the simplest unless another is faster beyond the noise (its whole CI below ``1 - min_gain``)."""
    times = interleaved_rounds(engines, x, **round_kw)
    allowed = [k for k in engines if among is None or k in among]
    return rank_times(times, allowed, min_gain=min_gain, confidence=confidence)


def rank_times(times: dict[str, list[list[float]]], allowed: list[str], *, min_gain: float = MIN_GAIN,
               confidence: float = CONFIDENCE) -> Ranking:
    """The choice from interleaved per-round times (``allowed`` simplest first): the simplest unless
    another is faster beyond the noise; among several faster ones, a later one displaces an earlier
    (simpler) one only when it is itself faster than that one beyond the noise, never on raw medians."""
    latency = {k: float(np.median(np.concatenate(v))) for k, v in times.items()}
    if not allowed:
        raise ValueError("choose_within_noise: no engine to choose from")
    simplest = allowed[0]
    ratios = {k: paired_ratio(times[k], times[simplest], confidence) for k in allowed[1:]}
    if not ratios:
        return Ranking(simplest, "simplest", f"{simplest} is the only candidate", latency, ratios)
    faster = [k for k, r in ratios.items() if r.high < 1.0 - min_gain]
    if faster:
        best = faster[0]
        why = f"{best} is faster than the simpler {simplest} beyond the noise: {ratios[best]}"
        for k in faster[1:]:
            r = paired_ratio(times[k], times[best], confidence)
            if r.high < 1.0 - min_gain:
                best, why = k, f"{k} is faster than {best} beyond the noise: {r} (and than {simplest}: {ratios[k]})"
            else:
                why += f"; {k} vs {best} {r} is within the noise, so the simpler {best} stays"
        return Ranking(best, "faster", f"{why} in interleaved rounds", latency, ratios)
    shown = ", ".join(f"{k} {r}" for k, r in ratios.items())
    return Ranking(simplest, "tie", f"tie: {shown} vs {simplest} is within the measured noise (or slower); "
                   f"the simpler {simplest} wins", latency, ratios)
