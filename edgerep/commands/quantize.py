"""`edgerep quantize CKPT|MODEL.onnx --data DATA -o OUT`: calibrate once, one verified QDQ file per target."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "calibrate once and write a QDQ INT8 ONNX file per target policy"
DESCRIPTION = """\
Calibrate a model once and write one explicit-quantization (QDQ) INT8 ONNX file per target:

  OUT/model.int8.onnx       onnxruntime CPU: the fastest policy whose accuracy holds on THIS CPU,
                            measured on the optimized session (the fused INT8 kernels you will run)
  OUT/model.int8.trt.onnx   TensorRT: int8 symmetric, zero point 0, per-channel weights (axis 0),
                            float bias, Q/DQ on residual Add inputs; linted for TensorRT readiness
  OUT/quantize.json         every CPU policy tried (accuracy, latency, accepted/rejected and why),
                            the calibration key, layers kept in float and why, lint findings

Why measure on the optimized session: on x86 CPUs without VNNI (AVX2 only), onnxruntime's fused
u8s8 kernels add pairs of 8-bit products in int16 and can saturate. On the digits demo an s8s8
QDQ file scores 99.1% with graph optimizations off (a float simulation) and 90.0% as deployed
(AMD EPYC, AVX2, onnxruntime 1.32). edgerep tries the policies this CPU's ISA allows (7-bit
weights, u8/s8 activations, session.x64quantprecision) and rejects the ones that lose accuracy,
with the measured numbers as the reason.

Before calibration, cross-layer equalization rescales conv -> ReLU -> conv pairs (exact), and
each quantized layer's bias is corrected for its weights' rounding error. When no policy meets
--max-drop, the most sensitive layers stay in float (FP32 on onnxruntime, FP16 on TensorRT).
If that takes more than half the quantizable layers, the result is not an INT8 model: exit 1.

