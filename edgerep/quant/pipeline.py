"""``quantize_model``: FP32 ONNX -> equalize -> calibrate once -> one verified QDQ file per target.

Read ``quantize_model`` top to bottom: each line is one named step (``_equalize``, ``_selection``,
``_calibrate``, ``_reference_summary``, ``_cpu_target``, ``_tensorrt_target``); what it is asked to do
is one ``QuantizeOptions`` (``edgerep.quant.options``), checked when it is made.

The CPU policy is chosen by measurement, not by assumption: every candidate for this CPU's ISA is
quantized, run on the *optimized* onnxruntime session (the fused INT8 kernels a user runs) and
scored against the reference; among those whose accuracy holds, the simplest wins unless another is
faster beyond the measured noise (``edgerep.bench.ranking``). On AVX2 without VNNI the
plain 8-bit policies saturate and are rejected here, with the measured numbers as the reason.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgerep.bench.ranking import Ranking, choose_within_noise
from edgerep.errors import DataError, EdgerepError
from edgerep.quant.calibrate import CalibrationResult, calibrate, calibrate_many
from edgerep.quant.cpu_features import CpuFeatures, detect_cpu_features
from edgerep.quant.mixed import MixedResult, Score, mixed_precision
from edgerep.quant.options import (CalibrationOptions, JudgeOptions, QuantizeOptionError,  # noqa: F401 (re-exported)
                                   QuantizeOptions, TargetOptions)
from edgerep.quant.paired import resolution_note, tied_with_best
from edgerep.quant.policy import (PRELU_INT8_SUFFIX, TENSORRT, CpuPolicy, by_simplicity, cpu_candidates,
                                  with_int8_prelu)
from edgerep.quant.qdq import QdqConfig, quantizable_nodes, write_qdq
from edgerep.quant.recover import LadderStep, Recovery, adaround_changed, qat_changed
from edgerep.spilled import SpilledArray, collect_samples

CPU_FILE = "model.int8.onnx"
TRT_FILE = "model.int8.trt.onnx"
FOLDED_REFERENCE = "reference (folded FP32 model, onnxruntime)"  # the selection reference when none is given
AUTO_METHODS = ("mse", "percentile", "minmax")  # one pass; choose_auto_method picks on the selection set


@dataclass
class Candidate:
    """One CPU policy as measured on the optimized onnxruntime session."""

    policy: str
    session_config: dict[str, str]
    expectation: str
    top1: float | None
    agreement: float | None
    drop: float
    error: float
    latency_ms: float
    accepted: bool
    reason: str
    simulated_top1: float | None = None  # graph optimizations off, only measured when rejected
    verdict: dict[str, Any] | None = None  # the budget decision on paired counts (``edgerep.quant.paired``)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CpuPolicyChoice:
    """The chosen CPU policy and what a session needs to run it accurately."""

    name: str
    reason: str
    session_config: dict[str, str]
    qdq: dict[str, Any]
    drop: float
    top1: float | None
    latency_ms: float

    def get(self, key: str, default=None):  # dict-style access for callers that expect a dict
        return getattr(self, key, default)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class QuantizeResult:
    """Everything ``quantize_model`` decided and measured (``to_dict()`` goes into report.json)."""

    calibration: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)
    cpu_policy: CpuPolicyChoice | None = None
    candidates: list[Candidate] = field(default_factory=list)
    excluded_nodes: list[dict[str, Any]] = field(default_factory=list)
    lint: list[Any] = field(default_factory=list)
    equalization: dict[str, Any] | None = None
    bias_correction: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, Any] = field(default_factory=dict)
    tensorrt: dict[str, Any] = field(default_factory=dict)
    cpu: dict[str, Any] = field(default_factory=dict)
    max_drop: float | None = None
    seconds: float = 0.0
    int8_failure: str | None = None  # set when meeting the budget kept most layers in float: not an INT8 model
    recovery: Recovery | None = None  # the recovery ladder (``--recover``), None when not asked

    def to_dict(self) -> dict[str, Any]:
        return {
            "calibration": dict(self.calibration),
            "files": {k: str(v) for k, v in self.files.items()},
            "cpu_policy": self.cpu_policy.to_dict() if self.cpu_policy else None,
            "candidates": [c.to_dict() for c in self.candidates],
            "excluded_nodes": list(self.excluded_nodes),
            "lint": [i.to_dict() for i in self.lint],
            "lint_passed": not any(i.severity == "error" for i in self.lint),
            "equalization": self.equalization,
            "bias_correction": dict(self.bias_correction),
            "reference": dict(self.reference),
            "tensorrt": dict(self.tensorrt),
            "cpu": dict(self.cpu),
            "max_drop": self.max_drop,
            "seconds": round(self.seconds, 3),
            "int8_failure": self.int8_failure,
            "recovery": self.recovery.to_dict() if self.recovery else None,
        }


# ---- measurement -------------------------------------------------------------------------------
def static_batch(path: Path) -> int | None:
    """The ONNX input's fixed batch size, or None when the batch axis is dynamic."""
    import onnx

    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return int(dims[0].dim_value) if dims and dims[0].dim_value > 0 else None


def run_batched(engine, x: np.ndarray, batch: int, static: bool = False) -> np.ndarray:
    """``engine.run`` over ``x`` in batches; a static-batch model gets its last batch zero-padded."""
    from edgerep.progress import counted

    outs = []
    label = f"{getattr(engine, 'name', 'engine')} {getattr(engine, 'precision', '')}".strip()
    with counted(label, len(x), "samples") as tick:
        for i in range(0, len(x), batch):
            xb = x[i:i + batch]
            n = len(xb)
            if static and n < batch:
                xb = np.concatenate([xb, np.zeros((batch - n, *xb.shape[1:]), dtype=xb.dtype)])
            outs.append(engine.run(xb)[:n])
            tick(n)
    return np.concatenate(outs)


def cached_pass(engine, x, batch: int, static: bool, cache_dir: Path | None) -> tuple[np.ndarray, int, int]:
    """``run_batched`` through the outputs cache in ``cache_dir`` (an onnxruntime engine's outputs per file,
    session settings and batch: ``edgerep.reference_cache``); returns (outputs, batches read, batches run)."""
    from edgerep.reference_cache import cached_engine

    cached = cached_engine(engine, cache_dir)
    if cached is None:
        return run_batched(engine, x, batch, static), 0, 0
    return run_batched(cached, x, batch, static), cached.hits, cached.misses


