"""`edgerep deploy` as a library call: fold -> verify -> check -> export -> calibrate -> quantize
-> build -> bench -> evaluate -> gate, written into a bundle directory atomically.

Every step records what it did into one report dict (the content of report.json); the CLI
only parses flags, shows progress and prints the final table.
"""
from __future__ import annotations

import hashlib
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

STEPS = ("load", "fold", "check", "export", "quantize", "build", "bench", "evaluate", "gate", "write")
FOLD_TOLERANCE = 1e-4  # max relative error a fold may show in float32 before deploy refuses it


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


@dataclass
class DeployResult:
    out: Path
    report: dict
    passed: bool | None  # None when no gate threshold was given
    files: dict[str, str] = field(default_factory=dict)


Progress = Callable[[str, str], None]  # (step, message)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


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

    return resolve_splits(data=_data_spec(opts, meta, plan.recipe), calib=plan.spec, val=opts.val_data,
                          test=opts.eval_data, calib_split=plan.split, meta=meta, allow_overlap=opts.allow_overlap,
                          say=say)


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


def _deploy(opts: DeployOptions, progress: Progress | None = None) -> DeployResult:
    import torch

    from edgerep.bundle import atomic_bundle, check_output_path

    say = progress or (lambda step, msg: None)
    _check_options(opts)
    from edgerep.bench.accuracy import load_user_metric

    early_metric = load_user_metric(opts.metric) if opts.metric else None  # a bad --metric fails before any work
    t_start = time.perf_counter()
    _seed_everything(opts.seed)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    ckpt_path = Path(opts.checkpoint)
    out = Path(opts.out) if opts.out else default_out(ckpt_path)
    check_output_path(out, opts.force)  # fail before any work
    timings: dict[str, float] = {}

    def step(name: str):
        timings[name] = time.perf_counter()
        return name

    # ---- load ----------------------------------------------------------------------
    say(step("load"), f"loading {ckpt_path}")
    from edgerep.checkpoint import load_checkpoint

    loaded = load_checkpoint(ckpt_path, **opts.load)
    model, meta = loaded.model, loaded.meta  # eval mode already (.eval() on a raw .pt2 program raises)
    input_shape = tuple(int(d) for d in meta.input_shape)
    from edgerep.engines.profiles import load_profile

    profile = load_profile(opts.target)
    check_engines_available(profile)

    plan = resolve_calibration(opts, meta)
    if plan.recipe is not None and plan.recipe.preprocessing:  # flags (applied at load) win over the recipe
        from edgerep.checkpoint import apply_preprocessing

        given = (opts.load.get("preprocessing") or {})
        meta = apply_preprocessing(meta, {**plan.recipe.preprocessing, **given},
                                   source="flags+recipe" if given else "recipe", where=plan.recipe.source)
    splits = resolve_data(opts, meta, plan, say=lambda msg: say("load", msg))
    calib_ds, select_ds, test_ds = splits.calibration, splits.selection, splits.test
    for ds in (calib_ds, select_ds, test_ds):
        if ds.note and ds.note not in splits.notes:
            splits.notes.append(ds.note)
            say("load", ds.note)
    warnings_out: list[str] = []
    if not test_ds.has_labels:
        msg = ("no labelled test data (--data / --eval-data): no accuracy is measured"
               + ("; the gate fails with 'no accuracy measured' (pass --no-accuracy-gate for a latency-only run)"
                  if opts.accuracy_gate else " (latency-only run: --no-accuracy-gate)"))
        warnings_out.append(msg)
        say("load", "warning: " + msg)
    if not calib_ds.has_labels and calib_ds.name == "synthetic":
        msg = "calibrating on synthetic inputs: INT8 ranges, and so INT8 accuracy, are NOT representative"
        warnings_out.append(msg)
        say("load", "warning: " + msg)
    calib_samples = plan.samples
    asked = opts.calib_samples is not None or plan.recipe is not None
    if asked and len(calib_ds) < calib_samples:  # proceed: a small set still calibrates, but say so loudly
        msg = (f"calibration data {splits.sources['calibration'].spec} has {len(calib_ds)} samples, fewer than the "
               f"{calib_samples} asked (--calib-samples or recipe); calibrating on all {len(calib_ds)}")
        warnings_out.append(msg)
        say("load", "warning: " + msg)
        warnings.warn(msg, UserWarning, stacklevel=2)
    _check_input_shape(model, input_shape, ckpt_path)
    select_limit = opts.eval_samples or SELECTION_CAP
    from edgerep.checkpoint import preprocessing_of

    report: dict[str, Any] = {
        "schema": "edgerep.report/1",
        "warnings": warnings_out,
        "kind": "deploy",
        "created_unix": time.time(),
        "model": {
            "name": ckpt_path.stem, "checkpoint": str(ckpt_path), "sha256": sha256_file(ckpt_path),
            "arch": meta.arch, "input_shape": list(input_shape), "source_format": loaded.source_format,
            "classes": len(meta.class_names or []) or None, "dataset": meta.dataset,
        },
        "target": {"name": profile.name, "description": getattr(profile, "description", "")},
        "preprocessing": preprocessing_of(meta),
        "splits": splits.to_report(),
        "data": {"calibration": splits.sources["calibration"].spec, "calibration_split": plan.split,
                 "calibration_recipe": plan.recipe.source if plan.recipe else None, "calibration_method": plan.method,
                 "selection": splits.sources["selection"].spec, "evaluation": splits.sources["test"].spec,
                 "calibration_samples": min(calib_samples, len(calib_ds)),
                 "selection_samples": min(select_limit, len(select_ds)),
                 "evaluation_samples": min(opts.eval_samples or len(test_ds), len(test_ds)),
                 "labelled": bool(test_ds.has_labels)},
    }
    if splits.overlap:
        warnings_out.append("calibration, selection and test sets share samples (--allow-overlap): "
                            "accuracy figures are optimistic")

    # ---- fold + verify ---------------------------------------------------------------
    say(step("fold"), "folding and verifying")
    from edgerep.model_path import fold_loaded

    example = torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(opts.seed))
    real_x = next(iter(select_ds.batches(16, limit=16)))[0]  # real inputs, never the test set's
    fold_result = fold_loaded(loaded, example=example, tolerance=FOLD_TOLERANCE,
                              extra_inputs=[torch.from_numpy(real_x)])
    folded, graph_report, fold_rep = fold_result.module, fold_result.graph, fold_result.verify
    fold_rep.seconds = time.perf_counter() - timings["fold"]
    report["fold"] = fold_rep.to_dict()
    report["fold"]["folders"] = fold_result.counts()
    report["fold"]["provenance"] = [r.to_dict() for r in fold_result.provenance]  # folded layer -> train-time
    if graph_report is not None:  # regions the traced-graph folder collapsed or left unfolded, with reasons
        report["fold"]["graph"] = {k: graph_report[k] for k in ("folded_regions", "refused_regions", "flops_before",
                                                                "flops_after", "notes") if k in graph_report}

    reference = TorchReference(model)
    with atomic_bundle(out, force=opts.force, locked=True) as tmp:
        files: dict[str, str] = {}

        # ---- check ---------------------------------------------------------------------
        if opts.run_check:
            say(step("check"), "checking INT8 friendliness per layer and branch")
            report["check"] = _run_check(model, example, calib_ds, select_ds, tmp, files, fold_result)

        # ---- export --------------------------------------------------------------------
        say(step("export"), "exporting ONNX")
        from edgerep.checkpoint import save_checkpoint
        from edgerep.quant.export import export_onnx

        folded_meta = meta.__class__.from_dict({**meta.to_dict(), "folded": True})
        save_checkpoint(tmp / "model.folded.pt", folded, folded_meta)
        files["folded_checkpoint"] = "model.folded.pt"
        fp32_onnx = tmp / "model.fp32.onnx"
        export_onnx(folded, fp32_onnx, input_shape, dynamic_batch=True)
        files["fp32_onnx"] = fp32_onnx.name

        # ---- calibrate + quantize --------------------------------------------------------
        say(step("quantize"), "calibrating and writing QDQ INT8 files")
        import shutil

        from edgerep.quant.pipeline import quantize_model

        cache_dir = Path(opts.cache_dir) if opts.cache_dir else default_cache_dir()

        targets = tuple(getattr(profile, "quant_targets", None) or ("cpu", "tensorrt"))
        # every choice is made on the selection set; the test set is read only after this
        qres = quantize_model(
            fp32_onnx, calib_ds, select_ds, tmp, targets=targets, method=plan.method,
            max_drop=opts.max_drop if opts.max_drop is not None else 0.5, reference=reference,
            cache_dir=cache_dir, calib_samples=calib_samples, eval_samples=select_limit,
            threads=opts.threads, progress=lambda msg: say("quantize", msg))
        qdict = qres.to_dict()
        report["quantization"] = qdict
        for policy, path in qres.files.items():
            files[f"int8_onnx_{policy}"] = Path(path).name
        cache_file = (qdict.get("calibration") or {}).get("cache_path")
        if cache_file and Path(cache_file).is_file():  # the ranges travel with the bundle
            (tmp / "calibration").mkdir(exist_ok=True)
            shutil.copy2(cache_file, tmp / "calibration" / Path(cache_file).name)
            files["calibration_cache"] = f"calibration/{Path(cache_file).name}"

        # ---- build engines -------------------------------------------------------------------
        say(step("build"), f"building engines for target {profile.name}")
        from edgerep.engines.factory import build_engines

        built = build_engines(profile, fp32_onnx=fp32_onnx, int8_onnx=dict(qres.files), torch_model=folded,
                              out_dir=tmp / "engines", ort_session_config=_cpu_session_config(qres),
                              progress=lambda msg: say("build", msg))

        # ---- bench + evaluate -------------------------------------------------------------
        from edgerep.bench.accuracy import collect_outputs, score
        from edgerep.bench.entry import engine_entry
        from edgerep.bench.latency import host_info
        from edgerep.bench.noise import host_load
        from edgerep.bench.scenarios import ScenarioSettings, run_scenario
        from edgerep.engines.torch_engine import TorchEngine

        user_metric = early_metric
        x_bench = np.random.default_rng(opts.seed).standard_normal((opts.batch, *input_shape)).astype(np.float32)
        if opts.batch <= real_x.shape[0]:
            x_bench = np.ascontiguousarray(real_x[:opts.batch])
        baseline_engine = TorchEngine(model, device="cpu", precision="fp32")
        eval_limit = opts.eval_samples
        eval_ds = test_ds
        say(step("evaluate"), f"evaluating the unfolded FP32 reference on the test set ({len(test_ds)} samples)")
        ref_out, labels = collect_outputs(baseline_engine, eval_ds.batches(64, limit=eval_limit))
        classifier = ref_out is not None and ref_out.ndim == 2
        say(step("bench"), "timing the unfolded torch baseline")
        from edgerep.engines.base import unfolded_name

        bench_settings = ScenarioSettings(scenario="single-stream", min_seconds=opts.bench_seconds,
                                          warmup=opts.bench_warmup, log_dir=tmp / "loadgen" / "single-stream")
        report["bench"] = {"scenario": "single-stream", "batch_sizes": [opts.batch],
                           "min_seconds": opts.bench_seconds, "load_before": host_load()}
        base_entry = {"name": unfolded_name(baseline_engine.name), "precision": "fp32", "device": "cpu", "status": "built",
                      "describe": baseline_engine.describe(),
                      "latency": run_scenario(baseline_engine, x_bench, bench_settings, batch=opts.batch,
                                              log_name=f"torch-cpu-unfolded-fp32-b{opts.batch}")}
        if ref_out is not None:
            base_entry["accuracy"] = score(ref_out, labels, ref_out, user_metric, classifier).to_dict()
            if classifier:
                base_entry["accuracy"]["classes"] = int(ref_out.shape[1])
        report["baseline"] = base_entry
        engines_out = []
        for b in built:
            spec = b.actual or b.spec
            entry = {"name": f"{spec.backend}-{spec.device_kind}", "precision": spec.precision,
                     "device": spec.device, "status": b.status, "reason": b.reason or "",
                     "requested": b.spec.key, "build_seconds": round(b.seconds, 3),
                     "artifact": _relative(b.artifact, tmp)}
            if b.engine is not None:
                entry.update(engine_entry(
                    b.engine, x_bench, eval_ds=eval_ds, eval_limit=eval_limit, labels=labels, reference=ref_out,
                    ref_top1=(base_entry.get("accuracy") or {}).get("top1"), base_p50=base_entry["latency"]["p50_ms"],
                    user_metric=user_metric, classifier=classifier, say=say, scenario=bench_settings))
            engines_out.append(entry)
        report["engines"] = engines_out
        report["host"] = host_info()
        report["bench"]["load_after"] = host_load()
        if (tmp / "loadgen").is_dir():
            files["loadgen_logs"] = "loadgen"

        # ---- gate -------------------------------------------------------------------------
        say(step("gate"), "gating")
        passed = None
        if opts.max_drop is not None:
            from edgerep.bench.gate import GateThresholds, evaluate_gate

            th = GateThresholds(max_drop=opts.max_drop if opts.accuracy_gate else None,
                                require_accuracy=opts.accuracy_gate)
            g = evaluate_gate(report, th)
            report["gate"] = g.to_dict()
            passed = g.passed
            failed_engines = {c.engine for c in g.failures}
            for e in engines_out:
                if e.get("status") in ("built", "cached", "fallback"):
                    e["verdict"] = "fail" if f"{e['name']}/{e['precision']}" in failed_engines else "pass"

        # ---- write ------------------------------------------------------------------------
        say(step("write"), "writing the bundle")
        report["timings_s"] = _durations(timings, t_start)
        splits.write(tmp / "splits.json")
        files["splits"] = "splits.json"
        report = relative_to_bundle(report, tmp)  # no path into the temporary folder survives the rename
        manifest = {
            "schema": "edgerep.manifest/1",
            "versions": _versions(),
            "inputs": {"checkpoint": str(ckpt_path), "checkpoint_sha256": report["model"]["sha256"],
                       "calibration_data": splits.sources["calibration"].spec,
                       "calibration_fingerprint": calib_ds.fingerprint(),
                       "selection_data": splits.sources["selection"].spec,
                       "selection_fingerprint": select_ds.fingerprint(),
                       "evaluation_data": splits.sources["test"].spec,
                       "evaluation_fingerprint": test_ds.fingerprint()},
            "preprocessing": report["preprocessing"],
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items()},
            "seed": opts.seed,
            "target_profile": _profile_dict(profile),
            "cpu_policy": qdict.get("cpu_policy"),
            "files": files,
            # what `edgerep diff` compares when only report.json and manifest.json are kept
            "sha256": {rel: sha256_file(tmp / rel) for rel in files.values() if (tmp / rel).is_file()},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        from edgerep.report.render import write_reports

        for kind, p in write_reports(report, tmp).items():
            files[f"report_{kind}"] = p.name
        manifest["files"] = files
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    return DeployResult(out=out, report=report, passed=passed, files=files)


