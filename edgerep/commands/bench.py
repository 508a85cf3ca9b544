"""`edgerep bench MODEL|BUNDLE`: latency and throughput per engine in an MLPerf scenario, unfolded torch as the baseline."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "measure latency and throughput of a model or bundle on every engine (MLPerf LoadGen scenarios)"
DESCRIPTION = """\
Time every engine of a bundle (or a checkpoint / ONNX file) the way MLPerf Inference does, with its
load generator (LoadGen, pip install mlcommons-loadgen) when installed, else a built-in timer that
applies the same rules and says so:

  single-stream  one query at a time (batch 1 unless --batch-sizes): p50, and the early-stopping
                 p90 (needs >= 64 queries) and p99 (needs >= 662 queries); null below those counts
  multi-stream   queries of N samples (--samples-per-query, default 8), one at a time: p99 per query
  offline        all samples at once in batches (--batch-sizes, default 1 8 32): throughput at the best

Each engine is timed in its own phase, after every worker pool of the process has stopped
spinning. Queries are served distinct samples (a pool of 64 synthetic ones: bench is given no data).
The minimums are MLPerf-style (64 queries / --seconds); a submission needs 1024 queries (offline
24576 samples) and 600 s: --mlperf-minimums runs those. A row is marked NOISY, judged on the figures
it shows, when its shown p99/p50 (p90/p50 below 662 queries) > 3, its spread (1.4826 x MAD / median
of the per-query times) > 0.3, or the p50 of the run's quarters moves > 1.5x (a loaded host):
`edgerep gate` then says its latency verdict is not reliable. An offline run LoadGen calls INVALID
is marked and never the result (the best batch is chosen among VALID runs only).
Throughput (img/s) is samples / total time. LoadGen's summary and detail logs go to
BUNDLE/loadgen/<scenario>/<engine>/ (or --log-dir). --profile adds the ten most expensive layers of
each engine, mapped back to the folded layer names.

A bundle's unfolded baseline is the checkpoint deploy read, found wherever the bundle is read from
(beside the bundle as it was, at its absolute path, or as given) and only when its sha256 matches
manifest.json; where it moved, name it with --checkpoint. Without it the table says why no baseline.

