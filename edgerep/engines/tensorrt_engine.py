"""TensorRT plans from ONNX (INT8 from the QDQ file, FP16, FP32) and an engine that runs them.

Written against the real Python API of TensorRT 10.x and 11.x (8.5/8.6 also work: JetPack 5 on
Xavier). Facts and sources: shared/TENSORRT.md. One build path and one run path cover all of them;
where the API differs the code branches on the major version, and the names below say which
ones are version-bound (a test checks every ``trt.X.Y`` / ``builder.x`` name used here against
the published 10.x API listing, the ``tensorrt-stubs`` 10.13 ``.pyi`` files).

Device buffers go through torch CUDA tensors, or cuda-python when torch has no CUDA; pycuda is
never needed. Nothing here imports tensorrt at module import time: ``tensorrt_status()`` tells
whether the real library (not only the type stubs) and a GPU are present.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgerep.engines.plan_cache import (PlanSidecar, StalePlanError, atomic_write, ensure_compatible,
                                        load_timing_cache, plan_path, read_sidecar, settings_problems, sidecar_path,
                                        timing_cache_path, write_sidecar)
from edgerep.errors import EngineError
from edgerep.hashing import sha256_file

__all__ = ["BuildSettings", "BuildResult", "StalePlanError", "TensorRTEngine", "build_plan", "build_or_reuse",
           "check_tensorrt_qdq", "cuda_index", "fp16_onnx", "gpu_info", "use_device", "require_tensorrt", "tensorrt_status", "TRT11_ONLY", "REMOVED_IN_11"]

# Names this module uses that exist in 10.x but not in 11.x; each use is behind a major-version check.
REMOVED_IN_11: dict[str, str] = {
    "BuilderFlag.FP16": "deprecated in 10.12, removed in 11.0 [NVIDIA/TensorRT pyCore.cpp @v10.13.3 vs HEAD]",
    "BuilderFlag.INT8": "deprecated in 10.12, removed in 11.0 [NVIDIA/TensorRT pyCore.cpp @v10.13.3 vs HEAD]",
    "NetworkDefinitionCreationFlag.EXPLICIT_BATCH": "required for ONNX on 8.x, ignored in 10.x, gone in 11.0 "
                                                    "[NVIDIA/TensorRT pyCore.cpp @release/8.5..HEAD]",
}
# Names this module uses that exist only in 11.x (exempt from the 10.x listing check). None today: 11.x changed
# behaviour (always strongly typed, so FP16 needs an FP16 ONNX [11.0.0 Jetson migration page,
# docs.nvidia.com/deeplearning/tensorrt/11.0.0/api/migration/tensorrt-10x-to-11x-jetson.html]) rather than
# adding names this module needs; NetworkDefinitionCreationFlag.STRONGLY_TYPED still exists there (ignored).
TRT11_ONLY: dict[str, str] = {}

Log = Callable[[str], None]


# ----------------------------------------------------------------------------------------------- discovery
def _import_trt() -> tuple[Any | None, str]:
    from edgerep.interrupts import raise_if_taken

    try:
        import tensorrt as trt
    except ImportError:
        raise_if_taken()  # a signal during a native module's init reaches us as an ImportError (pybind11)
        return None, "the tensorrt Python package is not installed"
    except Exception as e:  # a wheel whose native libraries fail to load
        raise_if_taken()
        return None, f"the tensorrt package failed to load: {type(e).__name__}: {e}"
    if not hasattr(trt, "Builder"):
        # `tensorrt-stubs` makes `import tensorrt` succeed as an empty namespace package
        return None, "only TensorRT type stubs are installed here, not TensorRT itself"
    return trt, ""


def trt_version() -> str | None:
    """The real TensorRT's version string, or None."""
    trt, _ = _import_trt()
    return str(trt.__version__) if trt is not None else None


def trt_major(trt: Any) -> tuple[int, int]:
    parts = str(trt.__version__).split(".")
    return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0


def _cudart() -> Any | None:
    """cuda-python's runtime module under either import path, or None."""
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6 [samples/python/common_runtime.py]
        return cudart
    except ImportError:
        pass
    try:
        from cuda import cudart  # cuda-python <= 12.x, as TensorRT 8.6 samples use [common.py@v8.6.1]
        return cudart
    except ImportError:
        return None


