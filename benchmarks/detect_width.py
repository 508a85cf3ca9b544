"""INT8 / FP32 latency of the demo detector's architecture against its width, in one run (issue 24, stop 33).

For each ``width_scale`` and input size: ``repdet_scenes(width_scale=W)`` with random weights and randomized BN
statistics (``edgerep.blocks.testing.randomize_``; nothing trained, nothing downloaded), folded, exported at that
size, then plain onnxruntime ``quantize_static`` (QDQ, u8 activations / s8 per-channel weights, MinMax on 8 random
images; the decode after the last convs kept in FP32, as ``benchmarks/detect_ptq.py``). Both files run batch 1 on
the optimized CPU session in interleaved rounds (``edgerep.bench.ranking``); the ratio is the geometric mean of the
per-round ratios of the fastest runs, with its 95% CI. The CPU, its INT8 path and the load average are printed.

It is why the demo detector is 40-160 channels (width 2.5): at 16-64 channels onnxruntime's x86 INT8 convs are
barely faster than its NCHWc FP32 convs (and a 3-channel stem is 2-2.6x slower in INT8), so INT8 / FP32 measures the
model's width, not the quantization.

    PYTHONPATH=. .venv/bin/python benchmarks/detect_width.py                       # 1, 1.5, 2, 2.5, 3, 4 at 160
    PYTHONPATH=. .venv/bin/python benchmarks/detect_width.py --widths 1,4 --size 640
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

import edgerep  # noqa: F401  (first: thread settings before torch loads OpenMP)

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _random(n: int, size: int, seed: int = 0):
    """``n`` uniform [0, 1) images of ``size`` x ``size`` as a data set."""
    from edgerep.quant.calibrate import ArrayDataset

    return ArrayDataset(np.random.default_rng(seed).random((n, 3, size, size), dtype=np.float32), name="random")


def measure(width: float, size: int, tmp: Path, rounds: int, threads: int) -> dict:
    """One width at one input size: parameters, fastest FP32 / INT8 ms and the paired ratio."""
    import torch
    from detect_ptq import decode_nodes, plain_ptq

    from edgerep.bench.ranking import interleaved_rounds, paired_ratio
    from edgerep.blocks.testing import randomize_
    from edgerep.engines.onnxruntime_engine import OrtEngine
    from edgerep.fold.model import fold_model
    from edgerep.models.repdet import repdet_scenes
    from edgerep.quant.export import export_onnx

    torch.manual_seed(0)
    model = randomize_(repdet_scenes(width_scale=width), seed=0).eval()
    folded = fold_model(model, torch.rand(2, 3, size, size))
    fp32, int8 = tmp / f"w{width}_{size}.onnx", tmp / f"w{width}_{size}.int8.onnx"
    export_onnx(folded, fp32, (3, size, size))
    plain_ptq(fp32, int8, _random(8, size), decode_nodes(fp32))
    engines = {"fp32": OrtEngine(fp32, threads=threads), "int8": OrtEngine(int8, precision="int8", threads=threads)}
    times = interleaved_rounds(engines, _random(1, size, seed=1).x, rounds=rounds, per_round=5, budget_s=1e9,
                               settle_s=1.0)
    r = paired_ratio(times["int8"], times["fp32"], statistic="min")
    return {"width": width, "size": size, "params_m": sum(p.numel() for p in folded.parameters()) / 1e6,
            "fp32_ms": float(np.min(np.concatenate(times["fp32"]))),
            "int8_ms": float(np.min(np.concatenate(times["int8"]))), "ratio": r}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", default="1,1.5,2,2.5,3,4", help="width_scale values, comma-separated")
    ap.add_argument("--size", type=int, default=160, help="input height = width (the demo: 160)")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    from edgerep.bench.noise import host_load
    from edgerep.quant.cpu_features import detect_cpu_features

    before = host_load()
    with tempfile.TemporaryDirectory() as tmpd:
        rows = [measure(float(w), args.size, Path(tmpd), args.rounds, args.threads) for w in args.widths.split(",")]
    cpu, after = detect_cpu_features(), host_load()
    print(f"{cpu.model_name} ({cpu.int8_dot}), {args.threads} threads, batch 1, {args.size} x {args.size}; "
          f"load (1 min) {before['loadavg_1m']} before, {after['loadavg_1m']} after, {before['cores']} cores")
    print("| width_scale | folded parameters | FP32 ms | INT8 ms | INT8 / FP32 (95% CI) |\n|---|---|---|---|---|")
    for r in rows:
        q = r["ratio"]
        print(f"| {r['width']:g} | {r['params_m']:.2f} M | {r['fp32_ms']:.3f} | {r['int8_ms']:.3f} | "
              f"{q.estimate:.3f} ({q.low:.3f}-{q.high:.3f}) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
