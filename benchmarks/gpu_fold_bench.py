#!/usr/bin/env python
"""Folded vs unfolded RepVGG-A0 on a GPU: torch CUDA fp32/fp16 at batch 1 and 32, and TensorRT plans.

Every ratio is measured in one run of this script on one machine: unfolded and folded are timed in
alternating rounds (the median of the rounds' medians is reported), so clock drift and thermal state
hit both alike. Two timings per torch case:

  device  - the forward pass alone, CUDA events around it, input already on the GPU
  e2e     - engine.run(): host numpy in, host numpy out (what `edgerep bench` reports)

TensorRT plans (FP32, FP16; built from the unfolded and the folded ONNX) are timed e2e, when real
TensorRT and a GPU exist. Without a GPU the script says so and exits 0; `--cpu` runs the same
comparison on the CPU at a small size as a smoke test of the script itself.

    python benchmarks/gpu_fold_bench.py                 # GPU: the README table
    python benchmarks/gpu_fold_bench.py --json out.json
    python benchmarks/gpu_fold_bench.py --cpu           # no GPU: smoke run
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgerep.engines.torch_engine import TorchEngine, cuda_available  # noqa: E402
from edgerep.fold.model import fold_model, verify_fold  # noqa: E402


def repvgg_a0() -> nn.Module:
    """RepVGG-A0 from the model registry (or from RepVGGBlocks if the registry lacks it), with real-looking BN."""
    try:
        from edgerep.models import create_model

        model = create_model("repvgg_a0")
    except Exception:  # the registry is another module's; keep the benchmark runnable without it
        from edgerep.blocks import RepVGGBlock

        widths, depths = (48, 48, 96, 192, 1280), (1, 2, 4, 14, 1)
        layers, cin = [], 3
        for w, d in zip(widths, depths):
            for i in range(d):
                layers.append(RepVGGBlock(cin, w, stride=2 if i == 0 else 1))
                cin = w
        model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 1000))
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_device(model: nn.Module, x: torch.Tensor, iters: int, warmup: int) -> float:
    """Median ms of the forward pass alone (CUDA events on GPU, perf_counter on CPU)."""
    cuda = x.is_cuda
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        _sync("cuda" if cuda else "cpu")
        for _ in range(iters):
            if cuda:
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                model(x)
                b.record()
                b.synchronize()
                times.append(a.elapsed_time(b))
            else:
                t0 = time.perf_counter()
                model(x)
                times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def time_e2e(engine, x: np.ndarray, iters: int, warmup: int) -> float:
    """Median ms of engine.run (host in -> host out)."""
    for _ in range(warmup):
        engine.run(x)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        engine.run(x)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def paired(fn_unfolded, fn_folded, rounds: int) -> tuple[float, float]:
    """Alternate the two measurements ``rounds`` times; median of each side."""
    u, f = [], []
    for _ in range(rounds):
        u.append(fn_unfolded())
        f.append(fn_folded())
    return statistics.median(u), statistics.median(f)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", action="store_true", help="no GPU: run the comparison on the CPU (smoke test)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", help="default 1 32 (GPU), 1 4 (--cpu)")
    ap.add_argument("--input-size", type=int, help="square input side; default 224 (GPU), 32 (--cpu)")
    ap.add_argument("--iters", type=int, help="timed iterations per round; default 50 (GPU), 2 (--cpu)")
    ap.add_argument("--warmup", type=int, help="warm-up iterations; default 20 (GPU), 1 (--cpu)")
    ap.add_argument("--rounds", type=int, help="alternating unfolded/folded rounds; default 3 (GPU), 1 (--cpu)")
    ap.add_argument("--no-tensorrt", action="store_true", help="skip the TensorRT plans")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)

    gpu = cuda_available()
    if not gpu and not args.cpu:
        print("gpu_fold_bench: no CUDA GPU visible to torch "
              f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); nothing to measure. "
              "Run it on a GPU machine, or with --cpu for a CPU smoke run.")
        return 0
    device = "cuda:0" if gpu and not args.cpu else "cpu"
    small = device == "cpu"
    sizes = args.batch_sizes or ([1, 4] if small else [1, 32])
    side = args.input_size or (32 if small else 224)
    iters = args.iters or (2 if small else 50)
    args.rounds = args.rounds or (1 if small else 3)
    warmup = args.warmup if args.warmup is not None else (1 if small else 20)
    precisions = ["fp32"] if small else ["fp32", "fp16"]
    torch.backends.cudnn.benchmark = True
    if small:
        print("CPU smoke run: checks the script end to end; its timings are not the GPU numbers the README wants")

    model = repvgg_a0()
    x0 = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(1))
    folded = fold_model(model, x0)
    rep = verify_fold(model, folded, x0)
    host = {"device": device, "torch": torch.__version__, "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name(0) if device != "cpu" else platform.processor() or platform.machine(),
            "input": [3, side, side], "iters": iters, "warmup": warmup, "rounds": args.rounds}
    print(f"RepVGG-A0 {side}x{side} on {host['gpu']} ({device}); fold max rel error {rep.max_rel_error:.1e}; "
          f"convs {rep.convs_before} -> {rep.convs_after}")
    rows = []
    for prec in precisions:
        dtype = torch.float16 if prec == "fp16" else torch.float32
        eu = TorchEngine(model, device=device, precision=prec)
        ef = TorchEngine(folded, device=device, precision=prec)
        for bs in sizes:
            xn = np.random.default_rng(bs).standard_normal((bs, 3, side, side)).astype(np.float32)
            xt = torch.from_numpy(xn).to(device, dtype)
            du, df = paired(lambda: time_device(eu.model, xt, iters, warmup),
                            lambda: time_device(ef.model, xt, iters, warmup), args.rounds)
            rows.append({"engine": f"torch-{device.split(':')[0]}", "timing": "device", "precision": prec,
                         "batch": bs, "unfolded_ms": du, "folded_ms": df, "speedup": du / df})
            uu, ff = paired(lambda: time_e2e(eu, xn, iters, warmup), lambda: time_e2e(ef, xn, iters, warmup),
                            args.rounds)
            rows.append({"engine": f"torch-{device.split(':')[0]}", "timing": "e2e", "precision": prec,
                         "batch": bs, "unfolded_ms": uu, "folded_ms": ff, "speedup": uu / ff})
        del eu, ef
    rows += _tensorrt_rows(model, folded, side, sizes, iters, warmup, args) if device != "cpu" else []

    print(f"{'engine':<12} {'timing':<7} {'prec':<5} {'batch':>5} {'unfolded ms':>12} {'folded ms':>10} "
          f"{'speed-up':>9}")
    for r in rows:
        if "skipped" in r:
            print(f"{r['engine']:<12} {'-':<7} {r['precision']:<5} {'-':>5}  skipped: {r['skipped']}")
            continue
        print(f"{r['engine']:<12} {r['timing']:<7} {r['precision']:<5} {r['batch']:>5} {r['unfolded_ms']:>12.3f} "
              f"{r['folded_ms']:>10.3f} {r['speedup']:>8.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"host": host, "fold_max_rel_error": rep.max_rel_error, "rows": rows},
                                        indent=2) + "\n")
    return 0


def _tensorrt_rows(model, folded, side, sizes, iters, warmup, args) -> list[dict]:
    from edgerep.engines import tensorrt_engine as te

    ok, why = te.tensorrt_status()
    if args.no_tensorrt or not ok:
        return [{"engine": "tensorrt", "precision": "fp32/fp16", "skipped": "--no-tensorrt" if ok else why}]
    from edgerep.quant.export import export_onnx

    rows = []
    with tempfile.TemporaryDirectory(prefix="edgerep-gpubench-") as d:
        d = Path(d)
        export_onnx(model, d / "unfolded.onnx", (1, 3, side, side))
        export_onnx(folded, d / "folded.onnx", (1, 3, side, side))
        for prec in ("fp32", "fp16"):
            s = te.BuildSettings(prec, batch_min=1, batch_opt=min(sizes), batch_max=max(sizes), workspace_mb=4096)
            eu = te.TensorRTEngine(te.build_or_reuse(d / "unfolded.onnx", d / "u", s).plan)
            ef = te.TensorRTEngine(te.build_or_reuse(d / "folded.onnx", d / "f", s).plan)
            for bs in sizes:
                xn = np.random.default_rng(bs).standard_normal((bs, 3, side, side)).astype(np.float32)
                uu, ff = paired(lambda: time_e2e(eu, xn, iters, warmup), lambda: time_e2e(ef, xn, iters, warmup),
                                args.rounds)
                rows.append({"engine": "tensorrt", "timing": "e2e", "precision": prec, "batch": bs,
                             "unfolded_ms": uu, "folded_ms": ff, "speedup": uu / ff,
                             "tensorrt": eu.describe()["tensorrt"]})
    rows.append({"engine": "tensorrt", "precision": "int8",
                 "skipped": "INT8 plans need the QDQ file from calibration; `edgerep deploy --target dgpu` times them"})
    return rows


if __name__ == "__main__":
    sys.exit(main())