class _Judge:
    """Scores ONNX files on fixed evaluation data against fixed reference outputs, by the task's
    ``selection_score`` (``edgerep.tasks``: top-1 drop for classifiers, selection-split mAP for detectors)."""

    def __init__(self, x: np.ndarray | SpilledArray, y: Any, ref: np.ndarray, batch: int, threads: int | None,
                 static: bool = False, task: Any = None, dataset: Any = None, outputs_cache: Path | None = None):
        from edgerep.tasks import get_task

        self.x, self.y, self.ref, self.batch, self.threads, self.static = x, y, ref, batch, threads, static
        self.outputs_cache = outputs_cache
        self.cache_hits = self.cache_misses = 0  # batches read from / written to ``outputs_cache``
        self.task = task if task is not None else get_task("classify")
        self.dataset = dataset
        self.classifier = self.task.name == "classify" and ref.ndim == 2
        self.ref_top1 = self._top1(ref)
        self._scores: dict[tuple, Score] = {}  # (file sha256, session config, optimization) -> its score

    def _top1(self, out: np.ndarray) -> float | None:
        if self.y is None or not self.classifier:
            return None
        return float((out.argmax(1) == self.y).mean() * 100.0)

    @property
    def counted(self) -> bool:
        """Whether the drop is a top-1 drop on per-image counts (a labelled classifier)."""
        return self.y is not None and self.classifier

    def outputs(self, engine) -> np.ndarray:
        """``engine``'s outputs on the selection set (through the outputs cache when there is one)."""
        out, hits, misses = cached_pass(engine, self.x, self.batch, self.static, self.outputs_cache)
        self.cache_hits, self.cache_misses = self.cache_hits + hits, self.cache_misses + misses
        return out

    def score_outputs(self, out: np.ndarray) -> Score:
        if self.task.name == "classify":
            return self.task.selection_score(out, self.y, self.ref)
        return self.task.selection_score(out, self.y, self.ref, dataset=self.dataset)

    def engine(self, path: Path, session_config: dict[str, str] | None = None, optimization: str = "all"):
        from edgerep.engines.onnxruntime_engine import OrtEngine

        return OrtEngine(path, precision="int8", threads=self.threads, optimization=optimization,
                         session_config=session_config)

    def score(self, path: Path, session_config: dict[str, str] | None = None, optimization: str = "all") -> Score:
        """``path`` run on the evaluation data and scored; a file with the same bytes, run the same way, is scored
        once (the TensorRT file is the `auto` choice's simulated file; mixed precision's search ends on a file
        it has probed)."""
        from edgerep.hashing import sha256_file

        key = (sha256_file(path), tuple(sorted((session_config or {}).items())), optimization)
        if key not in self._scores:
            self._scores[key] = self.score_outputs(self.outputs(self.engine(path, session_config, optimization)))
        return self._scores[key]


def cosine_loss(out: np.ndarray, ref: np.ndarray, centered: bool = False) -> float:
    """``100 * (1 - cosine)`` of outputs vs reference, in "points" like a top-1 drop: 0.5 is about a
    20 dB output SQNR. ``centered`` removes each row's mean first (logits are shift-invariant)."""
    a, b = out.astype(np.float64), ref.astype(np.float64)
    if centered and a.ndim == 2:
        a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
    a, b = a.ravel(), b.ravel()
    cos = float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))
    return 100.0 * (1.0 - cos)


def latency_ms(engine, x1: np.ndarray, iters: int = 30, warmup: int = 5, budget_s: float = 1.5) -> float:
    """Median latency of ``engine.run(x1)`` in ms (a quick measure for ranking policies)."""
    for _ in range(warmup):
        engine.run(x1)
    times = []
    t_end = time.perf_counter() + budget_s
    for _ in range(iters):
        t = time.perf_counter()
        engine.run(x1)
        times.append(time.perf_counter() - t)
        if time.perf_counter() > t_end and len(times) >= 5:
            break
    return float(np.median(times) * 1000.0)


def _collect(dataset, limit: int | None, batch: int, task: Any = None, targets: bool = True,
             spill_to: Path | None = None) -> tuple[np.ndarray | SpilledArray, Any]:
    """The inputs and the targets (as ``task.collect_targets`` keeps them; None when any batch has none, or
    when ``targets`` is false: inputs only). With ``spill_to``, inputs past ``SPILL_BYTES`` go to that file
    (``edgerep.spilled``: read back per pass, the same bytes)."""
    from edgerep.tasks import get_task

    ys = []

    def inputs():
        for x, y in dataset.batches(batch, limit=limit):
            ys.append(y)
            yield x

    x = collect_samples(inputs(), spill_to)
    if x is None:
        raise DataError(f"data set {getattr(dataset, 'name', '?')!r} yielded no samples")
    if not targets:
        return x, None
    y = (task if task is not None else get_task("classify")).collect_targets(ys)
    return x, (y if y is not None and len(y) == len(x) else None)


def _reference_outputs(reference: Callable | None, fp32_path: Path, x: np.ndarray, batch: int,
                       static: bool = False, outputs_cache: Path | None = None) -> tuple[np.ndarray, str]:
    if reference is not None:
        outs = []
        for i in range(0, len(x), batch):
            o = reference(x[i:i + batch])
            if isinstance(o, (tuple, list)):
                o = o[0]
            if hasattr(o, "detach"):
                o = o.detach().cpu().numpy()
            outs.append(np.asarray(o, dtype=np.float32))
        return np.concatenate(outs), "reference (unfolded FP32 model)"
    from edgerep.engines.onnxruntime_engine import OrtEngine

    eng = OrtEngine(fp32_path, precision="fp32")
    return cached_pass(eng, x, batch, static, outputs_cache)[0], FOLDED_REFERENCE


# ---- the pipeline ------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Run:
    """One call's fixed inputs: the FP32 file, where files go, the batch it runs in, the options."""

    fp32: Path
    out_dir: Path
    tmp: Path
    batch: int
    static: bool  # a static-batch model: every batch it runs is ``batch`` long (a short one is padded)
    options: QuantizeOptions
    say: Callable[[str], None]


