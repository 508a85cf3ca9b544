"""``edgerep fold``: fold a train-time checkpoint into plain convolutions, prove it exact, save it."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "fold a train-time checkpoint into plain convolutions and prove it exact"
DESCRIPTION = """Fold every re-parameterizable block of a checkpoint (RepVGG, QARepVGG, ACNet, DBB, ...) into
one plain convolution, run the original and the folded model on the same seeded input, and write
the folded model as an edgerep checkpoint (meta.folded = true) that every other command loads.

Prints parameters and conv count before -> after and the max error of the fold. The fold is
refused (exit 2) if its relative error exceeds --tolerance: edgerep never ships an inexact fold.

Accepted inputs: an edgerep checkpoint; a plain state_dict with --arch (a name from
`edgerep zoo`, or package.module:factory); the official RepVGG / MobileOne / ACNet / DBB key
layouts (with --arch); a torch.export .pt2; a whole pickled module only with --trust-checkpoint.
The output is written in a form that loads again: an edgerep checkpoint, a folded .pt2 for a
.pt2 (-o must end in .pt2), a pickled module (with its metadata) for a pickled module.

--json also lists the provenance of every folded layer: the train-time modules and branches it
came from, and whether the block folder or the traced-graph folder produced it.

examples:
  edgerep fold examples/checkpoints/repvgg_digits.pt -o repvgg_digits.folded.pt
  edgerep fold RepVGG-A0-train.pth --arch repvgg_a0 -o a0.folded.pt --json
  edgerep fold model.pt --arch mypkg.nets:build --arch-kwargs '{"width": 32}' --input-shape 3,64,64 -o out.pt
  edgerep fold model.pt2 -o model.folded.pt2
  edgerep fold whole_model.pt --trust-checkpoint --input-shape 1,28,28 -o whole_model.folded.pt
