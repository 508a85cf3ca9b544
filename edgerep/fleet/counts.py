"""Accuracy as counts that add up across shards: a merge sums (correct, total), never averages of averages.

Fidelity merges the same way: sums of per-sample cosines, of reference energy and of error energy.
"""
from __future__ import annotations

import math

import numpy as np

from edgerep.bench import metrics
from edgerep.report.models import dump
from edgerep.report.models.results import Accuracy, Fidelity, make_accuracy

FIELDS = ("samples", "correct1", "correct5", "agree", "cos_sum", "signal", "noise", "nonfinite")


def shard_counts(outputs: np.ndarray, labels: np.ndarray | None, reference: np.ndarray | None) -> dict:
    """The additive counts of one shard's outputs (``None`` where labels or the reference are absent)."""
    n = int(outputs.shape[0])
    c: dict = {k: None for k in FIELDS}
    c["samples"] = n
    c["nonfinite"] = metrics.nonfinite_rows(outputs) if n else 0
    classifier = outputs.ndim == 2
    if labels is not None and classifier:
        c["correct1"] = metrics.topk_correct(outputs, labels, 1) if n else 0
        c["correct5"] = metrics.topk_correct(outputs, labels, 5) if n else 0
    if reference is not None and n:
        r = reference.reshape(n, -1).astype(np.float64)
        o = outputs.reshape(n, -1).astype(np.float64)
        c["cos_sum"] = metrics.cosine(r, o) * n
        c["signal"] = float((r ** 2).sum())
        c["noise"] = float(((r - o) ** 2).sum())
        if classifier:
            c["agree"] = int(round(metrics.argmax_agreement(r, o) * n))
    return c


def merge(parts: list[dict]) -> dict:
    """Sum the counts of several shards (a field is None if any shard lacks it)."""
    out: dict = {}
    for k in FIELDS:
        vals = [p.get(k) for p in parts]
        out[k] = None if not parts or any(v is None for v in vals) else sum(vals)
    return out


def _cosine_sqnr(c: dict) -> tuple[float | None, float | None]:
    """Mean cosine and SQNR (dB) from the summed cosines and energies (None where absent; JSON has no NaN)."""
    n = c.get("samples") or 0
    sqnr = None
    if c.get("noise") is not None:
        sqnr = 999.0 if c["noise"] == 0 else (10.0 * math.log10(c["signal"] / c["noise"]) if c["signal"] else -999.0)
    cosine = c["cos_sum"] / n if n and c.get("cos_sum") is not None else None
    nan = (lambda v: None if isinstance(v, float) and math.isnan(v) else v)
    return nan(cosine), nan(sqnr)


def accuracy_model(c: dict) -> Accuracy | None:
    """Counts -> the report's typed accuracy (``make_accuracy``: top-1 with labels, else agreement with the
    unfolded model, else cosine), with fidelity from the summed cosines and energies."""
    cosine, sqnr = _cosine_sqnr(c)
    return make_accuracy(samples=c.get("samples") or 0,
                         classifier=c.get("correct1") is not None or c.get("agree") is not None,
                         labelled=c.get("correct1") is not None, correct=c.get("correct1"), correct5=c.get("correct5"),
                         agree=c.get("agree"), cosine=cosine, sqnr_db=sqnr, nonfinite=c.get("nonfinite") or 0)


def fidelity_model(c: dict) -> Fidelity | None:
    """Counts -> the fidelity against the unfolded model (cosine, SQNR) a detector's or an SR row carries."""
    cosine, sqnr = _cosine_sqnr(c)
    return Fidelity(cosine=cosine, sqnr_db=sqnr) if cosine is not None or sqnr is not None else None


def accuracy(c: dict) -> dict | None:
    """Counts -> the report's accuracy block, serialized (``accuracy_model``)."""
    acc = accuracy_model(c)
    return dump(acc) if acc is not None else None