@dataclass(frozen=True)
class _Selection:
    """The data every choice is judged on (the selection set, else the calibration data), in its judge."""

    judge: _Judge
    data: str
    held_out: bool
    reference_source: str

    @property
    def role(self) -> str:
        return "selection" if self.held_out else "calibration"


@dataclass(frozen=True)
class _Target:
    """What each target step reads: the (equalized) source, its ranges, the judge, one input for timing."""

    run: _Run
    src: Path
    cal: CalibrationResult
    judge: _Judge
    x1: np.ndarray
    calib: Any = None  # the calibration data (AdaRound and QAT learn on it, unless ``train`` is given)
    reference: Callable | None = None  # QAT's teacher (the unfolded FP32 model; None: the FP32 file)
    train: Any = None  # --train-data: what AdaRound and QAT learn on instead
    tag: str = ""  # appended to candidate names: "+adaround" once the weights are learned
    float_source: Path | None = None  # the FP32 file before learning: layers kept in float take their weights from it
    cache: dict = field(default_factory=dict, compare=False, hash=False)  # the learned target, made once

    @property
    def budget(self) -> float:
        return self.run.options.judge.budget

    def config(self, qdq: QdqConfig) -> QdqConfig:
        """``qdq`` with bias correction as the options ask."""
        return _variant(qdq, self.run.options.calibration.bias_correction)


def quantize_model(fp32_onnx: Path, calib, selection, out_dir: Path, options: QuantizeOptions | None = None, *,
                   reference: Callable | None = None,
                   progress: Callable[[str], None] | None = None, task: Any = None, train: Any = None) -> QuantizeResult:
    """Calibrate ``fp32_onnx`` once on ``calib`` and write a verified QDQ file per target into ``out_dir``.

    ``selection`` is held out from calibration and from the test set that is reported (labelled if
    possible): every choice is scored on it; without it the calibration data is used (and the report
    says so). Without labels the budget applies to the outputs' cosine (``cosine_loss``), not to top-1
    agreement. Accuracy is measured against ``reference`` (a callable on a batch; default the FP32 ONNX
    model). What to target, how to calibrate and how to judge are ``options`` (``QuantizeOptions``); ``task``
    (``edgerep.tasks``, default classify) scores every choice (a detector: its selection-split mAP drop).
    ``train`` (``--train-data``, disjoint from selection and test) is what the recovery ladder's learning steps
    learn on; without it they learn on ``calib``.
    """
    t0 = time.perf_counter()
    opts = options if options is not None else QuantizeOptions()
    fp32_onnx, out_dir = Path(fp32_onnx), Path(out_dir)
    if not fp32_onnx.is_file():
        raise EdgerepError(f"{fp32_onnx}: FP32 ONNX file not found")
    cpu = opts.target.cpu or detect_cpu_features()
    opts.target.check_cpu(cpu)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = QuantizeResult(calibration={}, max_drop=opts.judge.max_drop, cpu=cpu.to_dict(),
                            recovery=Recovery(opts.recovery.mode) if opts.recovery.mode != "none" else None)
    with tempfile.TemporaryDirectory(prefix="edgerep-quant-") as tmpd:
        run = _start(fp32_onnx, out_dir, Path(tmpd), opts, progress)
        src, result.equalization = _equalize(run, calib)
        sel = _selection(run, selection if selection is not None else calib, selection is not None, reference, task)
        cal, result.calibration = _calibrate(run, src, calib, sel.judge, sel.role)
        result.reference = _reference_summary(run, sel)
        target = _Target(run, src, cal, sel.judge, _timing_input(sel.judge.x, run.batch, run.static,
                                                                  selection if selection is not None else calib),
                         calib, reference, train=train)
        if result.recovery is not None and train is not None:
            result.recovery.learned_on = "train"
        if "cpu" in opts.target.targets:
            _cpu_target(result, target, cpu)
        if "tensorrt" in opts.target.targets:
            _tensorrt_target(result, target)
        j = sel.judge
        if j.cache_hits:
            run.say(f"outputs cache: {j.cache_hits} of {j.cache_hits + j.cache_misses} selection-set batches read "
                    f"from {opts.judge.outputs_cache} (the same files, session settings and inputs ran before)")
    result.seconds = time.perf_counter() - t0
    return result


def _start(fp32: Path, out_dir: Path, tmp: Path, opts: QuantizeOptions,
           progress: Callable[[str], None] | None) -> _Run:
    """The run's fixed inputs; a static-batch model runs only its own batch (calibration drops a ragged tail)."""
    fixed = static_batch(fp32)
    batch = fixed if fixed is not None else opts.batch_size
    return _Run(fp32, out_dir, tmp, batch, fixed is not None, opts, progress or (lambda _m: None))


#: calibration samples the equalized file is compared on. The rewrite is exact (ReLU is positively homogeneous):
#: what the comparison catches is a wrong rewrite, visible on any input, not a statistic (128 samples took 2.5 s of
#: RepVGG-A0's deploy at 224)
EQUALIZE_CHECK_SAMPLES = 32


def _equalize(run: _Run, calib) -> tuple[Path, dict[str, Any] | None]:
    """Cross-layer equalization (exact), used only where the equalized model matches the FP32 model on
    calibration data (1e-4 relative). Returns the file to quantize and what happened (None: not asked)."""
    if not run.options.calibration.equalize:
        return run.fp32, None
    import onnx

    from edgerep.quant.equalize import equalize_model

    model = onnx.load(str(run.fp32))
    eq = equalize_model(model)
    if not eq.pairs:
        return run.fp32, {"applied": False, "why_not": "no conv -> ReLU -> conv pairs", "pairs": []}
    path = run.tmp / "model.eq.onnx"
    onnx.save(model, str(path))
    limit = min(run.options.calibration.samples or EQUALIZE_CHECK_SAMPLES, EQUALIZE_CHECK_SAMPLES)
    x_cal, _ = _collect(calib, limit, run.batch, targets=False)
    dev = _max_rel_deviation(run, path, x_cal)
    info = eq.to_dict() | {"max_rel_deviation": dev, "checked_samples": len(x_cal)}
    if dev > 1e-4:
        return run.fp32, info | {"applied": False,
                                 "why_not": f"equalized model deviates by {dev:.2e} (relative) from FP32"}
    run.say(f"equalized {len(eq.pairs)} layer pairs (largest channel ratio "
            f"{eq.range_ratio_before:.1f} -> {eq.range_ratio_after:.1f})")
    return path, info | {"applied": True}


