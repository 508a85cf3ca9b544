"""The recovery ladder on the detection and super-resolution quant-hostile benchmarks: PTQ / +AdaRound / +QAT / mixed.

    PYTHONPATH=. .venv/bin/python benchmarks/recover_ladder_tasks.py detect [--iters 500] [--qat-steps 300]
    PYTHONPATH=. .venv/bin/python benchmarks/recover_ladder_tasks.py sr [--max-drop 0.1]
    PYTHONPATH=. .venv/bin/python benchmarks/recover_ladder_tasks.py detect --max-drop 0.1 --target tensorrt

The checkpoint (default: the task's shipped hostile variant, ``examples/checkpoints/repdet_scenes_hostile.pt`` or
``ecbsr_x2_hostile.pt``) is folded and exported as ``edgerep deploy`` does, then ``quantize_model`` runs once per
row on the CPU target (``--target tensorrt``: TensorRT's file, symmetric s8, scored as quantize scores it, by
its QDQ simulation in float; no latency, there is no TensorRT here), with deploy's data (calibration split,
every choice scored by the task's selection score on the selection split, choices against the folded FP32 file
as in deploy) and the budget ``--max-drop`` (the task's deploy default: 0.5 mAP points, 0.1 dB):

  PTQ        --max-drop none: every layer INT8, no learning step, no layer in float
  mixed      --recover none: PTQ, then the most sensitive layers in FP32 until the budget holds
  +AdaRound  --recover adaround: PTQ, then AdaRound, then (only if needed) layers in FP32
  +QAT       --recover qat: PTQ, then QAT (distillation on the raw outputs), then (only if needed) layers in FP32
  auto       --recover auto: PTQ, AdaRound, QAT on top of it when AdaRound misses, then layers in FP32

Every figure in the table is on the test split, which no choice has seen: detection mAP@[.5:.95] (mAP@.5) by
pycocotools with image and instance counts; SR PSNR / SSIM on Y with the image count. Latency: every row's CPU
file on the optimized onnxruntime session, batch 1, interleaved rounds (the per-round minimum's median), in one
run; the load average is printed beside it. ``step s``: each ladder step's own seconds as the report records
them (PTQ: calibration, policies and their scoring; mixed: the sensitivity search).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recover_ladder import interleaved_ms  # noqa: E402

from edgerep.checkpoint import load_checkpoint  # noqa: E402
from edgerep.data import open_dataset  # noqa: E402
from edgerep.engines.onnxruntime_engine import OrtEngine  # noqa: E402
from edgerep.fold.model import fold_model  # noqa: E402
from edgerep.quant.cpu_features import detect_cpu_features  # noqa: E402
from edgerep.quant.export import export_onnx  # noqa: E402
from edgerep.quant.options import (CalibrationOptions, JudgeOptions, QuantizeOptions, RecoveryOptions,  # noqa: E402
                                   TargetOptions)
from edgerep.quant.pipeline import quantize_model  # noqa: E402
from edgerep.tasks import get_task  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TASKS = {"detect": ("examples/checkpoints/repdet_scenes_hostile.pt", "scenes", 0.5),
         "sr": ("examples/checkpoints/ecbsr_x2_hostile.pt", "photos", 0.1)}
ROWS = ("PTQ", "mixed", "+AdaRound", "+QAT", "auto")


def plans(rows: list[str], budget: float, iters: int, qat_steps: int, cache: Path,
          target: str = "cpu") -> dict[str, QuantizeOptions]:
    """The ``QuantizeOptions`` of each row (one target, deploy's calibration plan, the given budget)."""
    cal = CalibrationOptions(cache_dir=cache)
    tgt = TargetOptions(targets=(target,))
    judge = JudgeOptions(max_drop=budget)

    def rec(mode: str) -> RecoveryOptions:
        return RecoveryOptions(mode, iters=iters, qat_steps=qat_steps)

    every = {"PTQ": QuantizeOptions(target=tgt, calibration=cal, judge=JudgeOptions(max_drop=None)),
             "mixed": QuantizeOptions(target=tgt, calibration=cal, judge=judge),
             "+AdaRound": QuantizeOptions(target=tgt, calibration=cal, judge=judge, recovery=rec("adaround")),
             "+QAT": QuantizeOptions(target=tgt, calibration=cal, judge=judge, recovery=rec("qat")),
             "auto": QuantizeOptions(target=tgt, calibration=cal, judge=judge, recovery=rec("auto"))}
    return {k: every[k] for k in rows}


def test_metric(task, path: Path, session_config: dict | None, test, fp32: bool = False,
                simulated: bool = False) -> tuple[str, dict]:
    """The test split's metric of one ONNX file (run batch by batch as deploy's evaluation does), in words and as
    the task's accuracy numbers. ``simulated``: graph optimizations off (a TensorRT file's QDQ simulated in float,
    as quantize scores it)."""
    eng = OrtEngine(path, precision="fp32" if fp32 else "int8", session_config=None if fp32 else session_config,
                    **({"optimization": "disable"} if simulated else {}))
    outs, ys = [], []
    for x, y in test.batches(16):
        outs.append(np.asarray(eng.run(np.ascontiguousarray(x, dtype=np.float32)), dtype=np.float32))
        ys.append(y)
    d = task.evaluate(np.concatenate(outs), task.collect_targets(ys), None, dataset=test).accuracy
    d = d.model_dump() if hasattr(d, "model_dump") else dict(d)
    if task.name == "detect":
        return f"{d['value']:.2f} ({d['map50']:.2f})", d
    return f"{d['value']:.3f} dB / {d['ssim']:.4f}", d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("task", choices=sorted(TASKS))
    ap.add_argument("--ckpt", help="the checkpoint (default: the task's shipped hostile variant)")
    ap.add_argument("--max-drop", type=float, help="the budget (default: deploy's for the task)")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"rows to run, of {','.join(ROWS)}")
    ap.add_argument("--iters", type=int, default=RecoveryOptions().iters, help="AdaRound Adam steps per layer")
    ap.add_argument("--qat-steps", type=int, default=RecoveryOptions().qat_steps, help="QAT fine-tuning steps")
    ap.add_argument("--target", choices=("cpu", "tensorrt"), default="cpu",
                    help="the file the ladder writes: the CPU file (timed) or TensorRT's (symmetric s8; its metric "
                         "is the QDQ simulation quantize scores, no latency: no TensorRT here)")
    args = ap.parse_args()
    rows = [r for r in args.rows.split(",") if r]
    bad = [r for r in rows if r not in ROWS]
    if bad:
        ap.error(f"--rows: unknown {', '.join(bad)} (expected some of {', '.join(ROWS)})")
    ckpt_default, data, budget = TASKS[args.task]
    budget = args.max_drop if args.max_drop is not None else budget
    load_before = os.getloadavg()
    loaded = load_checkpoint(ROOT / (args.ckpt or ckpt_default))
    meta = loaded.meta
    task = get_task(args.task)
    calib, val, test = (open_dataset(data, split=s, meta=meta) for s in ("calib", "val", "test"))
    runs: dict[str, tuple] = {}
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        fp32 = tmp / "model.fp32.onnx"
        model = loaded.model.eval()
        export_onnx(fold_model(model, torch.from_numpy(np.asarray(next(iter(calib.batches(2)))[0]))), fp32,
                    tuple(meta.input_shape), dynamic_batch=True, dynamic_hw=args.task == "sr")
        for name, opts in plans(rows, budget, args.iters, args.qat_steps, tmp / "cache", args.target).items():
            t = time.perf_counter()
            res = quantize_model(fp32, calib, val, tmp / name.replace("+", ""), opts, task=task,
                                 progress=lambda m, n=name: print(f"[{n}] {m}", flush=True))
            runs[name] = (res, time.perf_counter() - t)
        ref_text, _ = test_metric(task, fp32, None, test, fp32=True)
        load_lat = os.getloadavg()
        trt = args.target == "tensorrt"
        if trt:
            ms = {k: math.nan for k in runs}
        else:
            engines = {k: OrtEngine(r.files["cpu"], precision="int8", session_config=r.cpu_policy.session_config)
                       for k, (r, _) in runs.items()}
            x1 = np.ascontiguousarray(next(iter(test.batches(1)))[0], dtype=np.float32)
            ms = interleaved_ms(engines, x1)
        table = []
        for k, (r, secs) in runs.items():
            if trt:
                text, d = test_metric(task, r.files["tensorrt"], None, test, simulated=True)
                learned = r.tensorrt.get("learned_weights")
                fl = list(r.tensorrt.get("excluded") or [])
                name = "tensorrt" + (f"+{learned}" if learned else "") + (f"+fp32[{len(fl)}]" if fl else "") \
                    + f", lint errors {r.tensorrt.get('lint_errors')}"
                drop = r.tensorrt["simulated_drop"]
            else:
                text, d = test_metric(task, r.files["cpu"], r.cpu_policy.session_config, test)
                fl = [e["node"] for e in r.excluded_nodes if e["target"] == "cpu"]
                name, drop = r.cpu_policy.name, r.cpu_policy.drop
            steps = ", ".join(f"{s.step} {s.seconds:.0f}" for s in (r.recovery.steps if r.recovery else ()))
            table.append((k, name, text, d, drop, fl, ms[k], steps, secs))
    cpu = detect_cpu_features()
    print(f"host: {cpu.model_name}, {os.cpu_count()} cores, INT8 path {cpu.int8_dot}; onnxruntime "
          f"{__import__('onnxruntime').__version__}, torch {torch.__version__}; load (1/5/15 min) before "
          f"{'/'.join(f'{v:.1f}' for v in load_before)}, at latency {'/'.join(f'{v:.1f}' for v in load_lat)}, "
          f"after {'/'.join(f'{v:.1f}' for v in os.getloadavg())}")
    counts = f"{table[0][3]['samples']} images" + (f" / {table[0][3]['instances']} boxes" if args.task == "detect"
                                                     else "")
    print(f"model: {args.ckpt or ckpt_default}; budget {budget:g} ({'mAP points' if args.task == 'detect' else 'dB'}) "
          f"on the selection split ({len(val)} samples), calibration {len(calib)} samples; test {counts}; "
          f"folded FP32 on test: {ref_text}; AdaRound {args.iters} steps per layer, QAT {args.qat_steps} steps")
    metric = "mAP@[.5:.95] (mAP@.5)" if args.task == "detect" else "PSNR / SSIM (Y)"
    print(f"| row | {'TensorRT file (simulated)' if args.target == 'tensorrt' else 'CPU file'} | test {metric} "
          "| selection drop | layers in float | INT8 latency ms (batch 1) | ladder steps s | quantize wall s |")
    print("|---|---|---|---|---|---|---|---|")
    for k, pol, text, _d, drop, fl, lat, steps, secs in table:
        print(f"| {k} | {pol} | {text} | {drop:.2f} | {len(fl)}{' (' + ', '.join(fl) + ')' if fl else ''} "
              f"| {'-' if math.isnan(lat) else f'{lat:.3f}'} | {steps or '-'} | {secs:.0f} |")
    for k, (r, _) in runs.items():
        if r.recovery is None:
            continue
        print(f"ladder ({k}, --recover {r.recovery.mode}, selection split):")
        for s in r.recovery.steps:
            print(f"  {s.step:8s} {s.file:24s} drop {s.drop:6.3f} {'met' if s.met else 'missed':6s} {s.seconds:7.1f} s"
                  f"  {s.changed}")


if __name__ == "__main__":
    main()
