"""`edgerep gate`: exit 1 with every reason when a report misses its accuracy or latency budget."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "fail CI (exit 1) when a report's accuracy or latency regresses"
DESCRIPTION = """\
Check a report written by `edgerep deploy` or `edgerep bench` against thresholds, and exit 1
listing every check that failed. Thresholds come from flags or from a TOML file (a [gate]
table with the same names as the flags, underscores for dashes); flags win over the file.

With no flags the gate applies deploy's defaults, so a CI line copied without flags still gates
accuracy: every engine's top-1 drop <= 0.5 points, the fold exact (relative error <= 1e-4), the
unfolded FP32 baseline above chance (exact one-sided binomial test on its counts, p < 0.001) and not
far below the top-1 it is expected to have (--expect-top1, or what the checkpoint records), the
calibration inputs' mean and variance at the model's first BatchNorm layers within 0.5 running std
and 1.5x of its running statistics (else preprocessing or labels are wrong), an accuracy measured
at all (labelled test data), and a real INT8 model (not mostly kept in float).
--no-accuracy-gate turns the accuracy checks off for a latency-only run.

Engines are selected by glob over "name/precision", e.g. "onnxruntime-cpu/int8".
Accuracy drops are in top-1 percentage points against the UNFOLDED FP32 model.

examples:
  edgerep gate engines/out/repvgg_digits/report.json            # deploy's defaults
  edgerep gate engines/out/repvgg_digits/report.json --max-drop 1.0
  edgerep gate bundle/ --no-accuracy-gate --max-latency-ms 5    # latency only (synthetic data)
  edgerep gate bundle/ --config gate.toml --junit gate.xml --markdown gate.md
  edgerep gate new/report.json --baseline main/report.json --max-latency-regression-pct 10

gate.toml:
  [gate]
  max_drop = 0.5
  max_latency_ms = 20.0
  engines = ["onnxruntime-cpu/*"]
  baseline = "baseline/report.json"
  max_latency_regression_pct = 10

exit codes: 0 all checks passed, 1 a check failed, 2 bad input (missing report, bad TOML).
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("report", help="report.json, or a bundle directory holding one")
    p.add_argument("--config", type=Path, help="gate.toml with a [gate] table")
    p.add_argument("--max-drop", type=float,
                   help="max drop vs the unfolded FP32 model in the report's metric (points: top-1, or mAP@[.5:.95] "
                        "for a detector's report; PSNR dB for SR; default 0.5, SR 0.1 dB, as deploy)")
    p.add_argument("--no-accuracy-gate", action="store_true",
                   help="a latency-only run: no drop, no 'accuracy measured' and no baseline-sanity check")
    p.add_argument("--expect-top1", type=float, metavar="PCT",
                   help="the unfolded model's known top-1 (%%): fail when the baseline's counts are far below it "
                        "(inconsistent with PCT - expect_top1_margin (5) points, exact binomial p < 0.001)")
    p.add_argument("--min-top1", type=float, help="minimum top-1 accuracy (%%)")
    p.add_argument("--min-cosine", type=float, help="minimum output cosine vs unfolded (models without labels)")
    p.add_argument("--min-sqnr-db", type=float, help="minimum output SQNR vs unfolded (dB)")
    p.add_argument("--min-agreement", type=float, help="minimum top-1 agreement with unfolded (%%)")
    p.add_argument("--max-latency-ms", type=float, help="maximum p50 latency (ms)")
    p.add_argument("--max-p99-ms", type=float, help="maximum p99 latency (ms)")
    p.add_argument("--baseline", help="a baseline report.json to compare against")
    p.add_argument("--max-latency-regression-pct", type=float, help="max p50 slowdown vs the baseline (%%)")
    p.add_argument("--max-accuracy-regression", type=float, help="max top-1 loss vs the baseline (points)")
    p.add_argument("--engines", nargs="+", metavar="GLOB", help='engines to gate, e.g. "onnxruntime-cpu/int8"')
    p.add_argument("--junit", type=Path, help="write JUnit XML here")
    p.add_argument("--markdown", type=Path, help="write a Markdown summary here (for a PR comment)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    from edgerep.bench.gate import GateThresholds, evaluate_gate, junit_xml, load_report, markdown_summary

    from edgerep.outputs import check_output_file

    for flag, path in (("--junit", args.junit), ("--markdown", args.markdown)):
        if path is not None:
            check_output_file(path, flag)  # before any work
    th = GateThresholds.from_toml(args.config) if args.config else GateThresholds()
    th = th.merged(max_drop=args.max_drop, expect_top1=args.expect_top1, min_top1=args.min_top1, min_cosine=args.min_cosine,
                   min_sqnr_db=args.min_sqnr_db, min_agreement=args.min_agreement,
                   max_latency_ms=args.max_latency_ms, max_p99_ms=args.max_p99_ms,
                   max_latency_regression_pct=args.max_latency_regression_pct,
                   max_accuracy_regression=args.max_accuracy_regression, engines=args.engines,
                   baseline=args.baseline)
    if args.no_accuracy_gate:
        th = GateThresholds(**{**vars(th), "max_drop": None, "require_accuracy": False, "baseline_sanity": False})
    report = load_report(args.report)
    if args.max_drop is None and not args.config and th.max_drop is not None:  # deploy's default for the task
        from edgerep.bench.gate import default_max_drop

        th = GateThresholds(**{**vars(th), "max_drop": default_max_drop((report.get("task") or {}).get("name"))})
    baseline = None
    if th.baseline:
        base_path = Path(th.baseline)
        if args.config and not base_path.is_absolute() and not args.baseline:
            base_path = args.config.parent / base_path
        baseline = load_report(base_path)
    result = evaluate_gate(report, th, baseline, report_path=str(args.report))
    if args.junit:
        args.junit.write_text(junit_xml(result))
    if args.markdown:
        args.markdown.write_text(markdown_summary(result, report))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        from edgerep.report.console import make_console
        from rich.table import Table

        t = Table(title="edgerep gate: " + ("PASSED" if result.passed else "FAILED"))
        for col in ("", "check", "engine", "value", "limit"):
            t.add_column(col)
        for c in result.checks:
            t.add_row(("[green]ok[/]" if c.passed else "[red]FAIL[/]") + (" [yellow]NOISY[/]" if c.noisy else ""),
                      c.name, c.engine,
                      "n/a" if c.value is None else f"{c.value:.4g}",
                      "" if c.threshold is None else f"{c.threshold:g}")
        make_console().print(t)
        for c in result.failures:
            print(f"gate: FAIL: {c.message}", file=sys.stderr)
        for c in result.noisy:
            if c.passed:
                print(f"gate: NOISY (passed, not reliable): {c.message}", file=sys.stderr)
    return 0 if result.passed else 1
