"""`edgerep deploy` as a library call: a short list of declared stages (``DEPLOY_STAGES``: load, fold,
check, export, quantize, build, evaluate, bench, gate, write), written into a bundle directory atomically.

Each stage is a function of the results it needs (its keyword parameters name earlier stages' results or
the run context) and returns its own typed result; ``edgerep.stage_graph`` wires them by name and refuses a
list whose inputs are not given earlier. ``assemble_report`` composes report.json from those results (engine
rows matched by key). The CLI only parses flags, shows progress and prints the table.
"""
from __future__ import annotations

import json
import platform
import random
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from edgerep.errors import DataError, EdgerepError, FoldError
from edgerep.hashing import sha256_file
from edgerep.memory import batch_for, x_shape
from edgerep.report.models import MANIFEST_SCHEMA, REPORT_SCHEMA, EngineRow, Manifest, Report, dump
from edgerep.stage_graph import Stage, StageClock, check_graph, explain, run_stages


@dataclass
class DeployOptions:
    """Everything `edgerep deploy` can be told; defaults are what a user gets with no flags."""

    checkpoint: Path
    out: Path | None = None
    data: str | None = None  # one data set, split into calibration / selection / test (edgerep.data.splits)
    calib_data: str | None = None  # calibration (activation ranges) only
    val_data: str | None = None  # selection (every choice) only
    eval_data: str | None = None  # test (reported and gated) only
    train_data: str | None = None  # what the recovery ladder's learning steps learn on (default: calibration)
    allow_overlap: bool = False  # named sets may share samples (the report then says: optimistic)
    accuracy_gate: bool = True  # False: a latency-only run, no accuracy verdict asked for
    target: str = "x86-cpu"
    max_drop: float | None = 0.5  # gate: top-1 points vs unfolded FP32 (None: no gate)
    max_drop_from_task: bool = False  # --max-drop not given: the task's default (SR: 0.1 dB), see effective_max_drop
    force: bool = False
    load: dict = field(default_factory=dict)  # load_checkpoint kwargs: arch, arch_kwargs, input_shape, trust
    calib_samples: int | None = None  # default: the recipe's, else 256
    eval_samples: int | None = None  # caps the test set (and the selection set)
    calib_method: str | None = None  # default: the recipe's, else "auto"
    calib_recipe: str | None = None  # name in calibration/ or a TOML path
    bench_seconds: float = 1.0
    bench_warmup: int = 10
    batch: int = 1
    threads: int | None = None
    run_check: bool = True
    seed: int = 0
    cache_dir: Path | None = None
    metric: str | None = None
    expect_top1: float | None = None  # the unfolded model's expected top-1 (%): the gate fails far below it
    task: str | None = None  # classify | detect (edgerep.tasks); None: the checkpoint's, else the data set's
    postprocess: str | None = None  # detect: package.module:function turning outputs into detections
    recover: str = "none"  # the recovery ladder when PTQ misses the budget (edgerep.quant.recover)


@dataclass
class DeployResult:
    out: Path
    report: dict
    passed: bool | None  # None when no gate threshold was given
    files: dict[str, str] = field(default_factory=dict)


Progress = Callable[[str, str], None]  # (step, message)


def default_cache_dir() -> Path:
    """Calibration ranges are reused across deploys: ``<edgerep.cache.cache_root()>/calibration``."""
    from edgerep.cache import cache_root

    return cache_root() / "calibration"


