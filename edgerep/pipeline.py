"""`edgerep deploy` as a library call: a short list of named stages (``STAGE_FUNCTIONS``: load, fold,
check, export, quantize, build, evaluate, bench, gate, write), each a function of one
``DeployContext`` that can be run and tested alone, written into a bundle directory atomically.

Every stage records what it did into one report dict (the content of report.json); progress and
per-stage timings come from the list. The CLI only parses flags, shows progress and prints the table.
"""
from __future__ import annotations

import json
import platform
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgerep.errors import DataError, EdgerepError, FoldError
from edgerep.hashing import sha256_file


@dataclass
class DeployOptions:
    """Everything `edgerep deploy` can be told; defaults are what a user gets with no flags."""

    checkpoint: Path
    out: Path | None = None
    data: str | None = None  # one data set, split into calibration / selection / test (edgerep.data.splits)
    calib_data: str | None = None  # calibration (activation ranges) only
    val_data: str | None = None  # selection (every choice) only
    eval_data: str | None = None  # test (reported and gated) only
    allow_overlap: bool = False  # named sets may share samples (the report then says: optimistic)
    accuracy_gate: bool = True  # False: a latency-only run, no accuracy verdict asked for
    target: str = "x86-cpu"
    max_drop: float | None = 0.5  # gate: top-1 points vs unfolded FP32 (None: no gate)
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
                            calib_origin=plan.split_origin, say=say)
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


def _cached_reference(ctx: "DeployContext", fn):
    """The unfolded model's outputs, cached on disk per checkpoint and input batch (edgerep.reference_cache)
    in ``<--cache-dir>/reference``, else ``<cache root>/reference``: a second deploy of the same
    checkpoint and data does not recompute them."""
    from edgerep.cache import cache_root
    from edgerep.reference_cache import CachedReference

    root = Path(ctx.opts.cache_dir) if ctx.opts.cache_dir else cache_root()
    return CachedReference(fn, ctx.report["model"]["sha256"], root / "reference")


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


@dataclass
class DeployContext:
    """What the stages of one deploy share: each stage reads what earlier ones set and adds its own."""

    opts: DeployOptions
    say: Progress
    out: Path
    t_start: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    user_metric: Any = None
    loaded: Any = None  # LoadedCheckpoint
    meta: Any = None
    input_shape: tuple = ()
    profile: Any = None
    plan: CalibrationPlan | None = None
    splits: Any = None  # edgerep.data.splits.DataSplits
    warnings: list[str] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    example: Any = None  # seeded torch input for fold verification and check
    real_x: np.ndarray | None = None  # real selection-set inputs (fold verification, latency input)
    fold: Any = None  # edgerep.model_path.FoldResult
    tmp: Path | None = None  # the bundle's temporary directory (inside atomic_bundle)
    files: dict[str, str] = field(default_factory=dict)
    fp32_onnx: Path | None = None
    qres: Any = None  # QuantizeResult
    check_report: Any = None  # edgerep.quant.check.CheckReport (its page is re-rendered with the measurement)
    built: list = field(default_factory=list)  # BuiltEngine per profile engine
    ref_out: np.ndarray | None = None  # the unfolded model's outputs on the test set
    labels: np.ndarray | None = None
    passed: bool | None = None

    @property
    def select_limit(self) -> int:
        return self.opts.eval_samples or SELECTION_CAP

    def warn(self, step: str, msg: str) -> None:
        self.warnings.append(msg)
        self.say(step, "warning: " + msg)


