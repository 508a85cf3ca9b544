"""Accuracy of an engine on a data set, and its fidelity against the unfolded reference model."""
from __future__ import annotations

import importlib
import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable

import numpy as np

from edgerep.bench import metrics
from edgerep.engines.base import Engine
from edgerep.errors import EdgerepError

UserMetric = Callable[[np.ndarray, "np.ndarray | None", np.ndarray], "dict[str, float] | float"]


@dataclass
class AccuracyResult:
    """Top-1/top-5 where labels exist; fidelity (cosine, SQNR, PSNR, top-1 agreement) against the reference."""

    samples: int
    top1: float | None = None  # percent
    top5: float | None = None  # percent
    cosine: float | None = None
    sqnr_db: float | None = None
    psnr_db: float | None = None
    top1_agreement: float | None = None  # percent
    nonfinite: int = 0  # output rows holding a NaN or an Inf: never correct, and the gate fails the engine
    user: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        for k, v in list(d.items()):  # JSON has no inf and no NaN
            if isinstance(v, float) and math.isinf(v):
                d[k] = 999.0 if v > 0 else -999.0
            elif isinstance(v, float) and math.isnan(v):
                d[k] = None
        return d


def load_user_metric(spec: str) -> UserMetric:
    """``package.module:function`` -> the function ``(outputs, labels_or_None, reference) -> dict | float``."""
    if ":" not in spec:
        raise EdgerepError(f"--metric {spec!r} is not of the form package.module:function")
    mod_name, fn_name = spec.split(":", 1)
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as e:
        raise EdgerepError(f"--metric {spec!r} cannot be imported: {e}") from None
    if not callable(fn):
        raise EdgerepError(f"--metric {spec!r} is not callable")
    return fn


def collect_outputs(engine: Engine, batches: Iterable[tuple[np.ndarray, np.ndarray | None]]
                    ) -> tuple[np.ndarray, np.ndarray | None]:
    """Run every batch through the engine; return (outputs, labels or None if any batch has none)."""
    from edgerep.progress import counted

    outs, labels = [], []
    has_labels = True
    name = getattr(engine, "name", None) or "engine"
    with counted(f"{name} {getattr(engine, 'precision', '')}".strip(), getattr(batches, "samples", None)) as tick:
        for x, y in batches:
            outs.append(np.asarray(engine.run(x), dtype=np.float32))
            if y is None:
                has_labels = False
            else:
                labels.append(np.asarray(y))
            tick(len(x))
    out = np.concatenate(outs) if outs else np.zeros((0,), np.float32)
    return out, (np.concatenate(labels) if has_labels and labels else None)


def score(outputs: np.ndarray, labels: np.ndarray | None, reference: np.ndarray | None,
          user_metric: UserMetric | None = None, classifier: bool = True) -> AccuracyResult:
    """All metrics from collected outputs; labels and reference are both optional."""
    n = int(outputs.shape[0])
    res = AccuracyResult(samples=n, nonfinite=metrics.nonfinite_rows(outputs) if n else 0)
    if labels is not None and classifier and n:
        res.top1 = 100.0 * metrics.topk_correct(outputs, labels, 1) / n
        res.top5 = 100.0 * metrics.topk_correct(outputs, labels, 5) / n
    if reference is not None and n:
        res.cosine = metrics.cosine(reference, outputs)
        res.sqnr_db = metrics.sqnr_db(reference, outputs)
        res.psnr_db = metrics.psnr_db(reference, outputs)
        if classifier:
            res.top1_agreement = 100.0 * metrics.argmax_agreement(reference, outputs)
    if user_metric is not None:
        value = user_metric(outputs, labels, reference if reference is not None else outputs)
        res.user = {"metric": float(value)} if isinstance(value, (int, float)) else \
            {str(k): float(v) for k, v in dict(value).items()}
    return res
