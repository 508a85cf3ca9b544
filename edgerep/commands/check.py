"""``edgerep check``: which folded layers, channels and train-time branches are INT8-hostile, and what to do."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "report which layers, channels and train-time branches are INT8-hostile, and what to do"
DESCRIPTION = """Fold a train-time checkpoint exactly as deploy does (the same fold: edgerep's blocks and, for
architectures edgerep has never seen, the traced-graph folder), then measure what 8-bit symmetric quantization
does to every folded layer:

  weights      range, std, kurtosis, per-channel range spread (max/median), share beyond 3 sigma,
               SQNR per-tensor and per-channel
  activations  (with data) range and percentiles of each layer's input, SQNR with min-max and
               99.99-percentile clipping, and the layer output's SQNR with INT8 weights
  sensitivity  model-output SQNR / cosine (and top-1 with labels) when only that layer is INT8
  attribution  for outlier channels: which train-time branch (dense KxK, 1x1, identity BN,
               average pool, ...) puts the huge weights there, e.g.
               "stage3.5 channel 17: identity-BN gamma/sigma = 95 (...), 40x the dense 3x3 branch"

Each layer gets a verdict under plain INT8 PTQ (per-tensor weights, min-max activations) and
with fixes (per-channel weights, better clipping), and advice: per-channel weights, percentile
calibration, keep the layer in FP16, or retrain with QARepVGG blocks. Thresholds are listed in
docs/check.md (edgerep/quant/thresholds.py) and written into every JSON report.