def stage_load(ctx: DeployContext) -> str:
    """Checkpoint, target profile, preprocessing and the three disjoint data sets."""
    from edgerep.checkpoint import apply_preprocessing, load_checkpoint
    from edgerep.engines.profiles import load_profile

    opts = ctx.opts
    ctx.loaded = load_checkpoint(Path(opts.checkpoint), **opts.load)
    ctx.meta = ctx.loaded.meta  # the model is in eval mode already (.eval() on a raw .pt2 program raises)
    ctx.input_shape = tuple(int(d) for d in ctx.meta.input_shape)
    ctx.profile = load_profile(opts.target)
    check_engines_available(ctx.profile)
    ctx.plan = plan = resolve_calibration(opts, ctx.meta)
    if plan.recipe is not None and plan.recipe.preprocessing:  # flags (applied at load) win over the recipe
        given = (opts.load.get("preprocessing") or {})
        ctx.meta = apply_preprocessing(ctx.meta, {**plan.recipe.preprocessing, **given},
                                       source="flags+recipe" if given else "recipe", where=plan.recipe.source)
    ctx.splits = splits = resolve_data(opts, ctx.meta, plan, say=lambda msg: ctx.say("load", msg))
    for ds in splits.sets.values():
        if ds.note and ds.note not in splits.notes:
            splits.notes.append(ds.note)
            ctx.say("load", ds.note)
    if not splits.test.has_labels:
        ctx.warn("load", "no labelled test data (--data / --eval-data): no accuracy is measured"
                 + ("; the gate fails with 'no accuracy measured' (pass --no-accuracy-gate for a latency-only run)"
                    if opts.accuracy_gate else " (latency-only run: --no-accuracy-gate)"))
    if not splits.calibration.has_labels and splits.calibration.name == "synthetic":
        ctx.warn("load", "calibrating on synthetic inputs: INT8 ranges, and so INT8 accuracy, are NOT representative")
    asked = opts.calib_samples is not None or plan.recipe is not None
    if asked and len(splits.calibration) < plan.samples:  # proceed: a small set still calibrates, but say so
        msg = (f"calibration data {splits.sources['calibration'].spec} has {len(splits.calibration)} samples, fewer "
               f"than the {plan.samples} asked (--calib-samples or recipe); calibrating on all "
               f"{len(splits.calibration)}")
        ctx.warn("load", msg)
        warnings.warn(msg, UserWarning, stacklevel=4)
    _check_input_shape(ctx.loaded.model, ctx.input_shape, Path(opts.checkpoint),
                       from_flag=opts.load.get("input_shape") is not None)
    if splits.overlap:
        ctx.warnings.append("calibration, selection and test sets share samples (--allow-overlap): "
                            "accuracy figures are optimistic")
    ctx.report = _report_head(ctx)
    from edgerep.bench.input_stats import shift_problems

    ctx.report["input_statistics"] = stats = _input_statistics(ctx)
    for problem in shift_problems(stats):
        ctx.warn("load", "the inputs do not look like the model's training inputs: " + problem)
    return f"loaded {opts.checkpoint}"


def _input_statistics(ctx: DeployContext) -> dict:
    """The calibration inputs against the running statistics of the unfolded model's first BatchNorm layers."""
    from edgerep.bench.input_stats import SAMPLES, bn_input_statistics

    calib = ctx.splits.calibration
    if calib.name == "synthetic":
        return {"source": "calibration", "samples": 0, "layers": [],
                "skipped": "synthetic calibration inputs (random, not images)"}
    return bn_input_statistics(ctx.loaded.model, (x for x, _ in calib.batches(32, limit=SAMPLES)))


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


def _report_head(ctx: DeployContext) -> dict[str, Any]:
    """report.json's model, target, preprocessing and data sections."""
    from edgerep.checkpoint import preprocessing_of

    ckpt, meta, splits, plan = Path(ctx.opts.checkpoint), ctx.meta, ctx.splits, ctx.plan
    return {
        "schema": "edgerep.report/1",
        "warnings": ctx.warnings,
        "kind": "deploy",
        "created_unix": time.time(),
        "model": {
            "name": ckpt.stem, "checkpoint": str(ckpt), "sha256": sha256_file(ckpt),
            "arch": meta.arch, "input_shape": list(ctx.input_shape), "source_format": ctx.loaded.source_format,
            "classes": len(meta.class_names or []) or None, "dataset": meta.dataset,
        },
        "target": {"name": ctx.profile.name, "description": getattr(ctx.profile, "description", "")},
        "preprocessing": preprocessing_of(meta),
        "splits": splits.to_report(),
        "data": {"calibration": splits.sources["calibration"].spec, "calibration_split": plan.split,
                 "calibration_recipe": plan.recipe.source if plan.recipe else None, "calibration_method": plan.method,
                 "selection": splits.sources["selection"].spec, "evaluation": splits.sources["test"].spec,
                 "calibration_samples": min(plan.samples, len(splits.calibration)),
                 "selection_samples": min(ctx.select_limit, len(splits.selection)),
                 "evaluation_samples": min(ctx.opts.eval_samples or len(splits.test), len(splits.test)),
                 "labelled": bool(splits.test.has_labels)},
    }