def _max_rel_deviation(run: _Run, other: Path, x: np.ndarray) -> float:
    """max |FP32 - other| / max |FP32| over the outputs on ``x``."""
    from edgerep.engines.onnxruntime_engine import OrtEngine

    threads, cache = run.options.judge.threads, run.options.judge.outputs_cache
    a = cached_pass(OrtEngine(run.fp32, threads=threads), x, run.batch, run.static, cache)[0]
    b = cached_pass(OrtEngine(other, threads=threads), x, run.batch, run.static, cache)[0]
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(a))), 1e-12))


def _selection(run: _Run, data, held_out: bool, reference: Callable | None, task: Any = None) -> _Selection:
    """The selection data and the reference's outputs on it, in the judge that scores every choice (a large set
    is read from a file in the run's temporary folder on each pass: ``edgerep.spilled``)."""
    x, y = _collect(data, run.options.judge.samples, run.batch, task, spill_to=run.tmp / "selection.f32")
    cache = run.options.judge.outputs_cache
    ref, source = _reference_outputs(reference, run.fp32, x, run.batch, run.static, cache)
    judge = _Judge(x, y, ref, run.batch, run.options.judge.threads, run.static, task, data, cache)
    return _Selection(judge, getattr(data, "name", "?"), held_out, source)


def _calibrate(run: _Run, src: Path, calib, judge: _Judge, role: str) -> tuple[CalibrationResult, dict[str, Any]]:
    """Calibrate once. ``auto``: several range methods from the same pass, the one the judge finds most
    accurate kept (``choose_auto_method``). Returns the ranges and the report's calibration block."""
    method = run.options.calibration.method
    common = {"batch_size": run.batch, "limit": run.options.calibration.samples,
              "cache_dir": run.options.calibration.cache_dir, "progress": run.say}
    if method != "auto":
        cal = calibrate(src, calib, method=method, **common)
        return cal, cal.summary() | {"requested": method}
    cals = calibrate_many(src, calib, AUTO_METHODS, **common)
    scores = _auto_scores(src, cals, judge, run.tmp)
    errors = {m: sc.error for m, sc in scores.items()}
    chosen, not_worse = choose_auto_method(scores)
    cal = cals[chosen]
    run.say(f"calibration auto (judged on the {role} set, {len(judge.x)} samples): "
            + ", ".join(f"{m} drop {sc.drop:.4f} {sc.unit} error {sc.error:.2e}"
                        for m, sc in scores.items()) + f" -> {cal.method}")
    return cal, cal.summary() | {"requested": "auto", "auto_logit_error": errors,
                                 "auto_drop": {m: sc.drop for m, sc in scores.items()},
                                 "auto_not_less_accurate": not_worse, "auto_judged_on": role}


def _reference_summary(run: _Run, sel: _Selection) -> dict[str, Any]:
    """The report's reference block: what every drop is a drop of, on which data, at which resolution."""
    judge, n = sel.judge, len(sel.judge.x)
    # the FP32 file's own score; when it is the reference, its outputs are the judge's already
    fp32 = judge.score_outputs(judge.ref) if sel.reference_source == FOLDED_REFERENCE else judge.score(run.fp32)
    counted = judge.counted
    measure = "top-1 drop" if counted else "100 * (1 - cosine) of the outputs"
    if judge.task.name == "detect" and judge.y is not None:
        measure = "mAP@[.5:.95] drop (points, pycocotools) on the selection split"
    if judge.task.name == "sr" and getattr(judge.dataset, "scale", None) is not None:
        measure = "PSNR drop (dB, Y channel, scikit-image) against the HR images of the selection split"
    summary = {"source": sel.reference_source, "top1": judge.ref_top1, "samples": int(n), "data": sel.data,
               "held_out": sel.held_out, "role": sel.role, "labelled": judge.y is not None or measure.startswith("PSNR"),
               "task": judge.task.name,
               "measure": measure,
               "onnx_fp32_top1": fp32.top1, "onnx_fp32_drop": fp32.drop,
               "points_per_image": round(100.0 / n, 4) if counted else None,
               "resolution_note": resolution_note(n, run.options.judge.budget) if counted else None}
    if summary["resolution_note"]:
        run.say(summary["resolution_note"])
    return summary


SR_TIMING_FRAME = (360, 640)  # LR height, width: a 360p frame in, 720p out at x2 (issue 25's stated size)


def _timing_input(x: np.ndarray, batch: int, static: bool, data: Any = None) -> np.ndarray:
    """One sample to time candidates on (a static-batch model: one whole batch, zero-padded). SR data scored on
    patches: a 360 x 640 LR frame tiled from the first photo's whole LR image (``SRDataset.whole_input``): on a
    small photo fixed per-op costs weigh more than on a frame, and which CPU policy is fastest can depend on it
    (the integer-PReLU twin, first form, under load: 0.80x at 360p, a tie on a 225 x 150 photo), so candidates
    are timed at the size a video SR model runs at."""
    if not static and hasattr(data, "whole_input") and len(data):
        return sr_timing_frame(data.whole_input(0)[0])
    x1 = np.ascontiguousarray(x[:batch] if static else x[:1])
    if static and len(x1) < batch:
        x1 = np.concatenate([x1, np.zeros((batch - len(x1), *x1.shape[1:]), np.float32)])
    return x1