def _torch_cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


def gpu_info(device_index: int = 0) -> tuple[str, str] | None:
    """``(name, "major.minor")`` of CUDA device ``device_index``, via torch or cuda-python; None if none."""
    if _torch_cuda():
        import torch

        if device_index < torch.cuda.device_count():
            return torch.cuda.get_device_name(device_index), "%d.%d" % torch.cuda.get_device_capability(device_index)
        return None
    cudart = _cudart()
    if cudart is None:
        return None
    try:
        err, props = cudart.cudaGetDeviceProperties(device_index)
        if int(err) != 0:
            return None
        name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
        return name.rstrip("\x00"), f"{props.major}.{props.minor}"
    except Exception:
        return None


def cuda_index(device: str) -> int:
    """``cuda:N`` -> N; ``cuda`` / ``dla:N`` / ``cpu`` -> 0 (the DLA of a Jetson is driven through GPU 0)."""
    kind, _, idx = str(device).partition(":")
    return int(idx) if kind == "cuda" and idx.isdigit() else 0


def use_device(index: int) -> None:
    """Make CUDA device ``index`` current in this thread: TensorRT builds and deserializes on the current device."""
    if _torch_cuda():
        import torch

        torch.cuda.set_device(index)
        return
    cudart = _cudart()
    if cudart is None:
        raise EngineError("TensorRT needs a CUDA device: install torch with CUDA or cuda-python")
    err = cudart.cudaSetDevice(index)[0]
    if int(err) != 0:
        raise EngineError(f"CUDA device {index} cannot be selected (cudaSetDevice error {int(err)})",
                          hint="check the profile's device (cuda:N) against `edgerep doctor`")


def tensorrt_status() -> tuple[bool, str]:
    """``(True, "")`` when real TensorRT and a CUDA GPU are here, else ``(False, why not)``."""
    trt, why = _import_trt()
    if trt is None:
        return False, why
    if gpu_info() is None:
        return False, f"TensorRT {trt.__version__} is installed but no CUDA GPU is visible (torch or cuda-python)"
    return True, ""


def require_tensorrt() -> Any:
    """The ``tensorrt`` module, or ``EngineError`` saying why it cannot be used here and what to do."""
    ok, why = tensorrt_status()
    if not ok:
        raise EngineError(f"TensorRT unavailable: {why}",
                          hint="install TensorRT (pip install tensorrt on an x86 dGPU; JetPack's python3-libnvinfer "
                               "on Jetson) or build a profile whose fallback is onnxruntime-cpu")
    trt, _ = _import_trt()
    return trt


def dla_cores() -> int | None:
    """How many DLA cores TensorRT reports here (None when TensorRT is unavailable)."""
    ok, _ = tensorrt_status()
    if not ok:
        return None
    trt, _ = _import_trt()
    builder = trt.Builder(_make_logger(trt))
    return int(builder.num_DLA_cores)


def _make_logger(trt: Any) -> Any:
    """A TensorRT logger that keeps warnings and errors, so failures can quote TensorRT's own words."""

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)  # required for Python subclasses [ILogger docs]
            self.messages: list[tuple[int, str]] = []

        def log(self, severity: Any, msg: str) -> None:
            if int(severity) <= int(trt.ILogger.WARNING):
                self.messages.append((int(severity), str(msg)))

        def last_error(self) -> str:
            errs = [m for s, m in self.messages if s <= int(trt.ILogger.ERROR)]
            return (errs or [m for _, m in self.messages] or ["no message from TensorRT"])[-1].splitlines()[0]

    return _Logger()


