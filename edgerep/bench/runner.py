"""`edgerep bench` as a library call: time every engine of a model or bundle in one MLPerf scenario
(LoadGen when installed), side by side with the unfolded torch model as the baseline.

Each engine is timed in its own settled phase (``edgerep.bench.threads``); each row carries its
CV and a noisy mark; LoadGen's logs go into the bundle (``loadgen/<scenario>/<engine>``)."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from edgerep.bench.latency import host_info
from edgerep.bench.noise import host_load
from edgerep.bench.scenarios import ScenarioSettings, run_scenario
from edgerep.engines.base import Engine, unfolded_name
from edgerep.errors import EdgerepError
from edgerep.report.models import BenchReport, dump
from edgerep.report.models.report import BENCH_SCHEMA


@dataclass
class BenchOptions:
    target: Path
    batch_sizes: list[int] | None = None  # default [1]; offline: [1, 8, 32], the best one is the result
    seconds: float = 1.0  # minimum duration per engine and batch size
    iterations: int | None = None  # a fixed query count instead
    warmup: int = 10
    scenario: str = "single-stream"
    samples_per_query: int = 8  # multi-stream N
    min_queries: int | None = None  # default: what the percentiles need (64, 662 in multi-stream)
    use_loadgen: bool | None = None  # None: LoadGen when installed
    log_dir: Path | None = None  # LoadGen logs; default BUNDLE/loadgen, or none kept
    mlperf_minimums: bool = False  # a submission's minimums (600 s; 1024 queries, 24576 offline samples)
    profile: bool = False
    threads: int | None = None
    arch: str | None = None
    trust_checkpoint: bool = False
    include_int8: bool = True
    load: dict = field(default_factory=dict)  # load_checkpoint kwargs (arch, arch_kwargs, input_shape, trust)
    checkpoint: Path | None = None  # a bundle's unfolded checkpoint where it moved (hash-checked)


def _engines_for(opts: BenchOptions, say: Callable[[str], None]) -> tuple[list[tuple[str, Engine]], tuple, dict]:
    """(role, engine) pairs to time, the input shape, and model facts for the report."""
    from edgerep.engines.onnxruntime_engine import OrtEngine
    from edgerep.engines.torch_engine import TorchEngine

    target = Path(opts.target)
    engines: list[tuple[str, Engine]] = []
    if target.is_dir():
        manifest_path = target / "manifest.json"
        if not manifest_path.exists():
            raise EdgerepError(f"{target}: not a bundle (no manifest.json)")
        manifest = json.loads(manifest_path.read_text())
        files = manifest.get("files", {})
        from edgerep.bundle_inputs import find_checkpoint
        from edgerep.checkpoint import load_checkpoint

        found = find_checkpoint(target, manifest, opts.checkpoint)
        shape = None
        if found.path is not None:
            loaded = load_checkpoint(found.path, **(manifest.get("settings", {}).get("load") or {}))
            engines.append(("baseline", TorchEngine(loaded.model, precision="fp32")))
            shape = tuple(loaded.meta.input_shape)
        else:
            say(f"no unfolded baseline: {found.note} ({found.hint})")
        if files.get("folded_checkpoint"):
            folded = load_checkpoint(target / files["folded_checkpoint"])
            engines.append(("folded", TorchEngine(folded.model, precision="fp32")))
            shape = shape or tuple(folded.meta.input_shape)
        session_config = ((manifest.get("cpu_policy") or {}).get("session_config") or None)
        if files.get("fp32_onnx"):
            engines.append(("engine", OrtEngine(target / files["fp32_onnx"], precision="fp32", threads=opts.threads)))
        if opts.include_int8 and files.get("int8_onnx_cpu"):
            engines.append(("engine", OrtEngine(target / files["int8_onnx_cpu"], precision="int8", threads=opts.threads,
                                                session_config=session_config)))
        if shape is None:
            raise EdgerepError(f"{target}: bundle has no checkpoint to read the input shape from")
        return engines, shape, {"name": target.name, "bundle": str(target), "unfolded_checkpoint":
                                str(found.path) if found.path else None, "baseline_note": found.note if found.path else f"{found.note} ({found.hint})"}
    if target.suffix == ".onnx":
        eng = OrtEngine(target, precision="fp32", threads=opts.threads)
        shape = tuple(eng.session.get_inputs()[0].shape)
        if not shape or any(not isinstance(d, int) for d in shape[1:]):
            raise EdgerepError(f"{target}: input shape is not static; cannot pick an input size")
        return [("engine", eng)], tuple(shape[1:]), {"name": target.stem, "onnx": str(target)}
    from edgerep.model_path import fold_loaded, load_model

    loaded = load_model(target, opts.load or {"arch": opts.arch, "trust": opts.trust_checkpoint})
    model = loaded.model
    shape = tuple(loaded.meta.input_shape)
    engines.append(("baseline", TorchEngine(model, precision="fp32")))
    if not loaded.meta.folded:
        say("folding")
        fold = fold_loaded(loaded)
        engines.append(("folded", TorchEngine(fold.module, precision="fp32")))
        return engines, shape, {"name": target.stem, "checkpoint": str(target), "arch": loaded.meta.arch,
                                "provenance": [r.to_dict() for r in fold.provenance]}
    return engines, shape, {"name": target.stem, "checkpoint": str(target), "arch": loaded.meta.arch}


def _layer_map(engines: list[tuple[str, Engine]], target: Path, provenance: list[dict] | None = None) -> dict:
    """Folded layer -> train-time block: the fold's provenance (this run's fold, or a bundle's report),
    else the module paths of the folded and unfolded torch engines."""
    from edgerep.bench.profile import layer_map, layers_from_provenance

    if provenance:
        return layers_from_provenance(provenance)
    report = Path(target) / "report.json"
    if report.is_file():
        rows = (json.loads(report.read_text()).get("fold") or {}).get("provenance")
        if rows:
            return layers_from_provenance(rows)
    models = {role: getattr(e, "model", None) for role, e in engines if role in ("baseline", "folded")}
    if models.get("folded") is None:
        return {}
    return layer_map(models["folded"], models.get("baseline"))


def batch_sizes_for(opts: BenchOptions) -> list[int]:
    """The batch sizes a scenario times: multi-stream's N, offline's candidates, or the given ones."""
    if opts.scenario == "multi-stream":
        return [opts.samples_per_query]
    if opts.batch_sizes:
        return list(opts.batch_sizes)
    return [1, 8, 32] if opts.scenario == "offline" else [1]


#: distinct synthetic samples the query sample library serves (at least one query's worth)
SAMPLE_POOL = 64
SYNTHETIC = "synthetic: distinct standard-normal samples (bench is given no data)"


def scenario_settings(opts: BenchOptions, log_dir: Path | None) -> ScenarioSettings:
    """The per-engine timing settings of a bench run."""
    return ScenarioSettings(scenario=opts.scenario, min_seconds=opts.seconds, min_queries=opts.min_queries,
                            max_queries=opts.iterations, warmup=opts.warmup, samples_per_query=opts.samples_per_query,
                            use_loadgen=opts.use_loadgen, log_dir=log_dir, mlperf_minimums=opts.mlperf_minimums,
                            samples_source=SYNTHETIC)


def best_batch(by_batch: dict[str, dict]) -> str | None:
    """Offline's result: the batch with the highest throughput among the runs LoadGen called VALID
    (or that no LoadGen judged); None when every run was INVALID (no result to report)."""
    valid = [b for b, s in by_batch.items() if s.get("valid") is not False]
    return max(valid, key=lambda b: by_batch[b]["throughput_ips"]) if valid else None


def bench(opts: BenchOptions, progress: Callable[[str], None] | None = None) -> dict:
    """Latency of every engine at every batch size; returns the serialized ``BenchReport``
    (``edgerep.bench-report/2``: the deploy report's engine, latency, host and bench blocks)."""
    say = progress or (lambda msg: None)
    if opts.threads:
        import torch

        torch.set_num_threads(opts.threads)
    engines, shape, model_info = _engines_for(opts, say)
    provenance = model_info.pop("provenance", None)  # names the profile's layers; not part of the report
    rng = np.random.default_rng(0)
    log_dir = opts.log_dir or (Path(opts.target) / "loadgen" if Path(opts.target).is_dir() else None)
    settings = scenario_settings(opts, Path(log_dir) / opts.scenario if log_dir else None)
    batches = batch_sizes_for(opts)
    report: dict = {"schema": BENCH_SCHEMA, "kind": "bench", "created_unix": time.time(),
                    "model": {**model_info, "input_shape": list(shape)}, "engines": [], "host": host_info(),
                    "bench": {"scenario": opts.scenario, "batch_sizes": batches, "min_seconds": opts.seconds,
                              "load_before": host_load()}}
    base_p50: dict[int, float] = {}
    for role, eng in engines:
        by_batch: dict[str, dict] = {}
        label = unfolded_name(eng.name) if role == "baseline" else eng.name
        for bs in batches:
            x = rng.standard_normal((max(SAMPLE_POOL, bs), *shape)).astype(np.float32)
            say(f"{eng.name}/{eng.precision} ({role}) {opts.scenario} batch {bs}")
            stats = run_scenario(eng, x, settings, batch=bs, log_name=f"{label}-{eng.precision}-b{bs}")
            by_batch[str(bs)] = stats
            if role == "baseline" and stats.get("valid") is not False:  # an INVALID run is no baseline
                base_p50[bs] = stats["p50_ms"]
        if opts.scenario == "offline":  # the result is the throughput at the best batch LoadGen called VALID
            best = best_batch(by_batch)
        else:
            best = str(batches[0])
        entry = {"name": label, "precision": eng.precision, "device": eng.device, "status": "built", "role": role,
                 "describe": eng.describe(), "latency": by_batch[best or str(batches[0])], "latency_by_batch": by_batch}
        if best is None:
            entry["no_result"] = "every offline run was INVALID: " + "; ".join(
                f"batch {b}: {s.get('invalid_reason')}" for b, s in by_batch.items())
        if opts.profile:
            from edgerep.bench.profile import profile_engine

            say(f"profiling {label}/{eng.precision}")
            x_prof = rng.standard_normal((int(best or batches[0]), *shape)).astype(np.float32)
            entry["profile"] = profile_engine(eng, x_prof,
                                              layers=_layer_map(engines, opts.target, provenance))
        if role == "baseline":
            report["baseline"] = entry
        else:
            entry["speedup_vs_unfolded"] = {bs: (base_p50[int(bs)] / s["p50_ms"]) for bs, s in by_batch.items()
                                            if int(bs) in base_p50 and s.get("valid") is not False}
            report["engines"].append(entry)
    report["bench"]["load_after"] = host_load()
    return dump(BenchReport.model_validate(report))  # the typed bench report (edgerep.report.models.BenchReport)
