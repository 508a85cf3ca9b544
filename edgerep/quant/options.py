"""What ``quantize_model`` is asked to do, grouped by concern: what to target, how to calibrate, how to judge.

Each group checks its own values when it is made, so a value that cannot work is refused before any
work, with an error naming the field (``QuantizeOptionError.field``, e.g. ``calibration.method``) that
a command can map to its flag.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from edgerep.errors import EdgerepError
from edgerep.quant.calibrate import METHODS
from edgerep.quant.cpu_features import CpuFeatures
from edgerep.quant.policy import cpu_candidates, with_int8_prelu

TARGETS = ("cpu", "tensorrt")


class QuantizeOptionError(EdgerepError):
    """An option value that cannot work; ``field`` is its dotted name in ``QuantizeOptions``."""

    def __init__(self, field_name: str, reason: str):
        self.field, self.reason = field_name, reason
        super().__init__(f"{field_name}: {reason}")


def _names(group: str, name: str, value) -> tuple[str, ...] | None:
    """``value`` as a tuple of names (a bare string is refused: it would iterate as letters)."""
    if value is None:
        return None
    if isinstance(value, str):
        raise QuantizeOptionError(f"{group}.{name}", f"expected a tuple of names, got the string {value!r}")
    return tuple(value)


def _count(where: str, value: int | None) -> None:
    """A sample or batch count: a positive integer (None, where allowed, means all)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
        raise QuantizeOptionError(where, f"expected a positive integer, got {value!r}")


@dataclass(frozen=True)
class TargetOptions:
    """What to write: one QDQ file per target, and which CPU policies to try (``None``: every policy this
    CPU's ISA offers; a pinned policy is still verified). ``cpu`` overrides the detected CPU."""

    targets: tuple[str, ...] = TARGETS
    cpu_policies: tuple[str, ...] | None = None
    cpu: CpuFeatures | None = None

    def __post_init__(self) -> None:
        targets = _names("target", "targets", self.targets)
        if not targets:
            raise QuantizeOptionError("target.targets", f"none named (expected one or more of {', '.join(TARGETS)})")
        unknown = [t for t in targets if t not in TARGETS]
        if unknown:
            raise QuantizeOptionError("target.targets", f"unknown {', '.join(unknown)} (expected {', '.join(TARGETS)})")
        object.__setattr__(self, "targets", targets)
        object.__setattr__(self, "cpu_policies", _names("target", "cpu_policies", self.cpu_policies))

    def check_cpu(self, cpu: CpuFeatures) -> None:
        """A pinned CPU policy must be one ``cpu`` offers (known only once the CPU is)."""
        offered = cpu_candidates(cpu)
        base = [p.name for p in offered]
        known = [p.name for p in with_int8_prelu(offered)]
        only = self.cpu_policies
        if only is not None and (not only or any(p not in known for p in only)):
            raise QuantizeOptionError("target.cpu_policies", f"cpu policy {', '.join(only) or '(none)'}: this CPU "
                                                             f"({cpu.int8_dot}) offers {', '.join(base)} (each with "
                                                             f"a -prelu8 twin: PReLU on the integers)")


@dataclass(frozen=True)
class CalibrationOptions:
    """How ranges and weights are prepared: the range ``method`` (``auto`` chooses on the selection set),
    how many calibration ``samples``, where ranges are cached, cross-layer equalization, bias correction."""

    method: str = "auto"
    samples: int | None = 256
    cache_dir: Path | None = None
    equalize: bool = True
    bias_correction: bool = True

    def __post_init__(self) -> None:
        if self.method != "auto" and self.method not in METHODS:
            raise QuantizeOptionError("calibration.method",
                                      f"{self.method!r}: expected auto or one of {', '.join(METHODS)}")
        _count("calibration.samples", self.samples)


@dataclass(frozen=True)
class JudgeOptions:
    """How every choice is judged on the selection set: ``max_drop`` is the budget in the measure's points
    (``None``: accept within 0.5 and never keep layers in float), ``samples`` caps the selection set,
    ``threads`` the onnxruntime sessions (None or 0: the default). ``outputs_cache``: a folder where each
    onnxruntime pass's outputs are kept per file, session settings and input batch (``edgerep.reference_cache``):
    a second run on the same files and data reads them instead of running (None: nothing is kept)."""

    max_drop: float | None = 0.5
    samples: int | None = None
    threads: int | None = None
    outputs_cache: Path | None = None

    def __post_init__(self) -> None:
        drop = self.max_drop
        if drop is not None and not (isinstance(drop, (int, float)) and math.isfinite(drop) and drop >= 0):
            raise QuantizeOptionError("judge.max_drop", f"expected a finite number >= 0, got {drop!r}")
        _count("judge.samples", self.samples)

    @property
    def budget(self) -> float:
        """The acceptance budget in points (0.5 when ``max_drop`` is None)."""
        return 0.5 if self.max_drop is None else float(self.max_drop)

    @property
    def keeps_layers_in_float(self) -> bool:
        """Whether a missed budget may be met by keeping the most sensitive layers in float."""
        return self.max_drop is not None


RECOVER_MODES = ("none", "auto", "adaround", "qat")


@dataclass(frozen=True)
class RecoveryOptions:
    """The recovery ladder run when PTQ misses the budget (``edgerep.quant.recover``), then layers in float:
    ``none`` (no learning step), ``auto`` (AdaRound, then QAT), ``adaround`` (AdaRound only), ``qat`` (QAT
    only). ``iters``: AdaRound's Adam steps per layer; ``qat_steps``: QAT's fine-tuning steps; ``layers``:
    AdaRound on ``all`` quantizable layers (the default: on the dying-ReLU benchmark the 2 ``worst`` layers
    left a 2.8-3.9 point selection drop where all 8 left 0.56) or on the ``worst`` (the fewest that
    ``edgerep debug`` ranks as adding 90% of the noise)."""

    mode: str = "none"
    iters: int = 500
    qat_steps: int = 300
    layers: str = "all"
    torch_threads: int = 1  # the learning steps' torch threads (their ops are small: see docs/recovery.md)

    def __post_init__(self) -> None:
        if self.mode not in RECOVER_MODES:
            raise QuantizeOptionError("recovery.mode", f"{self.mode!r}: expected one of {', '.join(RECOVER_MODES)}")
        if self.layers not in ("all", "worst"):
            raise QuantizeOptionError("recovery.layers", f"{self.layers!r}: expected all or worst")
        _count("recovery.iters", self.iters)
        _count("recovery.qat_steps", self.qat_steps)
        _count("recovery.torch_threads", self.torch_threads)

    @property
    def steps(self) -> tuple[str, ...]:
        """The learning steps of the ladder, in order."""
        return {"none": (), "auto": ("adaround", "qat"), "adaround": ("adaround",), "qat": ("qat",)}[self.mode]


@dataclass(frozen=True)
class QuantizeOptions:
    """Everything ``quantize_model`` is asked to do; ``batch_size`` is the batch for calibration and judging
    (a static-batch model overrides it with its own)."""

    target: TargetOptions = field(default_factory=TargetOptions)
    calibration: CalibrationOptions = field(default_factory=CalibrationOptions)
    judge: JudgeOptions = field(default_factory=JudgeOptions)
    batch_size: int = 64
    recovery: RecoveryOptions = field(default_factory=RecoveryOptions)

    def __post_init__(self) -> None:
        if self.batch_size is None:
            raise QuantizeOptionError("batch_size", "expected a positive integer, got None")
        _count("batch_size", self.batch_size)
