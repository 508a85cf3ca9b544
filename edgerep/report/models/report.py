"""report.json of `edgerep deploy` (``edgerep.report/2``) and of `edgerep bench` (``edgerep.bench-report/2``):
the blocks CI, `gate` and `diff` read are strict; deep diagnostics (the check's layers, fold provenance rows,
quantization candidates, engine `describe`) are typed at their top level and free-form below, as each field's
description says."""
from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field

from edgerep.report.models.base import Open, Strict
from edgerep.report.models.results import Accuracy, Drop, InputStatistics, Latency

REPORT_SCHEMA = "edgerep.report/2"
BENCH_SCHEMA = "edgerep.bench-report/2"
EngineStatus = Literal["built", "cached", "fallback", "skipped", "failed"]


class ModelInfo(Strict):
    """The checkpoint deployed."""

    name: str = Field(description="the checkpoint's file stem")
    checkpoint: str = Field(description="the checkpoint as given")
    sha256: str = Field(description="sha256 of the checkpoint file")
    arch: Optional[str] = Field(None, description="the architecture (registry name or package.module:factory)")
    input_shape: list[int] = Field(description="C, H, W")
    source_format: Optional[str] = Field(None, description="edgerep, state_dict, pt2, pickle, ...")
    classes: Optional[int] = Field(None, description="class names the checkpoint carries")
    dataset: Optional[str] = Field(None, description="the data set the checkpoint names")


class TargetInfo(Strict):
    """The target profile deployed to."""

    name: str = Field(description="the profile's name (engines/NAME.toml)")
    description: str = Field("", description="the profile's description")


class Preprocessing(Strict):
    """How images become model inputs; never guessed."""

    input_shape: list[int] = Field(description="C, H, W")
    mean: list[float] = Field(description="per-channel mean, after scale")
    std: list[float] = Field(description="per-channel std, after scale")
    scale: float = Field(description="pixel scale before mean/std (1/255 by default)")
    resize: str = Field(description="`direct` or `shorter:N` + centre crop")
    channel_order: str = Field(description="rgb or bgr")
    source: str = Field(description="where the preprocessing came from: checkpoint, flags, recipe")
    input_shape_source: Optional[str] = Field(None, description="where the input shape came from")


class RoleSummary(Strict):
    """One data role's size and provenance (the ids are in splits.json)."""

    count: int = Field(description="samples in the role")
    fingerprint: str = Field(description="sha256 (16 hex) of the role's sample ids, one a line")
    source: Optional[str] = Field(description="the data spec it was read from")
    how: Optional[str] = Field(description="how the role was made (a split, carved, named by a flag)")
    labelled: bool = Field(description="whether its samples have labels")


class SplitsSummary(Strict):
    """The three disjoint data roles: calibration (ranges), selection (choices), test (reported and gated)."""

    calibration: RoleSummary = Field(description="activation ranges")
    selection: RoleSummary = Field(description="every choice (method, CPU policy, layers kept in float)")
    test: RoleSummary = Field(description="only reported and gated")
    train: Optional[RoleSummary] = Field(None, description="--train-data: what the recovery ladder's learning "
                                                           "steps learn on (null: the calibration set)")
    overlap: dict[str, Any] = Field(default_factory=dict, description="shared samples between roles "
                                                                      "(--allow-overlap; free-form counts)")
    duplicates_dropped: int = Field(0, description="repeated images dropped before splitting")
    note: Optional[str] = Field(None, description="what the reader must know about the split")


class DataRoles(Strict):
    """The data each role read, as named, and how much of it."""

    calibration: Optional[str] = Field(description="calibration data spec")
    calibration_split: Optional[str] = Field(None, description="the split calibration read")
    calibration_recipe: Optional[str] = Field(None, description="the recipe file, if any")
    calibration_method: Optional[str] = Field(None, description="asked calibration method (auto, mse, ...)")
    selection: Optional[str] = Field(description="selection data spec")
    evaluation: Optional[str] = Field(description="test data spec")
    calibration_samples: int = Field(description="calibration samples used")
    selection_samples: int = Field(description="selection samples used")
    evaluation_samples: int = Field(description="test samples used")
    labelled: bool = Field(description="whether the test data has labels (no labels: no accuracy gate)")


