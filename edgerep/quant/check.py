"""``check_model``: is a re-parameterized model INT8-friendly, which layer, channel and train-time
branch is not, and what to do about it.

Pipeline: fold the train-time model (keeping each block's branches aside) -> weight statistics
per folded layer -> with data, activation ranges / SQNR and layer-output SQNR -> per-layer
sensitivity (only that layer INT8) -> branch attribution of outlier channels -> verdicts
(``thresholds``) and advice backed by the measured numbers.
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
from torch import nn

from edgerep.errors import DataError, EdgerepError, FoldError
from edgerep.quant import thresholds as T
from edgerep.fold.model import fold_with_provenance
from edgerep.quant.attribution import FoldedLayer, LayerAttribution, attribute, layers_from_fold
from edgerep.quant.sensitivity import (
    ActivationStats,
    LayerSensitivity,
    activation_stats,
    as_batches,
    layer_sensitivity,
    reference_outputs,
)
from edgerep.quant.weight_stats import WeightStats, weight_stats

#: advice kinds, most serious first (the summary's top advice follows this order)
ADVICE_ORDER = ("retrain_qarepvgg", "retrain", "keep_fp16", "per_channel", "percentile", "ok")


@dataclass
class Advice:
    kind: str  # one of ADVICE_ORDER
    text: str

    def to_dict(self) -> dict:
        return {"kind": self.kind, "text": self.text}


@dataclass
class LayerReport:
    """The check of one folded layer."""

    name: str
    kind: str
    block: str
    verdict: str  # under plain INT8 PTQ (per-tensor weights, min-max activations)
    verdict_with_fixes: str  # with per-channel weights and the better activation clipping
    reasons: list[str]
    weight: WeightStats
    activation: ActivationStats | None
    sensitivity: LayerSensitivity | None
    attribution: LayerAttribution
    advice: list[Advice]

    @property
    def metrics(self) -> dict:
        """Every measured number of this layer, as plain data."""
        return {
            "weight": self.weight.to_dict(),
            "activation": self.activation.to_dict() if self.activation else None,
            "sensitivity": self.sensitivity.to_dict() if self.sensitivity else None,
        }

    def to_dict(self) -> dict:
        return {
            "name": self.name, "kind": self.kind, "block": self.block, "verdict": self.verdict,
            "verdict_with_fixes": self.verdict_with_fixes, "reasons": list(self.reasons),
            "metrics": self.metrics, "attribution": self.attribution.to_dict(),
            "advice": [a.to_dict() for a in self.advice],
        }


@dataclass
class CheckReport:
    """What ``check_model`` found: one ``LayerReport`` per folded layer plus a summary."""

    model: str
    input_shape: list[int]
    layers: list[LayerReport]
    summary: dict
    settings: dict
    fold_max_rel_error: float
    timings: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    fp32: dict | None = None  # fp32 fidelity on the evaluation batches (top-1 when labelled)

    @property
    def passed(self) -> bool:
        """No layer is ``bad`` under plain INT8."""
        return not any(layer.verdict == "bad" for layer in self.layers)

    def layer(self, name: str) -> LayerReport:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def to_dict(self) -> dict:
        """Plain JSON-ready data (non-finite numbers, e.g. the SQNR of an exact tensor, become null)."""
        return _clean({
            "schema": "edgerep.check/2",  # edgerep.report.models.CheckOutput
            "model": self.model,
            "input_shape": list(self.input_shape),
            "passed": self.passed,
            "summary": self.summary,
            "fp32": self.fp32,
            "fold_max_rel_error": self.fold_max_rel_error,
            "data": self.data,
            "settings": self.settings,
            "thresholds": T.as_dict(),
            "timings_s": self.timings,
            "layers": [layer.to_dict() for layer in self.layers],
        })


@contextmanager
def _data_errors(what: str, shape: tuple):
    """A batch the model cannot run (wrong shape or channels) is the user's data: DataError, one line."""
    try:
        yield
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{what} of shape {shape} does not run through the model: {first}",
                        hint="check the data's input shape / channels against the model's (--input-shape C,H,W "
                             "overrides the checkpoint's)") from e


def _to(batches: list, device: torch.device) -> list:
    """Inputs onto the model's device (labels stay on the CPU, where outputs are compared)."""
    return [(x.to(device), y) for x, y in batches]