# ----------------------------------------------------------------------------------------------- build
@dataclass(frozen=True)
class BuildSettings:
    """How to build one plan. ``device`` is ``cuda:N`` or ``dla:N`` (then ``dla_core`` = N)."""

    precision: str  # "fp32" | "fp16" | "int8" (int8 = an explicit Q/DQ ONNX)
    device: str = "cuda:0"
    workspace_mb: int = 1024
    opt_level: int = 3
    dla_core: int | None = None
    gpu_fallback: bool = True  # DLA only: layers DLA cannot run go to the GPU
    batch_min: int = 1
    batch_opt: int = 1
    batch_max: int = 1

    @classmethod
    def from_profile(cls, profile: Any, spec: Any) -> "BuildSettings":
        """Settings for ``spec`` (an ``EngineSpec``) of a ``TargetProfile``.

        GPU plans take a dynamic batch from 1 to the profile's largest batch, tuned for the smallest
        (edge latency). DLA has no dynamic shapes, so DLA plans take the smallest batch only and
        larger batches run in chunks.
        """
        sizes = sorted(profile.batch_sizes)
        dla = spec.device.startswith("dla")
        if dla:
            lo = hi = opt = sizes[0]
        else:
            lo, opt, hi = 1, sizes[0], sizes[-1]
        return cls(precision=spec.precision, device=spec.device, workspace_mb=profile.workspace_mb,
                   opt_level=profile.opt_level, dla_core=int(spec.device.split(":")[1]) if dla else None,
                   batch_min=lo, batch_opt=opt, batch_max=hi)

    @property
    def gpu_index(self) -> int:
        """The CUDA device the plan is built for: N of ``cuda:N``; DLA cores sit beside GPU 0 (Jetson)."""
        return cuda_index(self.device)

    def reuse_settings(self) -> dict[str, Any]:
        """What a plan's sidecar must record for the plan to stand for this build (see ``settings_problems``)."""
        return {"precision": self.precision, "device": self.device, "dla_core": self.dla_core,
                "gpu_fallback": self.gpu_fallback and self.dla_core is not None, "workspace_mb": self.workspace_mb,
                "opt_level": self.opt_level, "batch_min": self.batch_min, "batch_opt": self.batch_opt,
                "batch_max": self.batch_max}

    def strongly_typed(self, major: int) -> bool:
        """11.x is always strongly typed; on 10.x we stay weakly typed so FP16/INT8 flags pick precisions."""
        return major >= 11


def network_flags(trt: Any, major: int, strongly_typed: bool) -> int:
    """``create_network`` flags: EXPLICIT_BATCH before 10 (ONNX needs it), STRONGLY_TYPED on 10.x if asked."""
    if major < 10:
        return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if major == 10 and strongly_typed:
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return 0  # 11.x: strongly typed always, the flag is deprecated and ignored


def precision_flags(trt: Any, major: int, precision: str, dla: bool) -> list[Any]:
    """Builder flags for a weakly typed build (< 11). None on 11.x: precision comes from the ONNX types."""
    if major >= 11:
        return []
    flags = []
    if precision in ("fp16", "int8") or dla:
        flags.append(trt.BuilderFlag.FP16)  # layers outside Q/DQ pairs may run FP16 (DLA needs FP16 or INT8)
    if precision == "int8":
        flags.append(trt.BuilderFlag.INT8)  # enables the quantized kernels for the Q/DQ network
    return flags


@dataclass
class BuildResult:
    plan: Path
    sidecar: PlanSidecar
    sidecar_path: Path
    reused: bool