class FoldBlock(Open):
    """The fold and its verification against the unfolded model (`provenance` rows and `graph` are free-form
    diagnostics: folded layer -> train-time modules and branches; the graph folder's regions)."""

    max_abs_error: float = Field(description="max |folded - unfolded| on the verification inputs")
    max_rel_error: float = Field(description="max |folded - unfolded| / max |unfolded| (the gate's fold_exact)")
    mean_abs_error: Optional[float] = Field(None, description="mean |folded - unfolded|")
    params_before: Optional[int] = Field(None, description="parameters before the fold")
    params_after: Optional[int] = Field(None, description="parameters after the fold")
    convs_before: Optional[int] = Field(None, description="convolutions before the fold")
    convs_after: Optional[int] = Field(None, description="convolutions after the fold")
    provenance: list[dict[str, Any]] = Field(default_factory=list, description="free-form rows: folded layer -> "
                                                                               "train-time modules, branches")


class CheckBlock(Open):
    """The INT8-friendliness check (`layers` rows with their `metrics`, `attribution`, `advice`, and `measured`,
    are free-form diagnostics: see docs/check.md)."""

    summary: dict[str, Any] = Field(description="counts of ok / warn / bad, flagged layers, top advice (free-form)")
    layers: list[dict[str, Any]] = Field(default_factory=list, description="per folded layer (free-form)")


class LadderStepRow(Strict):
    """One step of the recovery ladder, as measured on the selection set for one target."""

    step: Literal["ptq", "adaround", "qat", "mixed"] = Field(description="ptq, adaround (learned rounding), qat "
                                                                          "(distillation fine-tuning) or mixed "
                                                                          "(layers kept in float)")
    target: Literal["cpu", "tensorrt"] = Field(description="the file the step was measured for")
    file: str = Field(description="the candidate measured (policy, +adaround, +fp32[n])")
    drop: float = Field(description="drop vs the reference on the selection set, in reference.measure's terms")
    met: bool = Field(description="the budget holds (on paired counts where there are any)")
    verdict: str = Field(description="the budget decision in words")
    seconds: float = Field(description="the step's own work: learning, writing and scoring its files")
    changed: str = Field(description="what the step changed")
    layers_in_float: int = Field(0, description="layers this step keeps in float")


class RecoveryBlock(Strict):
    """The recovery ladder (`--recover`): PTQ -> AdaRound -> QAT -> layers in float; the first step meeting the
    budget wins (`adaround` holds AdaRound's per-layer log, `qat` the fine-tuning's summary: free-form)."""

    mode: Literal["auto", "adaround", "qat"] = Field(description="the ladder asked for")
    steps: list[LadderStepRow] = Field(default_factory=list, description="every step measured, in order")
    winner: dict[str, str] = Field(default_factory=dict, description="target -> the first step that met the "
                                                                     "budget (absent: none did)")
    adaround: Optional[dict[str, Any]] = Field(None, description="per layer: weights rounded the other way, output "
                                                                 "MSE nearest -> learned, bias shift, seconds")
    qat: Optional[dict[str, Any]] = Field(None, description="steps, distillation MSE first -> last, layers, "
                                                            "teacher, seconds")
    learned_on: str = Field("calibration", description="the set the learning steps learned on: calibration, or "
                                                       "train (--train-data)")


class QuantizationBlock(Open):
    """Calibration and the INT8 decisions (`candidates`, `calibration`, `cpu`, `tensorrt`, `equalization`,
    `bias_correction`, `reference` are free-form diagnostics; their `drop` figures are on the selection set, in
    `reference.measure`'s terms)."""

    calibration: dict[str, Any] = Field(description="method, cache key, samples (free-form)")
    files: dict[str, str] = Field(description="policy -> QDQ file written (relative to the bundle)")
    cpu_policy: Optional[dict[str, Any]] = Field(None, description="the chosen CPU policy, why, its session "
                                                                   "config (free-form)")
    candidates: list[dict[str, Any]] = Field(default_factory=list, description="every CPU policy tried (free-form)")
    excluded_nodes: list[dict[str, Any]] = Field(default_factory=list, description="layers kept in float, why")
    max_drop: Optional[float] = Field(None, description="the budget the choices were held to")
    int8_failure: Optional[str] = Field(None, description="set when INT8 kept more than half the layers in float "
                                                          "(the gate fails)")
    recovery: Optional[RecoveryBlock] = Field(None, description="the recovery ladder, when --recover asked for one")


