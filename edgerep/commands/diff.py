"""`edgerep diff BASE NEW`: what changed between two runs, short enough for a pull-request comment."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "show what changed between two reports (accuracy, latency beyond noise, INT8 verdicts, files, settings)"
DESCRIPTION = """\
Compare two reports written by `edgerep deploy` (a report.json, or the bundle directory holding
it) and say what changed:

  engines    top-1 and drop vs the unfolded model per engine, with the image count; p50 latency,
             judged against the noise of both runs ("within noise", "slower", "faster")
  INT8       layers whose INT8 verdict changed (from the check), layers now kept in float or back in INT8
  files      bundle files whose sha256 changed (from manifest.json, or hashed where the files are)
  settings   deploy settings, versions, inputs, CPU policy, calibration, host that differ

A latency change is real only when it is beyond the pair's noise band: the larger of
--noise-floor-pct (default 5) and each run's own spread (p90 - p50) / p50.

Thresholds make it a gate (exit 1 when one fails):
  --max-accuracy-regression P      top-1 may drop at most P points against BASE, per engine
  --max-latency-regression-pct X   p50 may grow at most X%; a slowdown within noise never fails

examples:
  edgerep diff main-bundle/ pr-bundle/
  edgerep diff main/report.json bundle/report.json --markdown diff.md --html diff.html
  edgerep diff main/ bundle/ --max-accuracy-regression 0.2 --max-latency-regression-pct 10
  edgerep diff main/ bundle/ --json > diff.json

exit codes: 0 no threshold failed (or none given), 1 a threshold failed, 2 bad input.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("base", help="the reference report.json (e.g. the main branch's), or its bundle directory")
    p.add_argument("new", help="the report.json to compare, or its bundle directory")
    p.add_argument("--markdown", type=Path, metavar="FILE", help="write the Markdown summary here (a PR comment)")
    p.add_argument("--html", type=Path, metavar="FILE", help="write a self-contained HTML page here")
    p.add_argument("--json", action="store_true", help="print the diff as JSON instead of Markdown")
    p.add_argument("--max-accuracy-regression", type=float, metavar="POINTS",
                   help="fail (exit 1) when an engine's top-1 falls more than this many points below BASE")
    p.add_argument("--max-latency-regression-pct", type=float, metavar="PCT",
                   help="fail (exit 1) when an engine's p50 grows more than this, beyond noise")
    p.add_argument("--noise-floor-pct", type=float, default=None, metavar="PCT",
                   help="smallest p50 change that can count as real (default 5)")


def run(args: argparse.Namespace) -> int:
    from edgerep.outputs import check_output_file

    if args.markdown is not None:  # before any work: a missing folder is exit 2 naming the flag
        check_output_file(args.markdown, "--markdown")
    if args.html is not None:
        check_output_file(args.html, "--html", create_parents=True)
    from edgerep.errors import EdgerepError
    from edgerep.report.diff import NOISE_FLOOR_PCT, apply_thresholds, diff_reports, load_side
    from edgerep.report.diff_md import to_markdown

    floor = NOISE_FLOOR_PCT if args.noise_floor_pct is None else args.noise_floor_pct
    for flag, v in (("--noise-floor-pct", floor), ("--max-accuracy-regression", args.max_accuracy_regression),
                    ("--max-latency-regression-pct", args.max_latency_regression_pct)):
        if v is not None and v < 0:
            raise EdgerepError(f"{flag} must be >= 0, got {v:g}")
    base, new = load_side(args.base), load_side(args.new)
    d = apply_thresholds(diff_reports(base, new, noise_floor_pct=floor),
                         max_accuracy_regression=args.max_accuracy_regression,
                         max_latency_regression_pct=args.max_latency_regression_pct)
    md = to_markdown(d)
    if args.markdown:
        args.markdown.write_text(md, encoding="utf-8")
    if args.html:
        from edgerep.report.diff_page import to_html

        args.html.parent.mkdir(parents=True, exist_ok=True)
        args.html.write_text(to_html(d, out_dir=args.html.parent, base_html=base.html, new_html=new.html),
                             encoding="utf-8")
    print(json.dumps(d.to_dict(), indent=2, default=str) if args.json else md, end="" if not args.json else "\n")
    return 0 if d.passed else 1
