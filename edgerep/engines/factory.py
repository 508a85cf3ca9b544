"""Build the engines a target profile asks for, falling back to onnxruntime on the CPU where needed.

Every requested engine yields one ``BuiltEngine`` whose ``status`` says what happened:
``built`` (made now), ``cached`` (a compatible TensorRT plan was reused), ``fallback`` (the
target wants TensorRT or a GPU this machine lacks, so an onnxruntime/torch CPU engine stands
in; ``reason`` says why), ``skipped`` (absent by the profile's own rule: its stand-in is an engine
the profile already lists, or the caller gave no torch model, as fleet nodes never get one) or
``failed`` (asked for and not built: the build raised, an input is missing, or the profile forbids
the stand-in it would need). A gate fails a ``failed`` engine, naming the reason.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from torch import nn

from edgerep.engines.base import Engine
from edgerep.engines.profiles import EngineSpec, TargetProfile
from edgerep.errors import EdgerepError, EngineError

Progress = Callable[[str], None]


@dataclass
class BuiltEngine:
    """The outcome for one engine spec of a profile."""

    spec: EngineSpec  # what the profile asked for
    engine: Engine | None  # ready to run, or None when skipped
    status: str  # "built" | "cached" | "fallback" | "skipped" (absent by the profile's rule) | "failed"
    reason: str = ""
    artifact: Path | None = None  # plan path (TensorRT) or ONNX path (onnxruntime); None for torch
    actual: EngineSpec | None = None  # what runs instead, for a fallback (None: the spec itself, or nothing)
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec.to_dict(),
            "actual": (self.actual or self.spec).to_dict(),
            "status": self.status,
            "reason": self.reason,
            "artifact": str(self.artifact) if self.artifact else None,
            "seconds": round(self.seconds, 3),
            "engine": self.engine.describe() if self.engine is not None else None,
            **({"details": self.details} if self.details else {}),
        }


def _ort_providers() -> list[str]:
    try:
        import onnxruntime as ort
    except ImportError:
        from edgerep.interrupts import raise_if_taken

        raise_if_taken()  # a signal during its native module's init reaches us as an ImportError (pybind11)
        return []
    return list(ort.get_available_providers())


def _resolve(spec: EngineSpec, profile: TargetProfile, trt_ok: tuple[bool, str], cuda_ok: bool,
             providers: list[str]) -> tuple[EngineSpec, str]:
    """What actually runs for ``spec`` here, and why it differs ('' when it does not)."""
    if spec.backend == "tensorrt" and not trt_ok[0]:
        reason = trt_ok[1]
    elif spec.backend == "torch" and spec.device_kind == "cuda" and not cuda_ok:
        return replace(spec, device="cpu", precision="fp32"), "torch sees no CUDA device; torch on the CPU stands in"
    elif spec.backend == "onnxruntime" and spec.device_kind == "cuda" and "CUDAExecutionProvider" not in providers:
        reason = "this onnxruntime build has no CUDAExecutionProvider"
    else:
        return spec, ""
    if profile.fallback == "none":
        return spec, reason
    precision = "int8" if spec.precision == "int8" else "fp32"  # onnxruntime CPU has no useful fp16 path
    policy = "cpu" if precision == "int8" else None  # the ISA-aware QDQ file, when the quantizer wrote one
    return EngineSpec("onnxruntime", precision, "cpu", policy), f"{reason}; {profile.fallback} stands in"


def unavailable_engines(profile: TargetProfile) -> list[tuple[EngineSpec, str]]:
    """The engines of ``profile`` that cannot run on this machine as asked, each with why
    (a stand-in may still run for them, per the profile's ``fallback``)."""
    from edgerep.engines import tensorrt_engine as te
    from edgerep.engines.torch_engine import cuda_available

    trt_ok, cuda_ok, providers = te.tensorrt_status(), cuda_available(), _ort_providers()
    out = []
    for spec in profile.engines:
        _, why = _resolve(spec, profile, trt_ok, cuda_ok, providers)
        if why:
            out.append((spec, why))
    return out


def build_engines(profile: TargetProfile, *, fp32_onnx: str | os.PathLike[str] | None,
                  int8_onnx: dict[str, Path] | None, torch_model: nn.Module | None,
                  out_dir: str | os.PathLike[str], ort_session_config: dict[str, str] | None = None,
                  progress: Progress | None = None, rebuild: bool = False,
                  timing_cache_dir: str | os.PathLike[str] | None = None) -> list[BuiltEngine]:
    """One ``BuiltEngine`` per engine of ``profile``, in the profile's order.

    ``int8_onnx`` maps a QDQ policy ("tensorrt", "cpu") to its file. TensorRT plans (and their
    sidecars) go to ``out_dir``; a compatible plan already there is reused ("cached"). A plan
    built by another TensorRT or GPU raises ``StalePlanError`` unless ``rebuild`` is set.
    """
    from edgerep.engines import tensorrt_engine as te
    from edgerep.engines.torch_engine import cuda_available

    say = progress or (lambda _msg: None)
    out = Path(out_dir)
    int8_onnx = {k: Path(v) for k, v in (int8_onnx or {}).items()}
    trt_ok = te.tensorrt_status()
    cuda_ok = cuda_available()
    providers = _ort_providers()

    plans = [(spec, *_resolve(spec, profile, trt_ok, cuda_ok, providers)) for spec in profile.engines]
    # an engine the profile asks for by itself wins over the same engine standing in for another
    wanted = {spec for spec, actual, why in plans if not why}
    results: list[BuiltEngine] = []
    for spec, actual, why in plans:
        if why and actual == spec:  # no stand-in allowed (fallback = "none"): asked for, and not here
            results.append(BuiltEngine(spec, None, "failed", f"{why}, and the profile allows no stand-in "
                                       "(fallback = \"none\")"))
            continue
        same = next((j for j, r in enumerate(results) if r.engine is not None and (r.actual or r.spec) == actual),
                    None)
        if why and (same is not None or actual in wanted):
            results.append(BuiltEngine(spec, None, "skipped", f"{why}, and {actual.key} is already in this "
                                       "profile's list"))
            continue
        say(f"building {actual.key}" + (f" (for {spec.key})" if actual != spec else ""))
        t0 = time.perf_counter()
        try:
            r = _build_one(actual, profile, fp32_onnx=fp32_onnx, int8_onnx=int8_onnx, torch_model=torch_model,
                           out=out, ort_session_config=ort_session_config, rebuild=rebuild,
                           timing_cache_dir=timing_cache_dir, say=say)
        except te.StalePlanError:
            raise
        except EdgerepError as e:  # asked for and not built: a failure the gate names, never a quiet skip
            r = BuiltEngine(actual, None, "failed", e.one_line())
        r.seconds = time.perf_counter() - t0
        if actual != spec:
            r.spec = spec
            r.actual = actual if r.engine is not None else None  # nothing stands in for a skipped engine
            if r.engine is not None:
                r.status = "fallback"
            r.reason = why if not r.reason else f"{why}; {r.reason}"
        results.append(r)
        say(f"{spec.key}: {r.status}" + (f" ({r.reason})" if r.reason else ""))
    return results


def _build_one(spec: EngineSpec, profile: TargetProfile, *, fp32_onnx, int8_onnx: dict[str, Path],
               torch_model: nn.Module | None, out: Path, ort_session_config, rebuild: bool,
               timing_cache_dir, say: Progress) -> BuiltEngine:
    if spec.backend == "torch":
        if torch_model is None:
            return BuiltEngine(spec, None, "skipped", "no torch model given")
        from edgerep.engines.torch_engine import TorchEngine

        return BuiltEngine(spec, TorchEngine(torch_model, device=spec.device, precision=spec.precision), "built")

    onnx = _onnx_for(spec, fp32_onnx, int8_onnx)
    if spec.backend == "onnxruntime":
        try:
            from edgerep.engines.onnxruntime_engine import OrtEngine
        except ImportError as e:
            raise EngineError(f"onnxruntime engine unavailable: {e}") from None
        providers = (["CUDAExecutionProvider", "CPUExecutionProvider"] if spec.device_kind == "cuda"
                     else ["CPUExecutionProvider"])
        config, note = ort_session_config, ""
        if spec.precision == "int8" and Path(onnx) != int8_onnx.get("cpu"):
            config, note = standin_session_config()  # not the CPU policy's file: the policy's config is not its own
        eng = OrtEngine(onnx, precision=spec.precision, threads=profile.threads,
                        session_config=config, providers=providers)
        return BuiltEngine(spec, eng, "built", note, artifact=Path(onnx))

    from edgerep.engines import tensorrt_engine as te

    settings = te.BuildSettings.from_profile(profile, spec)
    result = te.build_or_reuse(onnx, out, settings, rebuild=rebuild, timing_cache_dir=timing_cache_dir, log=say)
    eng = te.TensorRTEngine(result.plan)
    side = result.sidecar
    details: dict[str, Any] = {"sidecar": str(result.sidecar_path)}
    reason = ""
    if side.dla_subgraphs is not None:  # a DLA plan: where its layers run, from the engine inspector
        from edgerep.engines.dla_placement import DlaPlacement

        placement = DlaPlacement([f"subgraph {i}" for i in range(side.dla_subgraphs)], list(side.gpu_fallback_layers))
        details["dla_placement"] = {"dla_subgraphs": side.dla_subgraphs, "gpu_fallback_layers": side.gpu_fallback_layers}
        reason = f"DLA: {placement.summary()}"
    return BuiltEngine(spec, eng, "cached" if result.reused else "built", reason=reason, artifact=result.plan,
                       details=details)


def standin_session_config(cpu=None) -> tuple[dict[str, str] | None, str]:
    """onnxruntime session options for running the TensorRT QDQ file (8-bit symmetric weights) on this
    CPU: where u8*s8 pair sums saturate int16 (AVX2 without VNNI), the precise x64 path, else none."""
    from edgerep.quant.cpu_features import detect_cpu_features
    from edgerep.quant.policy import X64_PRECISION

    cpu = cpu or detect_cpu_features()
    if cpu.u8s8_saturates:
        return dict(X64_PRECISION), (f"the TensorRT QDQ file runs with session.x64quantprecision=1: {cpu.int8_dot} "
                                     "kernels would saturate its 8-bit weights")
    return None, ""


def _onnx_for(spec: EngineSpec, fp32_onnx, int8_onnx: dict[str, Path]) -> Path:
    if spec.precision == "int8":
        policy = spec.policy or "tensorrt"
        path = int8_onnx.get(policy)
        if path is None and spec.backend == "onnxruntime" and int8_onnx:
            # a stand-in for a TensorRT int8 engine: the TensorRT QDQ file also runs on onnxruntime
            path = int8_onnx.get("cpu") or next(iter(int8_onnx.values()))
        if path is None:
            raise EngineError(f"no INT8 QDQ ONNX for policy '{policy}' was given",
                              hint="run `edgerep quantize` first, or drop the int8 engine from the profile")
    else:
        if fp32_onnx is None:
            raise EngineError("no FP32 ONNX file was given")
        path = Path(fp32_onnx)
    if not Path(path).is_file():
        raise EngineError(f"{path}: ONNX file not found")
    return Path(path)