def default_out(checkpoint: Path) -> Path:
    """Bundles go to engines/out/<checkpoint stem>/ under the current directory."""
    return Path("engines") / "out" / Path(checkpoint).stem


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    import edgerep

    v = {"edgerep": edgerep.__version__, "python": platform.python_version(), "torch": torch.__version__,
         "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "numpy": np.__version__}
    try:
        import tensorrt as trt

        if hasattr(trt, "Builder"):
            v["tensorrt"] = trt.__version__
    except ImportError:
        pass
    return v


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


SELECTION_CAP = 1024  # selection samples by default: every choice is scored on all of them, per candidate


@dataclass
class CalibrationPlan:
    """Where calibration data comes from and how much: flags, then the recipe, then defaults."""

    spec: str | None  # named for calibration only (--calib-data or the recipe's data), else None
    split: str
    samples: int
    method: str
    recipe: Any = None

    @property
    def split_origin(self) -> str | None:
        """Where the calibration split was named (the recipe), for the resolver's messages."""
        return f"split = {self.split!r} in recipe {self.recipe.source}" if self.recipe is not None else None


def resolve_calibration(opts: DeployOptions, meta) -> CalibrationPlan:
    """The calibration plan of ``opts`` (the recipe is read here; a bad one is exit 2). A recipe whose
    data is the deploy's data set only picks its split; other data becomes the calibration set."""
    recipe = None
    if opts.calib_recipe:
        from edgerep.recipes import load_recipe

        recipe = load_recipe(opts.calib_recipe)
    data = _data_spec(opts, meta, recipe)
    spec = opts.calib_data or (recipe.data if recipe and recipe.data != data else None)
    split = recipe.split if recipe and (spec or data) == recipe.data else "calib"
    samples = opts.calib_samples or (recipe.samples if recipe else 256)
    method = opts.calib_method or (recipe.method if recipe else "auto")
    return CalibrationPlan(spec, split, samples, method, recipe)


def _data_spec(opts: DeployOptions, meta, recipe) -> str | None:
    """The data set the roles not named by a flag come from: --data, the checkpoint's, the recipe's."""
    return opts.data or getattr(meta, "dataset", None) or (recipe.data if recipe else None)


def resolve_data(opts: DeployOptions, meta, plan: CalibrationPlan, say=lambda msg: None):
    """The three disjoint sets (``edgerep.data.splits.DataSplits``) of a deploy."""
    from edgerep.data.splits import resolve_splits
    from edgerep.data.synthetic import SyntheticDataset

    splits = resolve_splits(data=_data_spec(opts, meta, plan.recipe), calib=plan.spec, val=opts.val_data,
                            test=opts.eval_data, calib_split=plan.split, meta=meta, allow_overlap=opts.allow_overlap,
                            calib_origin=plan.split_origin, train=opts.train_data, say=say)
    cal = splits.calibration
    if isinstance(cal, SyntheticDataset) and len(cal) < plan.samples:  # random inputs: as many as asked
        splits.sets["calibration"] = SyntheticDataset(cal.pre, n=plan.samples, seed=cal.seed)
    return splits


class TorchReference:
    """The unfolded FP32 model as a callable on numpy batches (the accuracy reference)."""

    def __init__(self, model):
        self.model = model

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            y = self.model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        if isinstance(y, (tuple, list)):
            y = y[0]
        return y.float().numpy()


def _cache_folder(opts: DeployOptions, name: str) -> Path:
    """``<--cache-dir>/name``, else ``<cache root>/name``: where deploy keeps one kind of cached outputs."""
    from edgerep.cache import cache_root

    return (Path(opts.cache_dir) if opts.cache_dir else cache_root()) / name


def _cached_reference(opts: DeployOptions, model_sha256: str, baseline):
    """The unfolded model's outputs (the torch engine ``baseline``), cached on disk per checkpoint, code and input
    batch (edgerep.reference_cache) in the ``reference`` cache folder: a second deploy of the same checkpoint and
    data does not recompute them. ``baseline`` itself when its source is unknown (nothing cached)."""
    from edgerep.reference_cache import cached_reference

    cached = cached_reference(baseline.run, model_sha256, baseline.model, _cache_folder(opts, "reference"))
    return cached if cached is not None else baseline


def outputs_cache_dir(opts: DeployOptions) -> Path:
    """Where onnxruntime passes' outputs are kept (``edgerep.reference_cache``): the ``outputs`` cache folder."""
    return _cache_folder(opts, "outputs")


def _through_outputs_cache(engine, opts: DeployOptions, checkpoint_sha: str | None = None):
    """``engine`` for one pass over a data set: through the outputs cache when its outputs have an identity (an
    onnxruntime session; a torch CPU engine built from the checkpoint ``checkpoint_sha`` names:
    ``edgerep.reference_cache.cached_engine``), else itself. Never for timing."""
    from edgerep.reference_cache import cached_engine

    return cached_engine(engine, outputs_cache_dir(opts), checkpoint_sha) or engine


def effective_max_drop(opts: DeployOptions, task: Any = None) -> float | None:
    """The gate's and the choices' budget: ``--max-drop``, or, when it was not given, the task's default
    (``edgerep.bench.gate.default_max_drop``: 0.1 dB for SR, else 0.5 points). None: no gate."""
    if opts.max_drop is None or not opts.max_drop_from_task:
        return opts.max_drop
    from edgerep.bench.gate import default_max_drop

    return default_max_drop(getattr(task, "name", None))


def select_limit(opts: DeployOptions) -> int:
    """How many selection-set samples every choice is scored on."""
    return opts.eval_samples or SELECTION_CAP


def deploy(opts: DeployOptions, progress: Progress | None = None) -> DeployResult:
    """Run the whole pipeline; the bundle appears at ``opts.out`` only if every step succeeded.

    The output is checked and its lock taken before any work: a second deploy to the same
    ``--out`` stops at once, not after its fold."""
    from edgerep.bundle import bundle_lock, check_output_path
    from edgerep.outputs import check_output_dir

    out = Path(opts.out) if opts.out else default_out(Path(opts.checkpoint))
    check_output_dir(out, "--out")
    check_output_path(out, opts.force)
    with bundle_lock(out):
        return _deploy(opts, progress)


# ---- what each stage gives (report sections are the stage's own; engine parts are keyed by EngineEntry.key) ----


@dataclass(frozen=True)
class LoadOutput:
    """The unfolded model, the target, the calibration plan, the three data sets and report.json's head."""

    checkpoint: Path
    loaded: Any  # edgerep.checkpoint.LoadedCheckpoint: the unfolded model, in eval mode
    meta: Any  # its metadata, with a recipe's preprocessing applied
    input_shape: tuple[int, ...]
    profile: Any  # edgerep.engines.profiles.TargetProfile
    plan: CalibrationPlan
    splits: Any  # edgerep.data.splits.DataSplits
    sha256: str  # of the checkpoint file
    warnings: list[str]
    report: dict[str, Any] = field(default_factory=dict)  # schema ... data, input_statistics
    task: Any = None  # edgerep.tasks.Task the run serves (None: classify)

    def summary(self) -> str:
        return f"loaded {self.checkpoint}"


@dataclass(frozen=True)
class FoldOutput:
    """The one model path's fold (folded module + provenance), verified on ``example`` and on ``real_x``."""

    result: Any  # edgerep.model_path.FoldResult
    example: Any  # the seeded torch input it was verified on (the check reuses it)
    real_x: np.ndarray  # real selection-set inputs it was also verified on (never the test set's)
    report: dict[str, Any]  # report.json's "fold"

    @property
    def module(self):
        return self.result.module

    def summary(self) -> str:
        return "folded and verified"


@dataclass(frozen=True)
class CheckOutput:
    """INT8 friendliness of the fold that ships; ``check_report`` is what its page is rendered from."""

    report: dict[str, Any]  # report.json's "check" (summary, layers); write adds the measurement beside it
    check_report: Any  # edgerep.quant.check.CheckReport
    files: dict[str, str]

    def summary(self) -> str:
        return "checked INT8 friendliness"


@dataclass(frozen=True)
class ExportOutput:
    """The folded checkpoint and the FP32 ONNX file, in the bundle directory."""

    folded_checkpoint: Path
    fp32_onnx: Path
    files: dict[str, str]

    def summary(self) -> str:
        return "exported ONNX"


@dataclass(frozen=True)
class QuantizeOutput:
    """The quantizer's result (one QDQ file per policy) and its report section."""

    result: Any  # edgerep.quant.pipeline.QuantizeResult
    report: dict[str, Any]  # report.json's "quantization"
    files: dict[str, str]

    def summary(self) -> str:
        return f"quantized ({', '.join(self.result.files)})"


@dataclass(frozen=True)
class EngineEntry:
    """One engine the profile asked for: ``key`` names it for every later stage (never its position)."""

    key: str
    built: Any  # edgerep.engines.factory.BuiltEngine
    row: dict[str, Any]  # its report row as built (engine_rows)

    @property
    def engine(self):
        return self.built.engine


@dataclass(frozen=True)
class BuildOutput:
    """The target profile's engines, in the profile's order."""

    engines: tuple[EngineEntry, ...]

    def summary(self) -> str:
        failed = [e.built.spec.key for e in self.engines if e.built.status == "failed"]
        return f"built {sum(e.engine is not None for e in self.engines)} engines" + \
            (f"; FAILED: {', '.join(failed)}" if failed else "")


@dataclass(frozen=True)
class EvaluateOutput:
    """The unfolded reference and every engine on the test set; ``engines`` by engine key."""

    reference: np.ndarray | None  # the unfolded model's outputs on the test set
    labels: np.ndarray | None
    baseline: dict[str, Any]  # report.json's "baseline" (bench adds its latency)
    engines: dict[str, dict[str, Any]]  # key -> accuracy, drop_vs_unfolded
    tensorrt_qdq: dict[str, Any] | None  # a stand-in deploy's simulated TensorRT QDQ file
    samples: int
    files: dict[str, str] = field(default_factory=dict)  # the task's bundle files (annotations, predictions)
    views: dict[str, Any] = field(default_factory=dict)  # report["task"]["examples"]: the task's report view

    def summary(self) -> str:
        return f"evaluated on {self.samples} test samples"


@dataclass(frozen=True)
class BenchOutput:
    """Latency of the unfolded baseline and of every engine that runs; ``engines`` by engine key."""

    settings: dict[str, Any]  # report.json's "bench"
    baseline_latency: dict[str, Any]
    engines: dict[str, dict[str, Any]]  # key -> latency, speedup_vs_unfolded
    host: dict[str, Any]
    files: dict[str, str]

    def summary(self) -> str:
        return "timed every engine"


@dataclass(frozen=True)
class GateOutput:
    """Deploy's verdict; ``verdicts`` by engine key. ``report`` is None when no gate was asked for."""

    report: dict[str, Any] | None
    passed: bool | None
    verdicts: dict[str, str]
    tensorrt_qdq_verdict: str | None = None

    def summary(self) -> str:
        if self.report is None:
            return "no gate (--max-drop negative)"
        return "gate " + ("passed" if self.passed else "FAILED")


@dataclass(frozen=True)
class WriteOutput:
    """The bundle's report (paths relative to it), its manifest and every file it lists."""

    report: dict[str, Any]
    manifest: dict[str, Any]
    files: dict[str, str]

    def summary(self) -> str:
        return "wrote the bundle"


# ---- the stages: each a function of the results it needs, by name ----


def stage_load(*, opts: DeployOptions, say: Progress) -> LoadOutput:
    """Checkpoint, target profile, preprocessing and the three disjoint data sets."""
    from edgerep.bench.input_stats import shift_problems
    from edgerep.checkpoint import apply_preprocessing, load_checkpoint
    from edgerep.engines.profiles import load_profile

    loaded = load_checkpoint(Path(opts.checkpoint), **opts.load)
    meta = loaded.meta  # the model is in eval mode already (.eval() on a raw .pt2 program raises)
    input_shape = tuple(int(d) for d in meta.input_shape)
    profile = load_profile(opts.target)
    check_engines_available(profile)
    plan = resolve_calibration(opts, meta)
    if plan.recipe is not None and plan.recipe.preprocessing:  # flags (applied at load) win over the recipe
        given = (opts.load.get("preprocessing") or {})
        meta = apply_preprocessing(meta, {**plan.recipe.preprocessing, **given},
                                   source="flags+recipe" if given else "recipe", where=plan.recipe.source)
    splits = resolve_data(opts, meta, plan, say=lambda msg: say("load", msg))
    warned = _data_warnings(opts, splits, plan, say)
    _check_input_shape(loaded.model, input_shape, Path(opts.checkpoint),
                       from_flag=opts.load.get("input_shape") is not None)
    task, task_source = deploy_task(opts, meta, splits.test, loaded.model, input_shape)
    if hasattr(task, "check_data"):  # what the task can score (SR: one image size per scored set)
        task.check_data(splits.selection, "selection")
        task.check_data(splits.test, "test")
    if splits.overlap:
        warned.append("calibration, selection and test sets share samples (--allow-overlap): "
                      "accuracy figures are optimistic")
    load = LoadOutput(Path(opts.checkpoint), loaded, meta, input_shape, profile, plan, splits,
                      sha256_file(Path(opts.checkpoint)), warned, task=task)
    report = _report_head(opts, load)
    report["task"] = {"name": task.name, "source": task_source, "metric": task.metric,
                      **(task.describe() if hasattr(task, "describe") else {})}
    report["input_statistics"] = stats = _input_statistics(loaded.model, splits.calibration)
    for problem in shift_problems(stats):
        _warn(warned, say, "the inputs do not look like the model's training inputs: " + problem)
    return replace(load, report=report)


def _has_ground_truth(ds) -> bool:
    """Whether a set without class labels still has ground truth (an SR set: its HR images)."""
    return getattr(ds, "task", None) == "sr"


def deploy_task(opts: DeployOptions, meta, test, model, input_shape: tuple) -> tuple[Any, str]:
    """The task this deploy serves (``edgerep.tasks.resolve_task``: --task, the checkpoint's, the test data's),
    with --postprocess; a detector's output the decoder cannot read is refused here, before any work."""
    import torch

    from edgerep.tasks import resolve_task

    task, source = resolve_task(opts.task, meta, test)
    if opts.postprocess:
        if not hasattr(task, "with_postprocess"):
            raise EdgerepError(f"--postprocess applies to detectors; this deploy's task is {task.name} ({source})",
                               hint="pass --task detect, or drop --postprocess")
        task = task.with_postprocess(opts.postprocess)
    if hasattr(task, "check_output"):
        with torch.no_grad():
            y = model(torch.zeros((1, *input_shape)))
        task.check_output(tuple((y[0] if isinstance(y, (tuple, list)) else y).shape),
                          len(getattr(meta, "class_names", None) or []) or None)
    return task, source


def _warn(warned: list[str], say: Progress, msg: str) -> None:
    warned.append(msg)
    say("load", "warning: " + msg)


def _data_warnings(opts: DeployOptions, splits, plan: CalibrationPlan, say: Progress) -> list[str]:
    """What the data sets' notes and sizes tell the user (said now, and listed in the report)."""
    warned: list[str] = []
    for ds in splits.sets.values():
        if ds.note and ds.note not in splits.notes:
            splits.notes.append(ds.note)
            say("load", ds.note)
    if not splits.test.has_labels and not _has_ground_truth(splits.test):
        _warn(warned, say, "no labelled test data (--data / --eval-data): no accuracy is measured"
              + ("; the gate fails with 'no accuracy measured' (pass --no-accuracy-gate for a latency-only run)"
                 if opts.accuracy_gate else " (latency-only run: --no-accuracy-gate)"))
    if not splits.calibration.has_labels and splits.calibration.name == "synthetic":
        _warn(warned, say, "calibrating on synthetic inputs: INT8 ranges, and so INT8 accuracy, are NOT representative")
    asked = opts.calib_samples is not None or plan.recipe is not None
    if asked and len(splits.calibration) < plan.samples:  # proceed: a small set still calibrates, but say so
        msg = (f"calibration data {splits.sources['calibration'].spec} has {len(splits.calibration)} samples, fewer "
               f"than the {plan.samples} asked (--calib-samples or recipe); calibrating on all "
               f"{len(splits.calibration)}")
        _warn(warned, say, msg)
        warnings.warn(msg, UserWarning, stacklevel=7)  # attributed to deploy(), through the stage runner
    return warned


def _input_statistics(model, calib) -> dict:
    """The calibration inputs against the running statistics of the unfolded model's first BatchNorm layers."""
    from edgerep.bench.input_stats import SAMPLES, bn_input_statistics

    if calib.name == "synthetic":
        return {"source": "calibration", "samples": 0, "layers": [],
                "skipped": "synthetic calibration inputs (random, not images)"}
    return bn_input_statistics(model, (x for x, _ in calib.batches(batch_for(x_shape(calib), cap=32), limit=SAMPLES)))


def expected_top1(opts: DeployOptions, meta, test_spec: str | None) -> dict | None:
    """The top-1 (%) the unfolded model should reach: ``--expect-top1``, else the accuracy its checkpoint
    records (``meta.extra["training"]``: ``val_top1``, ``test_top1`` or ``train_top1``, fractions or percent)
    when the test data is the data set it was recorded on."""
    if opts.expect_top1 is not None:
        return {"top1": float(opts.expect_top1), "source": "--expect-top1"}
    training = (getattr(meta, "extra", None) or {}).get("training")
    dataset = getattr(meta, "dataset", None)
    if not isinstance(training, dict) or not dataset or test_spec != dataset:
        return None
    for key in ("val_top1", "test_top1", "train_top1"):
        v = training.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 100:
            top1 = float(v) * (100.0 if v <= 1 else 1.0)
            n = training.get(key.replace("top1", "samples"))
            return {"top1": top1, "source": f"checkpoint meta.extra.training.{key} on {dataset}"
                    + (f", {n} images" if n else "")}
    return None


def _report_head(opts: DeployOptions, load: LoadOutput) -> dict[str, Any]:
    """report.json's model, target, preprocessing and data sections."""
    from edgerep.checkpoint import preprocessing_of

    ckpt, meta, splits, plan = Path(opts.checkpoint), load.meta, load.splits, load.plan
    return {
        "schema": REPORT_SCHEMA,
        "warnings": load.warnings,
        "kind": "deploy",
        "created_unix": time.time(),
        "model": {
            "name": ckpt.stem, "checkpoint": str(ckpt), "sha256": load.sha256,
            "arch": meta.arch, "input_shape": list(load.input_shape), "source_format": load.loaded.source_format,
            "classes": len(meta.class_names or []) or None, "dataset": meta.dataset,
        },
        "target": {"name": load.profile.name, "description": getattr(load.profile, "description", "")},
        "preprocessing": preprocessing_of(meta),
        "splits": splits.to_report(),
        "data": {"calibration": splits.sources["calibration"].spec, "calibration_split": plan.split,
                 "calibration_recipe": plan.recipe.source if plan.recipe else None, "calibration_method": plan.method,
                 "selection": splits.sources["selection"].spec, "evaluation": splits.sources["test"].spec,
                 "calibration_samples": min(plan.samples, len(splits.calibration)),
                 "selection_samples": min(select_limit(opts), len(splits.selection)),
                 "evaluation_samples": min(opts.eval_samples or len(splits.test), len(splits.test)),
                 "labelled": bool(splits.test.has_labels or _has_ground_truth(splits.test))},
    }


#: input bytes of one batch of the fold's and the check's passes on real selection images (27 images at 224: the
#: 16 they use stay one batch; 3 at 640)
VERIFY_BATCH_BYTES = 16 * 2**20


def stage_fold(*, opts: DeployOptions, load: LoadOutput) -> FoldOutput:
    """Fold through the one model path, verified on a seeded input and on real selection-set inputs."""
    import torch

    from edgerep.model_path import FOLD_TOLERANCE, fold_loaded

    t0 = time.perf_counter()
    example = torch.randn(2, *load.input_shape, generator=torch.Generator().manual_seed(opts.seed))
    real_x = next(iter(load.splits.selection.batches(16, limit=16)))[0]  # never the test set's
    # verified in pieces of at most VERIFY_BATCH_BYTES of input: 16 images at 640x640 through the unfolded model at
    # once held 1.6 GB (the deploy's peak once the check and quantize were bounded); at 224 it is one piece
    step = batch_for(load.input_shape, budget=VERIFY_BATCH_BYTES, cap=len(real_x))
    pieces = [torch.from_numpy(real_x[i:i + step]) for i in range(0, len(real_x), step)]
    fold = fold_loaded(load.loaded, example=example, tolerance=FOLD_TOLERANCE, extra_inputs=pieces)
    fold.verify.seconds = time.perf_counter() - t0
    rep = fold.verify.to_dict()
    rep["folders"] = fold.counts()
    rep["provenance"] = [r.to_dict() for r in fold.provenance]  # folded layer -> train-time modules
    if fold.graph is not None:  # regions the traced-graph folder collapsed or left unfolded, with reasons
        rep["graph"] = {k: fold.graph[k] for k in ("folded_regions", "refused_regions", "flops_before",
                                                   "flops_after", "notes") if k in fold.graph}
    return FoldOutput(fold, example, real_x, rep)


def stage_check(*, opts: DeployOptions, say: Progress, bundle_dir: Path, load: LoadOutput,
                fold: FoldOutput) -> CheckOutput:
    """INT8 friendliness per layer, channel and branch of the fold that ships (page into the bundle); a second
    deploy of the same checkpoint, code and data reads it from the ``check`` cache folder."""
    cache = CheckCache(_cache_folder(opts, "check"), load.sha256, lambda msg: say("check", msg))
    rep, check_report, page = _run_check(load.loaded.model, fold.example, load.splits.calibration,
                                         load.splits.selection, bundle_dir, fold.result, cache=cache)
    if load.task is not None and load.task.name != "classify":
        rep["task_note"] = (f"task {load.task.name}: each layer's sensitivity is the output fidelity (SQNR, cosine) "
                            "on the selection split with that layer alone in INT8; top-1 and top-1 agreement are "
                            "classification-only and skipped")
    return CheckOutput(rep, check_report, {"check_html": page})


def stage_export(*, bundle_dir: Path, load: LoadOutput, fold: FoldOutput) -> ExportOutput:
    """The folded checkpoint and the FP32 ONNX file."""
    from edgerep.checkpoint import save_checkpoint
    from edgerep.quant.export import export_onnx

    folded_meta = load.meta.__class__.from_dict({**load.meta.to_dict(), "folded": True})
    save_checkpoint(bundle_dir / "model.folded.pt", fold.module, folded_meta)
    fp32_onnx = bundle_dir / "model.fp32.onnx"
    # an SR model runs on patches (calibration) and whole frames (evaluation): one file, any height and width
    sr = load.task is not None and load.task.name == "sr"
    export_onnx(fold.module, fp32_onnx, load.input_shape, dynamic_batch=True, dynamic_hw=sr)
    return ExportOutput(bundle_dir / "model.folded.pt", fp32_onnx,
                        {"folded_checkpoint": "model.folded.pt", "fp32_onnx": fp32_onnx.name})


def stage_quantize(*, opts: DeployOptions, say: Progress, bundle_dir: Path, load: LoadOutput, fold: FoldOutput,
                   export: ExportOutput) -> QuantizeOutput:
    """Calibrate once, one QDQ file per target policy; every choice on the selection set."""
    from edgerep.quant.pipeline import quantize_model

    from edgerep.quant.recover import unused_train_data

    if note := unused_train_data(load.splits.train is not None, opts.recover):
        say("quantize", note)
    # choices are judged against the folded FP32 model (equal to the unfolded one within the fold stage's
    # verified error, and a quarter of its cost at 224x224); every reported drop is against the unfolded model
    qres = quantize_model(export.fp32_onnx, load.splits.calibration, load.splits.selection, bundle_dir,
                          quantize_options(opts, load), progress=lambda msg: say("quantize", msg), task=load.task,
                          train=load.splits.train)
    qdict = qres.to_dict()
    if qdict.get("excluded_nodes"):  # name each layer kept in float as the user knows it (the provenance)
        from edgerep.fold.onnx_names import provenance_names

        rows = provenance_names(export.fp32_onnx, fold.report["provenance"])
        for e in qdict["excluded_nodes"]:
            row = rows.get(str(e.get("node")))
            e["layer"] = row["name"] if row else None
    files = {f"int8_onnx_{policy}": Path(path).name for policy, path in qres.files.items()}
    files.update(_ship_calibration_cache(qdict, bundle_dir))
    return QuantizeOutput(qres, qdict, files)


def _ship_calibration_cache(qdict: dict, bundle_dir: Path) -> dict[str, str]:
    """The calibration ranges travel with the bundle (copied into ``calibration/``)."""
    import shutil

    cache_file = (qdict.get("calibration") or {}).get("cache_path")
    if not (cache_file and Path(cache_file).is_file()):
        return {}
    (bundle_dir / "calibration").mkdir(exist_ok=True)
    shutil.copy2(cache_file, bundle_dir / "calibration" / Path(cache_file).name)
    return {"calibration_cache": f"calibration/{Path(cache_file).name}"}


def quantize_options(opts: DeployOptions, load: LoadOutput) -> "QuantizeOptions":  # noqa: F821 (imported inside)
    """Deploy's ``QuantizeOptions``: the profile's targets, the calibration plan, the gate's budget (0.5 when
    the gate is off), the selection cap."""
    from edgerep.quant.options import (CalibrationOptions, JudgeOptions, QuantizeOptions, RecoveryOptions,
                                       TargetOptions)

    return QuantizeOptions(
        target=TargetOptions(targets=tuple(getattr(load.profile, "quant_targets", None) or ("cpu", "tensorrt"))),
        calibration=CalibrationOptions(method=load.plan.method, samples=load.plan.samples,
                                       cache_dir=Path(opts.cache_dir) if opts.cache_dir else default_cache_dir()),
        judge=JudgeOptions(max_drop=effective_max_drop(opts, load.task) if opts.max_drop is not None else 0.5,
                           samples=select_limit(opts),
                           threads=opts.threads, outputs_cache=outputs_cache_dir(opts)),
        batch_size=batch_for(load.input_shape),  # 64 at 16x16, 13 at 224x224: memory bounded at any input size
        recovery=RecoveryOptions(mode=opts.recover))  # 64 at 16x16, 13 at 224x224: memory bounded at any input size


def stage_build(*, say: Progress, bundle_dir: Path, load: LoadOutput, fold: FoldOutput, export: ExportOutput,
                quantize: QuantizeOutput) -> BuildOutput:
    """The target profile's engines (stand-ins where its hardware is absent)."""
    from edgerep.engines.factory import build_engines

    built = build_engines(load.profile, fp32_onnx=export.fp32_onnx, int8_onnx=dict(quantize.result.files),
                          torch_model=fold.module, out_dir=bundle_dir / "engines",
                          ort_session_config=_cpu_session_config(quantize.result),
                          progress=lambda msg: say("build", msg))
    return BuildOutput(tuple(EngineEntry(k, b, row) for k, b, row in
                             zip(engine_keys(built), built, engine_rows(built, bundle_dir))))


def engine_keys(built: list) -> list[str]:
    """A key per requested engine, unique in the deploy: the spec's key (and its QDQ policy), ``#2``... for repeats."""
    keys: list[str] = []
    for b in built:
        base = b.spec.key + (f"-{b.spec.policy}" if b.spec.policy else "")
        key, n = base, 1
        while key in keys:
            n += 1
            key = f"{base}#{n}"
        keys.append(key)
    return keys


def engine_rows(built: list, root: Path | None = None) -> list[dict]:
    """The report's row per engine the profile asked for: what runs (or why nothing does), as bench names it."""
    engines = []
    for b in built:
        spec = b.actual or b.spec
        row = EngineRow(name=f"{spec.backend}-{spec.device_kind}", precision=spec.precision, device=spec.device,
                        status=b.status, reason=b.reason or "", requested=b.spec.key, build_seconds=round(b.seconds, 3),
                        artifact=_relative(b.artifact, root) if root is not None else (str(b.artifact) if b.artifact else None))
        if b.engine is not None:  # the engine's own name and settings, as bench reports them
            row = row.model_copy(update={"name": b.engine.name, "precision": b.engine.precision,
                                         "device": b.engine.device, "describe": b.engine.describe()})
        engines.append(dump(row))
    return engines


def standin_tensorrt_qdq(built: list, qdq_files: dict) -> Path | None:
    """The TensorRT QDQ file when it ships but no TensorRT INT8 engine ran it here (a stand-in deploy)."""
    path = qdq_files.get("tensorrt")
    if path is None:
        return None
    ran = any(b.engine is not None and (b.actual or b.spec).backend == "tensorrt" and
              (b.actual or b.spec).precision == "int8" for b in built)
    return None if ran else Path(path)


def simulate_tensorrt_qdq(path: Path, test, *, limit: int | None, labels, reference, ref_accuracy: dict | None,
                          lint: list, threads: int | None = None, classifier: bool = True,
                          outputs_cache: Path | None = None) -> dict:
    """The shipped TensorRT QDQ file scored on the test set by onnxruntime with graph optimizations off
    (QDQ simulated in float, as the quantizer judges it), with its TensorRT lint errors: what a stand-in
    deploy can say about the file that the target will build."""
    from edgerep.bench.entry import engine_accuracy
    from edgerep.engines.onnxruntime_engine import OrtEngine
    from edgerep.reference_cache import cached_engine

    eng = OrtEngine(path, precision="int8", threads=threads, optimization="disable")
    eng = cached_engine(eng, outputs_cache) or eng
    out = {"file": path.name, "why": "no TensorRT INT8 engine ran this file here (a stand-in deploy); onnxruntime "
                                     "with graph optimizations off simulates it",
           "lint_errors": [str(i) for i in lint if getattr(i, "severity", None) == "error"]}
    out.update(engine_accuracy(eng, test, eval_limit=limit, labels=labels, reference=reference, ref_accuracy=ref_accuracy,
                               classifier=classifier))
    return out


def stage_evaluate(*, opts: DeployOptions, say: Progress, user_metric: Any, bundle_dir: Path, load: LoadOutput,
                   quantize: QuantizeOutput, build: BuildOutput) -> EvaluateOutput:
    """The unfolded FP32 reference and every engine on the test set (first read here, after every choice)."""
    from edgerep.bench.accuracy import collect_outputs
    from edgerep.bench.entry import engine_accuracy
    from edgerep.engines.torch_engine import TorchEngine
    from edgerep.memory import release_freed
    from edgerep.reference_cache import cached_engine

    test, limit = load.splits.test, opts.eval_samples
    if load.task is not None and load.task.name != "classify":
        return _evaluate_task(opts=opts, say=say, user_metric=user_metric, bundle_dir=bundle_dir, load=load,
                              quantize=quantize, build=build)
    say("evaluate", f"evaluating the unfolded FP32 reference on the test set ({len(test)} samples)")
    baseline = TorchEngine(load.loaded.model, device="cpu", precision="fp32")
    ref = _cached_reference(opts, load.sha256, baseline)
    ref_out, labels = collect_outputs(ref, test.batches(batch_for(load.input_shape), limit=limit))
    release_freed()  # torch's freed activations, before onnxruntime's arenas grow beside them
    if getattr(ref, "hits", 0):
        say("evaluate", f"unfolded reference: {ref.hits} of {ref.hits + ref.misses} batches read from the cache")
    classifier = ref_out is not None and ref_out.ndim == 2
    base = _baseline_row(baseline, ref_out, labels, user_metric, classifier)
    expected = expected_top1(opts, load.meta, load.splits.sources["test"].spec)
    if expected:
        base["expected"] = expected
    ref_acc = base.get("accuracy")
    engines = {}
    for e in build.engines:
        if e.engine is not None:
            # onnxruntime files and the folded model in torch: outputs kept per batch
            cached = cached_engine(e.engine, outputs_cache_dir(opts), load.sha256)
            engines[e.key] = engine_accuracy(cached or e.engine, test, eval_limit=limit, labels=labels,
                                             reference=ref_out, ref_accuracy=ref_acc, user_metric=user_metric,
                                             classifier=classifier, say=say)
            if cached is not None and cached.hits:
                say("evaluate", f"{e.engine.name}/{e.engine.precision}: {cached.hits} of "
                                f"{cached.hits + cached.misses} batches read from the outputs cache")
            release_freed()
    trt, simulated = standin_tensorrt_qdq([e.built for e in build.engines], dict(quantize.result.files)), None
    if trt is not None:  # the file the target will build ships unmeasured otherwise: simulate it, lint it
        say("evaluate", f"simulating the TensorRT QDQ file {trt.name} (no TensorRT INT8 engine here)")
        simulated = simulate_tensorrt_qdq(
            trt, test, limit=limit, labels=labels, reference=ref_out, ref_accuracy=ref_acc,
            lint=quantize.result.lint, threads=opts.threads, classifier=classifier,
            outputs_cache=outputs_cache_dir(opts))
    _prune_output_caches(opts, say)
    return EvaluateOutput(ref_out, labels, base, engines, simulated, len(test))


def _prune_output_caches(opts: DeployOptions, say: Progress) -> None:
    """Keep the reference, outputs and check caches under ``edgerep.reference_cache.CACHE_BYTES`` each, least
    recently used files first."""
    from edgerep.reference_cache import CACHE_BYTES, prune

    for folder, pattern in ((_cache_folder(opts, "outputs"), "*.npy"), (_cache_folder(opts, "reference"), "*.npy"),
                            (_cache_folder(opts, "check"), "check-*.json")):
        removed, freed = prune(folder, pattern=pattern)
        if removed:
            say("evaluate", f"cache {folder}: {removed} least recently used files removed ({freed / 2**20:.0f} MiB) "
                            f"to stay under {CACHE_BYTES / 2**30:g} GiB")


def _task_outputs(engine, test, limit: int | None, task) -> tuple[np.ndarray, Any]:
    """One engine's outputs on the test set and the targets, as the task keeps them."""
    from edgerep.progress import counted

    outs, ys = [], []
    n = len(test) if limit is None else min(limit, len(test))
    with counted(f"{engine.name} {getattr(engine, 'precision', '')}".strip(), n) as tick:
        for x, y in test.batches(batch_for(x_shape(test)), limit=limit):
            outs.append(np.asarray(engine.run(x), dtype=np.float32))
            ys.append(y)
            tick(len(x))
    return (np.concatenate(outs) if outs else np.zeros((0,), np.float32)), task.collect_targets(ys)


def _evaluate_task(*, opts: DeployOptions, say: Progress, user_metric: Any, bundle_dir: Path, load: LoadOutput,
                   quantize: QuantizeOutput, build: BuildOutput) -> EvaluateOutput:
    """stage_evaluate for a task other than classify (``edgerep.tasks``): the reference and every engine
    through the same task.evaluate (a detector: decode + NMS in numpy, pycocotools mAP), the task's files
    (ground truth, predictions per engine) into the bundle."""
    from edgerep.engines.base import unfolded_name
    from edgerep.engines.onnxruntime_engine import OrtEngine
    from edgerep.engines.torch_engine import TorchEngine
    from edgerep.report.models.results import make_drop
    from edgerep.tasks.base import write_files

    task, test, limit = load.task, load.splits.test, opts.eval_samples
    say("evaluate", f"evaluating the unfolded FP32 reference on the test set ({len(test)} samples, task {task.name})")
    baseline = TorchEngine(load.loaded.model, device="cpu", precision="fp32")
    ref = _cached_reference(opts, load.sha256, baseline)
    ref_out, targets = _task_outputs(ref, test, limit, task)
    files: dict[str, str] = write_files(bundle_dir, task.ground_truth_files(test, limit))
    views: dict[str, Any] = {}

    def scored(name: str, outputs: np.ndarray) -> tuple[Any, dict]:
        ev = task.evaluate(outputs, targets, ref_out, dataset=test, name=name, user_metric=user_metric)
        files.update(write_files(bundle_dir, ev.files))
        views[name] = ev.details
        return ev.accuracy, ev.details

    base_name = unfolded_name(baseline.name)
    base = {"name": base_name, "precision": "fp32", "device": "cpu", "status": "built",
            "describe": baseline.describe()}
    ref_acc, _ = scored(f"{base_name}-fp32", ref_out)
    if ref_acc is not None:
        base["accuracy"] = dump(ref_acc)
    engines: dict[str, dict[str, Any]] = {}
    for e in build.engines:
        if e.engine is None:
            continue
        say("evaluate", f"evaluating {e.engine.name}/{e.engine.precision}")
        out, _ = _task_outputs(_through_outputs_cache(e.engine, opts, load.sha256), test, limit, task)
        acc, _ = scored(f"{e.engine.name}-{e.engine.precision}", out)
        drop = make_drop(acc, ref_acc)
        engines[e.key] = {"accuracy": dump(acc) if acc else None, "drop": dump(drop) if drop else None}
    trt, simulated = standin_tensorrt_qdq([e.built for e in build.engines], dict(quantize.result.files)), None
    if trt is not None:
        say("evaluate", f"simulating the TensorRT QDQ file {trt.name} (no TensorRT INT8 engine here)")
        eng = OrtEngine(trt, precision="int8", threads=opts.threads, optimization="disable")
        out, _ = _task_outputs(_through_outputs_cache(eng, opts), test, limit, task)
        acc, _ = scored("tensorrt-qdq-int8", out)
        drop = make_drop(acc, ref_acc)
        simulated = {"file": trt.name, "why": "no TensorRT INT8 engine ran this file here (a stand-in deploy); "
                                              "onnxruntime with graph optimizations off simulates it",
                     "lint_errors": [str(i) for i in quantize.result.lint if getattr(i, "severity", None) == "error"],
                     "accuracy": dump(acc) if acc else None, "drop": dump(drop) if drop else None}
    report_view: dict[str, Any] = {}
    if hasattr(task, "write_views"):  # the task's pictures (a detector: FP32 vs INT8 boxes on test images)
        int8 = next((e for e in build.engines if e.engine is not None and e.engine.precision == "int8"), None)
        other = f"{int8.engine.name}-{int8.engine.precision}" if int8 is not None else None
        more, report_view = task.write_views(bundle_dir, test, targets, views, f"{base_name}-fp32", other)
        files.update(more)
    _prune_output_caches(opts, say)
    return EvaluateOutput(ref_out, None, base, engines, simulated, len(ref_out), files, report_view)


def _baseline_row(baseline, ref_out: np.ndarray | None, labels: np.ndarray | None, user_metric: Any,
                  classifier: bool) -> dict[str, Any]:
    """report.json's "baseline": the unfolded FP32 model's row, scored against itself (and the majority class)."""
    from edgerep.bench.accuracy import baseline_accuracy
    from edgerep.engines.base import unfolded_name

    base = {"name": unfolded_name(baseline.name), "precision": "fp32", "device": "cpu", "status": "built",
            "describe": baseline.describe()}
    if ref_out is not None and (acc := baseline_accuracy(ref_out, labels, user_metric, classifier)):
        base["accuracy"] = dump(acc)  # scored against itself, with the majority class's count
    return base


BENCH_POOL = 64  # distinct selection-set samples the latency queries are drawn from
#: ... at most this many bytes of them (64 at 224; 13 at 640, where 64 held 315 MB through bench)
BENCH_POOL_BYTES = 64 * 2**20


def stage_bench(*, opts: DeployOptions, say: Progress, bundle_dir: Path, load: LoadOutput,
                build: BuildOutput) -> BenchOutput:
    """Latency of the unfolded baseline and every engine, each in its own settled single-stream phase."""
    from edgerep.bench.entry import engine_latency
    from edgerep.bench.latency import host_info
    from edgerep.bench.noise import host_load
    from edgerep.bench.scenarios import ScenarioSettings, run_scenario
    from edgerep.engines.torch_engine import TorchEngine

    x, source = _bench_queries(opts, load)
    settings = ScenarioSettings(scenario="single-stream", min_seconds=opts.bench_seconds, warmup=opts.bench_warmup,
                                log_dir=bundle_dir / "loadgen" / "single-stream", samples_source=source)
    section = {"scenario": "single-stream", "batch_sizes": [opts.batch], "min_seconds": opts.bench_seconds,
               "load_before": host_load()}
    say("bench", "timing the unfolded torch baseline")
    base = run_scenario(TorchEngine(load.loaded.model, device="cpu", precision="fp32"), x, settings,
                        batch=opts.batch, log_name=f"torch-cpu-unfolded-fp32-b{opts.batch}")
    base_p50 = base["p50_ms"] if base.get("valid") is not False else None
    engines = {e.key: engine_latency(e.engine, x, base_p50=base_p50, say=say, scenario=settings, batch=opts.batch)
               for e in build.engines if e.engine is not None}
    host = host_info()
    section["load_after"] = host_load()
    files = {"loadgen_logs": "loadgen"} if (bundle_dir / "loadgen").is_dir() else {}
    return BenchOutput(section, base, engines, host, files)


def _bench_queries(opts: DeployOptions, load: LoadOutput) -> tuple[np.ndarray, str]:
    """The query sample library: distinct real selection-set samples (never the test set's), and where from.
    SR (patches in the selection set): the first selection photo's whole LR image, the size it is run at."""
    sel = load.splits.selection
    if hasattr(sel, "whole_input") and len(sel) and opts.batch == 1:
        x, name = sel.whole_input(0)
        return x, f"selection set: the whole LR image of {name} ({x.shape[2]}x{x.shape[3]})"
    pool = max(opts.batch, batch_for(load.input_shape, budget=BENCH_POOL_BYTES, cap=BENCH_POOL))
    x = next(iter(sel.batches(pool, limit=pool)))[0]
    if opts.batch > x.shape[0]:
        x = np.random.default_rng(opts.seed).standard_normal((opts.batch, *load.input_shape)).astype(np.float32)
        return x, f"synthetic: {opts.batch} distinct standard-normal samples (the selection set is smaller than --batch)"
    return x, f"selection set: {x.shape[0]} distinct samples"


def stage_gate(*, opts: DeployOptions, load: LoadOutput, fold: FoldOutput, check: CheckOutput | None,
               quantize: QuantizeOutput, build: BuildOutput, evaluate: EvaluateOutput,
               bench: BenchOutput) -> GateOutput:
    """Deploy's verdict (the same checks as a bare `edgerep gate`) on the report so far, per engine key."""
    from edgerep.bench.gate import GateThresholds, evaluate_gate

    if opts.max_drop is None:
        return GateOutput(None, None, {})
    th = GateThresholds(max_drop=effective_max_drop(opts, load.task) if opts.accuracy_gate else None,
                        require_accuracy=opts.accuracy_gate,
                        baseline_sanity=opts.accuracy_gate)
    g = evaluate_gate(assemble_report(load, fold, check, quantize, build, evaluate, bench), th)
    failed = {c.engine for c in g.failures}
    verdicts = {e.key: "fail" if f"{e.row['name']}/{e.row['precision']}" in failed else "pass"
                for e in build.engines if e.row.get("status") != "skipped"}
    trt = ("fail" if "tensorrt-qdq/int8" in failed else "pass") if evaluate.tensorrt_qdq else None
    return GateOutput(g.to_dict(), g.passed, verdicts, trt)


def stage_write(*, opts: DeployOptions, say: Progress, out: Path, bundle_dir: Path, clock: StageClock,
                load: LoadOutput, fold: FoldOutput, check: CheckOutput | None, export: ExportOutput,
                quantize: QuantizeOutput, build: BuildOutput, evaluate: EvaluateOutput, bench: BenchOutput,
                gate: GateOutput) -> WriteOutput:
    """splits.json, manifest.json and the reports, with every path relative to the bundle."""
    from edgerep.report.render import write_reports

    tmp, splits = bundle_dir, load.splits
    files = {**(check.files if check is not None else {}), **export.files, **quantize.files, **bench.files,
             **evaluate.files}
    measured = _check_against_measurement(say, tmp, check,
                                          assemble_report(load, fold, check, quantize, build, evaluate, bench, gate))
    report = assemble_report(load, fold, check, quantize, build, evaluate, bench, gate, measured=measured,
                             timings=clock.durations())
    splits.write(tmp / "splits.json")
    files["splits"] = "splits.json"
    # no path into the temporary folder survives; report.json is the serialized Report model
    report = dump(Report.model_validate(relative_to_bundle(report, tmp)))
    manifest = _manifest(opts, out, load, report, files, tmp)
    (tmp / "manifest.json").write_text(json.dumps(dump(Manifest.model_validate(manifest)), indent=2) + "\n")
    for kind, p in write_reports(report, tmp).items():
        files[f"report_{kind}"] = p.name
    manifest["files"] = files
    (tmp / "manifest.json").write_text(json.dumps(dump(Manifest.model_validate(manifest)), indent=2) + "\n")
    return WriteOutput(report, manifest, files)


def _manifest(opts: DeployOptions, out: Path, load: LoadOutput, report: dict, files: dict, tmp: Path) -> dict:
    """manifest.json: versions, input hashes, settings, the profile and the bundle's files with their hashes."""
    from edgerep.bundle_inputs import checkpoint_inputs

    splits = load.splits
    return {
        "schema": MANIFEST_SCHEMA,
        "versions": _versions(),
        "inputs": {"checkpoint": str(opts.checkpoint), "checkpoint_sha256": report["model"]["sha256"],
                   **checkpoint_inputs(opts.checkpoint, out),  # found again wherever the bundle is read
                   **{f"{k}_data": splits.sources[r].spec for k, r in _MANIFEST_ROLES},
                   **{f"{k}_fingerprint": splits.sets[r].fingerprint() for k, r in _MANIFEST_ROLES}},
        "preprocessing": report["preprocessing"],
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items()},
        "seed": opts.seed,
        "target_profile": _profile_dict(load.profile),
        "cpu_policy": report["quantization"].get("cpu_policy"),
        "files": files,
        # what `edgerep diff` compares when only report.json and manifest.json are kept
        "sha256": {rel: sha256_file(tmp / rel) for rel in files.values() if (tmp / rel).is_file()},
    }