def _clean(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _verdicts(w: WeightStats, a: ActivationStats | None, s: LayerSensitivity | None) -> tuple[str, str, list[str]]:
    """(plain verdict, verdict with fixes, reasons) from the thresholds."""
    reasons: list[str] = []
    g = T.grade

    def note(verdict: str, what: str) -> str:
        if verdict != "ok":
            reasons.append(f"{verdict}: {what}")
        return verdict

    wsq, asq, ssq = (T.WEIGHT_SQNR_OK_DB, T.WEIGHT_SQNR_BAD_DB), (T.ACT_SQNR_OK_DB, T.ACT_SQNR_BAD_DB), \
        (T.SENS_SQNR_OK_DB, T.SENS_SQNR_BAD_DB)
    plain = [note(g(w.sqnr_per_tensor_db, *wsq), f"per-tensor weight SQNR {w.sqnr_per_tensor_db:.1f} dB")]
    med = w.sqnr_per_tensor_median_channel_db
    if med < w.sqnr_per_tensor_db - 3.0:  # outlier channels hide how the ordinary ones fare
        top = max(range(len(w.channel_absmax)), key=w.channel_absmax.__getitem__) if w.channel_absmax else 0
        plain.append(note(g(med, *wsq), f"per-tensor INT8 leaves the median output channel's weights at {med:.1f} dB "
                                        f"(the range is set by channel {top})"))
    fixed = [g(w.sqnr_per_channel_db, *wsq)]
    if a is not None:
        plain.append(note(g(a.sqnr_minmax_db, *asq), f"min-max input SQNR {a.sqnr_minmax_db:.1f} dB"))
        fixed.append(g(max(a.sqnr_minmax_db, a.sqnr_percentile_db), *asq))
        if a.out_sqnr_w_per_tensor_db is not None:
            plain.append(note(g(a.out_sqnr_w_per_tensor_db, *wsq),
                              f"layer output SQNR with per-tensor weights {a.out_sqnr_w_per_tensor_db:.1f} dB"))
        if a.out_sqnr_w_per_channel_worst_db is not None:
            v = g(a.out_sqnr_w_per_channel_worst_db, T.CHANNEL_SQNR_OK_DB, T.CHANNEL_SQNR_BAD_DB)
            fixed.append(v)
            if v != "ok":
                reasons.append(f"{v} even with fixes: output channel {a.out_worst_channel} keeps only "
                               f"{a.out_sqnr_w_per_channel_worst_db:.1f} dB with per-channel weights")
    if s is not None:
        plain.append(note(g(s.plain.sqnr_db, *ssq), f"model output SQNR {s.plain.sqnr_db:.1f} dB with only this "
                                                   "layer INT8"))
        fixed.append(g(s.best.sqnr_db, *ssq))
    return T.worst(*plain), T.worst(*fixed), reasons


def _advice(layer: FoldedLayer, w: WeightStats, a: ActivationStats | None, s: LayerSensitivity | None,
            attr: LayerAttribution, verdict: str, fixed: str) -> list[Advice]:
    out: list[Advice] = []
    g = T.grade
    name = layer.name
    if verdict == "ok":
        return [Advice("ok", "INT8 with per-tensor weights and min-max calibration is fine here")]
    w_plain_bad = g(min(w.sqnr_per_tensor_db, w.sqnr_per_tensor_median_channel_db), T.WEIGHT_SQNR_OK_DB,
                    T.WEIGHT_SQNR_BAD_DB) != "ok" or (
        a is not None and a.out_sqnr_w_per_tensor_db is not None
        and g(a.out_sqnr_w_per_tensor_db, T.WEIGHT_SQNR_OK_DB, T.WEIGHT_SQNR_BAD_DB) != "ok")
    if w_plain_bad and fixed != "bad" and g(w.sqnr_per_channel_db, T.WEIGHT_SQNR_OK_DB, T.WEIGHT_SQNR_BAD_DB) == "ok":
        out.append(Advice("per_channel", f"use per-channel weight scales: weight SQNR {w.sqnr_per_tensor_db:.1f} -> "
                                         f"{w.sqnr_per_channel_db:.1f} dB (median channel "
                                         f"{w.sqnr_per_tensor_median_channel_db:.1f} dB per-tensor)"))
    if a is not None and g(a.sqnr_minmax_db, T.ACT_SQNR_OK_DB, T.ACT_SQNR_BAD_DB) != "ok" and \
            a.sqnr_percentile_db - a.sqnr_minmax_db >= T.ACT_PERCENTILE_GAIN_DB:
        out.append(Advice("percentile", f"calibrate activations with {a.percentile:g}-percentile clipping: input SQNR "
                                        f"{a.sqnr_minmax_db:.1f} -> {a.sqnr_percentile_db:.1f} dB"))
    if s is not None and g(s.plain.sqnr_db, T.SENS_SQNR_OK_DB, T.SENS_SQNR_BAD_DB) != "ok" and \
            g(s.best.sqnr_db, T.SENS_SQNR_OK_DB, T.SENS_SQNR_BAD_DB) == "ok" and not any(
                x.kind == "per_channel" for x in out):
        method = a.best_method if a is not None else "min-max"
        out.append(Advice("per_channel", f"use per-channel weight scales ({method} activation calibration): with only "
                                         f"this layer INT8 the model output goes {s.plain.sqnr_db:.1f} -> "
                                         f"{s.best.sqnr_db:.1f} dB"))
    side = attr.dominant_branch
    if side is not None and layer.branches and len(layer.branches) > 1:
        k = layer.branches[side].kernel_size
        biggest = max(b.kernel_size[0] * b.kernel_size[1] for b in layer.branches.values())
        share = f"the {attr.branches[side]} branch makes {100 * attr.dominant_share:.0f}% of the outlier channels' " \
                "peak weights"
        if k[0] * k[1] < biggest and side in layer.branch_bns:
            if side in ("identity", "1x1"):  # RepVGG / MobileOne style side branches
                out.append(Advice("retrain_qarepvgg", "retrain with QARepVGG blocks (no BN on the identity / 1x1 "
                                                      f"branches, one BN after the sum): {share}"))
            else:
                out.append(Advice("retrain", f"retrain with one BN after the branch sum (QARepVGG-style) or "
                                             f"weight decay on that branch's BN gamma: {share}"))
    if fixed == "bad":
        why = []
        if s is not None and g(s.best.sqnr_db, T.SENS_SQNR_OK_DB, T.SENS_SQNR_BAD_DB) == "bad":
            why.append(f"alone in INT8 (with fixes) it leaves the model output at {s.best.sqnr_db:.1f} dB")
        if a is not None and a.out_sqnr_w_per_channel_worst_db is not None and g(
                a.out_sqnr_w_per_channel_worst_db, T.CHANNEL_SQNR_OK_DB, T.CHANNEL_SQNR_BAD_DB) == "bad":
            why.append(f"per-channel INT8 leaves output channel {a.out_worst_channel} at "
                       f"{a.out_sqnr_w_per_channel_worst_db:.1f} dB")
        if a is not None and g(max(a.sqnr_minmax_db, a.sqnr_percentile_db), T.ACT_SQNR_OK_DB,
                               T.ACT_SQNR_BAD_DB) == "bad":
            why.append(f"its input keeps only {max(a.sqnr_minmax_db, a.sqnr_percentile_db):.1f} dB")
        if g(w.sqnr_per_channel_db, T.WEIGHT_SQNR_OK_DB, T.WEIGHT_SQNR_BAD_DB) == "bad":
            why.append(f"per-channel weight SQNR is only {w.sqnr_per_channel_db:.1f} dB")
        out.append(Advice("keep_fp16", f"keep {name} in FP16 (or FP32): " + ("; ".join(why) or "INT8 stays bad here "
                                                                                          "even with fixes")))
    if not out:
        out.append(Advice("per_channel" if w_plain_bad else "percentile",
                          "use per-channel weights and percentile calibration; re-check after quantizing"))
    out.sort(key=lambda x: ADVICE_ORDER.index(x.kind))
    return out


def _summary(layers: list[LayerReport]) -> dict:
    counts = {v: sum(1 for r in layers if r.verdict == v) for v in T.VERDICTS}
    counts_fixed = {v: sum(1 for r in layers if r.verdict_with_fixes == v) for v in T.VERDICTS}

    def badness(r: LayerReport) -> float:
        if r.sensitivity is not None:
            return r.sensitivity.plain.sqnr_db
        return r.weight.sqnr_per_tensor_db

    worst = min(layers, key=badness) if layers else None
    by_kind: dict[str, list[str]] = {}
    for r in layers:
        for a in r.advice:
            if a.kind != "ok":
                by_kind.setdefault(a.kind, []).append(r.name)
    words = {
        "retrain_qarepvgg": "retrain with QARepVGG blocks (side-branch BN outliers in {})",
        "retrain": "retrain with one BN after the branch sum (side-branch BN outliers in {})",
        "keep_fp16": "keep in FP16: {}",
        "per_channel": "use per-channel weight scales ({})",
        "percentile": "calibrate activations with percentile clipping ({})",
    }
    top = [words[k].format(", ".join(sorted(set(by_kind[k]), key=by_kind[k].index)))
           for k in ADVICE_ORDER if k in by_kind]
    return {
        "layers": len(layers),
        "counts": counts,
        "counts_with_fixes": counts_fixed,
        "passed": counts["bad"] == 0,
        "worst_layer": worst.name if worst else None,
        "worst_layer_verdict": worst.verdict if worst else None,
        "top_advice": top or ["INT8 looks safe: per-tensor weights and min-max calibration suffice"],
        "flagged": [r.name for r in layers if r.verdict != "ok"],
    }


@dataclass(frozen=True)
class CheckOptions:
    """How much ``check_model`` measures: ``sensitivity`` (each layer alone in INT8), at most
    ``calib_limit`` calibration and ``eval_limit`` evaluation samples, the activation clipping
    ``percentile``, and ``out_images`` images for the layer-output SQNR."""

    sensitivity: bool = True
    calib_limit: int | None = 256
    eval_limit: int | None = 16
    percentile: float = T.ACT_PERCENTILE
    out_images: int | None = 8

    def settings(self) -> dict:
        """The report's ``settings`` block."""
        return {"bits": 8, "symmetric": True, "qmax": T.QMAX_8BIT, "percentile": self.percentile,
                "sensitivity": self.sensitivity, "calib_limit": self.calib_limit, "eval_limit": self.eval_limit,
                "out_images": self.out_images}


def check_model(train_model: nn.Module, *, example_input: torch.Tensor, calib_batches: Iterable | None = None,
                eval_batches: Iterable | None = None, options: CheckOptions | None = None, fold: Any = None,
                progress: Callable[[str], None] | None = None) -> CheckReport:
    """Check a train-time (or plain) model for INT8 friendliness, layer by layer.

    ``example_input``: one input batch (NCHW), used to verify the fold and, without data, for
    sensitivity. ``calib_batches``: iterable of ``x`` or ``(x, y)`` (numpy or torch) or a data set
    with ``.batches``; enables activation statistics. ``eval_batches``: data for sensitivity and top-1;
    defaults to the calibration batches, else ``example_input``. How much is measured: ``options``
    (``CheckOptions``). ``progress``: called with a short message after each stage. The model is not
    modified. ``fold``: the ``FoldResult`` deploy ships (``edgerep.model_path.fold_loaded``); by default
    the same fold is made here, so the layers checked are exactly the layers deployed.
    """
    t_all = time.perf_counter()
    opts = options if options is not None else CheckOptions()
    say = progress or (lambda _m: None)
    if not isinstance(train_model, nn.Module):
        raise EdgerepError(f"check_model needs an nn.Module, got {type(train_model).__name__}")
    example_input, device = _on_model_device(train_model, example_input)
    timings: dict[str, float] = {}
    with _measuring(train_model):
        with _timed(timings, "fold"):
            folded, flayers, rel = _verified_fold(train_model, example_input, fold)
        say(f"folded: {len(flayers)} layers (max rel error {rel:.1e})")
        with _timed(timings, "weights"):
            wstats = {fl.name: weight_stats(fl.module.weight) for fl in flayers}
            attrs = {fl.name: attribute(fl) for fl in flayers}
        say("weight statistics and attribution done")
        calib, evals = _check_data(calib_batches, eval_batches, opts, example_input, device)
        act = _activations(folded, flayers, calib, opts, say, timings)
        sens, fp32 = _sensitivities(folded, flayers, evals, act, say, timings) if opts.sensitivity else ({}, None)
        reports = [_layer_report(fl, wstats[fl.name], act.get(fl.name), sens.get(fl.name), attrs[fl.name])
                   for fl in flayers]
        timings["total"] = time.perf_counter() - t_all
        return CheckReport(model=type(train_model).__name__, input_shape=list(example_input.shape), layers=reports,
                           summary=_summary(reports), settings=opts.settings(), fold_max_rel_error=rel,
                           timings=timings, data=_data_summary(calib, evals, eval_batches is not None), fp32=fp32)


def _on_model_device(model: nn.Module, x) -> tuple[torch.Tensor, torch.device]:
    """``x`` as a float tensor on the model's device (CPU for a model without parameters), and that device."""
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x)
    device = next(iter(model.parameters()), torch.empty(0)).device
    return x.float().to(device), device