def build_plan(onnx_path: str | os.PathLike[str], plan_file: str | os.PathLike[str], settings: BuildSettings, *,
               timing_cache_dir: str | os.PathLike[str] | None = None, log: Log | None = None) -> PlanSidecar:
    """Build and write ``plan_file`` + its sidecar from ``onnx_path``; returns the sidecar.

    Uses (and updates) the persisted timing cache for this TensorRT version and GPU.
    """
    trt = require_tensorrt()
    say = log or (lambda _m: None)
    major, minor = trt_major(trt)
    onnx_path, plan_file = Path(onnx_path), Path(plan_file)
    info = gpu_info(settings.gpu_index)
    if info is None:
        raise EngineError(f"profile asks for {settings.device}, but no CUDA device {settings.gpu_index} is visible",
                          hint="`edgerep doctor` lists the devices; fix the engine's device in the profile")
    gpu_name, cc = info
    use_device(settings.gpu_index)  # chosen before any TensorRT object exists
    logger = _make_logger(trt)
    strong = settings.strongly_typed(major)
    source = onnx_path
    if settings.precision == "int8":
        check_tensorrt_qdq(onnx_path)
    if major >= 11 and settings.precision == "fp16":
        # 11.x has no FP16 flag: FP16 means an FP16 ONNX, built strongly typed [TENSORRT.md §2]
        source = fp16_onnx(onnx_path, plan_file.with_name(plan_file.name + ".fp16.onnx"))
    t0 = time.perf_counter()

    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt, major, strong))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(source)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        first = errors[0].splitlines()[0] if errors else logger.last_error()
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        raise EngineError(f"{source}: TensorRT {trt.__version__} cannot parse this ONNX: {first}{more}")
    if network.num_inputs != 1:
        raise EngineError(f"{source}: edgerep's TensorRT engine takes models with one input, this has "
                          f"{network.num_inputs}")
    inp = network.get_input(0)
    in_shape = tuple(int(d) for d in inp.shape)
    out_name = network.get_output(0).name
    if any(d < 0 for d in in_shape[1:]):
        raise EngineError(f"{source}: input '{inp.name}' has dynamic C/H/W {in_shape}; only the batch may be dynamic")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(settings.workspace_mb) << 20)
    if (major, minor) >= (8, 6):
        config.builder_optimization_level = int(settings.opt_level)  # 0..5, default 3 [pyCoreDoc@v10.3.0]
    dla = settings.dla_core is not None
    for flag in precision_flags(trt, major, settings.precision, dla):
        config.set_flag(flag)
    if dla:
        n = int(builder.num_DLA_cores)
        if settings.dla_core >= n:
            raise EngineError(f"profile asks for DLA core {settings.dla_core}, but TensorRT reports {n} DLA "
                              f"core(s) on this {gpu_name}", hint="use a profile without dla engines here")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(settings.dla_core)
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # so the inspector can say where layers ran
        if settings.gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)

    batch_min, batch_opt, batch_max = settings.batch_min, settings.batch_opt, settings.batch_max
    if in_shape[0] < 0:
        chw = in_shape[1:]
        opt_profile = builder.create_optimization_profile()
        opt_profile.set_shape(inp.name, (batch_min, *chw), (batch_opt, *chw), (batch_max, *chw))
        config.add_optimization_profile(opt_profile)
    else:  # a static-batch ONNX: the plan takes exactly that batch
        batch_min = batch_opt = batch_max = in_shape[0]

    tc_path = timing_cache_path(str(trt.__version__), gpu_name, cc, timing_cache_dir)
    cache = config.create_timing_cache(load_timing_cache(tc_path))
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        say(f"timing cache {tc_path} does not match this TensorRT/GPU; starting an empty one")
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, ignore_mismatch=False)

    say(f"TensorRT {trt.__version__}: building {settings.precision} plan for {settings.device} from {source.name}")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:  # NVIDIA's samples check this too
        raise EngineError(f"{source}: TensorRT {trt.__version__} failed to build a {settings.precision} plan for "
                          f"{settings.device}: {logger.last_error()}")
    plan_bytes = bytes(memoryview(serialized))
    placement = _dla_placement_of(trt, plan_bytes, settings, logger) if dla else None
    if placement is not None and not placement.dla_subgraphs:
        raise EngineError(f"{source}: TensorRT {trt.__version__} put no layer of this {settings.precision} network on "
                          f"DLA core {settings.dla_core} (every layer fell back to the GPU: "
                          f"{', '.join(placement.gpu_layers[:3])}...); refusing to call it a DLA plan",
                          hint="INT8 on DLA from explicit Q/DQ is unconfirmed on this TensorRT; use the GPU "
                               "int8 engine, or FP16 on DLA")
    atomic_write(plan_file, plan_bytes)
    atomic_write(tc_path, bytes(memoryview(config.get_timing_cache().serialize())))
    sidecar = PlanSidecar(
        tensorrt_version=str(trt.__version__), gpu_name=gpu_name, compute_capability=cc,
        onnx_sha256=sha256_file(onnx_path), onnx_path=str(onnx_path), precision=settings.precision,
        device=settings.device, dla_core=settings.dla_core, gpu_fallback=settings.gpu_fallback and dla,
        strongly_typed=strong, workspace_mb=settings.workspace_mb, opt_level=settings.opt_level,
        batch_min=batch_min, batch_opt=batch_opt, batch_max=batch_max, input_name=inp.name,
        input_shape=list(in_shape[1:]), output_name=out_name, timing_cache=str(tc_path),
        build_seconds=round(time.perf_counter() - t0, 3), static_batch=in_shape[0] >= 0,
        dla_subgraphs=len(placement.dla_subgraphs) if placement is not None else None,
        gpu_fallback_layers=list(placement.gpu_layers) if placement is not None else [])
    write_sidecar(plan_file, sidecar)
    if placement is not None:
        say(f"DLA core {settings.dla_core}: {placement.summary()}")
    return sidecar


