"""Automatic mixed precision: keep the layers INT8 hurts most in float until the accuracy budget holds.

Sensitivity of a layer = the accuracy drop (then the logit error, to break ties) when *only* that
layer is quantized, measured on the engine as it runs. Layers leave INT8 most-sensitive first,
and the whole model is re-measured after each exclusion, until the drop is within ``max_drop``
(decided on paired counts: ``edgerep.quant.paired``).
On onnxruntime an excluded layer runs FP32; in the TensorRT file it has no Q/DQ, so TensorRT
builds it in FP16 (or FP32 without the FP16 flag).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

from edgerep.quant.paired import Paired, Verdict, judge


@dataclass
class Score:
    """One measurement of a (partly) quantized model against the reference."""

    drop: float  # accuracy points lost vs the reference (or 100 - top-1 agreement without labels)
    error: float  # mean squared logit error relative to the reference's mean square
    top1: float | None = None
    agreement: float | None = None
    paired: Paired | None = None  # per-image counts vs the reference (labelled classifiers)
    correct: Any = field(default=None, repr=False, compare=False)  # per-image correctness (bool array)
    unit: str = "points"  # the drop's unit (the task's: points; dB for super-resolution)

    def verdict(self, budget: float) -> Verdict:
        """Within ``budget`` or shown worse, decided on the paired counts when there are any."""
        return judge(self.drop, budget, self.paired, unit=self.unit)


@dataclass
class MixedResult:
    """Which layers stayed in float, why, and whether the budget was met."""

    excluded: list[dict] = field(default_factory=list)  # {node, sensitivity_drop, sensitivity_error, why}
    sensitivity: list[dict] = field(default_factory=list)
    final: Score | None = None
    met: bool = False
    evaluations: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        if d.get("final"):
            d["final"].pop("correct", None)
        return d


def mixed_precision(nodes: Sequence[str], score: Callable[..., Score], max_drop: float, *,
                    max_excluded: int | None = None, start: Score | None = None) -> MixedResult:
    """Greedy exclusion. ``score(exclude=[...], only=None|[...]) -> Score`` measures a QDQ variant."""
    res = MixedResult()
    current = start if start is not None else score(exclude=[], only=None)
    res.evaluations += 0 if start is not None else 1
    if current.verdict(max_drop).holds:
        res.final, res.met = current, True
        return res
    sens = []
    for n in nodes:
        s = score(exclude=[], only=[n])
        res.evaluations += 1
        sens.append((s.drop, s.error, n))
    sens.sort(key=lambda t: (-t[0], -t[1]))
    res.sensitivity = [{"node": n, "drop_alone": round(d, 4), "error_alone": e} for d, e, n in sens]
    limit = max_excluded if max_excluded is not None else len(nodes)
    excluded: list[str] = []
    for d, e, n in sens[:limit]:
        excluded.append(n)
        current = score(exclude=list(excluded), only=None)
        res.evaluations += 1
        res.excluded.append({"node": n, "sensitivity_drop": round(d, 4), "sensitivity_error": e,
                             "why": f"quantizing only this layer costs {d:.2f} points (logit error {e:.2e}), "
                                    f"rank {len(excluded)} of {len(nodes)}; with it in float the model's drop is "
                                    f"{current.drop:.2f}"})
        if current.verdict(max_drop).holds:
            res.met = True
            break
    res.final = current
    return res