def _check_against_measurement(say: Progress, tmp: Path, check: CheckOutput | None, report: dict) -> dict | None:
    """The check's predictions scored against what this deploy measured (``report``); the check page leads
    with it (re-rendered here)."""
    from edgerep.quant.check_score import score_check

    measured = score_check(report.get("check") or {}, report.get("quantization") or {}, report.get("engines") or [])
    if measured is None:
        return None
    say("write", f"{measured['headline']} {measured['scored']}")
    if check is not None and check.files.get("check_html"):
        from edgerep.report.check_html import write_check_html

        write_check_html(check.check_report, tmp / "check", report_link="../report.html", measured=measured)
    return measured


def assemble_report(load: LoadOutput, fold: FoldOutput, check: CheckOutput | None, quantize: QuantizeOutput,
                    build: BuildOutput, evaluate: EvaluateOutput, bench: BenchOutput, gate: GateOutput | None = None,
                    *, measured: dict | None = None, timings: dict[str, float] | None = None) -> dict[str, Any]:
    """report.json composed from the stage results: each stage's own sections, and each engine's row as build
    made it with what evaluate, bench and gate found for that engine (matched by its key, never by position)."""
    report = dict(load.report)
    report["fold"] = fold.report
    if evaluate.views:
        report["task"] = {**report.get("task", {}), "examples": evaluate.views}
    if check is not None:
        report["check"] = {**check.report, **({"measured": measured} if measured is not None else {})}
    report["quantization"] = quantize.report
    verdicts = {k: {"verdict": v} for k, v in (gate.verdicts if gate is not None else {}).items()}
    report["engines"] = merge_engine_rows(build, [evaluate.engines, bench.engines, verdicts])
    report["baseline"] = {**evaluate.baseline, "latency": bench.baseline_latency}
    if evaluate.tensorrt_qdq is not None:
        trt_verdict = gate.tensorrt_qdq_verdict if gate is not None else None
        report["tensorrt_qdq"] = {**evaluate.tensorrt_qdq, **({"verdict": trt_verdict} if trt_verdict else {})}
    report["bench"] = bench.settings
    report["host"] = bench.host
    if gate is not None and gate.report is not None:
        report["gate"] = gate.report
    if timings is not None:
        report["timings_s"] = timings
    return report