def _dla_placement_of(trt: Any, plan: bytes, settings: BuildSettings, logger: Any) -> Any:
    """Deserialize a fresh DLA plan and ask the engine inspector where each layer runs."""
    from edgerep.engines.dla_placement import dla_placement

    runtime = trt.Runtime(logger)
    runtime.DLA_core = int(settings.dla_core)
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise EngineError(f"TensorRT {trt.__version__} could not load the DLA plan it just built: {logger.last_error()}")
    inspector = engine.create_engine_inspector()
    return dla_placement(inspector.get_engine_information(trt.LayerInformationFormat.JSON))


def check_tensorrt_qdq(path: str | os.PathLike[str]) -> None:
    """Refuse a QDQ file TensorRT would reject or misread (asymmetric / uint8 zero points, ...), before a build.

    Uses the INT8 linter (``edgerep.quant.lint``); the first error names the node and rule. A linter that cannot
    be imported is an error too, never a silently skipped check.
    """
    try:
        from edgerep.quant.lint import lint_errors, lint_tensorrt_qdq
    except ImportError as e:  # never build an INT8 plan unchecked because the linter could not load
        raise EngineError(f"{path}: the TensorRT QDQ lint cannot run ({e}), so this INT8 file is not checked",
                          hint="reinstall edgerep with its dependencies (onnx); the lint guards every INT8 build") from None
    errors = lint_errors(lint_tensorrt_qdq(path))
    if errors:
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        raise EngineError(f"{path}: not a TensorRT-ready QDQ file: {errors[0]}{more}",
                          hint="write it with `edgerep quantize` (tensorrt policy: int8, symmetric, zero point 0)")


def reuse_problem(plan_file: Path, onnx_path: Path, settings: BuildSettings) -> str | None:
    """Why an existing plan cannot stand for this build (None: reuse it).

    Raises ``StalePlanError`` when the plan comes from another TensorRT or GPU: that is not a cache
    miss but a plan copied between machines, which the user must choose to rebuild.
    """
    if not plan_file.is_file() or not sidecar_path(plan_file).is_file():
        return "no plan yet"
    side = read_sidecar(plan_file)
    trt = require_tensorrt()
    info = gpu_info(settings.gpu_index)
    if info is None:
        return f"no CUDA device {settings.gpu_index} here"
    ensure_compatible(plan_file, side, tensorrt_version=str(trt.__version__), gpu_name=info[0],
                      compute_capability=info[1])
    if side.onnx_sha256 != sha256_file(onnx_path):
        return "the ONNX file changed"
    diff = settings_problems(side, settings.reuse_settings())
    return f"settings changed: {'; '.join(diff)}" if diff else None


def build_or_reuse(onnx_path: str | os.PathLike[str], out_dir: str | os.PathLike[str], settings: BuildSettings, *,
                   rebuild: bool = False, timing_cache_dir: str | os.PathLike[str] | None = None,
                   log: Log | None = None) -> BuildResult:
    """Reuse a compatible plan in ``out_dir`` or build a new one; ``rebuild`` replaces a stale plan."""
    onnx_path = Path(onnx_path)
    plan_file = plan_path(out_dir, onnx_path, settings.precision, settings.device)
    try:
        why = reuse_problem(plan_file, onnx_path, settings)
    except (StalePlanError, EngineError):
        if not rebuild:
            raise
        why = "rebuild requested"
    if why is None:
        return BuildResult(plan_file, read_sidecar(plan_file), sidecar_path(plan_file), True)
    if log:
        log(f"{plan_file.name}: building ({why})")
    side = build_plan(onnx_path, plan_file, settings, timing_cache_dir=timing_cache_dir, log=log)
    return BuildResult(plan_file, side, sidecar_path(plan_file), False)


