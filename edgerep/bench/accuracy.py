"""Accuracy of an engine on a data set, and its fidelity against the unfolded reference model."""
from __future__ import annotations

import math
from typing import Callable, Iterable

import numpy as np

from edgerep.bench import metrics
from edgerep.engines.base import Engine
from edgerep.plugins import load_function
from edgerep.report.models.results import Accuracy, Majority, make_accuracy

UserMetric = Callable[[np.ndarray, "np.ndarray | None", np.ndarray], "dict[str, float] | float"]


def load_user_metric(spec: str) -> UserMetric:
    """``package.module:function`` -> the function ``(outputs, labels_or_None, reference) -> dict | float``."""
    return load_function(spec, "--metric")


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


def _finite(v: float | None) -> float | None:
    """JSON has no inf and no NaN: an infinite ratio (identical outputs) is +-999 dB, NaN is null."""
    if v is None or math.isnan(v):
        return None
    return (999.0 if v > 0 else -999.0) if math.isinf(v) else float(v)


def user_values(user_metric: UserMetric, outputs: np.ndarray, labels: np.ndarray | None,
                reference: np.ndarray | None) -> dict[str, float]:
    """``--metric``'s value(s) on ``outputs`` (against the reference, else the outputs themselves), as the report's
    ``user`` block: a number becomes ``{"metric": v}``, a mapping keeps its names."""
    value = user_metric(outputs, labels, reference if reference is not None else outputs)
    if isinstance(value, (int, float)):
        return {"metric": float(value)}
    return {str(k): float(v) for k, v in dict(value).items()}


def score(outputs: np.ndarray, labels: np.ndarray | None, reference: np.ndarray | None,
          user_metric: UserMetric | None = None, classifier: bool = True) -> Accuracy | None:
    """The report's accuracy of collected outputs (``edgerep.report.models.make_accuracy``): top-1 against labels
    where a classifier has them, else agreement with (or cosine to) the reference; fidelity against the
    reference beside it. Labels and reference are both optional; None when nothing can be scored."""
    n = int(outputs.shape[0])
    kw: dict = {"samples": n, "classifier": classifier, "labelled": labels is not None,
                "nonfinite": metrics.nonfinite_rows(outputs) if n else 0}
    if labels is not None and classifier and n:
        kw["correct"] = metrics.topk_correct(outputs, labels, 1)
        kw["correct5"] = metrics.topk_correct(outputs, labels, 5)
    if reference is not None and n:
        kw["cosine"] = _finite(metrics.cosine(reference, outputs))
        kw["sqnr_db"] = _finite(metrics.sqnr_db(reference, outputs))
        kw["psnr_db"] = _finite(metrics.psnr_db(reference, outputs))
        if classifier:
            kw["agree"] = int(round(metrics.argmax_agreement(reference, outputs) * n))
    if user_metric is not None:
        kw["user"] = user_values(user_metric, outputs, labels, reference)
    return make_accuracy(**kw)


def baseline_accuracy(ref_out: np.ndarray, labels: np.ndarray | None, user_metric: UserMetric | None = None,
                      classifier: bool = True) -> Accuracy | None:
    """The unfolded FP32 reference's accuracy on the test set, with its class count and what always answering
    the most common label scores (the gate's chance level)."""
    acc = score(ref_out, labels, ref_out, user_metric, classifier)
    if acc is not None and classifier:
        acc.classes = int(ref_out.shape[1])
        if labels is not None and len(labels):
            counts = np.bincount(labels.astype(np.int64).clip(min=0))
            acc.majority = Majority(class_=int(counts.argmax()), count=int(counts.max()))
    return acc