examples:
  edgerep bench engines/out/repvgg_digits                       # single-stream, 1 s per engine
  edgerep bench engines/out/repvgg_digits --scenario offline --json
  edgerep bench engines/out/repvgg_digits --scenario multi-stream --samples-per-query 4
  edgerep bench model.pt --arch repvgg_a0 --batch-sizes 1 8 32 --seconds 2
  edgerep bench model.fp32.onnx --iterations 200 --out bench.json --profile
  edgerep gate bench.json --max-latency-ms 5 --engines "onnxruntime-cpu/*"
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", type=Path, help="bundle directory, checkpoint (.pt) or ONNX file")
    p.add_argument("--scenario", choices=("single-stream", "multi-stream", "offline"), default="single-stream",
                   help="MLPerf scenario (default single-stream)")
    p.add_argument("--batch-sizes", type=int, nargs="+", metavar="N",
                   help="batch sizes (default 1; offline: 1 8 32, the best is the result)")
    p.add_argument("--samples-per-query", type=int, default=8, metavar="N", help="multi-stream N (default 8)")
    p.add_argument("--seconds", type=float, default=1.0, help="minimum duration per engine and batch size (default 1)")
    p.add_argument("--min-queries", type=int, metavar="N",
                   help="minimum query count (default: 64, 662 in multi-stream: what p90 / p99 need)")
    p.add_argument("--iterations", type=int, help="exactly this many queries instead of --seconds")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs first (default 10)")
    p.add_argument("--mlperf-minimums", action="store_true",
                   help="an MLPerf submission's minimums: 600 s and 1024 queries (offline: 24576 samples) per run")
    p.add_argument("--timer", choices=("auto", "loadgen", "builtin"), default="auto",
                   help="auto: LoadGen when installed (default); builtin: edgerep's own timer, same rules")
    p.add_argument("--log-dir", type=Path, help="LoadGen logs here (default BUNDLE/loadgen; none kept for files)")
    p.add_argument("--profile", action="store_true",
                   help="profile each engine: the ten most expensive layers with their share of the time")
    p.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    from edgerep.commands.fold import add_checkpoint_arguments

    add_checkpoint_arguments(p)  # --arch, --arch-kwargs, --input-shape, --trust-checkpoint
    p.add_argument("--checkpoint", type=Path, metavar="PATH",
                   help="a bundle's unfolded checkpoint where it moved (its sha256 must match manifest.json)")
    p.add_argument("--out", type=Path, help="write the report JSON here (for edgerep gate)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    from edgerep.errors import EdgerepError

    if args.out is not None:
        from edgerep.outputs import check_output_file

        check_output_file(args.out, "--out")  # before any timing (and before torch is imported)
    if args.log_dir is not None:
        from edgerep.outputs import check_output_dir

        check_output_dir(args.log_dir, "--log-dir")
    from edgerep.bench.runner import BenchOptions, bench
    from edgerep.commands.fold import parse_checkpoint_arguments

    for flag, v in (("--batch-sizes", args.batch_sizes), ("--samples-per-query", [args.samples_per_query]),
                    ("--min-queries", [args.min_queries] if args.min_queries is not None else None),
                    ("--iterations", [args.iterations] if args.iterations is not None else None)):
        if v and any(b <= 0 for b in v):
            raise EdgerepError(f"{flag} must be positive, got {v if len(v) > 1 else v[0]}")
    if not args.target.exists():
        raise EdgerepError(f"{args.target}: no such file or directory")
    if args.checkpoint is not None and not args.target.is_dir():
        raise EdgerepError(f"--checkpoint {args.checkpoint}: names a bundle's unfolded checkpoint; "
                           f"{args.target} is not a bundle", hint="bench the checkpoint itself instead")
    log_dir = args.log_dir or (args.out.with_suffix(".loadgen") if args.out and not args.target.is_dir() else None)
    opts = BenchOptions(target=args.target, batch_sizes=args.batch_sizes, seconds=args.seconds,
                        iterations=args.iterations, warmup=args.warmup, threads=args.threads, arch=args.arch,
                        trust_checkpoint=args.trust_checkpoint, load=parse_checkpoint_arguments(args),
                        scenario=args.scenario, samples_per_query=args.samples_per_query, min_queries=args.min_queries,
                        use_loadgen={"auto": None, "loadgen": True, "builtin": False}[args.timer],
                        log_dir=log_dir, profile=args.profile, mlperf_minimums=args.mlperf_minimums,
                        checkpoint=args.checkpoint)
    from edgerep.report.console import step_progress

    with step_progress(quiet=args.json) as progress:
        report = bench(opts, progress=lambda msg: progress("bench", msg))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    _print_table(report)
    return 0


def _ms(v) -> str:
    return "–" if v is None else f"{v:.3f}"


def _tail(s: dict, p: int) -> str:
    """A shown p90 / p99, with "(max)" where early stopping made it the slowest query."""
    v = s.get(f"p{p}_ms")
    return _ms(v) + (" (max)" if v is not None and str(s.get(f"p{p}_kind") or "").startswith("maximum") else "")


def _print_table(report: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    from edgerep.report.console import make_console

    b = report.get("bench") or {}
    t = Table(title=f"edgerep bench: {report['model']['name']} ({b.get('scenario', 'single-stream')})")
    p90_col = "p90 ms" + (" (plain)" if b.get("scenario") == "multi-stream" else "")
    for col in ("engine", "precision", "batch", "queries", "p50 ms", p90_col, "p99 ms", "img/s", "spread",
                "vs unfolded"):
        t.add_column(col, justify="left" if col in ("engine", "precision") else "right")
    rows = ([report["baseline"]] if report.get("baseline") else []) + report["engines"]
    for e in rows:
        for bs, s in e["latency_by_batch"].items():
            sp = (e.get("speedup_vs_unfolded") or {}).get(bs) if e is not report.get("baseline") else 1.0
            spread = f"{s.get('spread', s['cv']):.2f}" + (" [red]NOISY[/]" if s.get("noisy") else "")
            img_s = f"{s['throughput_ips']:.0f}" + (" [red]INVALID[/]" if s.get("valid") is False else "")
            t.add_row(e["name"], e["precision"], bs, str(s["queries"]), _ms(s["p50_ms"]), _tail(s, 90),
                      _tail(s, 99), img_s, spread,
                      "baseline" if e is report.get("baseline") else (f"{sp:.2f}x" if sp else "–"))
    console = make_console()
    console.print(t)
    first = next((s for e in rows for s in e["latency_by_batch"].values()), {})
    host = report.get("host") or {}
    cpu = host.get("cpu_features") or {}
    console.print(f"timer: {first.get('timer')} (LoadGen {first.get('loadgen') or 'not installed'}); "
                  f"{cpu.get('model_name', '?')} ({cpu.get('int8_dot', '?')}); "
                  f"load {(b.get('load_before') or {}).get('loadavg_1m')} on {host.get('cpu_count')} cores")
    if first.get("timer_note"):
        console.print(f"note: {first['timer_note']}")
    if not report.get("baseline") and report["model"].get("baseline_note"):
        console.print(f"[yellow]no unfolded baseline[/]: {escape(report['model']['baseline_note'])}")
    if first.get("settings_note"):
        console.print(f"settings: {first['settings_note']}; samples: {first.get('samples_source')}")
    for e in rows:
        for bs, s in e["latency_by_batch"].items():
            if s.get("valid") is False:
                console.print(f"[red]INVALID[/] (LoadGen): {e['name']}/{e['precision']} batch {bs}: "
                              f"{s.get('invalid_reason')}; not a result")
        if e.get("no_result"):
            console.print(f"[red]no result[/]: {e['name']}/{e['precision']}: {e['no_result']}")
    maxed = sorted({f"p{p}" for e in rows for s in e["latency_by_batch"].values() for p in (90, 99)
                    if str(s.get(f"p{p}_kind") or "").startswith("maximum")})
    if maxed:
        console.print(f"{'/'.join(maxed)} marked (max): at the query floor early stopping allows no query above "
                      "it, so the figure is the slowest query")
    for e in rows:
        for bs, s in e["latency_by_batch"].items():
            if s.get("noisy"):
                console.print(f"[red]noisy[/]: {e['name']}/{e['precision']} batch {bs}: {s['noise_reason']}")
    for e in rows:
        prof = e.get("profile")
        if prof:
            _print_profile(console, f"{e['name']}/{e['precision']}", prof)


def _print_profile(console, key: str, prof: dict) -> None:
    """The ten most expensive layers of one engine, with the folded layer and train-time block."""
    from rich.table import Table

    t = Table(title=f"where the time goes: {key} ({prof.get('source')}, {prof.get('runs')} runs)")
    for col in ("#", "op", "layer", "train-time block", "ms/run", "share"):
        t.add_column(col, justify="right" if col in ("#", "ms/run", "share") else "left")
    for i, row in enumerate(prof.get("top", []), 1):
        t.add_row(str(i), row.get("op") or "?", row.get("layer") or row.get("node") or "?",
                  row.get("block") or "–", f"{row['ms_per_run']:.3f}", f"{100 * row['share']:.1f}%")
    console.print(t)