def merge_engine_rows(build: BuildOutput, parts: Sequence[Mapping[str, dict]]) -> list[dict[str, Any]]:
    """Each engine's report row: build's, updated with each later stage's part for the same engine key."""
    rows: list[dict[str, Any]] = []
    for e in build.engines:
        row = dict(e.row)
        for part in parts:
            row.update(part.get(e.key, {}))
        rows.append(row)
    return rows


_MANIFEST_ROLES = (("calibration", "calibration"), ("selection", "selection"), ("evaluation", "test"))

#: what the runner gives every stage that names it (``bundle_dir`` only to stages inside the bundle)
RUN_CONTEXT: dict[str, str] = {
    "opts": "DeployOptions: every flag of the deploy",
    "say": "progress: say(stage, message), a '[  t s] stage: message' line on stderr",
    "user_metric": "the --metric function, loaded before any work (None without --metric)",
    "out": "the bundle's final path (--out); nothing is written there before the end",
    "clock": "when each stage started (the report's timings_s)",
    "bundle_dir": "the bundle's temporary directory, renamed to out when the last stage finished",
}

#: deploy's stages in order, each declared by what it needs (its parameters) and gives
DEPLOY_STAGES: tuple[Stage, ...] = (
    Stage("load", stage_load, "load", False, "loading the checkpoint and the data"),
    Stage("fold", stage_fold, "fold", False, "folding and verifying"),
    Stage("check", stage_check, "check", True, "checking INT8 friendliness per layer and branch",
          enabled=lambda opts: opts.run_check, skipped_when="--no-check (DeployOptions.run_check is false)"),
    Stage("export", stage_export, "export", True, "exporting ONNX"),
    Stage("quantize", stage_quantize, "quantize", True, "calibrating and writing QDQ INT8 files"),
    Stage("build", stage_build, "build", True, "building the target's engines"),
    Stage("evaluate", stage_evaluate, "evaluate", True, "evaluating on the test set"),
    Stage("bench", stage_bench, "bench", True, "timing every engine"),
    Stage("gate", stage_gate, "gate", True, "gating"),
    Stage("write", stage_write, "write", True, "writing the bundle"),
)
check_graph(DEPLOY_STAGES, list(RUN_CONTEXT))  # a stage needing what nothing before it gives fails on import
STAGES = tuple(s.name for s in DEPLOY_STAGES)


