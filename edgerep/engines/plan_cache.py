"""Where TensorRT plans, their JSON sidecars and timing caches live, and when a plan may be reused.

A serialized plan runs only on the TensorRT version and GPU that built it ("version tag does
not match" / "incompatible device" otherwise, shared/TENSORRT.md §6). TensorRT has no preflight
check, so every plan gets a sidecar naming what built it, and we refuse a mismatch *before*
deserializing, with a message that says what differs and how to rebuild.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgerep.errors import EngineError

SIDECAR_VERSION = 1
SIDECAR_KEYS = ("format", "tensorrt_version", "gpu_name", "compute_capability", "onnx_sha256", "onnx_path",
                "precision", "device", "dla_core", "gpu_fallback", "strongly_typed", "workspace_mb", "opt_level",
                "batch_min", "batch_opt", "batch_max", "input_name", "input_shape", "output_name",
                "timing_cache", "build_seconds", "created", "edgerep_version", "static_batch", "dla_subgraphs",
                "gpu_fallback_layers")


class StalePlanError(EngineError):
    """A plan was built by another TensorRT version or for another GPU; TensorRT would refuse it."""


@dataclass
class PlanSidecar:
    """What built a plan: the facts that decide whether this machine can load it."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "8.7"
    onnx_sha256: str
    precision: str
    device: str  # "cuda:0" | "dla:0"
    onnx_path: str = ""
    dla_core: int | None = None
    gpu_fallback: bool = False
    strongly_typed: bool = False
    workspace_mb: int = 0
    opt_level: int = 3
    batch_min: int = 1
    batch_opt: int = 1
    batch_max: int = 1
    input_name: str = ""
    input_shape: list[int] = field(default_factory=list)  # (C, H, W)
    output_name: str = ""
    timing_cache: str = ""
    build_seconds: float = 0.0
    static_batch: bool = False  # the ONNX fixed the batch: the plan takes that batch whatever the profile says
    dla_subgraphs: int | None = None  # DLA plans: DLA subgraphs the engine inspector shows (None: not inspected)
    gpu_fallback_layers: list[str] = field(default_factory=list)  # DLA plans: compute layers that run on the GPU
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    edgerep_version: str = field(default_factory=lambda: _edgerep_version())
    format: int = SIDECAR_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def build_settings(self) -> dict[str, Any]:
        """The settings that, if changed, make the plan a different plan (a cache miss, not an error)."""
        return {k: getattr(self, k) for k in ("onnx_sha256", "precision", "device", "dla_core", "gpu_fallback",
                                              "strongly_typed", "workspace_mb", "opt_level", "batch_min",
                                              "batch_opt", "batch_max")}


def _edgerep_version() -> str:
    from edgerep import __version__

    return __version__


def slug(text: str) -> str:
    """A file-name-safe lower-case form: 'NVIDIA Orin (nvgpu)' -> 'nvidia-orin-nvgpu'."""
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-") or "unknown"


def plan_path(out_dir: str | os.PathLike[str], onnx_path: str | os.PathLike[str], precision: str, device: str) -> Path:
    """``<out_dir>/<onnx stem>.<precision>.<device>.plan``, e.g. ``model.int8.cuda0.plan``."""
    stem = Path(onnx_path).name
    suffixes = (".onnx", ".int8", ".fp32", ".fp16", ".tensorrt", ".trt", ".cpu", ".qdq")
    while any(stem.endswith(s) and len(stem) > len(s) for s in suffixes):
        stem = next(stem[: -len(s)] for s in suffixes if stem.endswith(s) and len(stem) > len(s))
    return Path(out_dir) / f"{stem}.{precision}.{device.replace(':', '')}.plan"


def sidecar_path(plan: str | os.PathLike[str]) -> Path:
    """The JSON beside a plan: ``model.int8.cuda0.plan`` -> ``model.int8.cuda0.plan.json``."""
    p = Path(plan)
    return p.with_name(p.name + ".json")


def cache_root() -> Path:
    """edgerep's one cache root (``edgerep.cache.cache_root``: ``$EDGEREP_CACHE``, ...)."""
    from edgerep.cache import cache_root as root

    return root()


