"""`edgerep doctor`: what is installed and what the hardware can do, each fact with what it means for you."""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import platform
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HELP = "show versions, devices and CPU features that decide what runs fast here"
DESCRIPTION = """\
Print the versions of torch, onnx, onnxruntime and TensorRT, the CUDA devices with their compute
capability, DLA cores, onnxruntime's execution providers, the Jetson release, and the CPU
instruction sets that decide INT8 speed and exactness on the CPU (AVX2, AVX-512 VNNI, AVX-VNNI,
AMX, Arm dot-product / i8mm). Every line says what it means for building and running engines,
and the last line suggests a target profile for `edgerep build` / `edgerep deploy`.

Note: `import tensorrt` succeeds when only the `tensorrt-stubs` type hints are installed; doctor
reports those as "stubs only", because nothing can be built with them.

examples:
  edgerep doctor
  edgerep doctor --json > doctor.json      # attach to a bug report or CI log
"""


@dataclass
class Fact:
    """One line of the doctor's report."""

    section: str
    item: str
    value: str
    status: str  # "ok" | "warn" | "missing" | "info"
    meaning: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the facts as JSON")
    p.add_argument("--cpuinfo", type=Path, default=Path("/proc/cpuinfo"), help=argparse.SUPPRESS)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


# ----------------------------------------------------------------------------------------------- CPU
def cpu_isa(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """INT8-relevant CPU flags: the same detector the quantizer chooses its CPU policy with."""
    from edgerep.quant.cpu_features import detect_cpu_features

    f = detect_cpu_features(cpuinfo)
    return {"arch": f.arch, "model": f.model_name, "cores": f.cores, "avx2": f.avx2,
            "avx512_vnni": f.avx512_vnni, "avx_vnni": f.avx_vnni, "amx_int8": f.amx_int8,
            "arm_dotprod": f.arm_dotprod, "arm_i8mm": f.arm_i8mm, "int8_dot": f.int8_dot}


_ISA_MEANING = {
    "amx_int8": "AMX tile INT8: onnxruntime INT8 convs run on AMX, the fastest CPU INT8; 8-bit weights exact",
    "avx512_vnni": "AVX-512 VNNI (vpdpbusd): INT8 dot products without int16 saturation; 8-bit weights are safe",
    "avx_vnni": "AVX-VNNI (256-bit vpdpbusd): INT8 without saturation on client CPUs; 8-bit weights are safe",
    "avx2": "AVX2 only (vpmaddubsw): u8*s8 pair sums saturate at int16, so edgerep's CPU policy uses 7-bit "
            "weights (or accepts the error); INT8 is still usually faster than FP32",
    "arm_i8mm": "Arm i8mm (smmla): fastest Arm INT8 matrix path",
    "arm_dotprod": "Arm dot-product (sdot): INT8 convs run fast on these cores",
}


def _cpu_facts(cpuinfo: Path) -> list[Fact]:
    d = cpu_isa(cpuinfo)
    out = [Fact("cpu", "processor", f"{d['model']} ({d['arch']}, {d['cores']} logical cores)", "info",
                "onnxruntime uses one thread per physical core by default; set `threads` in a profile to pin it")]
    x86 = not d["arch"].startswith(("aarch64", "arm"))
    keys = ["avx2", "avx512_vnni", "avx_vnni", "amx_int8"] if x86 else ["arm_dotprod", "arm_i8mm"]
    best = d["int8_dot"]
    for k in keys:
        has = bool(d[k])
        if has and k == "avx2" and best != "avx2":
            meaning = "AVX2: vectorized FP32; INT8 takes the better path below, so AVX2's saturation does not apply"
        elif has:
            meaning = _ISA_MEANING[k]
        else:
            meaning = f"absent: {_ISA_MEANING[k].split(':')[0]} not available"
        out.append(Fact("cpu", k.replace("_", "-").upper() if x86 else k, "yes" if has else "no",
                        "ok" if has else "info", meaning))
    if best in ("avx2", "none") and x86:
        meaning = ("INT8 on this CPU risks int16 saturation (AVX2 u8s8 kernels): `edgerep quantize` picks "
                   "7-bit weights for the cpu policy and checks accuracy on the real optimized session")
        status = "warn"
    elif best in ("neon", "none"):
        meaning = "no INT8 dot-product instructions: INT8 is exact but gains little over FP32 on this CPU"
        status = "info"
    else:
        meaning = "INT8 runs without saturation here; the cpu policy keeps full 8-bit weights"
        status = "ok"
    out.append(Fact("cpu", "INT8 path", best, status, meaning))
    return out


# ----------------------------------------------------------------------------------------------- GPU / TRT
def _cc_meaning(major: int, minor: int) -> str:
    cc = major * 10 + minor
    if cc >= 89:
        return "Ada/Hopper+: INT8 and FP8 tensor cores; TensorRT INT8 and FP16 plans both fast"
    if cc >= 75:
        return "INT8 + FP16 tensor cores (Turing or newer): TensorRT INT8 plans are the fastest option"
    if cc == 72:
        return "Xavier (Volta, sm_72): FP16 and INT8 tensor cores, plus DLA; TensorRT 8.5 on JetPack 5"
    if cc >= 70:
        return "Volta: FP16 tensor cores; INT8 via DP4A only, so FP16 plans are usually as fast"
    if cc >= 61:
        return "Pascal: INT8 via DP4A, no tensor cores; FP16 is slow on most Pascal boards"
    return "older than TensorRT 10 supports (sm_75+ for dGPUs); use the x86-cpu profile"


def _gpu_facts() -> tuple[list[Fact], list[dict[str, Any]]]:
    facts, devices = [], []
    try:
        import torch
    except ImportError:
        return [Fact("gpu", "torch", "not installed", "missing", "torch is the reference engine; install it")], []
    cuda_build = torch.version.cuda
    try:
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        n = 0
    if n == 0:
        why = ("this torch is a CPU-only build" if not cuda_build else
               f"torch built for CUDA {cuda_build} sees no device (driver missing or no GPU)")
        facts.append(Fact("gpu", "CUDA devices", "none", "info",
                          f"{why}: TensorRT and torch-cuda engines fall back to onnxruntime on the CPU"))
    for i in range(n):
        name = torch.cuda.get_device_name(i)
        major, minor = torch.cuda.get_device_capability(i)
        mem = torch.cuda.get_device_properties(i).total_memory / 2**30
        devices.append({"index": i, "name": name, "compute_capability": f"{major}.{minor}",
                        "memory_gib": round(mem, 1)})
        facts.append(Fact("gpu", f"cuda:{i}", f"{name}, sm_{major}{minor}, {mem:.1f} GiB", "ok",
                          _cc_meaning(major, minor)))
    return facts, devices


def _tensorrt_facts() -> tuple[list[Fact], dict[str, Any]]:
    from edgerep.engines import tensorrt_engine as te

    info: dict[str, Any] = {"available": False, "version": None, "dla_cores": None, "stubs": _version("tensorrt-stubs")}
    trt_ver = te.trt_version()
    ok, why = te.tensorrt_status()
    facts = []
    if trt_ver is None:
        stub = f" (tensorrt-stubs {info['stubs']} type hints only)" if info["stubs"] else ""
        facts.append(Fact("tensorrt", "TensorRT", "not installed" + stub, "missing",
                          "no TensorRT plans here; profiles that want TensorRT fall back to onnxruntime-cpu. "
                          "Install it: pip install tensorrt (x86 dGPU), JetPack's python3-libnvinfer (Jetson)"))
        return facts, info
    info["version"] = trt_ver
    major = int(trt_ver.split(".")[0])
    if major >= 11:
        meaning = ("TensorRT 11: strongly typed only; edgerep writes an FP16 ONNX for FP16 plans and builds INT8 "
                   "from the QDQ file; plans from 10.x must be rebuilt")
    elif major == 10:
        meaning = "TensorRT 10: FP16/INT8 builder flags still work (deprecated in 10.12); INT8 from the QDQ file"
    else:
        meaning = f"TensorRT {major}.x (JetPack 5): supported for building; plans are not portable to 10.x"
    facts.append(Fact("tensorrt", "TensorRT", trt_ver, "ok" if ok else "warn", meaning if ok else why))
    if ok:
        info["available"] = True
        n = te.dla_cores()
        info["dla_cores"] = n
        facts.append(Fact("tensorrt", "DLA cores", str(n), "ok" if n else "info",
                          "profiles with dla engines (jetson-agx-orin, jetson-xavier-nx) can use them" if n else
                          "no DLA: use a profile without dla:N engines (dgpu, jetson-orin-nano)"))
    from edgerep.engines.plan_cache import cache_root

    tc = cache_root() / "tensorrt"
    n_tc = len(list(tc.glob("timing-*.cache"))) if tc.is_dir() else 0
    facts.append(Fact("tensorrt", "timing caches", f"{tc} ({n_tc} file(s))", "info",
                      "one per TensorRT version and GPU; rebuilds reuse measured tactics (set EDGEREP_CACHE "
                      "to move it, `edgerep build --timing-cache DIR` per build)"))
    cp = _version("cuda-python") or _version("cuda-bindings")
    facts.append(Fact("tensorrt", "cuda-python", cp or "not installed", "ok" if cp else "info",
                      "device buffers can go through cuda-python" if cp else
                      "device buffers go through torch CUDA tensors (cuda-python is only needed without them)"))
    return facts, info


_PROVIDER_MEANING = {
    "CPUExecutionProvider": "onnxruntime FP32 / INT8 (QDQ) on the CPU: the universal fallback",
    "CUDAExecutionProvider": "onnxruntime on the GPU through CUDA/cuDNN (profiles may ask for onnxruntime on cuda)",
    "TensorrtExecutionProvider": "onnxruntime can hand subgraphs to TensorRT (edgerep builds plans directly instead)",
    "OpenVINOExecutionProvider": "Intel OpenVINO backend (not used by edgerep's profiles)",
    "DmlExecutionProvider": "DirectML on Windows (not used by edgerep's profiles)",
}


def _ort_facts() -> tuple[list[Fact], list[str]]:
    try:
        import onnxruntime as ort
    except ImportError:
        return [Fact("onnxruntime", "onnxruntime", "not installed", "missing", "required for every CPU engine")], []
    providers = list(ort.get_available_providers())
    facts = [Fact("onnxruntime", "onnxruntime", ort.__version__, "ok", f"device {ort.get_device()}")]
    for p in providers:
        facts.append(Fact("onnxruntime", p, "available", "ok", _PROVIDER_MEANING.get(p, "available")))
    return facts, providers


def _jetson() -> dict[str, str] | None:
    rel = Path("/etc/nv_tegra_release")
    if not rel.is_file():
        return None
    text = rel.read_text(errors="replace")
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    l4t = f"{m.group(1)}.{m.group(2)}" if m else text.split("\n")[0]
    jp = {"35": "5.1.x", "36": "6.x", "38": "7.x"}.get(m.group(1) if m else "", "unknown")
    model = ""
    for f in (Path("/proc/device-tree/model"), Path("/sys/firmware/devicetree/base/model")):
        if f.is_file():
            model = f.read_text(errors="replace").strip("\x00\n ")
            break
    return {"l4t": l4t, "jetpack": jp, "model": model}


def suggest_target(jetson: dict[str, str] | None, devices: list[dict[str, Any]]) -> str:
    """The shipped profile that fits this machine best."""
    if jetson:
        m = jetson.get("model", "").lower()
        if "xavier" in m:
            return "jetson-xavier-nx"
        if "agx orin" in m or ("orin" in m and "agx" in m):
            return "jetson-agx-orin"
        return "jetson-orin-nano"
    return "dgpu" if devices else "x86-cpu"


def collect(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """Everything doctor reports, as plain data (``facts`` for people, the rest for machines)."""
    from edgerep import __version__

    facts = [Fact("python", "python", platform.python_version(), "ok", sys.executable),
             Fact("python", "edgerep", __version__, "ok", "this tool")]
    for dist, meaning in (("torch", "reference engine and folding"), ("onnx", "export and QDQ files"),
                          ("numpy", "arrays between engines")):
        v = _version(dist)
        facts.append(Fact("python", dist, v or "not installed", "ok" if v else "missing", meaning))
    gpu, devices = _gpu_facts()
    trt_facts, trt = _tensorrt_facts()
    ort_facts, providers = _ort_facts()
    jetson = _jetson()
    facts += gpu + trt_facts + ort_facts
    if jetson:
        facts.append(Fact("jetson", "board", f"{jetson['model']} (L4T {jetson['l4t']}, JetPack {jetson['jetpack']})",
                          "info", "Orin on JetPack 6 stays on TensorRT 10.x; plans built here run only here"))
    facts += _cpu_facts(cpuinfo)
    target = suggest_target(jetson, devices)
    facts.append(Fact("target", "suggested profile", target, "info",
                      f"edgerep build MODEL.onnx --target {target}   (edgerep build --list shows all)"))
    return {"facts": [f.to_dict() for f in facts], "cuda_devices": devices, "tensorrt": trt,
            "onnxruntime_providers": providers, "cpu": cpu_isa(cpuinfo), "jetson": jetson,
            "suggested_target": target}


def run(args: argparse.Namespace) -> int:
    data = collect(args.cpuinfo)
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    from edgerep.report.console import make_console
    from rich.table import Table

    colour = {"ok": "green", "warn": "yellow", "missing": "red", "info": "cyan"}
    t = Table(title="edgerep doctor", show_lines=False)
    for col in ("", "item", "value", "what it means"):
        t.add_column(col, overflow="fold")
    section = None
    for f in data["facts"]:
        if f["section"] != section:
            section = f["section"]
            t.add_section()
        t.add_row(f"[{colour[f['status']]}]{f['status']}[/]", f"{f['section']}: {f['item']}", f["value"],
                  f["meaning"])
    make_console().print(t)
    return 0