@contextmanager
def _measuring(model: nn.Module):
    """The model in eval mode and TF32 off while measuring (CUDA convs default to TF32, a 10-bit mantissa
    whose noise would blur the INT8 measurements); both restored afterwards."""
    was_training = model.training
    model.eval()
    tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        model.train(was_training)
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32


@contextmanager
def _timed(timings: dict[str, float], key: str):
    """Record the block's wall time under ``timings[key]`` (when it completes)."""
    t = time.perf_counter()
    yield
    timings[key] = time.perf_counter() - t


def _verified_fold(model: nn.Module, x: torch.Tensor, fold: Any) -> tuple[nn.Module, list[FoldedLayer], float]:
    """The folded module (``fold``'s, or folded here), its layers, and its max relative error vs ``model`` on
    ``x``; an error above 1e-3 is a ``FoldError`` (the check would measure the wrong network)."""
    if fold is None:
        fold = fold_with_provenance(model, x)
    folded, flayers = fold.module, layers_from_fold(model, fold)
    if not flayers:
        raise EdgerepError(f"{type(model).__name__}: no Conv2d / Linear layer found to check")
    with torch.no_grad(), _data_errors("example_input", tuple(x.shape)):
        a = model(x)
        b = folded(x)
    a, b = (a[0], b[0]) if isinstance(a, (tuple, list)) else (a, b)
    rel = float((a.double() - b.double()).abs().max() / a.double().abs().max().clamp_min(1e-30))
    if rel > 1e-3:
        raise FoldError(f"the folded model differs from the train-time model by {rel:.2e} (relative); "
                        "the check would measure the wrong network")
    return folded, flayers, rel


