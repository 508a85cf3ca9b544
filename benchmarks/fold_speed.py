"""Fold time and eager-torch speed-up of a folded RepVGG-A0 (224x224, batch 1), measured in one run.

Unfolded and folded models are timed in alternation (ABAB...), so a neighbour's load on a
shared machine hits both alike; the ratio of medians is the number to quote.

    .venv/bin/python benchmarks/fold_speed.py                 # RepVGG-A0, 2 threads
    .venv/bin/python benchmarks/fold_speed.py --arch repvgg_b0 --iters 20 --json
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from edgerep.blocks.testing import randomize_
from edgerep.fold.model import count_convs, count_params, fold_model, verify_fold
from edgerep.models import create_model, get_model_info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="repvgg_a0")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--iters", type=int, default=30, help="timed runs of each model")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    model = randomize_(create_model(args.arch), seed=0)  # non-trivial BN statistics, eval mode
    c = get_model_info(args.arch).input_shape[0]
    x = torch.randn(args.batch, c, args.size, args.size, generator=torch.Generator().manual_seed(0))

    t0, c0 = time.perf_counter(), time.process_time()
    folded = fold_model(model, generic=False)
    fold_wall, fold_cpu = time.perf_counter() - t0, time.process_time() - c0
    rep = verify_fold(model, folded, x)

    times: dict[str, list[float]] = {"unfolded": [], "folded": []}
    with torch.inference_mode():
        for _ in range(args.warmup):
            model(x), folded(x)
        for _ in range(args.iters):
            for name, m in (("unfolded", model), ("folded", folded)):
                t = time.perf_counter()
                m(x)
                times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    result = {
        "arch": args.arch, "input": [args.batch, c, args.size, args.size], "threads": args.threads,
        "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
        "fold_seconds_wall": round(fold_wall, 3), "fold_seconds_cpu": round(fold_cpu, 3),
        "max_rel_error": rep.max_rel_error,
        "params": [count_params(model), count_params(folded)], "convs": [count_convs(model), count_convs(folded)],
        "latency_ms_median": {k: round(v, 2) for k, v in med.items()},
        "latency_ms_p90": {k: round(sorted(v)[int(0.9 * (len(v) - 1))] * 1e3, 2) for k, v in times.items()},
        "speedup_unfolded_over_folded": round(med["unfolded"] / med["folded"], 2),
        "iters": args.iters,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{args.arch} {tuple(result['input'])}, torch {torch.__version__}, {args.threads} threads, "
          f"{args.iters} alternating runs each")
    print(f"  fold:      {fold_wall:.2f} s wall ({fold_cpu:.2f} s CPU), max rel error {rep.max_rel_error:.1e}")
    print(f"  params:    {result['params'][0]:,} -> {result['params'][1]:,}   convs: "
          f"{result['convs'][0]} -> {result['convs'][1]}")
    print(f"  latency:   unfolded {med['unfolded']:.1f} ms, folded {med['folded']:.1f} ms (medians)")
    print(f"  speed-up:  {result['speedup_unfolded_over_folded']:.2f}x (eager torch, unfolded / folded)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