Data: --data is split like deploy's (calibration / selection / test; see `edgerep deploy --help`),
and the flags mean what they mean in deploy: ranges come from the calibration set, every choice is
scored on the selection set (--val-data), and the test set (--eval-data, or --data's test part) is
never read here except to refuse calibration or selection samples it shares. Without labels the budget applies to the outputs' cosine
(100 * (1 - cosine), about 20 dB SQNR at 0.5) instead of top-1 agreement, which flips on noise.

CKPT is any checkpoint deploy accepts (an edgerep checkpoint, a state_dict with --arch, an official
layout, a .pt2, a pickled module with --trust-checkpoint): it is folded, verified and exported
first, and the unfolded FP32 model is the accuracy reference. MODEL.onnx is used as is (the ONNX
FP32 model is then the reference). Calibration ranges are cached (--cache-dir), keyed by model
hash + data fingerprint + method + settings, and reused when the key matches.

Preprocessing takes deploy's flags (--mean, --std, --scale, --resize, --channel-order; --input-shape)
and is never guessed: an ONNX file carries none, so with image data (digits, image folders, uint8
.npz) they are required (exit 2 naming them); a float .npz is read as model-ready tensors.
Outputs are written to a temporary folder and moved into OUT only when the run completes: a failed
run leaves nothing behind.

examples:
  edgerep quantize examples/checkpoints/repvgg_digits.pt --data digits -o out/q
  edgerep quantize model.onnx --data calib.npz --val-data val.npz --method entropy -o out/q
  edgerep quantize model.onnx --data digits --input-shape 1,16,16 --mean 0.3058 --std 0.319 -o out/q
  edgerep quantize model.pt --arch repvgg_a0 --data images/ --max-drop 1.0 --targets cpu --json -o out/q
  edgerep quantize model.onnx --data calib.npz --cpu-policy u8s8-w7 -o out/q   # pin (still verified)
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", type=Path, help="checkpoint (.pt) or FP32 ONNX file (.onnx)")
    p.add_argument("--data", help="data split into calibration / selection / test as deploy splits it: digits, a folder "
                                   "of class sub-folders, or a .npz with x (and y) (default: the data set the "
                                   "checkpoint names)")
    p.add_argument("--val-data", dest="val_data",
                   help="selection set: every choice (method, CPU policy, layers kept in float) is scored on it "
                        "(default: --data's val split, or a part of --data), as in deploy")
    p.add_argument("--eval-data", dest="eval_data",
                   help="test set, as in deploy: never read to choose; it is held out of --data's split and "
                        "calibration or selection that shares a sample with it is refused")
    p.add_argument("--train-data", dest="train_data",
                   help="what the recovery ladder (--recover) learns on: AdaRound and QAT use it instead of "
                        "the calibration set (no labels needed); its train split, else all of it; refused if it "
                        "shares a sample with the selection or test set")
    p.add_argument("--allow-overlap", action="store_true",
                   help="accept sets that share samples (the numbers are then optimistic)")
    p.add_argument("-o", "--out", type=Path, required=True, help="output directory")
    p.add_argument("--method", default="auto", choices=["auto", "minmax", "percentile", "entropy", "mse"],
                   help="activation range method (default auto: mse, percentile and minmax from one pass, "
                        "the one with the lowest simulated INT8 logit error on the selection set wins)")
    p.add_argument("--max-drop", type=float, default=None,
                   help="accuracy budget in the task's points vs the reference (top-1; detect: selection-split "
                        "mAP@[.5:.95]; sr: PSNR dB) (default 0.5; sr: 0.1 dB); layers leave INT8 until it holds. "
                        "Negative: never exclude layers")
    p.add_argument("--task", choices=["classify", "detect"],
                   help="what the outputs are for (default: the checkpoint's meta.task, else the data set's, else "
                        "classify): it decides how every choice is scored on the selection set")
    p.add_argument("--postprocess", metavar="MODULE:FUNCTION",
                   help="detect: turns the model's outputs into detections when they are not (N, 4 + C, anchors)")
    p.add_argument("--targets", default="cpu,tensorrt", help="comma list of cpu, tensorrt (default both)")
    p.add_argument("--calib-samples", type=int, default=256, help="calibration samples (default 256)")
    p.add_argument("--eval-samples", type=int, help="verify on at most this many samples (default all)")
    from edgerep.commands.fold import add_checkpoint_arguments

    add_checkpoint_arguments(p)  # --arch, --arch-kwargs, --input-shape, preprocessing, --trust-checkpoint (as deploy)
    p.add_argument("--cache-dir", type=Path, help="calibration cache directory (default OUT/cache)")
    p.add_argument("--no-equalize", action="store_true", help="skip cross-layer equalization")
    p.add_argument("--no-bias-correction", action="store_true", help="skip bias correction")
    p.add_argument("--recover", default="none", choices=["auto", "none", "adaround", "qat"],
                   help="recovery when PTQ misses the budget, before any layer leaves INT8 (the first step that meets it "
                        "wins): none (default: layers leave INT8 until it holds), auto (AdaRound, then QAT), adaround "
                        "(each layer's weight rounding learned on the calibration images), qat (short fine-tuning with "
                        "fake quantization, distilled from the FP32 model's outputs: no labels)")
    p.add_argument("--cpu-policy", action="append", dest="cpu_policy",
                   help="only try this CPU policy (repeatable; still verified), e.g. u8s8-w7")
    p.add_argument("--threads", type=int, help="onnxruntime intra-op threads (default: all cores, max 8)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _onnx_meta(path: Path, load: dict):
    """The meta of an ONNX input: its input shape (``--input-shape``, else the file's static one) and the
    preprocessing the flags state; none stated is a guess, so image data is refused (exit 2) naming them."""
    import onnx

    from edgerep.checkpoint import CheckpointMeta, apply_preprocessing
    from edgerep.errors import EdgerepError

    dims = load.get("input_shape")
    if dims is None:
        try:
            m = onnx.load(str(path), load_external_data=False)
        except FileNotFoundError:
            raise EdgerepError(f"{path}: no such ONNX file") from None
        except Exception as e:  # protobuf DecodeError and friends: the file is not a readable ONNX model
            raise EdgerepError(f"{path}: not a readable ONNX file ({type(e).__name__})",
                               hint="re-export it, or pass the checkpoint instead") from None
        if not m.graph.input:
            raise EdgerepError(f"{path}: the ONNX graph has no input")
        d = m.graph.input[0].type.tensor_type.shape.dim
        dims = tuple(x.dim_value for x in d[1:])
        if len(dims) != 3 or not all(dims):
            raise EdgerepError(f"{path}: input shape is not static (C,H,W); pass --input-shape")
    c = int(dims[0])
    meta = CheckpointMeta(arch="onnx", input_shape=tuple(int(v) for v in dims), mean=(0.0,) * c, std=(1.0,) * c,
                          extra={"preprocessing_source": "default",
                                 "input_shape_source": "flags" if load.get("input_shape") else "onnx"})
    return apply_preprocessing(meta, load.get("preprocessing"))


def run(args: argparse.Namespace) -> int:
    from edgerep.outputs import check_output_dir

    check_output_dir(args.out, "-o")  # before any work (and before torch is imported)
    if args.cache_dir is not None:
        check_output_dir(args.cache_dir, "--cache-dir")
    from edgerep.commands.fold import parse_checkpoint_arguments
    from edgerep.errors import EdgerepError
    from edgerep.outputs import moved_paths, staged_outputs
    from edgerep.quant.pipeline import quantize_model

    if args.calib_samples <= 0:
        raise EdgerepError(f"--calib-samples must be positive, got {args.calib_samples}")
    out: Path = args.out
    options = quantize_options(args)  # a value that cannot work is exit 2 naming its flag, before any work
    load = parse_checkpoint_arguments(args)  # bad flags are exit 2 before any work
    reference = fold = None
    log = (lambda m: None) if args.json else (lambda m: print(f"  {m}"))
    if args.model.suffix.lower() == ".onnx":
        if not args.model.is_file():
            raise EdgerepError(f"{args.model}: no such ONNX file")
        meta = _onnx_meta(args.model, load)
        data = args.data
    else:
        from edgerep.model_path import load_and_fold

        loaded, fold = load_and_fold(args.model, load)
        meta = loaded.meta
        data = args.data or meta.dataset
    if not data:
        raise EdgerepError("--data: no calibration data named and the checkpoint names no data set")
    from edgerep.data.splits import resolve_splits

    splits = resolve_splits(data=data, val=args.val_data, test=args.eval_data, meta=meta,  # as deploy; refused:
                            allow_overlap=args.allow_overlap, train=args.train_data, say=log)  # nothing written
    calib, evaluate = splits.calibration, splits.selection
    from edgerep.quant.recover import unused_train_data

    if note := unused_train_data(splits.train is not None, args.recover):
        log(note)
    from edgerep.tasks import resolve_task

    task, task_source = resolve_task(args.task, meta, evaluate)
    if args.postprocess:
        if not hasattr(task, "with_postprocess"):
            raise EdgerepError(f"--postprocess applies to detectors; the task is {task.name} ({task_source})")
        task = task.with_postprocess(args.postprocess)
    if task.name != "classify":
        log(f"task {task.name} ({task_source}): choices scored by {task.metric} on the selection set")
    if hasattr(task, "check_data"):
        task.check_data(evaluate, "selection")
    if args.max_drop is None:  # not given: the task's default (SR: 0.1 dB), as deploy
        from dataclasses import replace as _replace

        from edgerep.bench.gate import default_max_drop

        options = _replace(options, judge=_replace(options.judge, max_drop=default_max_drop(task.name)))
    with staged_outputs(out) as tmp:  # a failed run leaves nothing behind
        if fold is None:
            fp32 = args.model
        else:
            from edgerep.pipeline import TorchReference
            from edgerep.quant.export import export_onnx

            fp32 = tmp / "model.fp32.onnx"
            export_onnx(fold.module, fp32, tuple(meta.input_shape), dynamic_hw=task.name == "sr")  # SR: any size
            reference = TorchReference(loaded.model)  # the UNFOLDED model is what every INT8 candidate is compared to
            log(f"folded and exported {out / fp32.name} (fold error {fold.verify.max_rel_error:.1e} relative)")
        from dataclasses import replace

        from edgerep.memory import batch_for

        options = replace(options, batch_size=batch_for(meta.input_shape))  # memory bounded at any input size
        res = quantize_model(fp32, calib, evaluate, tmp, options, reference=reference, progress=log, task=task,
                             train=splits.train)
        res.files = moved_paths(res.files, tmp, out)
        from edgerep.report.models import QUANTIZE_SCHEMA, QuantizeOutput, dump

        d = dump(QuantizeOutput.model_validate({"schema": QUANTIZE_SCHEMA,
                                                **json.loads(json.dumps(moved_paths(res.to_dict(), tmp, out),
                                                                        default=str))}))
        (tmp / "quantize.json").write_text(json.dumps(d, indent=2) + "\n")
    if args.json:
        print(json.dumps(d, indent=2, default=str))
        return 1 if res.int8_failure else 0
    _print_table(res)
    if res.int8_failure:
        print(f"edgerep quantize: INT8 failed: {res.int8_failure}", file=sys.stderr)
        return 1
    return 0


# each option's flag, so that a value that cannot work is reported as the user typed it
FLAGS = {"target.targets": "--targets", "target.cpu_policies": "--cpu-policy", "calibration.method": "--method",
         "calibration.samples": "--calib-samples", "judge.max_drop": "--max-drop", "judge.samples": "--eval-samples",
         "recovery.mode": "--recover", "recovery.iters": "--recover",
         "recovery.qat_steps": "--recover"}


def _given_max_drop(given: float | None) -> float | None:
    """``--max-drop`` as the judge takes it (negative: None); not given: 0.5 until the task's default replaces it."""
    if given is None:
        from edgerep.bench.gate import DEFAULT_MAX_DROP

        return DEFAULT_MAX_DROP
    return None if given < 0 else given


def quantize_options(args: argparse.Namespace) -> "QuantizeOptions":  # noqa: F821 (imported inside)
    """The command's ``QuantizeOptions`` from its flags; a value that cannot work (on this CPU, for
    ``--cpu-policy``) is an ``EdgerepError`` naming the flag."""
    from edgerep.errors import EdgerepError
    from edgerep.quant.cpu_features import detect_cpu_features
    from edgerep.quant.options import (CalibrationOptions, JudgeOptions, QuantizeOptionError, QuantizeOptions,
                                       RecoveryOptions, TargetOptions)

    try:
        options = QuantizeOptions(
            target=TargetOptions(targets=tuple(t.strip() for t in args.targets.split(",") if t.strip()),
                                 cpu_policies=tuple(args.cpu_policy) if args.cpu_policy else None),
            calibration=CalibrationOptions(method=args.method, samples=args.calib_samples,
                                           cache_dir=args.cache_dir or args.out / "cache",
                                           equalize=not args.no_equalize, bias_correction=not args.no_bias_correction),
            judge=JudgeOptions(max_drop=_given_max_drop(args.max_drop), samples=args.eval_samples,
                               threads=args.threads),
            recovery=RecoveryOptions(mode=args.recover))
        options.target.check_cpu(detect_cpu_features())
    except QuantizeOptionError as e:
        raise EdgerepError(f"{FLAGS.get(e.field, e.field)}: {e.reason}") from None
    return options


def reference_line(ref: dict) -> str:
    """``reference: the unfolded FP32 model, top-1 99.07% (534 of 539 images, digits:test)``."""
    from edgerep.report import fmt as F

    source = str(ref.get("source") or "reference")
    if source.startswith("reference (") and source.endswith(")"):
        source = "the " + source[len("reference ("):-1]
    n = ref.get("samples")
    if ref.get("top1") is None:
        return f"reference: {source} (no labelled evaluation data)"
    got = F.correct_of(ref.get("top1"), n)
    count = f"{got} of {n} images" if got is not None else "images unknown"
    where = f", {ref['data']}" if ref.get("data") else ""
    caveat = F.small_sample_note(n, "the reference")
    return f"reference: {source}, top-1 {F.pct(ref.get('top1'))} ({count}{where})" + (f"; {caveat}" if caveat else "")


def ladder_lines(recovery) -> list[str]:
    """The recovery ladder in words, one line per step measured (nothing when none was asked)."""
    if recovery is None:
        return []
    lines = [f"recovery ladder ({recovery.mode}): winner "
             + (", ".join(f"{k} {v}" for k, v in recovery.winner.items()) or "none (no step met the budget)")]
    for s in recovery.steps:
        lines.append(f"  {s.target} {s.step}: {s.file} drop {s.drop:.2f} ({'met' if s.met else 'missed'}), "
                     f"{s.seconds:.1f} s; {s.changed}")
    return lines


def _print_table(res) -> None:
    from edgerep.report import fmt as F
    from edgerep.report.console import make_console
    from edgerep.report.rows import drop_unit
    from rich.table import Table

    con = make_console()
    ref = res.reference
    n = ref.get("samples")
    t = Table(title=f"CPU policies on {res.cpu.get('model_name')} ({res.cpu.get('int8_dot')}), "
                    f"measured on the optimized onnxruntime session")
    top1 = any(c.top1 is not None for c in res.candidates)  # a classifier; mAP / PSNR have only the drop
    cols = ["policy"] + (["top-1 (correct of images)"] if top1 else []) + \
        [f"drop ({drop_unit({'reference': ref})})", "agreement", "latency ms", "verdict"]
    for col in cols:
        t.add_column(col)
    for c in res.candidates:
        t.add_row(c.policy, *([F.accuracy(c.top1, n)] if top1 else []), F.points(c.drop, signed=False),
                  F.pct(c.agreement), F.ms(c.latency_ms), "[green]accepted[/]" if c.accepted else "[red]rejected[/]")
    con.print(t)
    for c in res.candidates:
        con.print(f"  {c.policy}: {c.reason}")
    con.print(reference_line(ref))
    if ref.get("resolution_note"):
        con.print(f"[yellow]resolution[/]: {ref['resolution_note']}")
    if res.cpu_policy:
        con.print(f"[bold]cpu policy[/]: {res.cpu_policy.name} - {res.cpu_policy.reason}")
        if res.cpu_policy.session_config:
            con.print(f"  run it with session config {res.cpu_policy.session_config}")
    for e in res.excluded_nodes:
        con.print(f"kept in {e['precision']} ({e['target']}): {e['node']} - {e['why']}")
    for line in ladder_lines(res.recovery):
        con.print(line)
    if "tensorrt" in res.files:
        errs = [i for i in res.lint if i.severity == "error"]
        con.print(f"tensorrt: {res.files['tensorrt']} lint {'passed' if not errs else 'FAILED'}; simulated drop "
                  f"{F.points(res.tensorrt.get('simulated_drop'), signed=False)} {drop_unit({'reference': ref})}")
        for i in res.lint[:10]:
            con.print(f"  {i}")
    cal = res.calibration
    con.print(f"calibration: {cal.get('method')} ({'cached' if cal.get('was_cached') else 'computed'}) "
              f"{cal.get('cache_path')}")
    for k, v in res.files.items():
        con.print(f"wrote {k}: {v}")