def stage_fold(ctx: DeployContext) -> str:
    """Fold through the one model path, verified on a seeded input and on real selection-set inputs."""
    import torch

    from edgerep.model_path import FOLD_TOLERANCE, fold_loaded

    t0 = time.perf_counter()
    ctx.example = torch.randn(2, *ctx.input_shape, generator=torch.Generator().manual_seed(ctx.opts.seed))
    ctx.real_x = next(iter(ctx.splits.selection.batches(16, limit=16)))[0]  # never the test set's
    ctx.fold = fold = fold_loaded(ctx.loaded, example=ctx.example, tolerance=FOLD_TOLERANCE,
                                  extra_inputs=[torch.from_numpy(ctx.real_x)])
    fold.verify.seconds = time.perf_counter() - t0
    rep = ctx.report["fold"] = fold.verify.to_dict()
    rep["folders"] = fold.counts()
    rep["provenance"] = [r.to_dict() for r in fold.provenance]  # folded layer -> train-time modules
    if fold.graph is not None:  # regions the traced-graph folder collapsed or left unfolded, with reasons
        rep["graph"] = {k: fold.graph[k] for k in ("folded_regions", "refused_regions", "flops_before",
                                                   "flops_after", "notes") if k in fold.graph}
    return "folded and verified"


def stage_check(ctx: DeployContext) -> str:
    """INT8 friendliness per layer, channel and branch of the fold that ships (page into the bundle)."""
    ctx.report["check"], ctx.check_report = _run_check(ctx.loaded.model, ctx.example, ctx.splits.calibration,
                                                       ctx.splits.selection, ctx.tmp, ctx.files, ctx.fold)
    return "checked INT8 friendliness"


def stage_export(ctx: DeployContext) -> str:
    """The folded checkpoint and the FP32 ONNX file."""
    from edgerep.checkpoint import save_checkpoint
    from edgerep.quant.export import export_onnx

    folded_meta = ctx.meta.__class__.from_dict({**ctx.meta.to_dict(), "folded": True})
    save_checkpoint(ctx.tmp / "model.folded.pt", ctx.fold.module, folded_meta)
    ctx.files["folded_checkpoint"] = "model.folded.pt"
    ctx.fp32_onnx = ctx.tmp / "model.fp32.onnx"
    export_onnx(ctx.fold.module, ctx.fp32_onnx, ctx.input_shape, dynamic_batch=True)
    ctx.files["fp32_onnx"] = ctx.fp32_onnx.name
    return "exported ONNX"


def stage_quantize(ctx: DeployContext) -> str:
    """Calibrate once, one QDQ file per target policy; every choice on the selection set."""
    import shutil

    from edgerep.quant.pipeline import quantize_model

    ctx.qres = quantize_model(ctx.fp32_onnx, ctx.splits.calibration, ctx.splits.selection, ctx.tmp,
                              quantize_options(ctx), reference=_cached_reference(ctx, TorchReference(ctx.loaded.model)),
                              progress=lambda msg: ctx.say("quantize", msg))
    qdict = ctx.report["quantization"] = ctx.qres.to_dict()
    if qdict.get("excluded_nodes"):  # name each layer kept in float as the user knows it (the provenance)
        from edgerep.fold.onnx_names import provenance_names

        rows = provenance_names(ctx.fp32_onnx, ctx.report["fold"]["provenance"])
        for e in qdict["excluded_nodes"]:
            row = rows.get(str(e.get("node")))
            e["layer"] = row["name"] if row else None
    for policy, path in ctx.qres.files.items():
        ctx.files[f"int8_onnx_{policy}"] = Path(path).name
    cache_file = (qdict.get("calibration") or {}).get("cache_path")
    if cache_file and Path(cache_file).is_file():  # the ranges travel with the bundle
        (ctx.tmp / "calibration").mkdir(exist_ok=True)
        shutil.copy2(cache_file, ctx.tmp / "calibration" / Path(cache_file).name)
        ctx.files["calibration_cache"] = f"calibration/{Path(cache_file).name}"
    return f"quantized ({', '.join(ctx.qres.files)})"


