"""`edgerep deploy CKPT`: the whole pipeline into one bundle directory, with a table at the end."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "fold, verify, check, quantize, build, benchmark, evaluate and gate a checkpoint into a bundle"
DESCRIPTION = """\
Take a trained checkpoint all the way to deployable engines, in one command:

  load -> fold (exact, verified) -> check (INT8 friendliness) -> export ONNX -> calibrate once
  -> write a QDQ INT8 file per target policy -> build the target's engines -> benchmark
  -> evaluate every engine against the UNFOLDED FP32 model -> gate -> write the bundle

The bundle (default engines/out/<checkpoint name>/) holds the folded checkpoint, model.fp32.onnx,
model.int8.onnx (CPU policy) and model.int8.trt.onnx (TensorRT policy), the calibration cache,
the engines, manifest.json (versions, input hashes, settings, seeds) and report.json / .md / .html.
It is written to a temporary directory and renamed into place whole: an interrupted deploy
leaves nothing at the output path, and an existing bundle is kept unless --force.

Data comes in three disjoint sets: calibration (activation ranges), selection (every choice:
calibration method, CPU policy, layers kept in float) and test (only reported and gated, read
after every choice is final). --data names one set that is split: digits has calib/val/test; a
folder with calib/, val/, test/ sub-folders or an .npz with x_calib/x_val/x_test uses them; one
unsplit folder or .npz is split deterministically (stratified, 20/20/60) and the output says so.
A source with only train and test feeds calibration and selection from train; repeated images are
dropped before a source is split (said, and listed in splits.json).
--calib-data / --val-data / --eval-data name a set per role (quantize takes them with the same
meaning). Calibration or selection on a test split (a recipe's split = "test" too), two roles on one
split, and sets sharing an image (same decoded pixels, whatever the container) are refused unless
--allow-overlap. splits.json in the bundle lists every sample of each set.
When the checkpoint names its data set (edgerep's demo checkpoints do), no --data is needed.
Without labelled data there is no accuracy verdict: the gate fails unless --no-accuracy-gate.

Preprocessing is never guessed: an edgerep checkpoint carries it; for a plain state_dict, .pt2 or
pickled module with image data, pass --mean and --std (and --scale, --resize, --channel-order) as
the model was trained, or deploy stops with exit 2 naming them.
Where the target wants TensorRT and it is absent, deploy falls back to onnxruntime on the CPU and
says so in the table and the report.

examples:
  edgerep deploy examples/checkpoints/repvgg_digits.pt
  edgerep deploy model.pt --arch repvgg_a0 --data images/ --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 \
      --resize shorter:256 --target jetson-orin-nano --max-drop 1.0
  edgerep deploy model.pt --arch mypkg.nets:build --input-shape 1,16,16 --data digits --mean 0 --std 1
  edgerep deploy model.pt --arch repvgg_a0 --data synthetic --no-accuracy-gate   # latency only
  edgerep deploy model.pt --out bundle/ --force --json

exit codes: 0 ok, 1 the gate failed: an engine lost more than --max-drop top-1 points, no accuracy
was measured, the unfolded baseline does not beat chance (exact binomial test on its counts) or is
far below --expect-top1 (or the accuracy the checkpoint records), the calibration inputs do not
match the running statistics of the model's first BatchNorm layers (wrong preprocessing), or INT8
kept most layers in float (the bundle is still written, its report says which and why), 2 bad input.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", type=Path, nargs="?",
                   help="edgerep checkpoint, plain state_dict (with --arch), or .pt2 (optional with --explain)")
    p.add_argument("-o", "--out", type=Path, help="bundle directory (default engines/out/<checkpoint name>)")
    p.add_argument("--data", help="data split into calibration / selection / test: digits, a folder of class "
                                   "sub-folders, a .npz with x, y, or synthetic (latency only) (default: the data "
                                   "set the checkpoint names)")
    p.add_argument("--calib-data", help="calibration set only: sets activation ranges (overrides --data)")
    p.add_argument("--val-data", help="selection set only: every choice is scored on it (overrides --data)")
    p.add_argument("--eval-data", help="test set only: reported and gated, never used to choose (overrides --data)")
    p.add_argument("--train-data",
                   help="what the recovery ladder (--recover) learns on: AdaRound and QAT use it instead of "
                        "the calibration set (no labels needed); its train split, else all of it; refused if it "
                        "shares a sample with the selection or test set")
    p.add_argument("--allow-overlap", action="store_true",
                   help="accept named sets that share samples; the report then says its numbers are optimistic")
    p.add_argument("--no-accuracy-gate", action="store_true",
                   help="a latency-only run: no accuracy verdict is asked for (e.g. with --data synthetic)")
    p.add_argument("--target", default="x86-cpu",
                   help="target profile name (see engines/*.toml) or a TOML path (default x86-cpu)")
    p.add_argument("--max-drop", type=float, default=None,
                   help="gate: max drop vs the unfolded FP32 model in the task's points (top-1; detect: mAP@[.5:.95]; "
                        "sr: PSNR dB) (default 0.5; sr: 0.1 dB); exit 1 if any "
                        "engine exceeds it. Also the budget for automatic mixed precision. A negative value "
                        "disables the gate")
    p.add_argument("--recover", default="none", choices=["auto", "none", "adaround", "qat"],
                   help="recovery when PTQ misses the budget, before any layer leaves INT8 (the first step that meets it "
                        "wins): none (default: layers leave INT8 until it holds), auto (AdaRound, then QAT), adaround "
                        "(each layer's weight rounding learned on the calibration images), qat (short fine-tuning with "
                        "fake quantization, distilled from the FP32 model's outputs: no labels)")
    p.add_argument("--task", choices=["classify", "detect"],
                   help="what the outputs are for (default: the checkpoint's meta.task, else the data set's: "
                        "--data scenes is detect, else classify); detect scores COCO mAP@[.5:.95] with pycocotools "
                        "and --max-drop is in mAP points")
    p.add_argument("--postprocess", metavar="MODULE:FUNCTION",
                   help="detect: function(outputs) -> per image detections (boxes xyxy input pixels, scores, "
                        "classes) for a detector whose output is not (N, 4 + C, anchors)")
    p.add_argument("--expect-top1", type=float, metavar="PCT",
                   help="the unfolded model's known top-1 (%%, e.g. its validation accuracy): the gate fails when "
                        "the test counts are far below it (inconsistent with PCT - 5 points, exact binomial p < "
                        "0.001). Default: the accuracy the checkpoint records for its own data set, if any")
    p.add_argument("--force", action="store_true", help="replace an existing bundle at --out")
    from edgerep.commands.fold import add_checkpoint_arguments

    add_checkpoint_arguments(p)  # --arch, --arch-kwargs, --input-shape, --trust-checkpoint
    p.add_argument("--calib-recipe", metavar="NAME|TOML",
                   help="calibration recipe: a name in calibration/ (e.g. digits) or a TOML path; flags win over it")
    p.add_argument("--calib-samples", type=int, help="calibration samples (default: the recipe's, else 256)")
    p.add_argument("--eval-samples", type=int, help="evaluate on at most this many samples (default all)")
    p.add_argument("--calib-method", choices=["auto", "minmax", "percentile", "entropy", "mse"],
                   help="activation range method (default: the recipe's, else auto: the lowest simulated INT8 logit "
                        "error on the selection set)")
    p.add_argument("--batch", type=int, default=1, help="batch size for latency (default 1)")
    p.add_argument("--bench-seconds", type=float, default=1.0, help="time budget per engine for latency (s)")
    p.add_argument("--threads", type=int, help="CPU threads for torch and onnxruntime (default: all cores)")
    p.add_argument("--no-check", action="store_true", help="skip the INT8-friendliness check")
    p.add_argument("--metric", help="extra user metric: package.module:function(outputs, labels, reference)")
    p.add_argument("--cache-dir", type=Path,
                   help="where a deploy keeps what a second deploy of the same checkpoint, code and data reads back "
                        "instead of recomputing: calibration ranges, the check's report (check/), the unfolded and "
                        "folded models' outputs (reference/, outputs/) and every onnxruntime pass's (outputs/); "
                        "latency is always measured (default $EDGEREP_CACHE, else $XDG_CACHE_HOME/edgerep, else "
                        "~/.cache/edgerep)")
    p.add_argument("--seed", type=int, default=0, help="seed for every random choice (default 0)")
    p.add_argument("--json", action="store_true", help="print report.json instead of the table")
    p.add_argument("--explain", action="store_true",
                   help="print the stage graph (what each stage needs and gives, where it runs, when it is "
                        "skipped with these flags) and exit without doing any work")


def run(args: argparse.Namespace) -> int:
    if args.explain:  # the declarations only: nothing is loaded, checked or written
        from edgerep.pipeline import explain_deploy

        print(explain_deploy(_options(args) if args.checkpoint is not None else None), end="")
        return 0
    if args.checkpoint is None:
        from edgerep.errors import EdgerepError

        raise EdgerepError("no checkpoint given", hint="edgerep deploy CHECKPOINT (or --explain for the stage graph)")
    if args.out is not None:  # before numpy / torch are imported; deploy() checks again under the lock
        from edgerep.outputs import check_output_dir

        check_output_dir(args.out, "--out")
    if args.cache_dir is not None:
        from edgerep.outputs import check_output_dir

        check_output_dir(args.cache_dir, "--cache-dir")
    from edgerep.pipeline import deploy
    from edgerep.report.console import print_engine_table, step_progress

    if args.calib_samples is not None and args.calib_samples <= 0:
        from edgerep.errors import EdgerepError

        raise EdgerepError(f"--calib-samples must be positive, got {args.calib_samples}")
    opts = _options(args)
    with step_progress(quiet=args.json) as progress:
        result = deploy(opts, progress=progress)
    if args.json:
        print(json.dumps(result.report, indent=2, default=str))
    else:
        print_data_summary(result.report)
        print_engine_table(result.report, title=f"edgerep deploy -> {result.out}", bundle=result.out)
    if result.passed is False:
        return 1
    return 0


def _max_drop(given: float | None) -> float | None:
    """``--max-drop``: None (no gate) when negative; when not given, a placeholder the task's default replaces."""
    if given is None:
        from edgerep.bench.gate import DEFAULT_MAX_DROP

        return DEFAULT_MAX_DROP
    return given if given >= 0 else None


def _options(args: argparse.Namespace):
    """The parsed flags as ``edgerep.pipeline.DeployOptions`` (nothing is read or checked here)."""
    from edgerep.commands.fold import parse_checkpoint_arguments
    from edgerep.pipeline import DeployOptions

    return DeployOptions(
        checkpoint=args.checkpoint, out=args.out, data=args.data, calib_data=args.calib_data,
        val_data=args.val_data, eval_data=args.eval_data, train_data=args.train_data, allow_overlap=args.allow_overlap,
        accuracy_gate=not args.no_accuracy_gate, target=args.target, max_drop=_max_drop(args.max_drop),
        max_drop_from_task=args.max_drop is None, force=args.force,
        load=parse_checkpoint_arguments(args), calib_samples=args.calib_samples,
        eval_samples=args.eval_samples, calib_method=args.calib_method, calib_recipe=args.calib_recipe, batch=args.batch,
        bench_seconds=args.bench_seconds, threads=args.threads, run_check=not args.no_check,
        seed=args.seed, cache_dir=args.cache_dir, metric=args.metric, expect_top1=args.expect_top1,
        task=args.task, postprocess=args.postprocess, recover=recover_mode(args.recover),
    )


def recover_mode(mode: str) -> str:
    """``--recover``'s value, refused (exit 2 naming the flag) before any work when it cannot run."""
    from edgerep.errors import EdgerepError
    from edgerep.quant.options import QuantizeOptionError, RecoveryOptions

    try:
        return RecoveryOptions(mode=mode).mode
    except QuantizeOptionError as e:
        raise EdgerepError(f"--recover: {e.reason}") from None


def print_data_summary(report: dict) -> None:
    """Two lines before the table: the preprocessing used and the three sets' sizes and sources."""
    pre = report.get("preprocessing") or {}
    if pre:
        mean = ",".join(f"{v:g}" for v in pre.get("mean", []))
        std = ",".join(f"{v:g}" for v in pre.get("std", []))
        scale = pre.get("scale")
        scale_s = "1/255" if scale and abs(scale * 255 - 1) < 1e-12 else f"{scale:g}"
        shape_from = {"flags": "--input-shape", "registry": "the architecture's", "timm": "timm's config",
                      "program": "the program's example"}.get(pre.get("input_shape_source"), "the checkpoint's")
        print(f"preprocessing ({pre.get('source')}): input {'x'.join(map(str, pre.get('input_shape', [])))} "
              f"({shape_from}), "
              f"pixels x {scale_s}, mean {mean}, std {std}, resize {pre.get('resize')}, {pre.get('channel_order')}")
    sp = report.get("splits") or {}
    if sp:
        parts = [f"{r} {sp[r]['count']} ({sp[r]['source']}, {sp[r]['how']})"
                 for r in ("calibration", "selection", "test", "train") if isinstance(sp.get(r), dict)]
        print("data: " + "; ".join(parts) + " -> splits.json")
        if sp.get("note"):
            print(f"data: {sp['note']}")
