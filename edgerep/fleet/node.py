"""What runs on a fleet device: a version probe, and one job that builds a target's engines from the
shipped ONNX files, times them and scores them on the shards it was given.

Plain functions: the CI side wraps ``probe_data`` and ``run_job_data`` with ``ray.remote``, so Ray
refers to them by module name and each node runs its own installed edgerep. Their arguments and
results are ``bytes`` in the fleet's data-only format (``edgerep.fleet.wire``: JSON, raw bytes and
numeric arrays of a checked dtype and shape), which Ray passes as raw data: the CI side reads a
result without unpickling anything a node sent. (Ray itself still pickles the remote function's
reference and its call; the node trusts the CI side that sent them, not the other way round.)
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import socket
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def probe() -> dict[str, Any]:
    """This node's versions (edgerep, torch, onnxruntime, TensorRT, JetPack when known), CPU and ISA."""
    import edgerep
    from edgerep.commands.doctor import _jetson, cpu_isa
    from edgerep.engines.tensorrt_engine import trt_version

    isa = cpu_isa()
    jetson = _jetson()
    return {"edgerep": edgerep.__version__, "torch": _dist_version("torch"),
            "onnxruntime": _dist_version("onnxruntime"), "tensorrt": trt_version(),
            "jetpack": jetson.get("jetpack") if jetson else None, "ray": _dist_version("ray"),
            "hostname": socket.gethostname(), "cpu": isa.get("model"), "arch": isa.get("arch"),
            "int8_isa": isa.get("int8_dot")}


def probe_data() -> bytes:
    """:func:`probe`, as the fleet's data-only bytes (what ``fleet status`` asks a node)."""
    from edgerep.fleet import wire

    return wire.as_result(probe)


