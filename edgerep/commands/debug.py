"""`edgerep debug BUNDLE`: which layer breaks INT8, and the smallest set of layers in float that meets the budget."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

HELP = "find the layer where INT8 error jumps (per layer, mapped to the train-time block and branch) and the smallest float set"
DESCRIPTION = """\
Run a bundle's FP32 and INT8 files on its selection images (re-opened as deploy split them: the ids
must equal splits.json's) with every layer's output exposed, and say per layer how far INT8 is from
FP32 where the next layer reads it (after ReLU and Q/DQ):

  SQNR / cosine   INT8 vs the FP32 file the INT8 file was quantized from (cross-layer equalized when
                  the quantizer equalized it; proven by the weights, each within half a step)
  drop dB         the input's SQNR minus the output's (the error the layer adds; none for the first)
  added NSR       output noise-to-signal ratio minus the input's (defined for every layer)

The jump is the layer with the largest added NSR; it is named through the fold's provenance (the
train-time block) and the check's branch attribution (report.json). Exposing outputs changes
onnxruntime's fusions: per-layer numbers come from unfused copies (QDQ simulated in float), the
end-to-end output SQNR / top-1 from the optimized session as shipped; the output says which.

Then (unless --no-search) the smallest float set, as Polygraphy's `debug precision`: the layers are
ranked by added NSR on the all-INT8 file of the bundle's recipe (its calibration and QDQ settings,
which must reproduce the bundle's INT8 file exactly), the number of top-ranked layers in float is
bisected, and layers are returned to INT8 while the budget holds. The result meets the budget and
putting any one of its layers back in INT8 misses it (measured). Budget: --max-drop top-1 points
(labelled classifiers; default the bundle's max_drop) or --min-sqnr dB of the output (default 30 dB
where there is no top-1). Every step's metric is printed; the count of files written is said.

--data SPEC debugs on the selection role of another data set (same role rules as deploy);
--use-test reads the bundle's TEST split instead of the selection split, and the output says so.
--int8 FILE debugs another QDQ file of the bundle's FP32 model (e.g. a plain PTQ file); no search.

examples:
  edgerep debug engines/out/repvgg_digits
  edgerep debug engines/out/repvgg_digits --min-sqnr 40 --html debug.html
  edgerep debug bundle/ --int8 plain.int8.onnx --no-search --json > debug.json

exit codes: 0 ok (also when the budget cannot be met: see result.budget_met), 2 bad input.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", type=Path, help="bundle directory written by edgerep deploy")
    p.add_argument("--int8", type=Path, metavar="FILE", help="debug this QDQ file instead of the bundle's INT8 file")
    p.add_argument("--data", help="images: the selection role of this data set (default: the bundle's selection set)")
    p.add_argument("--use-test", action="store_true", help="use the TEST split (said in the output: not held out)")
    p.add_argument("--samples", type=int, metavar="N", help="at most N images (default all)")
    p.add_argument("--max-drop", type=float, metavar="POINTS", help="search budget: top-1 drop vs the FP32 file")
    p.add_argument("--min-sqnr", type=float, metavar="DB", help="search budget: output SQNR vs the FP32 file")
    p.add_argument("--no-search", action="store_true", help="per-layer table only")
    p.add_argument("--threads", type=int, help="onnxruntime threads (default: onnxruntime's)")
    p.add_argument("--html", type=Path, metavar="PATH", help="write an HTML page with the per-layer error curve")
    p.add_argument("--json", action="store_true", help="print the result as JSON (schema edgerep.debug/1)")


def run(args: argparse.Namespace) -> int:
    from edgerep.errors import EdgerepError

    if args.html is not None:
        from edgerep.outputs import check_output_file

        check_output_file(args.html, "--html")
    if args.samples is not None and args.samples <= 0:
        raise EdgerepError(f"--samples must be positive, got {args.samples}")
    if args.max_drop is not None and args.min_sqnr is not None:
        raise EdgerepError("--max-drop and --min-sqnr: give one budget")
    from edgerep.quant.debug import debug_bundle
    from edgerep.report.console import make_console

    console = make_console(stderr=args.json)
    say = (lambda m: console.print(m, markup=False, highlight=False))
    res = debug_bundle(args.bundle, int8=args.int8, data=args.data, use_test=args.use_test, limit=args.samples,
                       search=not args.no_search, max_drop=args.max_drop, min_sqnr_db=args.min_sqnr,
                       threads=args.threads, say=say)
    doc = res.to_dict()
    if args.html is not None:
        from edgerep.report.debug_html import write_debug_html

        write_debug_html(doc, args.html)
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    _print(console, doc)
    if args.html is not None:
        console.print(f"html: {args.html}", markup=False)
    return 0


def _f(v, fmt: str = "{:.2f}") -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else fmt.format(v)


def _print(console, doc: dict) -> None:
    from rich.table import Table

    t = Table(title=f"edgerep debug {doc['bundle']}", caption=doc["note"])
    for h, right in (("#", True), ("layer", False), ("node", False), ("prec.", False), ("SQNR dB", True),
                     ("cosine", True), ("in SQNR dB", True), ("drop dB", True), ("added NSR", True),
                     ("branch", False)):
        t.add_column(h, justify="right" if right else "left")
    jump = doc.get("jump")
    for r in doc["layers"]:
        style = "bold red" if jump and r["index"] == jump["index"] else None
        t.add_row(str(r["index"]), r["block"] or "–", r["node"], r["precision"], _f(r["sqnr_db"]),
                  _f(r["cosine"], "{:.5f}"), _f(r["input_sqnr_db"]), _f(r["drop_db"]), _f(r["added_nsr"], "{:.2e}"),
                  r["branch"] or "", style=style)
    console.print(t)
    e = doc["end_to_end"]
    top = f", top-1 {_f(e['top1'])}% (FP32 {_f(e['fp32_top1'])}%, drop {_f(e['top1_drop'])} points)" \
        if e.get("top1") is not None else ""
    p = lambda m: console.print(m, markup=False, highlight=False)  # noqa: E731
    p(f"end-to-end (optimized session): output SQNR {_f(e['sqnr_db'])} dB, cosine {_f(e['cosine'], '{:.5f}')}{top}")
    if jump:
        where = jump["block"] or "(no provenance)"
        branch = f", branch {jump['branch']}" if jump.get("branch") else ", no branch named by the check"
        p(f"jump: {where} (node {jump['node']}{branch}): output SQNR {_f(jump['sqnr_db'], '{:.1f}')} dB from "
          f"{_f(jump['input_sqnr_db'], '{:.1f}')} dB at its input (largest added noise)")
        if jump.get("branch_note"):
            p(f"  check: {jump['branch_note']}")
    else:
        p("jump: none (no layer adds error)")
    if doc.get("excluded_in_bundle"):
        p(f"the bundle's INT8 file keeps {len(doc['excluded_in_bundle'])} layer(s) in float: "
          + ", ".join(doc["excluded_in_bundle"]))
    s = doc.get("search")
    if s is None:
        p(f"search: {doc.get('search_note')}")
        return
    names = {r["node"]: r["block"] or r["node"] for r in doc["layers"]}
    if s["float_layers"] is None:
        p(f"search: budget ({s['budget']}) not met even with every layer in float; "
          f"{s['files_written']} files written and scored")
    else:
        shown = ", ".join(names.get(n, n) for n in s["float_layers"]) or "none"
        p(f"search: {len(s['float_layers'])} layer(s) in float [{shown}] meet the budget ({s['budget']}); "
          f"{s['files_written']} files written and scored in {len(s['steps'])} steps; {s['guarantee']}")