class EngineRow(Strict):
    """One engine the target asked for: what ran (or why nothing did), its accuracy, drop and latency."""

    name: str = Field(description="backend-device, e.g. onnxruntime-cpu")
    precision: str = Field(description="fp32, fp16, int8")
    device: str = Field(description="cpu, cuda:0, dla:0, ...")
    status: EngineStatus = Field(description="built / cached / fallback ran; skipped by the profile's rule; "
                                             "failed was asked for and not built")
    reason: str = Field("", description="why a fallback, skip or failure")
    requested: Optional[str] = Field(None, description="the profile's engine key it stands for")
    build_seconds: Optional[float] = Field(None, description="build time, s")
    artifact: Optional[str] = Field(None, description="the file it runs, relative to the bundle")
    describe: dict[str, Any] = Field(default_factory=dict, description="the engine's own settings (free-form)")
    accuracy: Optional[Accuracy] = Field(None, description="on the test set")
    drop: Optional[Drop] = Field(None, description="vs the unfolded FP32 model, naming its metric and unit")
    latency: Optional[Latency] = Field(None, description="the deploy's single-stream run")
    speedup_vs_unfolded: Optional[float] = Field(None, description="unfolded p50 / this engine's p50")
    verdict: Optional[Literal["pass", "fail"]] = Field(None, description="the gate's verdict on this engine")


class Expected(Strict):
    """The top-1 the unfolded model should reach on the test set (the gate's baseline_expected)."""

    top1: float = Field(description="expected top-1, %")
    source: str = Field(description="--expect-top1, or the checkpoint's record")


class Baseline(Strict):
    """The unfolded FP32 model as trained: the reference of every drop."""

    name: str = Field(description="torch-cpu-unfolded")
    precision: str = Field("fp32", description="fp32")
    device: str = Field("cpu", description="cpu")
    status: EngineStatus = Field("built", description="built")
    describe: dict[str, Any] = Field(default_factory=dict, description="the engine's settings (free-form)")
    accuracy: Optional[Accuracy] = Field(None, description="on the test set")
    expected: Optional[Expected] = Field(None, description="what it should reach")
    latency: Optional[Latency] = Field(None, description="single-stream latency")


class TensorrtQdq(Strict):
    """A stand-in deploy's TensorRT QDQ file, scored by onnxruntime (no TensorRT INT8 engine here) and linted."""

    file: str = Field(description="the QDQ file")
    why: str = Field(description="why it is simulated")
    lint_errors: list[str] = Field(default_factory=list, description="TensorRT lint errors (gated)")
    accuracy: Optional[Accuracy] = Field(None, description="simulated, on the test set")
    drop: Optional[Drop] = Field(None, description="simulated, vs the unfolded FP32 model (gated)")
    verdict: Optional[Literal["pass", "fail"]] = Field(None, description="the gate's verdict")


class HostLoad(Strict):
    """Load average against cores, recorded around the measurements."""

    loadavg_1m: Optional[float] = Field(description="1-minute load average")
    loadavg_5m: Optional[float] = Field(description="5-minute load average")
    cores: Optional[int] = Field(description="CPU cores")


class BenchSettings(Strict):
    """How latency was measured."""

    scenario: str = Field(description="the MLPerf scenario")
    batch_sizes: list[int] = Field(description="batch sizes timed")
    min_seconds: float = Field(description="minimum duration per engine, s")
    load_before: HostLoad = Field(description="host load before timing")
    load_after: Optional[HostLoad] = Field(None, description="host load after timing")


class Host(Strict):
    """The machine every latency ran on."""

    machine: str = Field(description="platform.machine()")
    processor: Optional[str] = Field(None, description="platform.processor()")
    python: str = Field(description="Python version")
    cpu_count: Optional[int] = Field(None, description="logical CPUs")
    cpu_features: dict[str, Any] = Field(default_factory=dict, description="ISA flags, int8_dot (free-form)")
    torch_threads: Optional[int] = Field(None, description="torch intra-op threads")
    omp_wait_policy: Optional[str] = Field(None, description="OMP_WAIT_POLICY as set")


class GateCheckModel(Strict):
    """One check of the gate."""

    name: str = Field(description="the check: max_drop, baseline_sanity, max_latency_ms, ...")
    engine: str = Field(description="name/precision, or baseline / fold / inputs")
    value: Optional[float] = Field(description="the measured value (in the check's unit)")
    threshold: Optional[float] = Field(description="the limit")
    passed: bool = Field(description="whether it holds")
    message: str = Field(description="the check in words, with units")
    noisy: bool = Field(False, description="a latency check on a noisy measurement (verdict not reliable)")


class Gate(Strict):
    """The gate's verdict."""

    passed: bool = Field(description="every check holds")
    report: Optional[str] = Field(None, description="the report gated (CLI)")
    noisy_checks: int = Field(0, description="latency checks on noisy measurements")
    checks: list[GateCheckModel] = Field(description="every check made")


