"""`edgerep debug BUNDLE`: which layer breaks INT8, and the smallest set of layers in float that meets the budget."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

HELP = "name the layer that breaks INT8 (its own error, isolated; mapped to the train-time block and branch) and the smallest float set"
DESCRIPTION = """\
Run a bundle's FP32 and INT8 files on its selection images (re-opened as deploy split them: the ids
must equal splits.json's) and say per layer how far INT8 is from FP32 where the next layer reads it
(after ReLU and Q/DQ), against the FP32 file the INT8 file was quantized from (cross-layer equalized
when the quantizer equalized it; proven by the weights, each within half a step). Two measures:

  own SQNR dB     the layer's OWN error, isolated: only its quantizers (weight, bias, and the Q/DQ its
                  input passes through since the previous layers) on the FP32 reference's input, so
                  no upstream error is in it. One reference pass plus one pass per layer over the first
                  --isolated-samples images (default 32). This names the culprit.
  SQNR dB, cosine the ACCUMULATED error, the INT8 file as it runs (every upstream layer's error in it);
  in SQNR dB      the input's accumulated SQNR (the worst of the layers it reads); drop dB = in - out;
  added NSR       output noise-to-signal ratio minus the input's. Shown, not used to name the culprit.

A layer is broken when its own SQNR is below --broken-db (default 20 dB: its quantizers alone leave
noise at 1% of its output's power). The culprit is the first broken layer in graph order (later layers
read its error); when none is broken, the layer with the lowest own SQNR. It is named through the
fold's provenance (the train-time block) and the check's branch attribution (report.json). Exposing
outputs changes onnxruntime's fusions: per-layer numbers come from unfused copies (QDQ simulated in
float), the end-to-end output SQNR / top-1 from the optimized session as shipped; the output says which.

Then (unless --no-search) the smallest float set, as Polygraphy's `debug precision`: the layers are
ranked by their own error on the all-INT8 file of the bundle's recipe (its calibration and QDQ
settings, which must reproduce the bundle's INT8 file exactly), the number of top-ranked layers in
float is bisected, and layers are returned to INT8 while the budget holds. The result meets the budget
and putting any one of its layers back in INT8 misses it (measured). Budget: --max-drop top-1 points
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
    p.add_argument("--isolated-samples", type=int, metavar="N",
                   help="images the own (isolated) errors are measured on: the first N (default 32)")
    p.add_argument("--broken-db", type=float, metavar="DB",
                   help="a layer whose own SQNR is below DB is broken (default 20)")
    p.add_argument("--threads", type=int, help="onnxruntime threads (default: onnxruntime's)")
    p.add_argument("--html", type=Path, metavar="PATH", help="write an HTML page with the per-layer error curve")
    p.add_argument("--json", action="store_true", help="print the result as JSON (schema edgerep.debug/2)")


def run(args: argparse.Namespace) -> int:
    from edgerep.errors import EdgerepError

    if args.html is not None:
        from edgerep.outputs import check_output_file

        check_output_file(args.html, "--html")
    if args.samples is not None and args.samples <= 0:
        raise EdgerepError(f"--samples must be positive, got {args.samples}")
    if args.isolated_samples is not None and args.isolated_samples <= 0:
        raise EdgerepError(f"--isolated-samples must be positive, got {args.isolated_samples}")
    if args.max_drop is not None and args.min_sqnr is not None:
        raise EdgerepError("--max-drop and --min-sqnr: give one budget")
    from edgerep.quant.debug import debug_bundle
    from edgerep.report.console import make_console

    console = make_console(stderr=args.json)
    say = (lambda m: console.print(m, markup=False, highlight=False))
    res = debug_bundle(args.bundle, int8=args.int8, data=args.data, use_test=args.use_test, limit=args.samples,
                       search=not args.no_search, max_drop=args.max_drop, min_sqnr_db=args.min_sqnr,
                       threads=args.threads, say=say,
                       **{k: v for k, v in (("isolated_samples", args.isolated_samples),
                                            ("broken_db", args.broken_db)) if v is not None})
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

    iso = doc["isolated"]
    t = Table(title=f"edgerep debug {doc['bundle']}",
              caption=f"{doc['note']}; own = this layer's quantizers alone ({iso['images']} images), "
                      f"accumulated = the INT8 file as it runs")
    for h, right in (("#", True), ("layer", False), ("node", False), ("prec.", False), ("own SQNR dB", True),
                     ("SQNR dB", True), ("cosine", True), ("in SQNR dB", True), ("drop dB", True),
                     ("added NSR", True), ("branch", False)):
        t.add_column(h, justify="right" if right else "left")
    culprit = doc.get("culprit")
    broken = set(doc.get("broken") or [])
    for r in doc["layers"]:
        style = "bold red" if culprit and r["index"] == culprit["index"] else ("red" if r["node"] in broken else None)
        t.add_row(str(r["index"]), r["block"] or "–", r["node"], r["precision"], _f(r["isolated_sqnr_db"]),
                  _f(r["sqnr_db"]), _f(r["cosine"], "{:.5f}"), _f(r["input_sqnr_db"]), _f(r["drop_db"]),
                  _f(r["added_nsr"], "{:.2e}"), r["branch"] or "", style=style)
    console.print(t)
    e = doc["end_to_end"]
    top = f", top-1 {_f(e['top1'])}% (FP32 {_f(e['fp32_top1'])}%, drop {_f(e['top1_drop'])} points)" \
        if e.get("top1") is not None else ""
    p = lambda m: console.print(m, markup=False, highlight=False)  # noqa: E731
    p(f"end-to-end (optimized session): output SQNR {_f(e['sqnr_db'])} dB, cosine {_f(e['cosine'], '{:.5f}')}{top}")
    names = {r["node"]: r["block"] or r["node"] for r in doc["layers"]}
    if culprit:
        where = culprit["block"] or "(no provenance)"
        branch = f", branch {culprit['branch']}" if culprit.get("branch") else ", no branch named by the check"
        p(f"culprit: {where} (node {culprit['node']}{branch}): own SQNR {_f(culprit['isolated_sqnr_db'], '{:.1f}')} dB "
          f"(accumulated {_f(culprit['sqnr_db'], '{:.1f}')} dB, {_f(culprit['input_sqnr_db'], '{:.1f}')} dB at its "
          f"input); rule: {doc['culprit_rule']}")
        if culprit.get("branch_note"):
            chans = culprit.get("check_channels") or []
            p(f"  check: {culprit['branch_note']}" + (f" (channels {', '.join(map(str, chans))})" if chans else ""))
        if doc.get("broken"):
            p(f"broken (own SQNR below {_f(doc['broken_below_db'], '{:g}')} dB): "
              + ", ".join(names.get(n, n) for n in doc["broken"]))
    else:
        p(f"culprit: none ({doc['culprit_rule']})")
    if doc.get("excluded_in_bundle"):
        p(f"the bundle's INT8 file keeps {len(doc['excluded_in_bundle'])} layer(s) in float: "
          + ", ".join(doc["excluded_in_bundle"]))
    s = doc.get("search")
    if s is None:
        p(f"search: {doc.get('search_note')}")
        return
    if s["float_layers"] is None:
        p(f"search: budget ({s['budget']}) not met even with every layer in float; "
          f"{s['files_written']} files written and scored")
    else:
        shown = ", ".join(names.get(n, n) for n in s["float_layers"]) or "none"
        p(f"search: {len(s['float_layers'])} layer(s) in float [{shown}] meet the budget ({s['budget']}); "
          f"{s['files_written']} files written and scored in {len(s['steps'])} steps; {s['guarantee']}")