def sr_timing_frame(lr: np.ndarray, size: tuple[int, int] = SR_TIMING_FRAME) -> np.ndarray:
    """``lr`` (1, C, h, w) tiled by reflection to ``size`` (real pixels, no seams of zeros)."""
    h, w = size
    reps = (1, 1, -(-h // lr.shape[2]), -(-w // lr.shape[3]))
    flips = [lr, lr[:, :, ::-1]]
    rows = np.concatenate([flips[i % 2] for i in range(reps[2])], axis=2)
    cols = [rows, rows[:, :, :, ::-1]]
    tiled = np.concatenate([cols[j % 2] for j in range(reps[3])], axis=3)
    return np.ascontiguousarray(tiled[:, :, :h, :w], dtype=np.float32)


def choose_auto_method(scores: dict[str, Score]) -> tuple[str, list[str]]:
    """The `auto` range method: accuracy first (the methods not shown less accurate than the most
    accurate one, by paired counts on the selection set), then the lowest continuous logit error among
    those (a top-1 drop on a few hundred images flips on one image). Returns (chosen, not-less-accurate)."""
    _, not_worse = tied_with_best({m: sc.correct for m, sc in scores.items()}, {m: sc.drop for m, sc in scores.items()})
    order = list(scores)
    rank = {m: (AUTO_METHODS.index(m) if m in AUTO_METHODS else len(AUTO_METHODS) + order.index(m)) for m in order}
    return min(not_worse, key=lambda m: (scores[m].error, rank[m])), not_worse


def _auto_scores(src: Path, cals: dict[str, CalibrationResult], judge: _Judge, tmp: Path) -> dict[str, Score]:
    """Each range method's ranges as symmetric int8 QDQ simulated in float (range quality alone, before
    any kernel choice), scored by the judge on the *selection* set (never the calibration data the
    ranges came from, never the test set). The choice is the lowest relative logit MSE (continuous; a
    top-1 drop on a few hundred images flips on one image); the drop is reported beside it. Simulated
    on purpose: judged on the kernels, the choice would depend on the CPU's ISA (VNNI or not)."""
    return {m: judge.score(_write(src, tmp / f"auto-{m}.onnx", c), optimization="disable")
            for m, c in cals.items()}


def _write(src: Path, path: Path, cal: CalibrationResult) -> Path:
    write_qdq(src, path, cal, TENSORRT)
    return path


def fallback_choice(cands: list[tuple[CpuPolicy, Candidate, Path]], scores: dict[str, Score],
                    rank: Ranking) -> tuple[str, str]:
    """When no CPU policy meets the budget: the most accurate, decided on paired counts. Every policy
    not shown less accurate than the best ties with it; among those the latency ranking's pick wins
    only when it was faster beyond the noise, else the simplest (a raw median never decides)."""
    order = [p.name for p in by_simplicity([t[0] for t in cands])]
    best, tied = tied_with_best({n: scores[n].correct for n in order}, {n: scores[n].drop for n in order})

    def shown(n: str) -> str:
        p = scores[n].paired
        return f"{n} {scores[n].drop:.2f}" + (f" ({p.lost} lost, {p.gained} gained of {p.n})" if p else "")

    if len(tied) == 1:
        return best, (f"{best} was the most accurate, beyond the noise of the paired counts: "
                      + ", ".join(shown(n) for n in order))
    tied = [n for n in order if n in tied]  # simplest first
    head = (f"{', '.join(tied)} tie on accuracy ({'; '.join(shown(n) for n in tied)}: paired counts show none "
            f"less accurate than {best})")
    if rank.verdict == "faster" and rank.chosen in tied and tied[0] == order[0]:  # ranked against tied[0]
        return rank.chosen, f"{head}; {rank.chosen} is kept: {rank.reason}"
    pick = tied[0]
    return pick, (f"{head}; the simplest, {pick}, is kept: inside the noise the simplest policy wins "
                  f"(latency: {rank.reason})")


def _variant(cfg: QdqConfig, bias_correction: bool) -> QdqConfig:
    from dataclasses import replace

    return replace(cfg, bias_correction=bias_correction)


# ---- the CPU target: measure every candidate policy, rank by latency, choose, ship ----------------
@dataclass
class _Measured:
    """One CPU policy's QDQ file as measured on its optimized session (``engine`` is kept for timing)."""

    policy: CpuPolicy
    path: Path
    score: Score
    candidate: Candidate
    engine: Any
    bias_corrected: dict[str, float]


@dataclass(frozen=True)
class _CpuChoice:
    """The policy that ships, the candidate row that describes it, its file and why it was chosen."""

    policy: CpuPolicy
    candidate: Candidate
    path: Path
    reason: str


def _cpu_policies(t: _Target, cpu: CpuFeatures) -> list[CpuPolicy]:
    """This CPU's candidates; with a PReLU that can run on the integers, each with its twin that does
    (``with_int8_prelu``)."""
    from edgerep.quant.prelu import int8_prelus

    pols, only = cpu_candidates(cpu), t.run.options.target.cpu_policies or ()
    twins = any(n.endswith(PRELU_INT8_SUFFIX) for n in only) or bool(int8_prelus(_load(t.src)))
    return with_int8_prelu(pols) if twins else pols


def _cpu_target(result: QuantizeResult, t: _Target, cpu: CpuFeatures) -> None:
    """The CPU file: every candidate this CPU offers (or the pinned ones) measured, ranked, one chosen."""
    only = t.run.options.target.cpu_policies
    t0 = time.perf_counter()
    measured = [_measure_cpu_policy(t, p) for p in _cpu_policies(t, cpu) if only is None or p.name in only]
    result.bias_correction.update(_bias_corrections(measured))
    rank = _rank_latency(t, measured)
    result.candidates = [m.candidate for m in measured]
    result.cpu["latency_ranking"] = rank.to_dict()
    accepted = [m for m in measured if m.candidate.accepted]
    _record(result, "ptq", "cpu", _best(measured), time.perf_counter() - t0, "per-channel PTQ as calibrated")
    for step in _ladder(result, t, measured):
        if accepted:
            break
        t0 = time.perf_counter()
        grid = _learning_grid(measured)  # the activations' grid of the policy the learning step serves
        shared = _learned_before(t, step, grid)
        t = _learned(result, t, step, grid, "cpu")
        measured = [_measure_cpu_policy(t, m.policy) for m in measured if _learnable(m.policy.qdq)]
        rank = _rank_latency(t, measured)
        result.candidates += [m.candidate for m in measured]
        result.cpu[f"latency_ranking{t.tag.replace('+', '_')}"] = rank.to_dict()
        accepted = [m for m in measured if m.candidate.accepted]
        _record(result, step, "cpu", _best(measured), time.perf_counter() - t0, _changed(result, step, shared))
    if accepted:
        chosen = next(m for m in accepted if m.policy.name == rank.chosen)
        choice = _CpuChoice(chosen.policy, chosen.candidate, chosen.path,
                            accepted_reason(cpu.int8_dot, chosen.candidate, rank, result.candidates))
    else:
        t0 = time.perf_counter()
        choice = _cpu_fallback(result, t, measured, rank, cpu.int8_dot)
        if choice.candidate.policy.find("+fp32[") > 0:
            kept = sum(1 for e in result.excluded_nodes if e.get("target") == "cpu")
            _record(result, "mixed", "cpu", choice.candidate, time.perf_counter() - t0,
                    f"{kept} layer(s) kept in FP32", kept)
    _ship_cpu(result, t, choice)


# ---- the recovery ladder (``edgerep.quant.recover``) ------------------------------------------------------
def _ladder(result: QuantizeResult, t: _Target, measured: list[_Measured] | None = None) -> tuple[str, ...]:
    """The learning steps to climb, in order (none without a ladder, or when no measured policy has the
    8-bit per-channel weights they learn)."""
    if result.recovery is None or (measured is not None and not any(_learnable(m.policy.qdq) for m in measured)):
        return ()
    return t.run.options.recovery.steps


def _learned_before(t: _Target, step: str, grid: QdqConfig) -> bool:
    return _cache_key(t, step, grid) in t.cache


def _cache_key(t: _Target, step: str, grid: QdqConfig) -> str:
    """A learned model is shared by the targets only when its activation grid is theirs too."""
    return f"{t.tag}+{step}@{grid.activation}{'-add' if grid.qdq_on_add else ''}"


def _learning_grid(measured: list[_Measured]) -> QdqConfig:
    """The CPU file's learning steps fake-quantize activations as the most accurate learnable policy does
    (u8 asymmetric for u8s8): learned under TensorRT's symmetric s8 activations, QAT left the hostile
    detector's u8s8 file at 0.63 points where learning under u8 reached 0.10 (``docs/recovery.md``)."""
    learnable = [m for m in measured if _learnable(m.policy.qdq)]
    return min(learnable, key=lambda m: m.candidate.drop).policy.qdq


def _changed(result: QuantizeResult, step: str, shared: bool) -> str:
    """What a learning step changed, in words (``shared``: learned for the other target, only rescored here)."""
    rec = result.recovery
    text = adaround_changed(rec.adaround or {}) if step == "adaround" else qat_changed(rec.qat or {})
    return text + ("; learned for the CPU file (learning time counted there)" if shared else "")


def _learnable(cfg: QdqConfig) -> bool:
    """AdaRound's grid (symmetric int8, per-channel, 8 bits) is this config's weight grid."""
    return cfg.weight == "s8" and cfg.per_channel and not cfg.reduce_range


def _best(measured: list[_Measured]) -> Candidate | None:
    """The candidate with the smallest drop (the accepted one first)."""
    return min((m.candidate for m in measured), key=lambda c: (not c.accepted, c.drop), default=None)


def _record(result: QuantizeResult, step: str, target: str, cand: Any, seconds: float, changed: str,
            kept: int = 0) -> None:
    """One ladder step into the report (nothing when no ladder was asked). ``cand``: a Candidate, or the
    TensorRT file's (name, Score, budget) triple."""
    if result.recovery is None or cand is None:
        return
    if isinstance(cand, Candidate):
        name, drop, met, text = cand.policy, cand.drop, cand.accepted, (cand.verdict or {}).get("text", "")
    else:
        name, score, budget = cand
        v = score.verdict(budget)
        name, drop, met, text = name, round(score.drop, 4), v.holds, v.text
    result.recovery.add(LadderStep(step, target, name, drop, bool(met), text, round(seconds, 3), changed, kept))


def _learned(result: QuantizeResult, t: _Target, step: str, grid: QdqConfig, target: str) -> _Target:
    """``t`` with its source replaced by the FP32 file ``step`` (adaround | qat) learned from ``t.src`` with the
    activations fake-quantized on ``grid``'s; learned once per chain of steps and grid, shared by the targets
    whose grid it is. ``result.recovery.learned[target + tag]`` holds the int8 weights the target's file stores."""
    key = _cache_key(t, step, grid)
    if key not in t.cache:
        with _torch_threads(t.run.options.recovery.torch_threads):
            _learn(result, t, step, key, grid)
    learned = t.cache[key]
    result.recovery.learned[f"{target}{learned.tag}"] = learned.cache[f"{key}:weights"]
    return learned


@contextmanager
def _torch_threads(n: int):
    """torch's intra-op threads set to ``n`` for the block, restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _learn(result: QuantizeResult, t: _Target, step: str, key: str, grid: QdqConfig) -> None:
    """Run ``step`` on ``t.src`` (activations on ``grid``'s) and cache the target that reads its learned FP32 file
    under ``key``, its int8 weights under ``key:weights``."""
    from dataclasses import replace

    run = t.run
    data, role = (t.train, "train") if t.train is not None else (t.calib, "calibration")
    x, _ = _collect(data, run.options.calibration.samples, run.batch, targets=False)
    per = max(1, int(np.prod(x.shape[1:])) * 4)
    x = x[:max(16, min(len(x), (64 << 20) // per))]  # at most 64 MiB of inputs (or 16 samples)
    tag = f"{t.tag}+{step}"
    out = run.tmp / f"model{key.replace('+', '.').replace('@', '.')}.onnx"
    run.say(f"recovery: {t.tag.lstrip('+') or 'PTQ'} missed {t.budget:g}; {step} on {len(x)} {role} samples")
    if step == "adaround":
        from edgerep.quant.adaround import AdaRoundOptions, adaround_model, worst_layers

        nodes, ranking = None, None
        if run.options.recovery.layers == "worst":  # debug's ranking on the learning images
            nodes, ranking = worst_layers(t.src, t.cal, x, grid, threads=run.options.judge.threads)
            run.say(f"adaround on the {len(nodes)} layer(s) adding 90% of the noise: {', '.join(nodes)}")
        res = adaround_model(t.src, out, t.cal, x, grid, nodes=nodes,
                             options=AdaRoundOptions(iters=run.options.recovery.iters),
                             threads=run.options.judge.threads, batch=run.batch, static=run.static, say=run.say)
        result.recovery.adaround = res.to_dict() | {"layers_chosen": run.options.recovery.layers,
                                                    "ranking": ranking, "activations": _grid_words(grid)}
    else:
        from edgerep.quant.qat import QatOptions, qat_model

        teacher, source = _reference_outputs(t.reference, run.fp32, x, run.batch, run.static)
        res = qat_model(t.src, out, t.cal, x, teacher, grid, options=QatOptions(steps=run.options.recovery.qat_steps),
                        say=run.say)
        result.recovery.qat = res.to_dict() | {"teacher": source}
    t.cache[key] = replace(t, src=res.path, tag=tag, cache=t.cache, float_source=t.float_source or t.src)
    t.cache[f"{key}:weights"] = dict(res.qweights)


def _grid_words(grid: QdqConfig) -> str:
    """The activation grid a learning step fake-quantized with, in words."""
    sym = grid.symmetric_activations or grid.activation == "s8"  # write_qdq: s8 activations are symmetric
    return (f"{grid.activation} {'symmetric' if sym else 'asymmetric'} per tensor"
            + (", Q/DQ on Add inputs" if grid.qdq_on_add else ""))


def _measure_cpu_policy(t: _Target, pol: CpuPolicy) -> _Measured:
    """Write ``pol``'s QDQ file and score it on the optimized session (the fused kernels users run); a
    rejected one is scored again with optimizations off, to say whether the kernels or the ranges lose it."""
    path = t.run.tmp / f"cpu-{pol.name}{t.tag}.onnx"
    info = write_qdq(t.src, path, t.cal, t.config(pol.qdq))
    engine = t.judge.engine(path, pol.session_config)
    s = t.judge.score_outputs(t.judge.outputs(engine))
    v = s.verdict(t.budget)
    c = Candidate(pol.name + t.tag, dict(pol.session_config), pol.expectation, s.top1, s.agreement, round(s.drop, 4),
                  s.error, 0.0, v.holds, f"accuracy holds on the optimized session: {v.text}", verdict=v.to_dict())
    if not v.holds:
        sim = t.judge.score(path, pol.session_config, optimization="disable")
        c.simulated_top1 = sim.top1
        c.reason = f"rejected on the optimized session: {v.text}; {rejection_cause(sim, t.budget)}"
    t.run.say(f"cpu candidate {pol.name}{t.tag}: {v.text} -> {'accepted' if v.holds else 'rejected'}")
    bias = info.bias_corrected if t.run.options.calibration.bias_correction else {}
    return _Measured(pol, path, s, c, engine, bias)


def rejection_cause(simulated: Score, budget: float) -> str:
    """Why a policy lost accuracy on the optimized session, from its float simulation's score."""
    if simulated.verdict(budget).holds:
        return ("the fused INT8 kernels lose it (simulated QDQ with optimizations off drops only "
                f"{simulated.drop:.2f}): int16 saturation")
    return f"the ranges lose it (simulated QDQ drops {simulated.drop:.2f} too)"


def _bias_corrections(measured: list[_Measured]) -> dict[str, dict[str, Any]]:
    """The report's bias-correction block: per policy, how many layers were corrected and the largest shift."""
    return {m.policy.name: {"layers": len(m.bias_corrected), "max_abs_shift": max(m.bias_corrected.values())}
            for m in measured if m.bias_corrected}


def _rank_latency(t: _Target, measured: list[_Measured]) -> Ranking:
    """Interleaved latency of the candidates that can ship (the accepted ones, simplest first; all when none
    is): the ranking chooses among them. A rejected candidate is timed once, for the report only: timing it in
    the rounds would spend the rounds' budget on a file that cannot ship (with six SR candidates, four rounds
    left a real 0.66x gain inside the noise). Fills each candidate's latency and releases the sessions."""
    engines = {m.policy.name: m.engine for m in measured}
    accepted = {m.policy.name for m in measured if m.candidate.accepted}
    racing = [p.name for p in by_simplicity([m.policy for m in measured]) if not accepted or p.name in accepted]
    rank = choose_within_noise({k: engines[k] for k in racing}, t.x1, **({"rounds": 3} if len(racing) == 1 else {}))
    for m in measured:
        ms = rank.latency_ms.get(m.policy.name)
        if ms is None:  # rejected: not a contender, one quick measure for the report
            ms = rank.latency_ms[m.policy.name] = latency_ms(m.engine, t.x1, iters=10, warmup=2, budget_s=1.0)
        m.candidate.latency_ms = round(ms, 4)
        m.engine = None
    t.run.say("cpu candidates latency (ms, interleaved rounds; * rejected, timed once): "
              + ", ".join(f"{k}{'' if k in racing else '*'} {v:.3f}" for k, v in rank.latency_ms.items()))
    return rank


def accepted_reason(isa: str, cand: Candidate, rank: Ranking, candidates: list[Candidate]) -> str:
    """Why an accurate policy ships: its accuracy verdict, the latency ranking, the others accepted and rejected."""
    others = [c.policy for c in candidates if c.accepted and c.policy != cand.policy]
    rejected = [c.policy for c in candidates if not c.accepted]
    return (f"{isa}: accuracy holds on the optimized session ({cand.latency_ms:.3f} ms; "
            f"{(cand.verdict or {}).get('text', f'drop {cand.drop:.2f}')}); latency: {rank.reason}"
            + (f"; also accurate: {', '.join(others)}" if others else "")
            + (f"; rejected: {', '.join(rejected)}" if rejected else ""))


def _cpu_fallback(result: QuantizeResult, t: _Target, measured: list[_Measured], rank: Ranking,
                  isa: str) -> _CpuChoice:
    """No policy met the budget: the most accurate (``fallback_choice``), then, unless the options forbid
    it, its most sensitive layers kept in float until the budget holds (``_cpu_mixed``)."""
    pick, why = fallback_choice([(m.policy, m.candidate, m.path) for m in measured],
                                {m.policy.name: m.score for m in measured}, rank)
    m = next(m for m in measured if m.policy.name == pick)
    reason = f"{isa}: no policy met {t.budget:g} points; {why}"
    if not t.run.options.judge.keeps_layers_in_float:
        return _CpuChoice(m.policy, m.candidate, m.path, reason)
    cand, path, note = _cpu_mixed(result, t, m)
    return _CpuChoice(m.policy, cand, path, reason + note)


def _cpu_mixed(result: QuantizeResult, t: _Target, m: _Measured) -> tuple[Candidate, Path, str]:
    """``m``'s policy with its most sensitive layers in FP32, measured as a candidate of its own; more than
    half the layers in float is not an INT8 model (``result.int8_failure``)."""
    pol, cfg = m.policy, t.config(m.policy.qdq)
    nodes = quantizable_nodes(_load(t.src))
    t.run.say(f"mixed precision: measuring the sensitivity of {len(nodes)} layers under {pol.name}")
    mp = _keep_in_float(t, cfg, nodes, m.score, lambda p: t.judge.score(p, pol.session_config), "cpu")
    excluded = [e["node"] for e in mp.excluded]
    result.excluded_nodes = [e | {"target": "cpu", "precision": "fp32"} for e in mp.excluded]
    path = t.run.tmp / f"cpu-mixed{t.tag}.onnx"
    write_qdq(t.src, path, t.cal, cfg, exclude_nodes=excluded, float_weights_from=t.float_source)
    s = t.judge.score(path, pol.session_config)
    v = s.verdict(t.budget)
    ms = latency_ms(t.judge.engine(path, pol.session_config), t.x1)
    cand = Candidate(f"{pol.name}{t.tag}+fp32[{len(excluded)}]", dict(pol.session_config), pol.expectation, s.top1,
                     s.agreement, round(s.drop, 4), s.error, round(ms, 4), v.holds,
                     f"mixed precision: {len(excluded)} layer(s) kept in FP32: {v.text}", verdict=v.to_dict())
    result.candidates.append(cand)
    if 2 * len(excluded) > len(nodes):
        result.int8_failure = (f"meeting the {t.budget:g}-point budget kept {len(excluded)} of {len(nodes)} "
                               "quantizable layers in FP32: this is not an INT8 model (see the layers kept "
                               "in float and the check's sensitivity table)")
        cand.accepted = False
        cand.reason += "; more than half the layers in FP32: rejected as INT8"
        t.run.say(f"INT8 FAILED: {result.int8_failure}")
    return cand, path, (f"; kept {len(excluded)} layer(s) in FP32 -> {v.text}"
                        + ("" if mp.met else " (budget still not met)"))


def _ship_cpu(result: QuantizeResult, t: _Target, choice: _CpuChoice) -> None:
    """Copy the chosen file into ``out_dir`` and record the policy and what a session needs to run it."""
    dst = t.run.out_dir / CPU_FILE
    shutil.copyfile(choice.path, dst)
    result.files["cpu"] = dst
    pol, cand = choice.policy, choice.candidate
    result.cpu_policy = CpuPolicyChoice(cand.policy, choice.reason, dict(pol.session_config),
                                        t.config(pol.qdq).to_dict(), cand.drop, cand.top1, cand.latency_ms)
    t.run.say(f"cpu policy: {cand.policy} ({choice.reason})")


def _keep_in_float(t: _Target, cfg: QdqConfig, nodes: list[str], start: Score,
                   score_file: Callable[[Path], Score], name: str) -> MixedResult:
    """Greedy mixed precision (``mixed_precision``) under ``cfg``: each variant is written to one probe
    file in the run's temporary folder and scored by ``score_file``."""
    probe = t.run.tmp / f"{name}{t.tag}-probe.onnx"

    def score(exclude, only):
        write_qdq(t.src, probe, t.cal, cfg, exclude_nodes=exclude, only_nodes=only, float_weights_from=t.float_source)
        return score_file(probe)

    return mixed_precision(nodes, score, t.budget, start=start)


def _load(path: Path):
    import onnx

    from edgerep.quant.qdq import _ensure_node_names

    m = onnx.load(str(path))
    _ensure_node_names(m)
    return m


# ---- the TensorRT target -----------------------------------------------------------------------
def _tensorrt_target(result: QuantizeResult, t: _Target) -> None:
    """TensorRT's file: int8 symmetric; its accuracy here is a QDQ *simulation* (no TensorRT on CPU)."""
    from edgerep.quant.lint import lint_tensorrt_qdq

    cfg = t.config(TENSORRT)
    dst = t.run.out_dir / TRT_FILE
    t0 = time.perf_counter()
    info = write_qdq(t.src, dst, t.cal, cfg)

    def simulated(path: Path) -> Score:
        return t.judge.score(path, optimization="disable")

    s = simulated(dst)
    _record(result, "ptq", "tensorrt", ("tensorrt", s, t.budget), time.perf_counter() - t0,
            "per-channel PTQ as calibrated")
    for step in _ladder(result, t):
        if s.verdict(t.budget).holds:
            break
        t0 = time.perf_counter()
        shared = _learned_before(t, step, cfg)  # learned for the CPU file already (same grid): only rescored
        t = _learned(result, t, step, cfg, "tensorrt")
        info = write_qdq(t.src, dst, t.cal, cfg)
        s = simulated(dst)
        _record(result, step, "tensorrt", (f"tensorrt{t.tag}", s, t.budget), time.perf_counter() - t0,
                _changed(result, step, shared))
    excluded: list[str] = []
    if not s.verdict(t.budget).holds and t.run.options.judge.keeps_layers_in_float:
        t0 = time.perf_counter()
        mp = _keep_in_float(t, cfg, quantizable_nodes(_load(t.src)), s, simulated, "tensorrt")
        excluded = [e["node"] for e in mp.excluded]
        # measured here in FP32 (simulation); on the engine they run in FP16 when the plan enables it
        result.excluded_nodes += [e | {"target": "tensorrt", "precision": "fp32",
                                       "on_engine": "fp16 if the TensorRT profile enables FP16, else fp32"}
                                  for e in mp.excluded]
        info = write_qdq(t.src, dst, t.cal, cfg, exclude_nodes=excluded, float_weights_from=t.float_source)
        s = simulated(dst)
        _record(result, "mixed", "tensorrt", (f"tensorrt{t.tag}+fp32[{len(excluded)}]", s, t.budget),
                time.perf_counter() - t0, f"{len(excluded)} layer(s) kept in float", len(excluded))
    result.lint = lint_tensorrt_qdq(dst)
    result.files["tensorrt"] = dst
    result.tensorrt = {"qdq": cfg.to_dict(), "simulated_top1": s.top1, "simulated_drop": round(s.drop, 4),
                       "verdict": s.verdict(t.budget).to_dict(),
                       "accuracy_note": "onnxruntime with graph optimizations off (QDQ simulated in float): "
                                        "TensorRT itself is measured when an engine is built on a GPU",
                       "add_inputs_quantized": info.add_inputs_quantized, "excluded": excluded,
                       "learned_weights": t.tag.lstrip("+") or None,
                       "lint_errors": sum(1 for i in result.lint if i.severity == "error")}
    t.run.say(f"tensorrt QDQ: simulated drop {s.drop:.2f}, lint "
              f"{'passed' if not result.tensorrt['lint_errors'] else 'FAILED'}")
