"""One engine's row of a report: latency on a fixed batch, accuracy and fidelity on a data set,
and the drop against the unfolded FP32 reference. Shared by deploy and the tests."""
from __future__ import annotations

from typing import Callable

import numpy as np

from edgerep.bench.accuracy import UserMetric, collect_outputs, score
from edgerep.bench.scenarios import ScenarioSettings, run_scenario
from edgerep.engines.base import Engine
from edgerep.memory import batch_for, x_shape
from edgerep.report.models import Latency, dump
from edgerep.report.models.results import Accuracy, make_drop


def engine_latency(engine: Engine, x_bench: np.ndarray, *, base_p50: float | None = None, warmup: int = 10,
                   seconds: float = 1.0, say: Callable[[str, str], None] | None = None,
                   scenario: ScenarioSettings | None = None, batch: int | None = None) -> dict:
    """``{"latency": ..., "speedup_vs_unfolded": ...}`` of one engine on queries of ``batch`` samples
    (default: all of ``x_bench``) drawn from the pool ``x_bench``."""
    (say or (lambda step, msg: None))("bench", f"timing {engine.name}/{engine.precision}")
    settings = scenario or ScenarioSettings(min_seconds=seconds, warmup=warmup)
    batch = int(batch or x_bench.shape[0])
    lat = Latency.model_validate(run_scenario(engine, x_bench, settings, batch=batch,  # typed, to read it
                                              log_name=f"{engine.name}-{engine.precision}-b{batch}"))
    out: dict = {"latency": dump(lat)}
    if base_p50 and lat.p50_ms and lat.valid is not False:
        out["speedup_vs_unfolded"] = base_p50 / lat.p50_ms
    return out


def engine_accuracy(engine: Engine, eval_ds, *, eval_limit: int | None = None, labels: np.ndarray | None = None,
                    reference: np.ndarray | None = None, ref_accuracy: Accuracy | dict | None = None,
                    user_metric: UserMetric | None = None, classifier: bool = True,
                    say: Callable[[str, str], None] | None = None) -> dict:
    """``{"accuracy": Accuracy, "drop": Drop}`` of one engine on the test set ``eval_ds``, serialized; the drop is
    in the engine's metric against ``ref_accuracy`` (the unfolded FP32 model's on the same samples)."""
    (say or (lambda step, msg: None))("evaluate", f"evaluating {engine.name}/{engine.precision}")
    outs, _ = collect_outputs(engine, eval_ds.batches(batch_for(x_shape(eval_ds)), limit=eval_limit))
    acc = score(outs, labels, reference, user_metric, classifier)
    ref = Accuracy.model_validate(ref_accuracy) if isinstance(ref_accuracy, dict) else ref_accuracy
    drop = make_drop(acc, ref)
    return {"accuracy": dump(acc) if acc else None, "drop": dump(drop) if drop else None}
