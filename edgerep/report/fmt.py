"""Numbers for people: one place that rounds percentages, latencies and accuracy figures."""
from __future__ import annotations

import math

#: below this many images an accuracy figure gets a small-sample caveat
SMALL_SAMPLE = 100

DASH = "–"


def _bad(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def pct(v: float | None, signed: bool = False) -> str:
    """A percentage (already in %) with 2 decimals: ``99.07%``."""
    if _bad(v):
        return DASH
    return f"{v:+.2f}%" if signed else f"{v:.2f}%"


def points(v: float | None, signed: bool = True) -> str:
    """Top-1 percentage points with 2 decimals: ``+0.19``."""
    if _bad(v):
        return DASH
    return f"{v:+.2f}" if signed else f"{v:.2f}"


def ms(v: float | None) -> str:
    """A latency in ms with 3 significant digits, never in scientific notation."""
    if _bad(v):
        return DASH
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"


def count(v: float | None) -> str:
    """A count or rate without decimals, with thousands separators: ``12,466``."""
    return DASH if _bad(v) else f"{v:,.0f}"


def sci(v: float | None) -> str:
    """A small error: ``4.24e-07``."""
    return DASH if _bad(v) else f"{v:.2e}"


def correct_of(top1: float | None, samples: int | None) -> int | None:
    """How many images a top-1 percentage stands for."""
    if _bad(top1) or not samples:
        return None
    return int(round(top1 * samples / 100.0))


def accuracy(top1: float | None, samples: int | None) -> str:
    """Top-1 with the sample count beside it: ``99.07% (534 of 539)``; a caveat when few images."""
    if _bad(top1):
        return DASH
    n = correct_of(top1, samples)
    if n is None:
        return pct(top1)
    return f"{pct(top1)} ({n} of {samples}{', few images' if samples < SMALL_SAMPLE else ''})"


def detection(acc: dict | None, short: bool = False) -> str:
    """A detector's accuracy with its counts: ``mAP 45.21, mAP@.5 70.10 (500 images, 1734 instances)``;
    ``short`` (a table under a heading that names them): ``45.21 (70.10; 500 images, 1734 inst.)``."""
    if not acc or _bad(acc.get("value")):
        return DASH
    m50 = points(acc.get("map50"), signed=False)
    if short:
        return f"{acc['value']:.2f} ({m50}; {acc.get('samples')} images, {acc.get('instances')} inst.)"
    return f"mAP {acc['value']:.2f}, mAP@.5 {m50} ({acc.get('samples')} images, {acc.get('instances')} instances)"


def small_sample_note(samples: int | None, what: str = "this figure") -> str:
    """A caveat sentence when ``samples`` is small (empty otherwise)."""
    if not samples or samples >= SMALL_SAMPLE:
        return ""
    step = 100.0 / samples
    return (f"{what} uses only {samples} images: one image moves it by {step:.2f} points, "
            "so read it as a rough sign, not an accuracy")


def seconds(v: float | None) -> str:
    """A duration: ``1.9 s``."""
    return DASH if _bad(v) else (f"{v:.2f} s" if v < 10 else f"{v:.0f} s")


def metric_value(acc: dict | None) -> str:
    """A serialized accuracy's value with its unit: ``99.44%``, ``41.20 points``, ``31.7 dB``, ``0.9998``."""
    if not acc or acc.get("value") is None:
        return "n/a"
    v, unit = float(acc["value"]), acc.get("unit")
    return f"{v:.2f}%" if unit == "%" else f"{v:.4f}" if unit == "cosine" else f"{v:.2f} {unit}"
