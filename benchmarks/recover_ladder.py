"""The recovery ladder on the classification quant-hostile benchmark: PTQ / +AdaRound / mixed precision.

The model: the shipped digits RepVGG (examples/checkpoints/repvgg_digits.pt) with dying ReLUs
(``edgerep.quant.hostile_dead``: 4 channels of each block that feeds an identity block get beta moved 5 |gamma|
down, BN statistics re-measured on digits' train split). Per-channel PTQ with equalization and bias correction
does not recover it (the collapse of ``edgerep.quant.hostile`` it does).

    PYTHONPATH=. .venv/bin/python benchmarks/recover_ladder.py [--iters 500] [--qat-steps 300]

Three ``quantize_model`` runs, CPU and TensorRT targets, calibration on the calib split, every choice on the val
split, every number printed on the test split (no choice has seen it):
  PTQ        --max-drop none (no layer leaves INT8): what PTQ alone ships
  mixed      --recover none: PTQ, then the most sensitive layers in FP32 until the 0.5-point budget holds
  +AdaRound  --recover auto: PTQ, then AdaRound, then (only if needed) QAT, then layers in FP32
  +QAT       --recover qat: PTQ, then QAT (distillation from the unfolded model), then (only if needed) layers
Latency: the three CPU files, batch 1 and 64, interleaved rounds on the optimized onnxruntime session; the per-round
minimum's median. The learned int8 weights are read back from both files of the ladder run and from the graph
the optimized session runs, and compared with what AdaRound learned.
"""
from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from edgerep.checkpoint import load_checkpoint
from edgerep.data import open_dataset
from edgerep.engines.onnxruntime_engine import OrtEngine
from edgerep.fold.model import fold_model
from edgerep.pipeline import TorchReference
from edgerep.quant.adaround import (max_optimized_difference, max_readback_difference, optimized_int8_weights,
                                    qdq_int8_weights)
from edgerep.quant.cpu_features import detect_cpu_features
from edgerep.quant.export import export_onnx
from edgerep.quant.hostile_dead import make_dead_relu
from edgerep.quant.options import (CalibrationOptions, JudgeOptions, QuantizeOptions, RecoveryOptions)
from edgerep.quant.pipeline import quantize_model

ROOT = Path(__file__).resolve().parents[1]


def top1(run, ds) -> float:
    hits = n = 0
    for x, y in ds.batches(128):
        hits += int((run(x).argmax(1) == y).sum())
        n += len(y)
    return 100.0 * hits / n


