"""The recovery ladder's record: PTQ -> AdaRound -> layers in float, each step scored on the selection set.

``quantize_model`` climbs the ladder per target (``edgerep.quant.pipeline``): PTQ as before (best range
method, per-channel weights, equalization, bias correction); when no file meets the budget and the options
allow it, AdaRound (``edgerep.quant.adaround``) learns the rounding of every layer on the calibration images
and the target's files are measured again from the learned weights; only if that misses too do layers leave
INT8 (mixed precision, the last step). The first step that meets the budget wins. This module holds what
the report says about it: each step's selection-set drop, verdict, time and what it changed.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class LadderStep:
    """One rung as measured on the selection set for one target."""

    step: str  # ptq | adaround | qat | mixed
    target: str  # cpu | tensorrt
    file: str  # the candidate measured (policy name, with +adaround / +fp32[n])
    drop: float  # in the task's unit, vs the reference (selection set)
    met: bool  # the budget holds (paired counts where there are any)
    verdict: str
    seconds: float  # this step's own work (learning, writing and scoring its files)
    changed: str  # what the step changed, in words
    layers_in_float: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Recovery:
    """The ladder: the mode asked, every step measured, the winning step per target, AdaRound's per-layer log."""

    mode: str
    steps: list[LadderStep] = field(default_factory=list)
    winner: dict[str, str] = field(default_factory=dict)  # target -> step
    adaround: dict[str, Any] | None = None
    qat: dict[str, Any] | None = None
    learned: dict[str, Any] = field(default_factory=dict, repr=False)  # "cpu+adaround"... -> node -> int8 (not reported)
    learned_on: str = "calibration"  # or "train": the --train-data set

    def add(self, step: LadderStep) -> None:
        """Record ``step``; the first step that meets the budget wins its target."""
        self.steps.append(step)
        if step.met and step.target not in self.winner:
            self.winner[step.target] = step.step

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "steps": [s.to_dict() for s in self.steps], "winner": dict(self.winner),
                "adaround": self.adaround, "qat": self.qat, "learned_on": self.learned_on}


def unused_train_data(has_train: bool, mode: str) -> str | None:
    """What to say when ``--train-data`` was given but no learning step can read it (``--recover none``)."""
    if has_train and mode == "none":
        return ("--train-data is read only by the recovery ladder (--recover auto|adaround|qat); with --recover "
                "none nothing learns on it")
    return None


def adaround_changed(summary: dict[str, Any]) -> str:
    """AdaRound's effect in words, from ``AdaRoundResult.to_dict()``."""
    layers = [r for r in summary.get("layers", []) if not r.get("skipped")]
    return (f"learned rounding in {len(layers)} layer(s): {summary.get('flipped', 0)} of {summary.get('weights', 0)} "
            "weights rounded the other way from nearest, biases corrected for the mean shift")


def qat_changed(summary: dict[str, Any]) -> str:
    """QAT's effect in words, from ``QatResult.to_dict()``."""
    return (f"{summary.get('steps', 0)} fine-tuning steps with fake quantization, distilled from "
            f"{summary.get('teacher', 'the FP32 model')}: output MSE {summary.get('distillation_mse_first', 0):.3e} -> "
            f"{summary.get('distillation_mse_last', 0):.3e}; weights and biases of {summary.get('layers', 0)} layer(s) "
            "changed, snapped to their int8 grid")


__all__ = ["LadderStep", "Recovery", "adaround_changed", "qat_changed", "unused_train_data"]
