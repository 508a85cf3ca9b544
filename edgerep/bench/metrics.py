"""Pure metric functions on numpy arrays: accuracy with labels, fidelity against a reference."""
from __future__ import annotations

import math

import numpy as np


def finite_rows(outputs: np.ndarray) -> np.ndarray:
    """Per row: True when every value of the row is finite (a NaN or Inf output has no rank and no class)."""
    return np.isfinite(outputs.reshape(outputs.shape[0], -1)).all(axis=1)


def nonfinite_rows(outputs: np.ndarray) -> int:
    """How many rows hold a NaN or an Inf."""
    return int((~finite_rows(outputs)).sum()) if outputs.size else 0


def topk_correct(logits: np.ndarray, labels: np.ndarray, k: int) -> int:
    """How many rows have their label among the ``k`` largest logits. Ties (common in INT8 outputs) go
    to the lower class index, as ``argmax`` does, so top-1 never counts a tie in the model's favour.
    A row with a NaN or Inf is never correct (NaN sorts last, argmax picks it first: neither is a class)."""
    if logits.ndim != 2:
        logits = logits.reshape(logits.shape[0], -1)
    k = min(k, logits.shape[1])
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return int(((top == labels.reshape(-1, 1)).any(axis=1) & finite_rows(logits)).sum())


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean per-sample cosine similarity of flattened outputs; NaN when any row holds a NaN or Inf (a
    zero-norm row counts as 1.0, so a non-finite one must not fall into that case)."""
    a2 = a.reshape(a.shape[0], -1).astype(np.float64)
    b2 = b.reshape(b.shape[0], -1).astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        num = (a2 * b2).sum(1)
        den = np.linalg.norm(a2, axis=1) * np.linalg.norm(b2, axis=1)
        per = np.where(den > 0, num / np.maximum(den, 1e-300), 1.0)
    return float(np.mean(np.where(finite_rows(a2) & finite_rows(b2), per, np.nan)))


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB: 10 log10(sum ref^2 / sum (ref - test)^2)."""
    r = reference.astype(np.float64)
    noise = float(((r - test.astype(np.float64)) ** 2).sum())
    signal = float((r ** 2).sum())
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def psnr_db(reference: np.ndarray, test: np.ndarray, peak: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB, peak defaulting to the reference's dynamic range."""
    r = reference.astype(np.float64)
    mse = float(((r - test.astype(np.float64)) ** 2).mean())
    if mse == 0.0:
        return math.inf
    peak = float(r.max() - r.min()) if peak is None else peak
    return 10.0 * math.log10(peak * peak / mse) if peak > 0 else -math.inf


def argmax_agreement(reference: np.ndarray, test: np.ndarray) -> float:
    """Share of samples whose top-1 class is the same in both outputs (a row with a NaN or Inf in
    either has no class, so it never agrees)."""
    r = reference.reshape(reference.shape[0], -1).argmax(1)
    t = test.reshape(test.shape[0], -1).argmax(1)
    return float(((r == t) & finite_rows(reference) & finite_rows(test)).mean())
