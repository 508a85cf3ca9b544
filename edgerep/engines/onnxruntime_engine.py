"""onnxruntime CPU engine (FP32, INT8 QDQ, mixed) with every speed/accuracy setting explicit.

The graph-optimization level matters for INT8: with optimizations on, Q/DQ pairs are fused into
the integer kernels a user actually runs (which can saturate on AVX2); with them off, onnxruntime
only simulates quantization in float. ``describe()`` records which one was measured.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edgerep.errors import EngineError

INTRA_SPIN = "session.intra_op.allow_spinning"
INTER_SPIN = "session.inter_op.allow_spinning"
SPIN_SLACK = 0.5  # load a quiet host shows anyway (daemons, this process's own past work)
OPT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
              "layout": "ORT_ENABLE_LAYOUT", "all": "ORT_ENABLE_ALL"}


def spinning_policy(mode: str, threads: int) -> tuple[bool, str]:
    """Whether intra-op workers spin between runs, and why (recorded in ``describe()``).

    Spinning saves the wake-up of every parallel op when the cores are this process's alone; when
    other work wants them (1-minute load plus our threads above the core count, with 0.5 of slack) a spinning worker
    takes the core from the thread it waits for: on a loaded 2-core host RepVGG-A0 INT8 ran 44 ms
    spinning against 25 ms parked. ``auto`` decides from the load when the session is made.
    """
    if mode in ("on", "off"):
        return mode == "on", f"{mode} (asked for)"
    if mode != "auto":
        raise EngineError(f"spinning={mode!r}: expected auto, on or off")
    if threads <= 1:
        return False, "auto: one thread, no workers to spin"
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):
        return True, "auto: load unknown, spinning (onnxruntime's default)"
    if load + threads > cores + SPIN_SLACK:
        return False, f"auto: load {load:.1f} + {threads} threads > {cores} cores + {SPIN_SLACK}: workers park between runs"
    return True, f"auto: load {load:.1f} + {threads} threads <= {cores} cores + {SPIN_SLACK}: workers spin between runs"


def default_threads() -> int:
    """Intra-op threads when the caller does not say: physical-ish core count, at least 1."""
    return max(1, min(os.cpu_count() or 1, 8))


def _prelu_as_max_bytes(path: Path) -> tuple[str | bytes, int]:
    """The file's model with its constant-slope PReLUs run as ``Max``/``Min`` (serialized, for the session), and how
    many; the path itself when it has none (the file is parsed once: a graph with no PRelu costs no copy)."""
    import onnx

    try:
        model = onnx.load(str(path))
    except Exception:  # let onnxruntime report an unreadable file in its own words
        return str(path), 0
    if not any(n.op_type == "PRelu" for n in model.graph.node):
        return str(path), 0
    from edgerep.quant.prelu import prelu_as_max

    count = prelu_as_max(model)
    if not count:
        return str(path), 0
    try:
        return model.SerializeToString(), count
    except ValueError:  # over protobuf's 2 GB: run the file as it is
        return str(path), 0


class OrtEngine:
    """An onnxruntime session on one ONNX file; implements ``edgerep.engines.base.Engine``."""

    name = "onnxruntime-cpu"

    def __init__(self, path: str | Path, *, precision: str = "fp32", threads: int | None = None,
                 optimization: str = "all", session_config: dict[str, str] | None = None,
                 providers: list[str] | None = None, spinning: str = "auto", profile_prefix: str | None = None,
                 prelu_as_max: bool | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise EngineError(f"{self.path}: ONNX file not found")
        if precision not in ("fp32", "fp16", "int8", "mixed"):
            raise EngineError(f"precision={precision!r}: expected fp32, fp16, int8 or mixed")
        if optimization not in OPT_LEVELS:
            raise EngineError(f"optimization={optimization!r}: expected one of {', '.join(OPT_LEVELS)}")
        self.precision = precision
        self.optimization = optimization
        self.threads = int(threads) if threads else default_threads()
        self.session_config = {str(k): str(v) for k, v in (session_config or {}).items()}
        so = ort.SessionOptions()
        level = getattr(ort.GraphOptimizationLevel, OPT_LEVELS[optimization], None)
        if level is None:  # "layout" only exists in newer onnxruntime
            level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.graph_optimization_level = level
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        if profile_prefix:  # onnxruntime's profiler (edgerep.bench.profile): a JSON trace per session
            so.enable_profiling = True
            so.profile_file_prefix = profile_prefix
        spin, self.spinning_why = spinning_policy(spinning, self.threads)
        if INTRA_SPIN in self.session_config:  # a policy's own setting wins
            spin, self.spinning_why = self.session_config[INTRA_SPIN] == "1", "set by the session config"
        self.spinning = spin
        # the inter-op pool (one thread, sequential execution) never spins
        for k, v in {INTRA_SPIN: "1" if spin else "0", INTER_SPIN: "0", **self.session_config}.items():
            so.add_session_config_entry(k, v)
        available = ort.get_available_providers()
        self.providers = list(providers) if providers else ["CPUExecutionProvider"]
        missing = [p for p in self.providers if p not in available]
        if missing:
            raise EngineError(f"onnxruntime providers {missing} are not available here (have {available})")
        # an FP32 file runs its PReLUs as Max(x, a x), bit-identical and ~10x faster on the CPU, as the CPU INT8
        # files do (edgerep.quant.prelu): an INT8/FP32 latency ratio compares the same PReLU kernels
        rewrite = precision == "fp32" if prelu_as_max is None else prelu_as_max
        source, self.prelus_rewritten = (str(self.path), 0)
        if rewrite:
            source, self.prelus_rewritten = _prelu_as_max_bytes(self.path)
        try:
            self.session = ort.InferenceSession(source, so, providers=self.providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise EngineError(f"{self.path}: onnxruntime cannot load it: {str(exc).splitlines()[0]}") from None
        self.input_name = self.session.get_inputs()[0].name
        self.input_shape = tuple(self.session.get_inputs()[0].shape)  # ints, or names for dynamic axes
        self.output_name = self.session.get_outputs()[0].name
        self.device = "cpu" if self.providers[0] == "CPUExecutionProvider" else self.providers[0]
        self._ort_version = ort.__version__

    def run(self, inputs: np.ndarray) -> np.ndarray:
        """Run one float32 NCHW batch; returns the first output as float32."""
        x = np.ascontiguousarray(inputs, dtype=np.float32)
        self._check(x)
        return self.session.run([self.output_name], {self.input_name: x})[0].astype(np.float32, copy=False)

    def _check(self, x: np.ndarray) -> None:
        """A wrong input shape is a one-line EngineError, not onnxruntime's multi-line InvalidArgument."""
        want = self.input_shape
        if x.ndim != len(want) or any(isinstance(w, int) and w > 0 and w != g for w, g in zip(want, x.shape)):
            shown = "x".join(str(w) if isinstance(w, int) and w > 0 else "N" for w in want)
            raise EngineError(f"{self.path.name}: input of shape {tuple(x.shape)} does not fit the model's "
                              f"input {shown}")

    def describe(self) -> dict[str, Any]:
        from edgerep.quant.cpu_features import detect_cpu_features

        cpu = detect_cpu_features()
        return {
            "name": self.name,
            "engine": self.name,
            "path": str(self.path),
            "precision": self.precision,
            "device": self.device,
            "threads": self.threads,
            "inter_op_threads": 1,
            "optimization": self.optimization,
            "session_config": dict(self.session_config),
            "prelu_as_max": self.prelus_rewritten,
            "spinning": {"intra_op": self.spinning, "inter_op": False, "why": self.spinning_why},
            "providers": list(self.providers),
            "onnxruntime": self._ort_version,
            "cpu": cpu.model_name,
            "cpu_isa": cpu.int8_dot,
        }

    def __repr__(self) -> str:
        return f"OrtEngine({str(self.path)!r}, precision={self.precision!r}, optimization={self.optimization!r})"
