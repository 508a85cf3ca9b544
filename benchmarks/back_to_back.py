"""Two engines timed back to back: does each engine's p50 right after the other's phase match its
p50 timed alone? (A pool left spinning against another made the unfolded torch baseline 100x slow on
2 cores.) Timing ratios move with the host's load, so this is a benchmark, not a test; the test
suite checks the order of events instead (tests/test_bench_threads_ranking.py).

    .venv/bin/python benchmarks/back_to_back.py              # 3 alternations, 2 threads
    .venv/bin/python benchmarks/back_to_back.py --rounds 5 --threads 4 --json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--depth", type=int, default=12, help="3x3 convs of 16 channels at 32x32")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import numpy as np
    import torch
    from torch import nn

    from edgerep.bench.noise import host_load
    from edgerep.bench.scenarios import ScenarioSettings, run_scenario
    from edgerep.engines.onnxruntime_engine import OrtEngine
    from edgerep.engines.torch_engine import TorchEngine
    from edgerep.quant.export import export_onnx

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, padding=1), nn.ReLU()]
    for _ in range(args.depth):
        layers += [nn.Conv2d(16, 16, 3, padding=1), nn.ReLU()]
    net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4)).eval()
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    with tempfile.TemporaryDirectory() as d:
        export_onnx(net, Path(d) / "m.onnx", (3, 32, 32))
        ort = OrtEngine(Path(d) / "m.onnx", threads=args.threads,
                        session_config={"session.intra_op.allow_spinning": "1"})
        tor = TorchEngine(net)
        s = ScenarioSettings(min_seconds=0.0, min_queries=64, warmup=5, use_loadgen=False)
        p50: dict[str, list[float]] = {k: [] for k in ("ort alone", "ort after torch", "torch alone",
                                                       "torch after ort")}
        load = host_load()
        run_scenario(ort, x, s)
        for _ in range(args.rounds):
            p50["ort alone"].append(run_scenario(ort, x, s)["p50_ms"])  # right after its own phase
            p50["torch after ort"].append(run_scenario(tor, x, s)["p50_ms"])
            p50["torch alone"].append(run_scenario(tor, x, s)["p50_ms"])
            p50["ort after torch"].append(run_scenario(ort, x, s)["p50_ms"])
    med = {k: float(np.median(v)) for k, v in p50.items()}
    out = {"median_p50_ms": med, "ratio_ort": med["ort after torch"] / med["ort alone"],
           "ratio_torch": med["torch after ort"] / med["torch alone"], "load_before": load,
           "threads": args.threads, "rounds": args.rounds}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for k, v in med.items():
            print(f"{k:16s} p50 {v:.3f} ms")
        print(f"ort after torch / ort alone   {out['ratio_ort']:.2f}x")
        print(f"torch after ort / torch alone {out['ratio_torch']:.2f}x   (1.0 = no interference; load {load})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