Data: --data takes the same specs as deploy ("digits", a class-folder directory, an .npz);
by default the checkpoint's own data set (meta.dataset) when it names one. It is split as deploy
splits it: activation statistics come from the calibration set, sensitivity from the selection set
(digits' "val"; see `edgerep deploy --help`); the test set is never read. Without data only weights
and sensitivity on seeded random inputs are measured.

examples:
  edgerep check examples/checkpoints/repvgg_digits.pt
  edgerep check examples/checkpoints/repvgg_digits.pt --html out/check   # page with plots
  edgerep check a0.pth --arch repvgg_a0 --data imagenet_val/ --calib-limit 64 --json > check.json
  edgerep check model.pt --strict          # exit 1 when any layer is bad under plain INT8

exit codes: 0 the report was written (its last line says PASS, or FAIL with the exit code: check is a
report, not a gate, so FAIL exits 0 unless --strict), 1 --strict and a layer is bad, 2 bad input.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from edgerep.commands.fold import add_checkpoint_arguments

    p.add_argument("checkpoint", type=Path, help="the train-time (or folded) checkpoint")
    add_checkpoint_arguments(p)
    p.add_argument("--data", default=None,
                   help="calibration / evaluation data: digits, a class-folder directory or an .npz "
                        "(default: the checkpoint's meta.dataset, else none)")
    p.add_argument("--no-data", action="store_true",
                   help="ignore meta.dataset: weights and random-input sensitivity only")
    p.add_argument("--calib-limit", type=int, default=64, help="calibration images (default 64)")
    p.add_argument("--eval-limit", type=int, default=16, help="images for per-layer sensitivity (default 16)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    p.add_argument("--percentile", type=float, default=None,
                   help="percentile of |x| for percentile clipping (default 99.99)")
    p.add_argument("--no-sensitivity", action="store_true", help="skip the per-layer sensitivity runs (faster)")
    p.add_argument("--json", action="store_true", help="print the full report as JSON on stdout")
    p.add_argument("--html", type=Path, metavar="DIR", default=None,
                   help="also write DIR/check.html with plots (SQNR bars, weight histograms, attribution)")
    p.add_argument("--strict", action="store_true", help="exit 1 when any layer is 'bad' under plain INT8")


def _load(args: argparse.Namespace):
    from edgerep.checkpoint import load_checkpoint
    from edgerep.commands.fold import parse_checkpoint_arguments
    from edgerep.errors import EdgerepError

    for flag in ("calib_limit", "eval_limit", "batch_size"):
        if getattr(args, flag) < 1:
            raise EdgerepError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.percentile is not None and not 50.0 < args.percentile <= 100.0:
        raise EdgerepError(f"--percentile must be in (50, 100], got {args.percentile}")
    return load_checkpoint(args.checkpoint, **parse_checkpoint_arguments(args))


def run(args: argparse.Namespace) -> int:
    if args.html is not None:
        from edgerep.outputs import check_output_dir

        check_output_dir(args.html, "--html")  # before any work (and before torch is imported)
    from edgerep.errors import GateFailed
    from edgerep.quant import thresholds as T
    from edgerep.quant.check import CheckOptions, check_model

    ck = _load(args)
    from edgerep.model_path import fold_loaded

    fold = fold_loaded(ck, example=ck.example_input(2), tolerance=1e-3)  # the fold deploy ships
    spec = None if args.no_data else (args.data or ck.meta.dataset)
    calib = evals = None
    if spec:
        from edgerep.data.splits import resolve_splits

        splits = resolve_splits(data=spec, meta=ck.meta)  # the same sets deploy would use
        calib = splits.calibration.batches(args.batch_size, args.calib_limit)
        evals = splits.selection.batches(args.batch_size, args.eval_limit)
    quiet = args.json
    progress = None
    if not quiet:
        from rich.console import Console

        err = Console(stderr=True)
        progress = lambda msg: err.print(f"[dim]check: {msg}[/dim]")  # noqa: E731
    options = CheckOptions(sensitivity=not args.no_sensitivity, calib_limit=args.calib_limit,
                           eval_limit=args.eval_limit, percentile=args.percentile or T.ACT_PERCENTILE)
    report = check_model(ck.model, example_input=ck.example_input(2), calib_batches=calib, eval_batches=evals,
                         options=options, fold=fold, progress=progress)
    report.data["spec"] = spec
    report.data["checkpoint"] = str(args.checkpoint)
    html = None
    if args.html is not None:
        from edgerep.report.check_html import write_check_html

        html = write_check_html(report, args.html)
    if args.json:
        from edgerep.report.models import CheckOutput, dump

        d = report.to_dict()
        if html is not None:
            d["html"] = str(html)
        print(json.dumps(dump(CheckOutput.model_validate(d)), indent=2))
    else:
        print_report(report, title=f"edgerep check: {args.checkpoint.name} ({ck.meta.arch})", strict=args.strict)
        if html is not None:
            print(f"wrote {html}")
    if args.strict and not report.passed:
        bad = [r.name for r in report.layers if r.verdict == "bad"]
        raise GateFailed([f"{len(bad)} layer(s) bad under plain INT8: {', '.join(bad)}"])
    return 0


def _f(v: float | None, fmt: str = "{:.1f}") -> str:
    if v is None:
        return "-"
    if v == float("inf"):
        return "exact"
    return fmt.format(v)


def verdict_line(report, strict: bool) -> str:
    """The last line: PASS / FAIL and, on FAIL, the exit code it gives (1 only with --strict)."""
    if report.passed:
        return "[green]PASS[/]"
    bad = sum(r.verdict == "bad" for r in report.layers)
    return (f"[bold red]FAIL[/] ({bad} layer(s) bad under plain INT8; "
            + ("--strict: exit 1)" if strict else "a report, not a gate: exit 0; --strict exits 1)"))


def print_report(report, title: str = "edgerep check", strict: bool = False) -> None:
    """The report as rich tables: one row per layer, then attribution and advice for flagged layers."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    colour = {"ok": "green", "warn": "yellow", "bad": "bold red"}
    t = Table(title=title, show_lines=False, caption="SQNR in dB, 8-bit symmetric; plain = per-tensor weights + "
                                                      "min-max inputs, fixed = per-channel + better clipping")
    for col, just in (("layer", "left"), ("block", "left"), ("plain", "left"), ("fixed", "left"),
                      ("W SQNR\ntensor/chan", "right"), ("chan\nspread", "right"), ("input SQNR\nminmax/pct", "right"),
                      ("worst out\nchannel", "right"), ("model out\nplain/fixed", "right"), ("outliers from", "left")):
        t.add_column(col, justify=just, no_wrap=True)  # type: ignore[arg-type]
    for r in report.layers:
        w, a, s = r.weight, r.activation, r.sensitivity
        dom = r.attribution.dominant_branch
        t.add_row(
            r.name, r.block, f"[{colour[r.verdict]}]{r.verdict}[/]",
            f"[{colour[r.verdict_with_fixes]}]{r.verdict_with_fixes}[/]",
            f"{_f(w.sqnr_per_tensor_db)}/{_f(w.sqnr_per_channel_db)}", _f(w.channel_spread, "{:.1f}x"),
            f"{_f(a.sqnr_minmax_db)}/{_f(a.sqnr_percentile_db)}" if a else "-",
            _f(a.out_sqnr_w_per_channel_worst_db) if a else "-",
            f"{_f(s.plain.sqnr_db)}/{_f(s.fixed.sqnr_db) if s.fixed else '='}" if s else "-",
            r.attribution.branches.get(dom, dom) if dom else ("-" if r.attribution.available else "n/a"),
        )
    console = Console()
    if not console.is_terminal:  # a pipe or a CI log: do not squeeze the table to 80 columns
        console = Console(width=150)
    console.print(t)
    flagged = [r for r in report.layers if r.verdict != "ok" or r.attribution.outlier_channels]
    for r in flagged:
        console.print(f"[bold]{escape(r.name)}[/] [{colour[r.verdict]}]{r.verdict}[/] "
                      f"(with fixes: [{colour[r.verdict_with_fixes]}]{r.verdict_with_fixes}[/])")
        for why in r.reasons:
            console.print(f"   {escape(why)}")
        if r.attribution.outlier_channels:
            for ch in r.attribution.channels[:3]:
                console.print(f"   [cyan]{escape(ch.sentence)}[/]")
        elif r.attribution.channels:  # no outliers: the largest channel, for context
            console.print(f"   [dim]largest channel, for context: {escape(r.attribution.channels[0].sentence)}[/]")
        if not r.attribution.available:
            console.print(f"   [dim]{escape(r.attribution.note)}[/]")
        for adv in r.advice:
            if adv.kind != "ok":
                console.print(f"   -> {escape(adv.text)}")
    s = report.summary
    c, cf = s["counts"], s["counts_with_fixes"]
    from edgerep.report.check_html import fp32_sentence

    console.print(f"\n{s['layers']} layers: plain INT8 {c['ok']} ok / {c['warn']} warn / {c['bad']} bad; with fixes "
                  f"{cf['ok']} ok / {cf['warn']} warn / {cf['bad']} bad. Worst: {s['worst_layer']}.")
    if fp32_sentence(report):
        console.print(fp32_sentence(report).replace("fp32 top-1", "Sensitivity images: fp32 top-1", 1) + ".")
    for line in s["top_advice"]:
        console.print(f"advice: {escape(line)}")
    console.print(f"{verdict_line(report, strict)} ({report.timings.get('total', 0):.1f}s, "
                  f"{report.data.get('calib_images', 0)} calibration images)")