# ----------------------------------------------------------------------------------------------- FP16 ONNX
def fp16_onnx(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """Write an FP16 copy of an FP32 ONNX whose input and output stay FP32 (Cast nodes at the borders).

    TensorRT 11 is strongly typed only: FP16 means FP16 tensors in the ONNX, not a builder flag.
    NVIDIA's tool for this is ModelOpt AutoCast; for the plain conv nets edgerep exports, casting
    every float initializer / constant and the graph borders is the same thing, without the dependency.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    g = model.graph
    keep_fp32 = set()  # inputs ONNX requires in float32 whatever the data type (Resize scales)
    for node in g.node:
        if node.op_type == "Resize" and len(node.input) > 2 and node.input[2]:
            keep_fp32.add(node.input[2])
    for i, init in enumerate(g.initializer):
        if init.data_type == TensorProto.FLOAT and init.name not in keep_fp32:
            arr = numpy_helper.to_array(init).astype(np.float16)
            g.initializer[i].CopyFrom(numpy_helper.from_array(arr, init.name))
    for node in g.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            raise EngineError(f"{src}: is a Q/DQ (INT8) model; FP16 conversion takes the FP32 ONNX")
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT \
                    and not (set(node.output) & keep_fp32):
                arr = numpy_helper.to_array(attr.t).astype(np.float16)
                attr.t.CopyFrom(numpy_helper.from_array(arr, attr.t.name))
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.FLOAT16
    new_nodes = []
    for vi in g.input:
        if vi.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        casted = vi.name + "__fp16"
        _rename_tensor(g.node, vi.name, casted, outputs=False)
        new_nodes.append(helper.make_node("Cast", [vi.name], [casted], to=TensorProto.FLOAT16,
                                          name=f"edgerep_cast_in_{vi.name}"))
    tail = []
    for vo in g.output:
        if vo.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        produced = vo.name + "__fp16"
        _rename_tensor(g.node, vo.name, produced, outputs=True)  # inputs too: an output may feed another node
        tail.append(helper.make_node("Cast", [produced], [vo.name], to=TensorProto.FLOAT,
                                     name=f"edgerep_cast_out_{vo.name}"))
    nodes = new_nodes + list(g.node) + tail
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]
    model = onnx.shape_inference.infer_shapes(model)
    onnx.checker.check_model(model)
    dst = Path(dst)
    atomic_write(dst, model.SerializeToString())
    return dst


def _rename_tensor(nodes, old: str, new: str, *, outputs: bool) -> None:
    """Point every node input (and, with ``outputs``, every node output) named ``old`` at ``new``."""
    for node in nodes:
        for field in (node.input, node.output) if outputs else (node.input,):
            for j, name in enumerate(field):
                if name == old:
                    field[j] = new


# ----------------------------------------------------------------------------------------------- run
class _TorchIO:
    """Device buffers as torch CUDA tensors on a private stream (TensorRT sees their data_ptr)."""

    def __init__(self, device_index: int):
        import torch

        self.torch = torch
        self.device = torch.device("cuda", device_index)
        self.stream = torch.cuda.Stream(self.device)

    def empty(self, shape: tuple[int, ...], dtype: np.dtype) -> Any:
        t = self.torch.from_numpy(np.empty(0, dtype=dtype)).dtype
        return self.torch.empty(shape, dtype=t, device=self.device)

    def ptr(self, buf: Any) -> int:
        return int(buf.data_ptr())

    def handle(self) -> int:
        return int(self.stream.cuda_stream)

    def upload(self, buf: Any, x: np.ndarray) -> None:
        with self.torch.cuda.stream(self.stream):
            buf[: x.shape[0]].copy_(self.torch.from_numpy(x), non_blocking=False)

    def download(self, buf: Any, shape: tuple[int, ...]) -> np.ndarray:
        with self.torch.cuda.stream(self.stream):
            n = int(np.prod(shape))
            out = buf.reshape(-1)[:n].reshape(shape).to("cpu", self.torch.float32)
        self.stream.synchronize()
        return out.numpy()


class _CudaPythonIO:
    """Device buffers through cuda-python's runtime API (no torch CUDA needed)."""

    def __init__(self, device_index: int):
        self.cudart = _cudart()
        if self.cudart is None:
            raise EngineError("TensorRT needs device buffers: install torch with CUDA or cuda-python")
        self._check(self.cudart.cudaSetDevice(device_index)[0], "cudaSetDevice")
        err, self.stream = self.cudart.cudaStreamCreate()
        self._check(err, "cudaStreamCreate")
        self._bufs: list[Any] = []

    def _check(self, err: Any, what: str) -> None:
        if int(err) != 0:
            raise EngineError(f"CUDA call {what} failed with error {int(err)}")

    def empty(self, shape: tuple[int, ...], dtype: np.dtype) -> Any:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        err, ptr = self.cudart.cudaMalloc(nbytes)
        self._check(err, "cudaMalloc")
        self._bufs.append(ptr)
        return (int(ptr), np.dtype(dtype))

    def ptr(self, buf: Any) -> int:
        return buf[0]

    def handle(self) -> int:
        return int(self.stream)

    def upload(self, buf: Any, x: np.ndarray) -> None:
        x = np.ascontiguousarray(x, dtype=buf[1])
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self.cudart.cudaMemcpyAsync(buf[0], x.ctypes.data, x.nbytes, kind, self.stream)[0], "memcpy H2D")
        self._check(self.cudart.cudaStreamSynchronize(self.stream)[0], "cudaStreamSynchronize")

    def download(self, buf: Any, shape: tuple[int, ...]) -> np.ndarray:
        out = np.empty(shape, dtype=buf[1])
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self.cudart.cudaMemcpyAsync(out.ctypes.data, buf[0], out.nbytes, kind, self.stream)[0],
                    "memcpy D2H")
        self._check(self.cudart.cudaStreamSynchronize(self.stream)[0], "cudaStreamSynchronize")
        return out.astype(np.float32, copy=False)

    def close(self) -> None:
        """Free the buffers and destroy the stream (idempotent)."""
        for p in getattr(self, "_bufs", []):
            try:
                self.cudart.cudaFree(p)
            except Exception:
                pass
        self._bufs = []
        stream, self.stream = getattr(self, "stream", None), None
        if stream is not None:
            try:
                self.cudart.cudaStreamDestroy(stream)
            except Exception:
                pass

    def __del__(self) -> None:
        self.close()