def quantize_options(ctx: DeployContext) -> "QuantizeOptions":  # noqa: F821 (imported inside)
    """Deploy's ``QuantizeOptions``: the profile's targets, the calibration plan, the gate's budget (0.5 when
    the gate is off), the selection cap."""
    from edgerep.quant.options import CalibrationOptions, JudgeOptions, QuantizeOptions, TargetOptions

    opts = ctx.opts
    return QuantizeOptions(
        target=TargetOptions(targets=tuple(getattr(ctx.profile, "quant_targets", None) or ("cpu", "tensorrt"))),
        calibration=CalibrationOptions(method=ctx.plan.method, samples=ctx.plan.samples,
                                       cache_dir=Path(opts.cache_dir) if opts.cache_dir else default_cache_dir()),
        judge=JudgeOptions(max_drop=opts.max_drop if opts.max_drop is not None else 0.5, samples=ctx.select_limit,
                           threads=opts.threads))


def stage_build(ctx: DeployContext) -> str:
    """The target profile's engines (stand-ins where its hardware is absent)."""
    from edgerep.engines.factory import build_engines

    ctx.built = build_engines(ctx.profile, fp32_onnx=ctx.fp32_onnx, int8_onnx=dict(ctx.qres.files),
                              torch_model=ctx.fold.module, out_dir=ctx.tmp / "engines",
                              ort_session_config=_cpu_session_config(ctx.qres),
                              progress=lambda msg: ctx.say("build", msg))
    ctx.report["engines"] = engine_rows(ctx.built, ctx.tmp)
    failed = [b.spec.key for b in ctx.built if b.status == "failed"]
    return f"built {sum(b.engine is not None for b in ctx.built)} engines" + \
        (f"; FAILED: {', '.join(failed)}" if failed else "")


def engine_rows(built: list, root: Path | None = None) -> list[dict]:
    """The report's row per engine the profile asked for: what runs (or why nothing does), as bench names it."""
    engines = []
    for b in built:
        spec = b.actual or b.spec
        engines.append({"name": f"{spec.backend}-{spec.device_kind}", "precision": spec.precision,
                        "device": spec.device, "status": b.status, "reason": b.reason or "",
                        "requested": b.spec.key, "build_seconds": round(b.seconds, 3),
                        "artifact": _relative(b.artifact, root) if root is not None else (str(b.artifact) if b.artifact else None)})
        if b.engine is not None:  # the engine's own name and settings, as bench reports them
            engines[-1].update({"name": b.engine.name, "precision": b.engine.precision, "device": b.engine.device,
                                "describe": b.engine.describe()})
    return engines


def standin_tensorrt_qdq(built: list, qdq_files: dict) -> Path | None:
    """The TensorRT QDQ file when it ships but no TensorRT INT8 engine ran it here (a stand-in deploy)."""
    path = qdq_files.get("tensorrt")
    if path is None:
        return None
    ran = any(b.engine is not None and (b.actual or b.spec).backend == "tensorrt" and
              (b.actual or b.spec).precision == "int8" for b in built)
    return None if ran else Path(path)


def simulate_tensorrt_qdq(path: Path, test, *, limit: int | None, labels, reference, ref_top1: float | None,
                          lint: list, threads: int | None = None, classifier: bool = True) -> dict:
    """The shipped TensorRT QDQ file scored on the test set by onnxruntime with graph optimizations off
    (QDQ simulated in float, as the quantizer judges it), with its TensorRT lint errors: what a stand-in
    deploy can say about the file that the target will build."""
    from edgerep.bench.entry import engine_accuracy
    from edgerep.engines.onnxruntime_engine import OrtEngine

    eng = OrtEngine(path, precision="int8", threads=threads, optimization="disable")
    out = {"file": path.name, "why": "no TensorRT INT8 engine ran this file here (a stand-in deploy); onnxruntime "
                                     "with graph optimizations off simulates it",
           "lint_errors": [str(i) for i in lint if getattr(i, "severity", None) == "error"]}
    out.update(engine_accuracy(eng, test, eval_limit=limit, labels=labels, reference=reference, ref_top1=ref_top1,
                               classifier=classifier))
    return out