def _check_data(calib_batches, eval_batches, opts: CheckOptions, example_input: torch.Tensor,
                device: torch.device) -> tuple[list, list]:
    """Calibration and evaluation batches on ``device``; evaluation falls back to the calibration batches,
    else to ``example_input``."""
    calib = _to(as_batches(calib_batches, opts.calib_limit), device)
    evals = _to(as_batches(eval_batches, opts.eval_limit), device)
    if not evals:
        evals = as_batches(calib, opts.eval_limit) if calib else [(example_input, None)]
    return calib, evals


def _activations(folded: nn.Module, flayers: list[FoldedLayer], calib: list, opts: CheckOptions,
                 say: Callable[[str], None], timings: dict[str, float]) -> dict[str, ActivationStats]:
    """Activation ranges and SQNR per layer from the calibration batches (none without them)."""
    if not calib:
        return {}
    with _timed(timings, "activations"), _data_errors("calibration batch", tuple(calib[0][0].shape)):
        return activation_stats(folded, flayers, calib, opts.percentile, opts.out_images, say)


def _sensitivities(folded: nn.Module, flayers: list[FoldedLayer], evals: list, act: dict[str, ActivationStats],
                   say: Callable[[str], None], timings: dict[str, float]
                   ) -> tuple[dict[str, LayerSensitivity], dict | None]:
    """Each layer alone in INT8 on the evaluation batches, and the FP32 model's own fidelity there."""
    with _timed(timings, "sensitivity"):
        with _data_errors("evaluation batch", tuple(evals[0][0].shape)):
            ref = reference_outputs(folded, evals, flayers)
        fp32 = ref.fidelity.to_dict() if ref.fidelity else None
        sens = layer_sensitivity(folded, flayers, evals, act, ref, say, skip_fixed_above=T.SENS_SQNR_OK_DB)
    return sens, fp32


def _layer_report(fl: FoldedLayer, w: WeightStats, a: ActivationStats | None, s: LayerSensitivity | None,
                  attr: LayerAttribution) -> LayerReport:
    """One layer's verdicts, reasons (its outlier channels' branches when not ok) and advice."""
    verdict, fixed, reasons = _verdicts(w, a, s)
    if attr.outlier_channels and verdict != "ok":
        reasons.append(attr.summary)
    return LayerReport(fl.name, fl.kind, fl.block, verdict, fixed, reasons, w, a, s, attr,
                       _advice(fl, w, a, s, attr, verdict, fixed))


def _data_summary(calib: list, evals: list, eval_given: bool) -> dict:
    """The report's ``data`` block: how many images each role saw and where evaluation came from."""
    return {"calib_images": sum(int(x.shape[0]) for x, _ in calib),
            "eval_images": sum(int(x.shape[0]) for x, _ in evals),
            "eval_source": "eval" if eval_given else ("calib" if calib else "example_input"),
            "labels": all(y is not None for _, y in evals) and bool(evals)}


__all__ = ["check_model", "CheckOptions", "CheckReport", "LayerReport", "Advice"]
