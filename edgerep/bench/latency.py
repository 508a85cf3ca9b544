"""Percentiles the way trtexec reports them, and the host facts recorded beside every latency."""
from __future__ import annotations

import os
import platform

import numpy as np


def percentile(sorted_ms: np.ndarray, p: float) -> float:
    """trtexec's percentile: with N ascending samples, ``t[max(N-1-int((1-p/100)*N), 0)]``."""
    n = len(sorted_ms)
    excl = int((100.0 - p) * n / 100.0)  # (1 - p/100) * N, without the float error at p=90
    return float(sorted_ms[max(n - 1 - excl, 0)])


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