def explain_deploy(opts: DeployOptions | None = None) -> str:
    """`edgerep deploy --explain`: the stage graph from the declarations (with ``opts``: what those flags skip)."""
    return ("edgerep deploy: stages and what each needs and gives (edgerep.pipeline.DEPLOY_STAGES)\n\n"
            + explain(DEPLOY_STAGES, RUN_CONTEXT, opts))


def stages_markdown() -> str:
    """docs/STAGES.md: the stage graph as ``edgerep deploy --explain`` prints it (scripts/stages_doc.py writes it)."""
    return ("# deploy's stages\n\n"
            "Generated from the declarations (`edgerep.pipeline.DEPLOY_STAGES`) by `python scripts/stages_doc.py`; "
            "`edgerep deploy --explain` prints the same graph (and, given flags, which stages they skip). "
            "A stage's needs are its function's keyword parameters: results of earlier stages by the name each "
            "gives, or the run context. `edgerep.stage_graph.check_graph` refuses, on import, a list in which a "
            "stage needs what nothing before it gives. `edgerep.pipeline.assemble_report` composes report.json "
            "from the results; evaluate, bench and gate give their engine parts keyed by `EngineEntry.key`.\n\n"
            "```\n" + explain_deploy() + "```\n")


def _deploy(opts: DeployOptions, progress: Progress | None = None) -> DeployResult:
    """The stages of ``DEPLOY_STAGES``, wired by name; the bundle is renamed into place only when the last
    one finished."""
    import torch

    from edgerep.bench.accuracy import load_user_metric
    from edgerep.bundle import atomic_bundle, check_output_path

    _check_options(opts)
    out = Path(opts.out) if opts.out else default_out(Path(opts.checkpoint))
    say = progress or (lambda step, msg: None)
    user_metric = load_user_metric(opts.metric) if opts.metric else None  # a bad --metric fails before work
    clock = StageClock()
    _seed_everything(opts.seed)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    check_output_path(out, opts.force)  # fail before any work
    context = {"opts": opts, "say": say, "user_metric": user_metric, "out": out, "clock": clock}
    results = run_stages(DEPLOY_STAGES, context, lambda: atomic_bundle(out, force=opts.force, locked=True),
                         say, clock)
    write, gate = results["write"], results["gate"]
    return DeployResult(out=out, report=write.report, passed=gate.passed, files=write.files)