class TaskInfo(Open):
    """What the deploy's outputs are for (``edgerep.tasks``): the task, where that was decided, its headline
    metric; a detector adds its post-processing and thresholds (free-form)."""

    name: Literal["classify", "detect", "sr"] = Field(description="the task: classify, detect or sr")
    source: str = Field(description="where the task was decided: --task, checkpoint meta.task, the data set, default")
    metric: str = Field(description="the headline metric (engines' accuracy.metric where labels exist)")
    examples: Optional[dict[str, Any]] = Field(None, description="detect: the report page's pictures (`files` in the "
                                                                 "bundle: test images with the unfolded FP32 and "
                                                                 "`engine`'s boxes), or `why_not`; sr: `sr/crop.png` "
                                                                 "(bicubic, FP32, `engine`, HR) and its `crop` numbers")


class Report(Strict):
    """report.json of `edgerep deploy`."""

    schema_: Literal["edgerep.report/2"] = Field(REPORT_SCHEMA, alias="schema", description="this format")
    kind: Literal["deploy"] = Field("deploy", description="deploy")
    warnings: list[str] = Field(default_factory=list, description="what the reader must know")
    created_unix: float = Field(description="when, seconds since the epoch")
    model: ModelInfo = Field(description="the checkpoint")
    target: TargetInfo = Field(description="the target profile")
    preprocessing: Preprocessing = Field(description="how images become inputs")
    splits: SplitsSummary = Field(description="the three data roles")
    data: DataRoles = Field(description="the data each role read")
    task: Optional[TaskInfo] = Field(None, description="the task the accuracy is of (absent: classify, /2 before it)")
    input_statistics: Optional[InputStatistics] = Field(None, description="calibration inputs vs BN statistics")
    fold: Optional[FoldBlock] = Field(None, description="the fold and its error")
    check: Optional[CheckBlock] = Field(None, description="INT8 friendliness (absent with --no-check)")
    quantization: Optional[QuantizationBlock] = Field(None, description="calibration and INT8 decisions")
    engines: list[EngineRow] = Field(description="one row per engine the target asked for")
    baseline: Optional[Baseline] = Field(None, description="the unfolded FP32 reference")
    tensorrt_qdq: Optional[TensorrtQdq] = Field(None, description="a stand-in deploy's TensorRT QDQ file")
    bench: Optional[BenchSettings] = Field(None, description="latency settings")
    host: Optional[Host] = Field(None, description="the machine")
    gate: Optional[Gate] = Field(None, description="the verdict (absent when no gate was asked)")
    timings_s: dict[str, float] = Field(default_factory=dict, description="seconds per stage, and total")


class BenchModel(Strict):
    """What `edgerep bench` timed."""

    name: str = Field(description="the bundle, checkpoint or ONNX file's name")
    input_shape: list[int] = Field(description="C, H, W")
    bundle: Optional[str] = Field(None, description="the bundle benched")
    unfolded_checkpoint: Optional[str] = Field(None, description="the bundle's unfolded checkpoint, if found")
    baseline_note: Optional[str] = Field(None, description="where the baseline came from, or why none")
    checkpoint: Optional[str] = Field(None, description="the checkpoint benched")
    onnx: Optional[str] = Field(None, description="the ONNX file benched")
    arch: Optional[str] = Field(None, description="the architecture")


class BenchRow(Strict):
    """One engine timed by `edgerep bench` at each batch size."""

    name: str = Field(description="backend-device (the baseline: torch-cpu-unfolded)")
    precision: str = Field(description="fp32, fp16, int8")
    device: str = Field(description="cpu, cuda:0, ...")
    status: EngineStatus = Field("built", description="built")
    role: Literal["baseline", "folded", "engine"] = Field(description="the unfolded baseline, the folded torch "
                                                                      "model, or a shipped engine")
    describe: dict[str, Any] = Field(default_factory=dict, description="the engine's settings (free-form)")
    latency: Latency = Field(description="the result: the first batch size, or offline's best VALID batch")
    latency_by_batch: dict[str, Latency] = Field(description="every batch size's run")
    speedup_vs_unfolded: Optional[dict[str, float]] = Field(None, description="per batch size: unfolded p50 / "
                                                                              "this p50")
    no_result: Optional[str] = Field(None, description="offline: why no batch gave a VALID result")
    profile: Optional[dict[str, Any]] = Field(None, description="--profile: the slowest layers (free-form)")


class BenchReport(Strict):
    """`edgerep bench --json` / `--out`."""

    schema_: Literal["edgerep.bench-report/2"] = Field(BENCH_SCHEMA, alias="schema", description="this format")
    kind: Literal["bench"] = Field("bench", description="bench")
    created_unix: float = Field(description="when, seconds since the epoch")
    model: BenchModel = Field(description="what was timed")
    engines: list[BenchRow] = Field(description="engines other than the baseline")
    baseline: Optional[BenchRow] = Field(None, description="the unfolded torch model")
    host: Host = Field(description="the machine")
    bench: BenchSettings = Field(description="latency settings")
