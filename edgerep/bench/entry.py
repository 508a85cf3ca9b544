"""One engine's row of a report: latency on a fixed batch, accuracy and fidelity on a data set,
and the drop against the unfolded FP32 reference. Shared by deploy and the tests."""
from __future__ import annotations

from typing import Callable

import numpy as np

from edgerep.bench.accuracy import UserMetric, collect_outputs, score
from edgerep.bench.scenarios import ScenarioSettings, run_scenario
from edgerep.engines.base import Engine


def engine_latency(engine: Engine, x_bench: np.ndarray, *, base_p50: float | None = None, warmup: int = 10,
                   seconds: float = 1.0, say: Callable[[str, str], None] | None = None,
                   scenario: ScenarioSettings | None = None, batch: int | None = None) -> dict:
    """``{"latency": ..., "speedup_vs_unfolded": ...}`` of one engine on queries of ``batch`` samples
    (default: all of ``x_bench``) drawn from the pool ``x_bench``."""
    (say or (lambda step, msg: None))("bench", f"timing {engine.name}/{engine.precision}")
    settings = scenario or ScenarioSettings(min_seconds=seconds, warmup=warmup)
    batch = int(batch or x_bench.shape[0])
    out: dict = {"latency": run_scenario(engine, x_bench, settings, batch=batch,
                                         log_name=f"{engine.name}-{engine.precision}-b{batch}")}
    p50 = out["latency"]["p50_ms"]
    if base_p50 and p50 and out["latency"].get("valid") is not False:
        out["speedup_vs_unfolded"] = base_p50 / p50
    return out


def engine_accuracy(engine: Engine, eval_ds, *, eval_limit: int | None = None, labels: np.ndarray | None = None,
                    reference: np.ndarray | None = None, ref_top1: float | None = None,
                    user_metric: UserMetric | None = None, classifier: bool = True,
                    say: Callable[[str, str], None] | None = None) -> dict:
    """``{"accuracy": ..., "drop_vs_unfolded": ...}`` of one engine on the test set ``eval_ds``."""
    (say or (lambda step, msg: None))("evaluate", f"evaluating {engine.name}/{engine.precision}")
    outs, _ = collect_outputs(engine, eval_ds.batches(64, limit=eval_limit))
    acc = score(outs, labels, reference, user_metric, classifier)
    out: dict = {"accuracy": acc.to_dict()}
    if acc.top1 is not None and ref_top1 is not None:
        out["drop_vs_unfolded"] = round(ref_top1 - acc.top1, 4)
    elif acc.top1_agreement is not None:
        out["drop_vs_unfolded"] = round(100.0 - acc.top1_agreement, 4)
    return out