def _check_options(opts: DeployOptions) -> None:
    """Refuse numeric options that cannot work, naming the flag, before any work."""
    if opts.calib_samples is not None and opts.calib_samples < 1:
        raise EdgerepError(f"--calib-samples must be positive, got {opts.calib_samples}")
    if opts.batch < 1:
        raise EdgerepError(f"--batch must be positive, got {opts.batch}")
    if opts.expect_top1 is not None and not 0 < opts.expect_top1 <= 100:
        raise EdgerepError(f"--expect-top1 is a top-1 in percent (0, 100], got {opts.expect_top1:g}")
    if opts.eval_samples is not None and opts.eval_samples < 1:
        raise EdgerepError(f"--eval-samples must be positive, got {opts.eval_samples}")
    if not opts.bench_seconds >= 0:
        raise EdgerepError(f"--bench-seconds must be >= 0, got {opts.bench_seconds}")
    if opts.cache_dir is not None and Path(opts.cache_dir).exists() and not Path(opts.cache_dir).is_dir():
        raise EdgerepError(f"--cache-dir {opts.cache_dir}: exists and is not a directory",
                           hint="choose a directory for the calibration cache")


def check_engines_available(profile) -> None:
    """A profile with ``fallback = "none"`` forbids stand-ins: an engine that cannot run here (no TensorRT,
    no GPU) is then a user-fixable error, raised before any work instead of a bundle without that engine."""
    if getattr(profile, "fallback", None) != "none":
        return
    from edgerep.engines.factory import unavailable_engines
    from edgerep.errors import EngineError

    missing = unavailable_engines(profile)
    if missing:
        spec, why = missing[0]
        raise EngineError(f"target {profile.name}: engine {spec.key} cannot run on this machine ({why}) and the "
                          "profile says fallback = \"none\"", hint="deploy on the target hardware, or use a "
                          "profile whose fallback is onnxruntime-cpu")


