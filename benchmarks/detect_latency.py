"""INT8 / FP32 latency of a deployed detector's onnxruntime files, in one run: the bundle's ``model.fp32.onnx``
and ``model.int8.onnx`` (the CPU file edgerep shipped, with its session config) and, for reference, plain
onnxruntime ``quantize_static`` of the same FP32 file (QDQ, u8/s8 per-channel, MinMax; decode tail in FP32, as
``benchmarks/detect_ptq.py``). Batch 1, the bundle's threads; interleaved rounds (``edgerep.bench.ranking``),
each ratio the geometric mean over rounds of the per-round ratio of the fastest runs with its 95% CI. The
CPU, its INT8 path and the load average are printed with the table.

    .venv/bin/python benchmarks/detect_latency.py engines/out/repdet_scenes --rounds 12
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

import edgerep  # noqa: F401  (first: thread settings before torch loads OpenMP)

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--statistic", choices=("min", "median"), default="min")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)

    from detect_ptq import _Reader, decode_nodes  # noqa: F401

    from edgerep.bench.noise import host_load
    from edgerep.bench.ranking import interleaved_rounds, paired_ratio
    from edgerep.data.base import Preprocess
    from edgerep.data.scenes import ScenesDataset
    from edgerep.engines.onnxruntime_engine import OrtEngine, default_threads, spinning_policy
    from edgerep.quant.cpu_features import detect_cpu_features

    bundle = Path(args.bundle)
    report = json.loads((bundle / "report.json").read_text())
    pol = report["quantization"]["cpu_policy"]
    threads = args.threads or default_threads()
    spin, why = spinning_policy("auto", threads)
    mode = "on" if spin else "off"
    shape = tuple(report["model"].get("input_shape") or (3, 160, 160))
    pre = Preprocess(shape, (0.0,) * 3, (1.0,) * 3, 1.0 / 255.0)
    x1 = next(iter(ScenesDataset("val", pre, n=1).batches(1)))[0]
    load_before = host_load()
    with tempfile.TemporaryDirectory() as tmp:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        plain = Path(tmp) / "plain.onnx"
        quantize_static(str(bundle / "model.fp32.onnx"), str(plain), _Reader(ScenesDataset("calib", pre, n=64), "input"),
                        quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=True, calibrate_method=CalibrationMethod.MinMax,
                        nodes_to_exclude=decode_nodes(bundle / "model.fp32.onnx"))
        engines = {
            "fp32": OrtEngine(bundle / "model.fp32.onnx", threads=threads, spinning=mode),
            "edgerep-int8": OrtEngine(bundle / "model.int8.onnx", precision="int8", threads=threads, spinning=mode,
                                      session_config=pol.get("session_config") or {}),
            "plain-int8": OrtEngine(plain, precision="int8", threads=threads, spinning=mode),
        }
        times = interleaved_rounds(engines, x1, rounds=args.rounds, per_round=7, budget_s=1e9, settle_s=2.0)
    cpu = detect_cpu_features()
    load_after = host_load()
    print(f"{bundle} ({report['model'].get('name', '?')}) batch 1 {shape}, {threads} threads, {cpu.model_name} "
          f"({cpu.int8_dot}); edgerep CPU policy {pol['name']}; load (1 min) {load_before['loadavg_1m']} before, "
          f"{load_after['loadavg_1m']} after, {load_before['cores']} cores; spinning: {why}")
    for k, v in times.items():
        a = np.concatenate(v)
        print(f"  {k:14s} median {np.median(a):.3f} ms  fastest {np.min(a):.3f} ms")
    print(f"\n| ratio ({args.statistic} per round, {args.rounds} rounds) | measured (95% CI) |\n|---|---|")
    for what, a, b in (("edgerep INT8 / FP32", "edgerep-int8", "fp32"), ("plain PTQ INT8 / FP32", "plain-int8", "fp32"),
                       ("edgerep INT8 / plain PTQ INT8", "edgerep-int8", "plain-int8")):
        r = paired_ratio(times[a], times[b], statistic=args.statistic)
        print(f"| {what} | {r.estimate:.3f} ({r.low:.3f}-{r.high:.3f}) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
