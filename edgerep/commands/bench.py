"""`edgerep bench MODEL|BUNDLE`: latency and throughput per engine, unfolded torch as the baseline."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "measure latency and throughput of a model or bundle on every engine"
DESCRIPTION = """\
Time every engine of a bundle (or a checkpoint / ONNX file): warm-up runs, then a fixed count
(--iterations) or a time budget per engine and batch size (--seconds). Reports p50 / p90 / p99 /
mean latency per batch and throughput, with the UNFOLDED torch model as the baseline and the
speed-up of each engine against it. Threads, ISA and versions are recorded in the report.

examples:
  edgerep bench engines/out/repvgg_digits               # a bundle written by deploy
  edgerep bench model.pt --arch repvgg_a0 --batch-sizes 1 8 32 --seconds 2
  edgerep bench model.fp32.onnx --iterations 200 --out bench.json
  edgerep gate bench.json --max-latency-ms 5 --engines "onnxruntime-cpu/*"
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", type=Path, help="bundle directory, checkpoint (.pt) or ONNX file")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1], metavar="N", help="batch sizes (default 1)")
    p.add_argument("--seconds", type=float, default=1.0, help="time budget per engine and batch size (default 1)")
    p.add_argument("--iterations", type=int, help="a fixed number of timed runs instead of --seconds")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs first (default 10)")
    p.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    from edgerep.commands.fold import add_checkpoint_arguments

    add_checkpoint_arguments(p)  # --arch, --arch-kwargs, --input-shape, --trust-checkpoint
    p.add_argument("--out", type=Path, help="write the report JSON here (for edgerep gate)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    from edgerep.errors import EdgerepError

    if args.out is not None:
        from edgerep.outputs import check_output_file

        check_output_file(args.out, "--out")  # before any timing (and before torch is imported)
    from edgerep.bench.runner import BenchOptions, bench
    from edgerep.commands.fold import parse_checkpoint_arguments

    if any(b <= 0 for b in args.batch_sizes):
        raise EdgerepError(f"--batch-sizes must be positive, got {args.batch_sizes}")
    if not args.target.exists():
        raise EdgerepError(f"{args.target}: no such file or directory")
    opts = BenchOptions(target=args.target, batch_sizes=args.batch_sizes, seconds=args.seconds,
                        iterations=args.iterations, warmup=args.warmup, threads=args.threads, arch=args.arch,
                        trust_checkpoint=args.trust_checkpoint, load=parse_checkpoint_arguments(args))
    from edgerep.report.console import step_progress

    with step_progress(quiet=args.json) as progress:
        report = bench(opts, progress=lambda msg: progress("bench", msg))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    from rich.table import Table

    t = Table(title=f"edgerep bench: {report['model']['name']}")
    for col in ("engine", "precision", "batch", "p50 ms", "p90 ms", "p99 ms", "mean ms", "img/s", "vs unfolded"):
        t.add_column(col, justify="left" if col in ("engine", "precision") else "right")
    rows = ([report["baseline"]] if report.get("baseline") else []) + report["engines"]
    for e in rows:
        for bs, s in e["latency_by_batch"].items():
            sp = (e.get("speedup_vs_unfolded") or {}).get(bs) if e is not report.get("baseline") else 1.0
            t.add_row(e["name"], e["precision"], bs, f"{s['p50_ms']:.3f}", f"{s['p90_ms']:.3f}",
                      f"{s['p99_ms']:.3f}", f"{s['mean_ms']:.3f}", f"{s['throughput_ips']:.0f}",
                      "baseline" if e is report.get("baseline") else (f"{sp:.2f}x" if sp else "–"))
    from edgerep.report.console import make_console

    make_console().print(t)
    return 0