def stage_evaluate(ctx: DeployContext) -> str:
    """The unfolded FP32 reference and every engine on the test set (first read here, after every choice)."""
    from edgerep.bench.accuracy import collect_outputs, score
    from edgerep.bench.entry import engine_accuracy
    from edgerep.engines.base import unfolded_name
    from edgerep.engines.torch_engine import TorchEngine

    test, limit = ctx.splits.test, ctx.opts.eval_samples
    ctx.say("evaluate", f"evaluating the unfolded FP32 reference on the test set ({len(test)} samples)")
    baseline = TorchEngine(ctx.loaded.model, device="cpu", precision="fp32")
    ref = _cached_reference(ctx, baseline.run)
    ctx.ref_out, ctx.labels = collect_outputs(ref, test.batches(64, limit=limit))
    if ref.hits:
        ctx.say("evaluate", f"unfolded reference: {ref.hits} of {ref.hits + ref.misses} batches read from the cache")
    classifier = ctx.ref_out is not None and ctx.ref_out.ndim == 2
    base = ctx.report["baseline"] = {"name": unfolded_name(baseline.name), "precision": "fp32", "device": "cpu",
                                     "status": "built", "describe": baseline.describe()}
    if ctx.ref_out is not None:
        base["accuracy"] = score(ctx.ref_out, ctx.labels, ctx.ref_out, ctx.user_metric, classifier).to_dict()
        if classifier:
            base["accuracy"]["classes"] = int(ctx.ref_out.shape[1])
            if ctx.labels is not None and len(ctx.labels):  # what always answering one class scores
                counts = np.bincount(ctx.labels.astype(np.int64).clip(min=0))
                base["accuracy"]["majority"] = {"class": int(counts.argmax()), "count": int(counts.max())}
    expected = expected_top1(ctx.opts, ctx.meta, ctx.splits.sources["test"].spec)
    if expected:
        base["expected"] = expected
    ref_top1 = (base.get("accuracy") or {}).get("top1")
    for b, entry in zip(ctx.built, ctx.report["engines"]):
        if b.engine is not None:
            entry.update(engine_accuracy(b.engine, test, eval_limit=limit, labels=ctx.labels,
                                         reference=ctx.ref_out, ref_top1=ref_top1, user_metric=ctx.user_metric,
                                         classifier=classifier, say=ctx.say))
    trt = standin_tensorrt_qdq(ctx.built, dict(ctx.qres.files))
    if trt is not None:  # the file the target will build ships unmeasured otherwise: simulate it, lint it
        ctx.say("evaluate", f"simulating the TensorRT QDQ file {trt.name} (no TensorRT INT8 engine here)")
        ctx.report["tensorrt_qdq"] = simulate_tensorrt_qdq(
            trt, test, limit=limit, labels=ctx.labels, reference=ctx.ref_out, ref_top1=ref_top1,
            lint=ctx.qres.lint, threads=ctx.opts.threads, classifier=classifier)
    return f"evaluated on {len(test)} test samples"


BENCH_POOL = 64  # distinct selection-set samples the latency queries are drawn from


def stage_bench(ctx: DeployContext) -> str:
    """Latency of the unfolded baseline and every engine, each in its own settled single-stream phase."""
    from edgerep.bench.entry import engine_latency
    from edgerep.bench.latency import host_info
    from edgerep.bench.noise import host_load
    from edgerep.bench.scenarios import ScenarioSettings, run_scenario
    from edgerep.engines.torch_engine import TorchEngine

    opts = ctx.opts
    # the query sample library: distinct real selection-set samples (never the test set's)
    x = next(iter(ctx.splits.selection.batches(BENCH_POOL, limit=BENCH_POOL)))[0]
    source = f"selection set: {x.shape[0]} distinct samples"
    if opts.batch > x.shape[0]:
        x = np.random.default_rng(opts.seed).standard_normal((opts.batch, *ctx.input_shape)).astype(np.float32)
        source = f"synthetic: {opts.batch} distinct standard-normal samples (the selection set is smaller than --batch)"
    settings = ScenarioSettings(scenario="single-stream", min_seconds=opts.bench_seconds, warmup=opts.bench_warmup,
                                log_dir=ctx.tmp / "loadgen" / "single-stream", samples_source=source)
    ctx.report["bench"] = {"scenario": "single-stream", "batch_sizes": [opts.batch],
                           "min_seconds": opts.bench_seconds, "load_before": host_load()}
    ctx.say("bench", "timing the unfolded torch baseline")
    base = ctx.report["baseline"]
    base["latency"] = run_scenario(TorchEngine(ctx.loaded.model, device="cpu", precision="fp32"), x, settings,
                                   batch=opts.batch, log_name=f"torch-cpu-unfolded-fp32-b{opts.batch}")
    base_p50 = base["latency"]["p50_ms"] if base["latency"].get("valid") is not False else None
    for b, entry in zip(ctx.built, ctx.report["engines"]):
        if b.engine is not None:
            entry.update(engine_latency(b.engine, x, base_p50=base_p50, say=ctx.say,
                                        scenario=settings, batch=opts.batch))
    ctx.report["host"] = host_info()
    ctx.report["bench"]["load_after"] = host_load()
    if (ctx.tmp / "loadgen").is_dir():
        ctx.files["loadgen_logs"] = "loadgen"
    return "timed every engine"


