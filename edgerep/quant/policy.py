"""Target policies: the QDQ settings each engine needs, and the CPU candidates per instruction set.

TensorRT has one policy (int8 symmetric everywhere, zero point 0, per-channel weights on axis 0,
float bias, Q/DQ on residual Add inputs). The CPU policy is *chosen*: candidates are listed in the
order they are expected to be fast on this ISA, each is measured on the optimized onnxruntime
session; among those whose accuracy holds, the simplest wins unless another is faster beyond the
measured noise (see ``edgerep.quant.pipeline`` and ``edgerep.bench.ranking``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgerep.quant.cpu_features import CpuFeatures
from edgerep.quant.qdq import QdqConfig

TENSORRT = QdqConfig(activation="s8", weight="s8", per_channel=True, reduce_range=False,
                     symmetric_activations=True, quantize_bias=False, qdq_on_add=True, bias_correction=True)
X64_PRECISION = {"session.x64quantprecision": "1"}


@dataclass(frozen=True)
class CpuPolicy:
    """One way to run INT8 on onnxruntime CPU: a QDQ config plus the session options it needs."""

    name: str
    qdq: QdqConfig
    session_config: dict[str, str] = field(default_factory=dict)
    expectation: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "qdq": self.qdq.to_dict(), "session_config": dict(self.session_config),
                "expectation": self.expectation}


def _p(name: str, act: str, reduce: bool, cfg: dict[str, str] | None, why: str, **qdq: bool) -> CpuPolicy:
    return CpuPolicy(name, QdqConfig(activation=act, weight="s8", per_channel=True, reduce_range=reduce,
                                     prelu_as_max=True, movement_int8=True, **qdq),
                     dict(cfg or {}), why)


PRELU_INT8_SUFFIX = "-prelu8"


def with_int8_prelu(policies: list[CpuPolicy]) -> list[CpuPolicy]:
    """Each policy, then its twin whose PReLUs run on the integers (``QdqConfig.prelu_int8``: a depthwise
    QLinearConv by the slopes + Max, the PReLU's output on its input's grid): faster, and a little less accurate
    (the output's grid is coarser), so both are measured and the latency ranking picks the twin only when it is
    faster beyond the noise. For a model with a PReLU whose slopes are all in [0, 1] (``prelu.int8_prelus``)."""
    from dataclasses import replace

    out = []
    for p in policies:
        twin = CpuPolicy(p.name + PRELU_INT8_SUFFIX, replace(p.qdq, prelu_int8=True), dict(p.session_config),
                         p.expectation + "; PReLU on the integers (depthwise conv by the slopes + Max), its output on "
                                       "its input's grid")
        out += [p, twin]
    return out


def by_simplicity(policies: list[CpuPolicy]) -> list[CpuPolicy]:
    """Simplest first: no session flags before flags, 8-bit weights before 7-bit, then the ISA's order.
    Latency overrules this order only beyond the measured noise (``edgerep.bench.ranking``)."""
    return sorted(policies, key=lambda p: (bool(p.session_config), p.qdq.reduce_range, p.qdq.prelu_int8,
                                           policies.index(p)))


def cpu_candidates(cpu: CpuFeatures) -> list[CpuPolicy]:
    """CPU policies to try, fastest-expected first, with why each is expected to hold or not."""
    if cpu.u8s8_saturates:  # x86 without VNNI: vpmaddubsw sums u8*s8 pairs into int16
        return [
            _p("u8s8-w7", "u8", True, None,
               "AVX2 without VNNI: 7-bit weights keep u8*s8 pair sums below int16 saturation (fastest exact path)"),
            _p("s8s8-w7", "s8", True, None, "AVX2: 7-bit weights cannot saturate; s8 activations are shifted to u8"),
            _p("u8s8", "u8", False, None, "AVX2: 8-bit weights may saturate the int16 pair sums; kept only if accuracy holds"),
            _p("s8s8", "s8", False, None, "AVX2: s8 activations shifted to u8 saturate most often; kept only if accuracy holds"),
            _p("u8s8-x64prec", "u8", False, X64_PRECISION,
               "AVX2: session.x64quantprecision=1 avoids saturation with 8-bit weights but loses most of the speed-up"),
        ]
    if cpu.int8_dot in ("amx", "avx512_vnni", "avx_vnni"):
        why = f"{cpu.int8_dot}: vpdpbusd accumulates u8*s8 in int32, no saturation"
        pad = {"pad_narrow_convs": cpu.int8_dot in ("amx", "avx512_vnni")}  # measured there (conv_pad)
        return [_p("u8s8", "u8", False, None, why, **pad), _p("s8s8", "s8", False, None, why, **pad),
                _p("u8s8-w7", "u8", True, None, "7-bit weights: a fallback if 8-bit loses accuracy", **pad)]
    if cpu.arch == "aarch64":
        why = f"ARM {cpu.int8_dot}: sdot/udot accumulate in int32, no saturation"
        return [_p("s8s8", "s8", False, None, why), _p("u8s8", "u8", False, None, why),
                _p("u8s8-w7", "u8", True, None, "7-bit weights: a fallback if 8-bit loses accuracy")]
    return [_p("u8s8-w7", "u8", True, None, f"unknown INT8 path ({cpu.int8_dot}): 7-bit weights are safe everywhere"),
            _p("u8s8", "u8", False, None, "8-bit weights, kept only if accuracy holds")]
