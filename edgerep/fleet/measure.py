"""The one adapter between the fleet and edgerep's bench / accuracy API (a bench API change lands here only)."""
from __future__ import annotations

import numpy as np

from edgerep.engines.base import Engine


def time_engine(engine: Engine, x: np.ndarray, *, warmup: int, seconds: float) -> dict:
    """Latency of ``engine`` on the batch ``x`` in the single-stream scenario (LoadGen where installed,
    else the built-in timer under the same rules), as the report's ``latency`` dict."""
    from edgerep.bench.scenarios import ScenarioSettings, run_scenario

    settings = ScenarioSettings(scenario="single-stream", min_seconds=seconds, warmup=warmup)
    return run_scenario(engine, x, settings, batch=int(x.shape[0]),
                        log_name=f"{engine.name}-{engine.precision}-b{x.shape[0]}")


def outputs(engine: Engine, x: np.ndarray, batch: int = 64) -> np.ndarray:
    """``engine``'s outputs on every row of ``x``, in order."""
    from edgerep.bench.accuracy import collect_outputs

    out, _ = collect_outputs(engine, ((x[i:i + batch], None) for i in range(0, len(x), batch)))
    return out


def host_facts() -> dict:
    """CPU model, ISA and threads: every latency names the machine it ran on."""
    from edgerep.bench.latency import host_info

    return host_info()
