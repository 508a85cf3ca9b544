"""How long ``edgerep check`` takes on RepVGG-A0 at 224x224 with 64 calibration images (CPU).

The budget (issue 4) is 60 s on the 2-core CI machine. Weights are the registry's untrained
RepVGG-A0 (the time does not depend on the values); inputs are seeded standard-normal images,
i.e. preprocessed-image statistics. Prints each stage's time, the total and the machine load
(other processes on the same cores slow every stage alike).

    .venv/bin/python benchmarks/check_speed.py                # default settings of `edgerep check`
    .venv/bin/python benchmarks/check_speed.py --threads 2 --calib 64 --eval 16 --json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="repvgg_a0")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--calib", type=int, default=64, help="calibration images (default 64)")
    ap.add_argument("--eval", type=int, default=16, help="sensitivity images (default 16, as edgerep check)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--budget", type=float, default=60.0, help="seconds; prints within/over budget")
    ap.add_argument("--device", default="cpu", help="where the model runs: cpu (the budget's case) or cuda")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from edgerep.models import create_model
    from edgerep.quant.check import CheckOptions, check_model

    model = create_model(args.arch).eval().to(args.device)
    g = torch.Generator().manual_seed(0)
    shape = (3, args.size, args.size)
    calib = [torch.randn(min(args.batch, args.calib - i), *shape, generator=g)
             for i in range(0, args.calib, args.batch)]
    evals = [torch.randn(min(args.batch, args.eval - i), *shape, generator=g)
             for i in range(0, args.eval, args.batch)]
    load_before = os.getloadavg()
    t0, c0 = time.perf_counter(), time.process_time()
    report = check_model(model, example_input=calib[0][:2], calib_batches=calib, eval_batches=evals,
                         options=CheckOptions(eval_limit=args.eval, calib_limit=args.calib))
    total = time.perf_counter() - t0
    cpu = time.process_time() - c0
    load_after = os.getloadavg()
    out = {
        "arch": args.arch, "input": list(shape), "calib_images": args.calib, "eval_images": args.eval,
        "threads": args.threads, "device": args.device, "layers": len(report.layers), "seconds_total": round(total, 2),
        "cpu_seconds": round(cpu, 2),
        "seconds_by_stage": {k: round(v, 2) for k, v in report.timings.items() if k != "total"},
        "budget_s": args.budget, "within_budget": total <= args.budget,
        "loadavg_1min_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "cpus": os.cpu_count(), "machine": platform.machine(), "torch": torch.__version__,
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"edgerep check {args.arch} {args.size}x{args.size}, {args.calib} calibration + {args.eval} "
              f"sensitivity images, {args.device}, {args.threads} threads, {len(report.layers)} layers")
        for k, v in out["seconds_by_stage"].items():
            print(f"  {k:12s} {v:7.2f} s")
        print(f"  {'total':12s} {total:7.2f} s  ({'within' if out['within_budget'] else 'OVER'} the "
              f"{args.budget:g} s budget; load average {load_before[0]:.1f} -> {load_after[0]:.1f} on "
              f"{os.cpu_count()} CPUs)")
        print(f"  {'cpu time':12s} {cpu:7.2f} s  (process CPU seconds over all threads; on an idle machine the "
              f"wall time is about cpu / threads = {cpu / args.threads:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