def timing_cache_path(tensorrt_version: str, gpu_name: str, compute_capability: str,
                      cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """One persisted timing cache per TensorRT version and GPU (a cache from another is rejected by TensorRT).

    ``<cache_dir or cache_root()/tensorrt>/timing-trt<ver>-sm<cc>-<gpu>.cache``.
    """
    d = Path(cache_dir) if cache_dir is not None else cache_root() / "tensorrt"
    sm = compute_capability.replace(".", "")
    return d / f"timing-trt{tensorrt_version}-sm{sm}-{slug(gpu_name)}.cache"


def load_timing_cache(path: Path) -> bytes:
    """The cache's bytes, or b"" when there is none yet (TensorRT then starts an empty cache)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temp file beside ``path`` and rename it into place, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_sidecar(plan: str | os.PathLike[str], sidecar: PlanSidecar) -> Path:
    """Write the sidecar JSON beside ``plan``; returns its path."""
    p = sidecar_path(plan)
    atomic_write(p, (json.dumps(sidecar.to_dict(), indent=2, sort_keys=True) + "\n").encode())
    return p


def read_sidecar(plan: str | os.PathLike[str]) -> PlanSidecar:
    """The sidecar of ``plan``; ``EngineError`` naming the file if it is missing or not ours."""
    p = sidecar_path(plan)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EngineError(f"{p}: plan sidecar missing, so nothing says which TensorRT/GPU built {Path(plan).name}",
                          hint="rebuild the plan with `edgerep build`") from None
    except (OSError, ValueError) as e:
        raise EngineError(f"{p}: plan sidecar unreadable: {e}") from None
    missing = [k for k in ("tensorrt_version", "gpu_name", "compute_capability", "onnx_sha256", "precision",
                           "device") if k not in data]
    if missing:
        raise EngineError(f"{p}: plan sidecar lacks field '{missing[0]}'")
    known = {k: v for k, v in data.items() if k in PlanSidecar.__dataclass_fields__}
    return PlanSidecar(**known)


def settings_problems(sidecar: PlanSidecar, want: dict[str, Any]) -> list[str]:
    """The build settings in ``want`` that the plan was not built with (empty: it stands for this build).

    ``want`` holds ``precision``, ``device``, ``dla_core``, ``gpu_fallback``, ``workspace_mb``,
    ``opt_level`` and ``batch_min`` / ``batch_opt`` / ``batch_max``; a plan from a static-batch ONNX
    ignores the batch range (it takes the ONNX's batch, and a changed ONNX changes its hash).
    """
    have = sidecar.build_settings()
    keys = [k for k in want if not (sidecar.static_batch and k.startswith("batch_"))]
    return [f"{k} {have.get(k)!r} -> {want[k]!r}" for k in keys if have.get(k) != want[k]]


def compatibility_problems(sidecar: PlanSidecar, *, tensorrt_version: str, gpu_name: str,
                           compute_capability: str) -> list[str]:
    """What differs between the machine that built a plan and this one (empty: loadable)."""
    out = []
    if sidecar.tensorrt_version != tensorrt_version:
        out.append(f"built with TensorRT {sidecar.tensorrt_version}, this is TensorRT {tensorrt_version}")
    if sidecar.compute_capability != compute_capability:
        out.append(f"built for compute capability {sidecar.compute_capability} ({sidecar.gpu_name}), "
                   f"this GPU is {compute_capability} ({gpu_name})")
    elif sidecar.gpu_name != gpu_name:
        out.append(f"built on {sidecar.gpu_name}, this GPU is {gpu_name}")
    return out


def ensure_compatible(plan: str | os.PathLike[str], sidecar: PlanSidecar, *, tensorrt_version: str, gpu_name: str,
                      compute_capability: str) -> None:
    """Raise ``StalePlanError`` (one line, with the fix) if this machine cannot load ``plan``."""
    problems = compatibility_problems(sidecar, tensorrt_version=tensorrt_version, gpu_name=gpu_name,
                                      compute_capability=compute_capability)
    if problems:
        raise StalePlanError(
            f"{plan}: refusing to load a TensorRT plan {'; '.join(problems)} "
            "(TensorRT would fail with 'version tag does not match' or 'incompatible device')",
            hint="plans are not portable; rebuild here with `edgerep build MODEL.onnx --target NAME --rebuild`")