def stage_gate(ctx: DeployContext) -> str:
    """Deploy's verdict (the same checks as a bare `edgerep gate`), marked on each engine row."""
    from edgerep.bench.gate import GateThresholds, evaluate_gate

    opts = ctx.opts
    if opts.max_drop is None:
        return "no gate (--max-drop negative)"
    th = GateThresholds(max_drop=opts.max_drop if opts.accuracy_gate else None, require_accuracy=opts.accuracy_gate,
                        baseline_sanity=opts.accuracy_gate)
    g = evaluate_gate(ctx.report, th)
    ctx.report["gate"] = g.to_dict()
    ctx.passed = g.passed
    failed = {c.engine for c in g.failures}
    for e in ctx.report["engines"]:
        if e.get("status") != "skipped":
            e["verdict"] = "fail" if f"{e['name']}/{e['precision']}" in failed else "pass"
    if ctx.report.get("tensorrt_qdq"):
        ctx.report["tensorrt_qdq"]["verdict"] = "fail" if "tensorrt-qdq/int8" in failed else "pass"
    return "gate " + ("passed" if g.passed else "FAILED")


def stage_write(ctx: DeployContext) -> str:
    """splits.json, manifest.json and the reports, with every path relative to the bundle."""
    from edgerep.bundle_inputs import checkpoint_inputs
    from edgerep.report.render import write_reports

    opts, tmp, files, splits = ctx.opts, ctx.tmp, ctx.files, ctx.splits
    _check_against_measurement(ctx)
    ctx.report["timings_s"] = _durations(ctx.timings, ctx.t_start)
    splits.write(tmp / "splits.json")
    files["splits"] = "splits.json"
    ctx.report = report = relative_to_bundle(ctx.report, tmp)  # no path into the temporary folder survives
    manifest = {
        "schema": "edgerep.manifest/1",
        "versions": _versions(),
        "inputs": {"checkpoint": str(opts.checkpoint), "checkpoint_sha256": report["model"]["sha256"],
                   **checkpoint_inputs(opts.checkpoint, ctx.out),  # found again wherever the bundle is read
                   **{f"{k}_data": splits.sources[r].spec for k, r in _MANIFEST_ROLES},
                   **{f"{k}_fingerprint": splits.sets[r].fingerprint() for k, r in _MANIFEST_ROLES}},
        "preprocessing": report["preprocessing"],
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items()},
        "seed": opts.seed,
        "target_profile": _profile_dict(ctx.profile),
        "cpu_policy": report["quantization"].get("cpu_policy"),
        "files": files,
        # what `edgerep diff` compares when only report.json and manifest.json are kept
        "sha256": {rel: sha256_file(tmp / rel) for rel in files.values() if (tmp / rel).is_file()},
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    for kind, p in write_reports(report, tmp).items():
        files[f"report_{kind}"] = p.name
    manifest["files"] = files
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    return "wrote the bundle"


def _check_against_measurement(ctx: DeployContext) -> None:
    """The check's predictions scored against what this deploy measured; the check page leads with it."""
    from edgerep.quant.check_score import score_check

    check = ctx.report.get("check")
    measured = score_check(check or {}, ctx.report.get("quantization") or {}, ctx.report.get("engines") or [])
    if measured is None:
        return
    check["measured"] = measured
    ctx.say("write", f"{measured['headline']} {measured['scored']}")
    if ctx.check_report is not None and ctx.files.get("check_html"):
        from edgerep.report.check_html import write_check_html

        write_check_html(ctx.check_report, ctx.tmp / "check", report_link="../report.html", measured=measured)


_MANIFEST_ROLES = (("calibration", "calibration"), ("selection", "selection"), ("evaluation", "test"))