def _check_input_shape(model, input_shape: tuple, ckpt_path: Path, from_flag: bool = False) -> None:
    """One forward pass on a zero input: an input shape that does not fit the model is a user-fixable error,
    named by where it came from (--input-shape, or the checkpoint's metadata) and with the flag that fixes it."""
    import torch

    from edgerep.errors import CheckpointError

    try:
        with torch.no_grad():
            model(torch.zeros((1, *input_shape)))
    except (RuntimeError, ValueError, IndexError) as e:
        first = (str(e).strip().splitlines() or [""])[0][:160]
        shape = ",".join(map(str, input_shape))
        if from_flag:
            raise CheckpointError(f"--input-shape {shape}: does not fit the model of {ckpt_path} ({first})",
                                  hint="pass the shape the model takes, --input-shape C,H,W, or its real --arch") \
                from None
        raise CheckpointError(f"{ckpt_path}: its input shape {shape} (from the checkpoint's metadata) does not fit "
                              f"the model ({first})",
                              hint="pass --input-shape C,H,W (it overrides the checkpoint's), or its real --arch") \
            from None


def relative_to_bundle(obj: Any, tmp: Path) -> Any:
    """``obj`` with every string path inside ``tmp`` made relative to it (the bundle's own files)."""
    roots = {str(tmp), str(Path(tmp).resolve())}
    if isinstance(obj, dict):
        return {k: relative_to_bundle(v, tmp) for k, v in obj.items()}
    if isinstance(obj, list):
        return [relative_to_bundle(v, tmp) for v in obj]
    if isinstance(obj, str):
        for root in roots:
            if obj == root:
                return "."
            if obj.startswith(root + "/"):
                return obj[len(root) + 1:]
    return obj