class TensorRTEngine:
    """A TensorRT plan ready to run. Refuses plans from another TensorRT version or GPU (see plan_cache).

    Batches outside the plan's range are padded (too small for a fixed-batch DLA plan) or split
    (larger than its max batch), so ``run`` accepts any batch like the other engines.
    """

    def __init__(self, plan_file: str | os.PathLike[str], *, device_index: int | None = None):
        trt = require_tensorrt()
        self.plan = Path(plan_file)
        self.sidecar = read_sidecar(self.plan)
        if device_index is None:  # the device the plan was built for (cuda:N in the profile)
            device_index = cuda_index(self.sidecar.device)
        info = gpu_info(device_index)
        if info is None:
            raise EngineError(f"{self.plan}: built for {self.sidecar.device}, but CUDA device {device_index} is not "
                              "visible here")
        ensure_compatible(self.plan, self.sidecar, tensorrt_version=str(trt.__version__), gpu_name=info[0],
                          compute_capability=info[1])
        self._trt = trt
        self.name = "tensorrt"
        self.precision = self.sidecar.precision
        self.device = self.sidecar.device
        self._logger = _make_logger(trt)
        use_device(device_index)  # TensorRT deserializes onto the current device: choose it first
        runtime = trt.Runtime(self._logger)
        if self.sidecar.dla_core is not None:
            runtime.DLA_core = int(self.sidecar.dla_core)
        engine = runtime.deserialize_cuda_engine(self.plan.read_bytes())
        if engine is None:  # no preflight API exists; the logger says why [TENSORRT.md §6]
            raise EngineError(f"{self.plan}: TensorRT {trt.__version__} could not load the plan: "
                              f"{self._logger.last_error()}", hint="rebuild it with `edgerep build --rebuild`")
        context = engine.create_execution_context()
        self._runtime, self._engine, self._context = runtime, engine, context
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        ins = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(ins) != 1 or not outs:
            raise EngineError(f"{self.plan}: expected one input and at least one output, got {ins} / {outs}")
        self._in, self._out = ins[0], outs[0]
        self._chw = tuple(self.sidecar.input_shape)
        self._lo, self._hi = self.sidecar.batch_min, self.sidecar.batch_max
        self._io = _TorchIO(device_index) if _torch_cuda() else _CudaPythonIO(device_index)
        in_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(self._in)))
        out_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(self._out)))
        context.set_input_shape(self._in, (self._hi, *self._chw))
        max_out = tuple(int(d) for d in context.get_tensor_shape(self._out))
        self._in_buf = self._io.empty((self._hi, *self._chw), in_dtype)
        self._out_buf = self._io.empty(max_out, out_dtype)
        self._extra = [self._io.empty(tuple(max(1, int(d)) for d in context.get_tensor_shape(n)),
                                      np.dtype(trt.nptype(engine.get_tensor_dtype(n)))) for n in outs[1:]]
        context.set_tensor_address(self._in, self._io.ptr(self._in_buf))
        context.set_tensor_address(self._out, self._io.ptr(self._out_buf))
        for n, buf in zip(outs[1:], self._extra):
            context.set_tensor_address(n, self._io.ptr(buf))

    def _run_exact(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        context = self._context
        if not context.set_input_shape(self._in, x.shape):
            raise EngineError(f"{self.plan}: TensorRT rejected input shape {tuple(x.shape)} "
                              f"(plan takes batch {self._lo}..{self._hi}): {self._logger.last_error()}")
        self._io.upload(self._in_buf, x)
        if not context.execute_async_v3(self._io.handle()):
            raise EngineError(f"{self.plan}: TensorRT execution failed: {self._logger.last_error()}")
        shape = tuple(int(d) for d in context.get_tensor_shape(self._out))
        assert shape[0] == n
        return self._io.download(self._out_buf, shape)

    def run(self, inputs: np.ndarray) -> np.ndarray:
        """One float32 NCHW batch in, the first output out (float32), any batch size."""
        if not isinstance(inputs, np.ndarray) or inputs.ndim != 4 or tuple(inputs.shape[1:]) != self._chw:
            shape = getattr(inputs, "shape", type(inputs).__name__)
            raise EngineError(f"{self.name}: input shape {tuple(shape) if isinstance(shape, tuple) else shape} "
                              f"does not match the plan's (N, {', '.join(map(str, self._chw))})")
        x = np.ascontiguousarray(inputs, dtype=np.float32)
        outs = []
        for s in range(0, x.shape[0], self._hi):
            chunk = x[s: s + self._hi]
            k = chunk.shape[0]
            if k < self._lo:  # fixed-batch (DLA) plan: pad, then drop the padding rows
                chunk = np.concatenate([chunk, np.zeros((self._lo - k, *self._chw), np.float32)])
            outs.append(self._run_exact(chunk)[:k])
        return np.concatenate(outs) if len(outs) > 1 else outs[0]

    def describe(self) -> dict[str, Any]:
        s = self.sidecar
        return {"name": self.name, "backend": "tensorrt", "precision": self.precision, "device": self.device,
                "tensorrt": s.tensorrt_version, "gpu": s.gpu_name, "compute_capability": s.compute_capability,
                "plan": str(self.plan), "batch_range": [s.batch_min, s.batch_opt, s.batch_max],
                "workspace_mb": s.workspace_mb, "opt_level": s.opt_level, "dla_core": s.dla_core,
                "strongly_typed": s.strongly_typed,
                "io": "torch" if isinstance(self._io, _TorchIO) else "cuda-python"}