def interleaved_ms(engines: dict[str, OrtEngine], x1: np.ndarray, rounds: int = 15, iters: int = 40) -> dict:
    """Per engine: the median over rounds of the round's fastest run (ms); engines alternate every round."""
    for e in engines.values():
        for _ in range(10):
            e.run(x1)
    best: dict[str, list[float]] = {k: [] for k in engines}
    for _ in range(rounds):
        for k, e in engines.items():
            ts = []
            for _ in range(iters):
                t = time.perf_counter()
                e.run(x1)
                ts.append(time.perf_counter() - t)
            best[k].append(min(ts) * 1000.0)
    return {k: float(np.median(v)) for k, v in best.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=RecoveryOptions().iters, help="AdaRound Adam steps per layer")
    ap.add_argument("--qat-steps", type=int, default=RecoveryOptions().qat_steps, help="QAT fine-tuning steps")
    args = ap.parse_args()
    torch.set_num_threads(2)
    load_before = os.getloadavg()[0]
    loaded = load_checkpoint(ROOT / "examples" / "checkpoints" / "repvgg_digits.pt")
    meta = loaded.meta
    train, calib, val, test = (open_dataset("digits", split=s, meta=meta) for s in ("train", "calib", "val", "test"))
    clean_fp32 = top1(TorchReference(loaded.model), test)
    model = copy.deepcopy(loaded.model).eval()
    h = make_dead_relu(model, [torch.from_numpy(x) for x, _ in train.batches(128)], n_channels=4, sigmas=5.0)
    model.eval()
    ref = TorchReference(model)
    fp32 = top1(ref, test)
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = tmp / "dead.fp32.onnx"
        export_onnx(fold_model(model, torch.randn(2, *meta.input_shape)), path, tuple(meta.input_shape))
        cal = CalibrationOptions(cache_dir=tmp / "cache")
        plans = {"PTQ": QuantizeOptions(calibration=cal, judge=JudgeOptions(max_drop=None)),
                 "mixed precision": QuantizeOptions(calibration=cal),
                 "+AdaRound": QuantizeOptions(calibration=cal, recovery=RecoveryOptions("auto", iters=args.iters)),
                 "+QAT": QuantizeOptions(calibration=cal, recovery=RecoveryOptions("qat", qat_steps=args.qat_steps))}
        for name, opts in plans.items():
            t = time.perf_counter()
            res = quantize_model(path, calib, val, tmp / name.replace(" ", "_").replace("+", ""), opts, reference=ref)
            runs[name] = (res, time.perf_counter() - t)
        engines = {k: OrtEngine(r.files["cpu"], precision="int8", session_config=r.cpu_policy.session_config)
                   for k, (r, _) in runs.items()}
        x1 = next(iter(test.batches(1)))[0]
        ms = interleaved_ms(engines, np.ascontiguousarray(x1, dtype=np.float32))
        x64 = np.ascontiguousarray(next(iter(test.batches(64)))[0], dtype=np.float32)
        ms64 = interleaved_ms(engines, x64, rounds=9, iters=10)
        rows = []
        for k, (r, secs) in runs.items():
            trt = OrtEngine(r.files["tensorrt"], precision="int8", optimization="disable")
            cpu_float = sum(1 for e in r.excluded_nodes if e["target"] == "cpu")
            trt_float = len(r.tensorrt.get("excluded") or [])
            rows.append((k, r.cpu_policy.name, top1(engines[k].run, test), r.cpu_policy.drop, cpu_float,
                         f"{ms[k]:.3f} / {ms64[k]:.3f}",
                         top1(trt.run, test), trt_float, r.tensorrt["lint_errors"], secs))
        diffs = {}
        for k in ("+AdaRound", "+QAT"):
            r = runs[k][0]
            cpu_learned = r.recovery.learned[f"cpu+{r.cpu_policy.name.split('+', 1)[1].split('+fp32')[0]}"]
            trt_learned = r.recovery.learned[f"tensorrt+{r.tensorrt['learned_weights']}"]
            diffs[k] = {"cpu file": max_readback_difference(cpu_learned, qdq_int8_weights(r.files["cpu"])),
                        "tensorrt file": max_readback_difference(trt_learned, qdq_int8_weights(r.files["tensorrt"])),
                        "optimized session (cpu)": max_optimized_difference(
                            {n: q for n, q in cpu_learned.items() if q.ndim == 4},
                            optimized_int8_weights(r.files["cpu"], r.cpu_policy.session_config))}
    cpu = detect_cpu_features()
    print(f"host: {cpu.model_name}, {os.cpu_count()} cores, INT8 path {cpu.int8_dot}; onnxruntime "
          f"{__import__('onnxruntime').__version__}, torch {torch.__version__}; load (1 min) {load_before:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after")
    print(f"model: repvgg_digits with {h.mechanism}; dead channels {h.dead}")
    print(f"FP32 (unfolded torch) test top-1: {fp32:.2f} (the clean checkpoint: {clean_fp32:.2f}); choices on val "
          f"({len(val)} images), numbers on test ({len(test)} images); AdaRound {args.iters} steps per layer")
    print("| step | CPU file (policy) | CPU top-1 test | drop vs FP32 | val drop (chosen on) | layers in float (CPU) "
          "| latency ms (CPU file, batch 1 / 64) | TensorRT file: simulated top-1 test, layers in float, lint errors "
          "| quantize wall s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for k, pol, t1, vd, fl, lat, tt1, tfl, lint, secs in rows:
        print(f"| {k} | {pol} | {t1:.2f} | {fp32 - t1:+.2f} | {vd:.2f} | {fl} | {lat} | {tt1:.2f}, {tfl}, "
              f"{lint} | {secs:.1f} |")
    for k in ("+AdaRound", "+QAT"):
        rec = runs[k][0].recovery
        print(f"ladder steps ({k} run, --recover {rec.mode}, selection split):")
        for s in rec.steps:
            print(f"  {s.target:8s} {s.step:8s} {s.file:22s} drop {s.drop:5.2f} {'met' if s.met else 'missed':6s} "
                  f"{s.seconds:7.1f} s  {s.changed}")
        print(f"  winner: {rec.winner}")
        print("  learned int8 weights read back, max |difference|: "
              + ", ".join(f"{n} {v}" for n, v in diffs[k].items()))


if __name__ == "__main__":
    main()