def _check_options(opts: DeployOptions) -> None:
    """Refuse numeric options that cannot work, naming the flag, before any work."""
    if opts.calib_samples is not None and opts.calib_samples < 1:
        raise EdgerepError(f"--calib-samples must be positive, got {opts.calib_samples}")
    if opts.batch < 1:
        raise EdgerepError(f"--batch must be positive, got {opts.batch}")
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


def _check_input_shape(model, input_shape: tuple, ckpt_path: Path) -> None:
    """One forward pass on a zero input: a meta.input_shape that does not fit the model is a user-fixable error."""
    import torch

    from edgerep.errors import CheckpointError

    try:
        with torch.no_grad():
            model(torch.zeros((1, *input_shape)))
    except (RuntimeError, ValueError, IndexError) as e:
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise CheckpointError(f"{ckpt_path}: meta.input_shape {tuple(input_shape)} does not fit the model ({first})",
                              hint="fix meta.input_shape (C, H, W) or pass the checkpoint's real --arch") from None


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


def _run_check(model, example, calib_ds, select_ds, tmp: Path, files: dict, fold=None) -> dict:
    """The quantization-friendliness check of the fold that ships (``fold``); its HTML page goes into
    the bundle. Its sensitivity figures are measured on the selection set (never the calibration or
    the test set)."""
    from edgerep.quant.check import check_model

    calib = None
    if calib_ds is not None:
        import torch

        calib = [torch.from_numpy(x) for x, _ in calib_ds.batches(32, limit=64)]
    # sensitivity (top-1 when only one layer is INT8) is measured on held-out data, never on calibration data
    rep = check_model(model, example_input=example[:1], calib_batches=calib, eval_batches=select_ds, sensitivity=True,
                      fold=fold)  # the very fold that ships
    from edgerep.report.check_html import write_check_html

    page = write_check_html(rep, tmp / "check", report_link="../report.html")
    files["check_html"] = str(Path(page).relative_to(tmp))
    d = rep.to_dict()
    return {"summary": d.get("summary"), "layers": d.get("layers")}


__all__ = ["DeployOptions", "DeployResult", "deploy", "STEPS", "EdgerepError"]