#: deploy's stages in order: (name, function, runs inside the bundle's temporary directory)
STAGE_FUNCTIONS: tuple[tuple[str, Callable[[DeployContext], str], bool], ...] = (
    ("load", stage_load, False), ("fold", stage_fold, False), ("check", stage_check, True),
    ("export", stage_export, True), ("quantize", stage_quantize, True), ("build", stage_build, True),
    ("evaluate", stage_evaluate, True), ("bench", stage_bench, True), ("gate", stage_gate, True),
    ("write", stage_write, True))
STAGES = tuple(name for name, _, _ in STAGE_FUNCTIONS)
_STAGE_START = {"load": "loading the checkpoint and the data", "fold": "folding and verifying",
                "check": "checking INT8 friendliness per layer and branch", "export": "exporting ONNX",
                "quantize": "calibrating and writing QDQ INT8 files", "build": "building the target's engines",
                "evaluate": "evaluating on the test set", "bench": "timing every engine", "gate": "gating",
                "write": "writing the bundle"}


def _run_stage(ctx: DeployContext, name: str, fn: Callable[[DeployContext], str]) -> None:
    from edgerep.interrupts import raise_if_taken

    if name == "check" and not ctx.opts.run_check:
        return
    raise_if_taken()  # a signal whose exception a finalizer swallowed in the last stage ends the deploy here
    ctx.timings[name] = time.perf_counter()
    ctx.say(name, _STAGE_START[name])
    done = fn(ctx)
    ctx.say(name, f"{done} ({time.perf_counter() - ctx.timings[name]:.1f} s)")


def _deploy(opts: DeployOptions, progress: Progress | None = None) -> DeployResult:
    """The stages of ``STAGE_FUNCTIONS`` over one ``DeployContext``; the bundle is renamed into place
    only when the last one finished."""
    import torch

    from edgerep.bench.accuracy import load_user_metric
    from edgerep.bundle import atomic_bundle, check_output_path

    _check_options(opts)
    out = Path(opts.out) if opts.out else default_out(Path(opts.checkpoint))
    ctx = DeployContext(opts=opts, say=progress or (lambda step, msg: None), out=out)
    ctx.user_metric = load_user_metric(opts.metric) if opts.metric else None  # a bad --metric fails before work
    ctx.t_start = time.perf_counter()
    _seed_everything(opts.seed)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    check_output_path(out, opts.force)  # fail before any work
    outside = [(n, f) for n, f, inside in STAGE_FUNCTIONS if not inside]
    for name, fn in outside:
        _run_stage(ctx, name, fn)
    with atomic_bundle(out, force=opts.force, locked=True) as tmp:
        ctx.tmp = tmp
        for name, fn, inside in STAGE_FUNCTIONS:
            if inside:
                _run_stage(ctx, name, fn)
    return DeployResult(out=out, report=ctx.report, passed=ctx.passed, files=ctx.files)


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


def _durations(marks: dict[str, float], t_start: float) -> dict[str, float]:
    names = list(marks)
    ends = [marks[n] for n in names[1:]] + [time.perf_counter()]
    d = {n: round(e - marks[n], 3) for n, e in zip(names, ends)}
    d["total"] = round(time.perf_counter() - t_start, 3)
    return d


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


def _run_check(model, example, calib_ds, select_ds, tmp: Path, files: dict, fold=None) -> tuple[dict, Any]:
    """The quantization-friendliness check of the fold that ships (``fold``); its HTML page goes into
    the bundle. Its sensitivity figures are measured on the selection set (never the calibration or
    the test set)."""
    from edgerep.quant.check import check_model

    calib = None
    if calib_ds is not None:
        import torch

        calib = [torch.from_numpy(x) for x, _ in calib_ds.batches(32, limit=64)]
    # sensitivity (top-1 when only one layer is INT8) is measured on held-out data, never on calibration data
    rep = check_model(model, example_input=example[:1], calib_batches=calib, eval_batches=select_ds,
                      fold=fold)  # the very fold that ships
    from edgerep.report.check_html import write_check_html

    page = write_check_html(rep, tmp / "check", report_link="../report.html")
    files["check_html"] = str(Path(page).relative_to(tmp))
    d = rep.to_dict()
    return {"summary": d.get("summary"), "layers": d.get("layers")}, rep


__all__ = ["DeployOptions", "DeployResult", "DeployContext", "deploy", "STAGES", "STAGE_FUNCTIONS", "EdgerepError"]