def _node_id() -> str:
    """This Ray node's id ("local" outside Ray)."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"
    except ImportError:
        return "local"


def _write_payload(files: dict[str, bytes], work: Path) -> dict[str, Path]:
    from edgerep.fleet.payload import safe_relative

    out = {}
    for name, data in files.items():
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"fleet payload: {name} is {type(data).__name__}, not bytes")
        p = work / safe_relative(name)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(bytes(data))
        out[name] = p
    return out


def plan_dir(target: str) -> Path:
    """Where this machine keeps the TensorRT plans it built for ``target``: the next fleet deploy reuses a
    plan whose sidecar matches the ONNX hash and every build setting, and rebuilds one from another
    TensorRT or GPU (``edgerep.engines.plan_cache``)."""
    from edgerep.engines.plan_cache import cache_root, slug

    return cache_root() / "fleet" / slug(target)


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One builder at a time per plan folder (two nodes of one machine share it)."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _keep_built(built: list, out: Path) -> None:
    """Copy the plans (and their sidecars) that were built or reused into ``out``, the folder that travels back."""
    from edgerep.engines.plan_cache import sidecar_path

    out.mkdir(parents=True, exist_ok=True)
    for b in built:
        if b.engine is not None and b.artifact is not None and Path(b.artifact).suffix == ".plan":
            for f in (Path(b.artifact), sidecar_path(b.artifact)):
                if f.is_file():
                    shutil.copy2(f, out / f.name)


def run_job(files: dict[str, bytes], spec: dict[str, Any], *shards: dict[str, Any]) -> dict[str, Any]:
    """Build ``spec["target"]``'s engines here, time them (``spec["bench"]``) and score them on ``shards``.

    Ray resolves the shards (passed as object refs, top-level arguments) before the call, so the same
    function runs in-process for a local comparison (benchmarks/fleet_overhead.py).

    Returns plain data: the node, its versions, one row per engine of the profile (with per-shard
    counts, and the task's per-shard part: ``edgerep.fleet.scoring.shard_part``), and the built plans /
    sidecars as ``{relative path: bytes}``.
    """
    from edgerep.engines.factory import build_engines
    from edgerep.engines.profiles import load_profile
    from edgerep.fleet.measure import host_facts, outputs, time_engine
    from edgerep.fleet.scoring import shard_part

    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    work = Path(tempfile.mkdtemp(prefix="edgerep-fleet-"))
    try:
        paths = _write_payload(files, work)
        profile = load_profile(spec["target"])
        int8 = {pol: paths[name] for pol, name in (spec.get("int8") or {}).items() if name in paths}
        t = time.perf_counter()
        with _locked(plan_dir(profile.name)):
            built = build_engines(profile, fp32_onnx=paths[spec["fp32"]], int8_onnx=int8, torch_model=None,
                                  out_dir=plan_dir(profile.name), ort_session_config=spec.get("session_config"),
                                  rebuild=True)  # a plan from another TensorRT/GPU here is rebuilt, not an error
            _keep_built(built, work / "engines")
        timings["build"] = time.perf_counter() - t
        (work / "engines" / "engines.json").write_text(json.dumps(  # what was built here, beside the plans
            {"node_id": _node_id(), "hostname": socket.gethostname(), "target": profile.name,
             "engines": [b.to_dict() for b in built]}, indent=2, default=str) + "\n")
        bench = spec.get("bench") or {}
        x_bench = spec.get("x_bench")
        task = spec.get("task") or {"name": "classify"}
        rows = []
        for b in built:
            actual = b.actual or b.spec
            reason = b.reason or ""
            if b.spec.backend == "torch" and b.engine is None:
                reason = "CI side only (the reference); nodes get ONNX files"
            row: dict[str, Any] = {"name": f"{actual.backend}-{actual.device_kind}", "precision": actual.precision,
                                   "device": actual.device, "status": b.status, "reason": reason,
                                   "requested": b.spec.key, "build_seconds": round(b.seconds, 3), "counts": {}}
            if b.engine is not None:
                row["describe"] = b.engine.describe()
                if bench.get("enabled", True) and x_bench is not None:
                    t = time.perf_counter()
                    row["latency"] = time_engine(b.engine, x_bench, warmup=int(bench.get("warmup", 10)),
                                                 seconds=float(bench.get("seconds", 1.0)))
                    timings["bench"] = timings.get("bench", 0.0) + time.perf_counter() - t
                t = time.perf_counter()
                for s in shards:
                    row["counts"][str(s["index"])] = shard_part(task, outputs(b.engine, s["x"]), s)
                timings["evaluate"] = timings.get("evaluate", 0.0) + time.perf_counter() - t
            rows.append(row)
        artifacts = {str(p.relative_to(work / "engines")): p.read_bytes()
                     for p in sorted((work / "engines").rglob("*")) if p.is_file()} \
            if (work / "engines").is_dir() else {}
        timings["total"] = time.perf_counter() - t0
        return {"node_id": _node_id(), "hostname": socket.gethostname(), "pid": os.getpid(), "versions": probe(),
                "host": host_facts(), "rows": rows, "artifacts": artifacts, "shards": [s["index"] for s in shards],
                "finished_unix": time.time(),
                "timings_s": {k: round(v, 3) for k, v in timings.items()}}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_job_data(files: bytes, spec: bytes, *shards: bytes) -> bytes:
    """:func:`run_job` over the data-only format: the shipped files, the spec and each shard are
    decoded here (each shard's arrays checked against the spec's input shape), and the result (or the
    reason there is none) goes back encoded."""
    from edgerep.fleet import wire

    def job() -> dict[str, Any]:
        received = wire.decode(files)
        s = wire.decode(spec, {"$.x_bench": ("<f4", None)})
        x_shape = [None, *s["input_shape"]] if s.get("input_shape") else None
        parts = []
        for blob in shards:
            part = wire.decode(blob, {"$.x": ("<f4", x_shape), "$.y": ("<i8", [None]), "$.ref": ("<f4", None),
                                      "$.hr": ("|u1", [None, None, None, 3])})
            n = int(part["stop"]) - int(part["start"])
            if len(part["x"]) != n or len(part["ref"]) not in (0, n) or any(
                    part.get(k) is not None and len(part[k]) != n for k in ("y", "hr", "ids")):
                raise wire.WireError(f"shard {part.get('index')}: {n} rows named, arrays of other lengths")
            parts.append(part)
        return run_job(received, s, *parts)

    return wire.as_result(job)