def _relative(path, root: Path) -> str | None:
    if not path:
        return None
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def _profile_dict(profile) -> dict:
    if hasattr(profile, "to_dict"):
        return profile.to_dict()
    from dataclasses import asdict, is_dataclass

    return asdict(profile) if is_dataclass(profile) else {"name": getattr(profile, "name", str(profile))}


def _cpu_session_config(qres) -> dict | None:
    pol = getattr(qres, "cpu_policy", None)
    if pol is None:
        return None
    return getattr(pol, "session_config", None) or (pol.get("session_config") if isinstance(pol, dict) else None)


@dataclass(frozen=True)
class CheckCache:
    """Where deploy keeps check reports (``edgerep.check_cache``), the checkpoint they are of, and how a hit is said."""

    folder: Path
    checkpoint_sha: str
    say: Callable[[str], None]


def _run_check(model, example, calib_ds, select_ds, tmp: Path, fold=None,
               cache: CheckCache | None = None) -> tuple[dict, Any, str]:
    """The quantization-friendliness check of the fold that ships (``fold``): its report section, the check
    report and its HTML page in the bundle (relative path). Its sensitivity figures are measured on the
    selection set (never the calibration or the test set). With ``cache``, a report kept under the same model,
    code, data and settings is read instead (``edgerep.check_cache``)."""
    from edgerep import check_cache
    from edgerep.quant.check import CheckOptions, check_model
    from edgerep.report.check_html import write_check_html

    calib = None
    if calib_ds is not None:
        import torch

        calib = [torch.from_numpy(x) for x, _ in calib_ds.batches(batch_for(x_shape(calib_ds), cap=32), limit=64)]
    # sensitivity (top-1 when only one layer is INT8) is measured on held-out data, never on calibration data;
    # in batches of at most VERIFY_BATCH_BYTES of input (16 images at 640x640 in one batch held 2.4 GB per replay;
    # at 224 the 16 stay one batch)
    options = CheckOptions()
    eval_batch = batch_for(x_shape(select_ds), budget=VERIFY_BATCH_BYTES, cap=32) if select_ds is not None else None
    key = _check_cache_key(cache, model, example, fold, calib, select_ds, eval_batch, options)
    rep = check_cache.load(cache.folder, key, tmp / "check") if key is not None else None
    if rep is not None:
        cache.say(f"read from the check cache {cache.folder} (the same checkpoint, code, data and settings were "
                  f"checked before, in {rep.timings.get('total', 0.0):.1f} s)")
        page = write_check_html(rep, tmp / "check", report_link="../report.html", plotted=True)
    else:
        evals = select_ds.batches(eval_batch, limit=options.eval_limit) if select_ds is not None else None
        rep = check_model(model, example_input=example[:1], calib_batches=calib, eval_batches=evals,
                          fold=fold, options=options)  # the very fold that ships
        page = write_check_html(rep, tmp / "check", report_link="../report.html")
        if key is not None:
            check_cache.save(cache.folder, key, rep, tmp / "check")
    d = rep.to_dict()
    return {"summary": d.get("summary"), "layers": d.get("layers")}, rep, str(Path(page).relative_to(tmp))


def _check_cache_key(cache: CheckCache | None, model, example, fold, calib, select_ds, eval_batch: int | None,
                     options) -> str | None:
    """The check's key in ``cache`` (``edgerep.check_cache.check_key``); None: no cache, or a model whose outputs
    have no identity (its source is not known)."""
    from dataclasses import asdict

    from edgerep.check_cache import arrays_digest, check_key
    from edgerep.code_identity import weights_digest
    from edgerep.reference_cache import torch_identity

    if cache is None:
        return None
    identity = torch_identity(cache.checkpoint_sha, model)
    folded = weights_digest(fold.module) if fold is not None else "folded here"
    if identity is None or folded is None:
        return None
    # the evaluation batches' bytes (16 images: read once more on a miss), inputs and labels: what the check saw
    evals = None if select_ds is None else arrays_digest(
        a for x, y in select_ds.batches(eval_batch, limit=options.eval_limit) for a in (x, y))
    # the calibration batches' shapes and bytes are in the key: how many images, in what batches
    return check_key(identity, [example[:1], *(calib or [])], evals, {"options": asdict(options), "folded": folded})


__all__ = ["DeployOptions", "DeployResult", "deploy", "STAGES", "DEPLOY_STAGES", "RUN_CONTEXT", "assemble_report",
           "explain_deploy", "EdgerepError"]
