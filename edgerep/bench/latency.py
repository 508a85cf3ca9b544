"""Latency of one engine: warm-up, then a count or a time budget; percentiles the way trtexec reports them."""
from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass

import numpy as np

from edgerep.engines.base import Engine


@dataclass
class LatencyStats:
    """Per-batch wall latency of ``engine.run`` (host in -> host out), in milliseconds."""

    batch: int
    iterations: int
    warmup: int
    mean_ms: float
    min_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    std_ms: float
    throughput_ips: float  # images per second at this batch size (batch / mean latency)

    def to_dict(self) -> dict:
        return asdict(self)


def percentile(sorted_ms: np.ndarray, p: float) -> float:
    """trtexec's percentile: with N ascending samples, ``t[max(N-1-int((1-p/100)*N), 0)]``."""
    n = len(sorted_ms)
    excl = int((100.0 - p) * n / 100.0)  # (1 - p/100) * N, without the float error at p=90
    return float(sorted_ms[max(n - 1 - excl, 0)])


def summarize(times_ms: list[float] | np.ndarray, batch: int, warmup: int) -> LatencyStats:
    """Statistics of a list of per-run latencies (ms)."""
    t = np.sort(np.asarray(times_ms, dtype=np.float64))
    if t.size == 0:
        raise ValueError("no latency samples")
    mean = float(t.mean())
    return LatencyStats(
        batch=batch, iterations=int(t.size), warmup=warmup, mean_ms=mean, min_ms=float(t[0]),
        p50_ms=percentile(t, 50), p90_ms=percentile(t, 90), p99_ms=percentile(t, 99), max_ms=float(t[-1]),
        std_ms=float(t.std()), throughput_ips=batch * 1000.0 / mean if mean > 0 else float("inf"),
    )


def measure(engine: Engine, x: np.ndarray, *, warmup: int = 10, iterations: int | None = None,
            seconds: float | None = 1.0, min_iterations: int = 10, max_iterations: int = 10000) -> LatencyStats:
    """Time ``engine.run(x)``: ``warmup`` untimed runs, then ``iterations`` runs, or as many as
    fit in ``seconds`` (at least ``min_iterations``)."""
    for _ in range(max(warmup, 0)):
        engine.run(x)
    times: list[float] = []
    deadline = time.perf_counter() + (seconds or 0.0)
    while True:
        t0 = time.perf_counter()
        engine.run(x)
        times.append((time.perf_counter() - t0) * 1000.0)
        n = len(times)
        if iterations is not None:
            if n >= iterations:
                break
        elif n >= max_iterations or (n >= min_iterations and time.perf_counter() >= deadline):
            break
    return summarize(times, batch=int(x.shape[0]), warmup=warmup)


def host_info() -> dict:
    """The facts that decide CPU latency, recorded beside every measurement."""
    info = {"machine": platform.machine(), "processor": platform.processor() or None,
            "python": platform.python_version(), "cpu_count": os.cpu_count()}
    from edgerep.quant.cpu_features import detect_cpu_features  # all False where /proc/cpuinfo is absent

    info["cpu_features"] = detect_cpu_features().to_dict()
    import torch

    info["torch_threads"] = torch.get_num_threads()
    info["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY")
    return info
