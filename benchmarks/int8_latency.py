"""INT8 latency on the CPU, measured in one run: onnxruntime INT8 (the accurate CPU policy that
``quantize_model`` chooses) vs onnxruntime FP32 vs the unfolded eager torch model.

    .venv/bin/python benchmarks/int8_latency.py                      # RepVGG-A0, 224x224, batch 1
    .venv/bin/python benchmarks/int8_latency.py --model repvgg_digits --size 16 --iters 200

Weights are the architecture's seeded initialisation with randomised BN statistics (latency does
not depend on trained values); the CPU policy is verified on the optimized session against the
FP32 model's top-1 on synthetic inputs; on CPUs whose u8s8 kernels can saturate (AVX2 without VNNI)
only the policies that cannot saturate are tried, since random weights would not reveal it. Engines are timed in interleaved rounds so that load from
other processes hits all of them alike; the ratios are of medians.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _randomize_bn(model: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)


def _time_rounds(fns: dict, rounds: int, per_round: int, settle: int = 3) -> dict[str, list[float]]:
    """Interleaved rounds; after each switch ``settle`` untimed runs let the previous engine's
    spinning worker threads (torch's OpenMP pool, onnxruntime's) go idle and refill the caches."""
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            for _ in range(settle):
                f()
            for _ in range(per_round):
                t = time.perf_counter()
                f()
                out[k].append((time.perf_counter() - t) * 1000.0)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="repvgg_a0")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--iters", type=int, default=60, help="timed runs per engine (in rounds of 5)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--calib", type=int, default=32, help="synthetic calibration samples")
    ap.add_argument("--policy", action="append",
                    help="restrict the CPU policies tried (repeatable), e.g. --policy u8s8-w7: synthetic data "
                         "with random weights is a weak accuracy check, so pin the policy trained models need")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from edgerep import fold_model
    from edgerep.engines.onnxruntime_engine import OrtEngine, default_threads
    from edgerep.models import create_model
    from edgerep.quant.calibrate import ArrayDataset
    from edgerep.quant.cpu_features import detect_cpu_features
    from edgerep.quant.export import export_onnx
    from edgerep.quant.pipeline import quantize_model

    threads = args.threads or default_threads()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    try:
        model = create_model(args.model, num_classes=args.classes).eval()
    except TypeError:
        model = create_model(args.model).eval()
    _randomize_bn(model)
    in_ch = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d)).in_channels
    shape = (in_ch, args.size, args.size)
    rng = np.random.default_rng(0)
    calib = ArrayDataset(rng.standard_normal((args.calib, *shape)).astype(np.float32), None, "synthetic-calib")
    verify = ArrayDataset(rng.standard_normal((max(32, args.calib), *shape)).astype(np.float32), None, "synthetic-eval")
    x1 = rng.standard_normal((1, *shape)).astype(np.float32)
    log = (lambda m: None) if args.json else (lambda m: print(f"  {m}", file=sys.stderr))
    with tempfile.TemporaryDirectory(prefix="edgerep-bench-") as tmpd:
        tmp = Path(tmpd)
        t0 = time.perf_counter()
        folded = fold_model(model)
        export_onnx(folded, tmp / "fp32.onnx", shape)
        log(f"folded + exported in {time.perf_counter() - t0:.1f}s")

        def ref(x):
            with torch.inference_mode():
                return model(torch.from_numpy(x)).numpy()

        policies = tuple(args.policy) if args.policy else None
        cpu = detect_cpu_features()
        if policies is None and cpu.u8s8_saturates:
            # random weights on synthetic data cannot show int16 saturation that trained weights hit:
            # time only the policies that cannot saturate (7-bit weights, x64 precision)
            from edgerep.quant.policy import cpu_candidates

            policies = tuple(p.name for p in cpu_candidates(cpu) if p.qdq.reduce_range or p.session_config)
        res = quantize_model(tmp / "fp32.onnx", calib, verify, tmp / "q", targets=("cpu",), max_drop=None,
                             reference=ref, threads=threads, progress=log, cpu_policies=policies)
        pol = res.cpu_policy
        fp32 = OrtEngine(tmp / "fp32.onnx", threads=threads)
        int8 = OrtEngine(res.files["cpu"], precision="int8", threads=threads, session_config=pol.session_config)
        xt = torch.from_numpy(x1)
        fns = {"torch-eager-unfolded-fp32": lambda: model(xt), "ort-fp32": lambda: fp32.run(x1),
               "ort-int8": lambda: int8.run(x1)}
        with torch.inference_mode():
            _time_rounds(fns, 1, 3, settle=0)  # warm-up
            per_round = 5
            times = _time_rounds(fns, max(1, args.iters // per_round), per_round)
    med = {k: float(np.median(v)) for k, v in times.items()}
    out = {
        "model": args.model, "input": [1, *shape], "threads": threads,
        "cpu": detect_cpu_features().to_dict(), "onnxruntime_session": int8.describe(),
        "cpu_policy": pol.to_dict(),
        "candidates": [{"policy": c.policy, "accepted": c.accepted, "agreement": c.agreement,
                        "quick_latency_ms": c.latency_ms, "reason": c.reason} for c in res.candidates],
        "median_ms": med,
        "p90_ms": {k: float(np.percentile(v, 90)) for k, v in times.items()},
        "ratio_int8_over_ort_fp32": med["ort-int8"] / med["ort-fp32"],
        "ratio_int8_over_torch_unfolded": med["ort-int8"] / med["torch-eager-unfolded-fp32"],
        "iters": len(times["ort-int8"]),
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{args.model} {out['input']} threads={threads} on {out['cpu']['model_name']} ({out['cpu']['int8_dot']})")
    print(f"CPU policy: {pol.name} {pol.session_config or ''} - {pol.reason}")
    for c in res.candidates:
        print(f"  candidate {c.policy:14s} agreement {c.agreement if c.agreement is not None else float('nan'):6.2f}%  "
              f"quick {c.latency_ms:8.3f} ms  {'accepted' if c.accepted else 'rejected'}")
    for k, v in med.items():
        print(f"{k:28s} median {v:9.3f} ms   p90 {out['p90_ms'][k]:9.3f} ms")
    print(f"onnxruntime INT8 / onnxruntime FP32     = {out['ratio_int8_over_ort_fp32']:.3f}")
    print(f"onnxruntime INT8 / unfolded eager torch = {out['ratio_int8_over_torch_unfolded']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