"""


def add_checkpoint_arguments(p: argparse.ArgumentParser) -> None:
    """The checkpoint-loading flags (shared shape with ``deploy``)."""
    p.add_argument("--arch", help="architecture for a plain state_dict: a zoo name or package.module:factory")
    p.add_argument("--arch-kwargs", metavar="JSON", default=None,
                   help='constructor arguments for --arch as a JSON object, e.g. \'{"num_classes": 10}\'')
    p.add_argument("--input-shape", metavar="C,H,W", default=None,
                   help="input shape when the checkpoint does not carry one (a state_dict for package.module:factory, a "
                        "pickled module without meta, a .pt2 or ONNX file without a static one); never guessed")
    g = p.add_argument_group("preprocessing (how raw pixels become model input; the checkpoint's own win "
                             "unless given; required when it carries none and the data is images)")
    g.add_argument("--mean", metavar="M[,M,...]", help="per-channel mean after scaling, one value or one per "
                   "channel, e.g. 0.485,0.456,0.406 (ImageNet on [0, 1]) or 0 with --std 1 for plain [0, 1] input")
    g.add_argument("--std", metavar="S[,S,...]", help="per-channel std after scaling, one value or one per channel")
    g.add_argument("--scale", metavar="X", help="multiplies 8-bit pixel values before mean/std (default 1/255, "
                   "i.e. [0, 1]; 1 keeps 0..255); a fraction like 1/255 is accepted")
    g.add_argument("--resize", metavar="RULE", help="direct (default: straight to H x W), shorter:N (shorter side "
                   "to N, then a centre crop of H x W, e.g. shorter:256 for a 224 crop) or letterbox:N (the YOLO "
                   "convention: aspect kept, longer side to N, centred on grey 114; detection boxes mapped back)")
    g.add_argument("--channel-order", choices=["rgb", "bgr"], help="channel order the model expects (default rgb)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow a checkpoint that is a whole pickled module. Unpickling RUNS CODE named by the file, "
                        "so only pass this for files from a source you trust; prefer saving a state_dict")


def parse_checkpoint_arguments(args: argparse.Namespace) -> dict:
    """``load_checkpoint`` keyword arguments from the flags; bad values raise ``EdgerepError`` naming the flag."""
    from edgerep.errors import EdgerepError

    kwargs = None
    if args.arch_kwargs:
        try:
            kwargs = json.loads(args.arch_kwargs)
        except json.JSONDecodeError as e:
            raise EdgerepError(f"--arch-kwargs: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(kwargs, dict):
            raise EdgerepError("--arch-kwargs: must be a JSON object like '{\"num_classes\": 10}'")
    shape = None
    if args.input_shape:
        try:
            shape = tuple(int(v) for v in args.input_shape.replace("x", ",").split(","))
        except ValueError:
            shape = ()
        if len(shape) != 3 or min(shape) < 1:
            raise EdgerepError(f"--input-shape {args.input_shape!r}: expected three positive integers C,H,W")
    pre = parse_preprocessing_arguments(args)
    return {"arch": args.arch, "arch_kwargs": kwargs, "input_shape": shape, "trust": args.trust_checkpoint,
            **({"preprocessing": pre} if pre else {})}


def _floats(flag: str, text: str) -> list[float]:
    from edgerep.errors import EdgerepError

    vals = []
    for part in str(text).split(","):
        num, _, den = part.strip().partition("/")
        try:
            v = float(num) / (float(den) if den else 1.0)
        except (ValueError, ZeroDivisionError):
            raise EdgerepError(f"{flag} {text!r}: expected comma-separated numbers (fractions like 1/255 allowed)"
                               ) from None
        if v != v or v in (float("inf"), float("-inf")):
            raise EdgerepError(f"{flag} {text!r}: not a finite number")
        vals.append(v)
    return vals


def parse_preprocessing_arguments(args: argparse.Namespace) -> dict:
    """--mean/--std/--scale/--resize/--channel-order as ``load_checkpoint(preprocessing=...)``; bad values exit 2."""
    from edgerep.data.base import check_resize
    from edgerep.errors import EdgerepError

    pre: dict = {}
    for flag in ("mean", "std"):
        if getattr(args, flag, None) is not None:
            pre[flag] = _floats(f"--{flag}", getattr(args, flag))
    if pre.get("std") is not None and any(v <= 0 for v in pre["std"]):
        raise EdgerepError(f"--std {args.std!r}: every value must be positive")
    if getattr(args, "scale", None) is not None:
        vals = _floats("--scale", args.scale)
        if len(vals) != 1 or vals[0] <= 0:
            raise EdgerepError(f"--scale {args.scale!r}: expected one positive number such as 1/255")
        pre["scale"] = vals[0]
    if getattr(args, "resize", None) is not None:
        check_resize(args.resize)
        pre["resize"] = args.resize
    if getattr(args, "channel_order", None) is not None:
        pre["channel_order"] = args.channel_order
    return pre


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", type=Path, help="the train-time checkpoint")
    p.add_argument("-o", "--out", type=Path, required=True, help="where to write the folded edgerep checkpoint")
    add_checkpoint_arguments(p)
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="largest accepted max |a-b| / max |a| between original and folded outputs (default 1e-4)")
    p.add_argument("--batch", type=int, default=2, help="batch size of the seeded verification input (default 2)")
    p.add_argument("--blocks-only", action="store_true",
                   help="fold only edgerep's blocks, skip the traced-graph folder for other affine regions")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from edgerep.outputs import check_output_file

    check_output_file(args.out, "-o")  # before torch is even imported
    if args.checkpoint.suffix == ".pt2" and args.out.suffix != ".pt2":
        from edgerep.errors import EdgerepError

        raise EdgerepError(f"-o {args.out}: a torch.export program folds into a .pt2 program",
                           hint="name the output FILE.pt2")
    from edgerep.checkpoint import fold_checkpoint

    result = fold_checkpoint(args.checkpoint, args.out, tolerance=args.tolerance, batch=args.batch,
                             generic=not args.blocks_only, **parse_checkpoint_arguments(args))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    from rich.markup import escape

    from edgerep.report.console import make_console
    from rich.table import Table

    rep = result["fold"]
    t = Table(title=f"edgerep fold: {result['arch']} ({result['source_format']})")
    t.add_column("")
    t.add_column("before", justify="right")
    t.add_column("after", justify="right")
    t.add_row("parameters", f"{rep['params_before']:,}", f"{rep['params_after']:,}")
    t.add_row("conv layers", str(rep["convs_before"]), str(rep["convs_after"]))
    t.add_row("max abs error", "", f"{rep['max_abs_error']:.3e}")
    t.add_row("max rel error", "", f"{rep['max_rel_error']:.3e}")
    console = make_console()
    console.print(t)
    graph = result.get("graph")
    if graph:  # what the traced-graph folder did beyond the blocks edgerep knows
        console.print(f"graph folder: {len(graph['folded_regions'])} region(s) folded, "
                      f"FLOPs {graph['flops_before']:,} -> {graph['flops_after']:,}, batch norms "
                      f"{graph.get('norms_before', '?')} -> {graph.get('norms_after', '?')}")
        for r in graph["folded_regions"]:
            console.print(escape(f"  folded {r['kind']} at {r['where'][0]}{' ...' if len(r['where']) > 1 else ''} "
                                 f"-> {r['became']}"))
        for r in graph["refused_regions"]:
            console.print(f"  [yellow]left unfolded[/] {escape(str(r['where']))}: {escape(r['reason'])}")
        for left in graph.get("norms_left", []):
            console.print(f"  [yellow]batch norm left[/] {escape(left)}")
    f = result["folders"]
    console.print(f"provenance: {f['block']} layer(s) from the block folder, {f['graph'] + f['block+graph']} from "
                  f"the graph folder, {f['none']} unchanged")
    console.print(f"input {tuple(rep['input_shape'])}, folded in {result['fold_seconds']:.2f}s; "
                  f"wrote {result['out']} (read back, max abs error {result['readback_max_abs_error']:.1e})")
    return 0
