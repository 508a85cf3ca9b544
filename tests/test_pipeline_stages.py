"""Each deploy stage run alone on saved inputs: one run of the demo saves every stage's result to disk
(pickled; an onnxruntime session is rebuilt from its ONNX file on load), then each stage function is
called by itself with its declared needs read back from those files, and its result is checked."""
from __future__ import annotations

import copyreg
import json
import pickle
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from edgerep.engines.onnxruntime_engine import OrtEngine
from edgerep.pipeline import DEPLOY_STAGES, STAGES, DeployOptions
from edgerep.stage_graph import StageClock, run_stages

DEMO = Path(__file__).resolve().parents[1] / "examples" / "checkpoints" / "repvgg_digits.pt"
BY_NAME = {s.name: s for s in DEPLOY_STAGES}


def _rebuild_ort(path, precision, threads, optimization, session_config, providers):
    """An onnxruntime session cannot be pickled: it is saved as its ONNX file and settings, and rebuilt here."""
    return OrtEngine(path, precision=precision, threads=threads, optimization=optimization,
                     session_config=session_config, providers=providers)


def _reduce_ort(e: OrtEngine):
    return _rebuild_ort, (str(e.path), e.precision, e.threads, e.optimization, dict(e.session_config),
                          list(e.providers))


def _save(path: Path, obj) -> None:
    with open(path, "wb") as f:
        p = pickle.Pickler(f)
        p.dispatch_table = {**copyreg.dispatch_table, OrtEngine: _reduce_ort}
        p.dump(obj)


def _load(path: Path):
    with open(path, "rb") as f:
        return pickle.load(f)


def _opts(root: Path) -> DeployOptions:
    return DeployOptions(checkpoint=DEMO, out=root / "never", calib_samples=32, eval_samples=48, bench_seconds=0.1,
                         bench_warmup=2, cache_dir=root / "cache")


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """One run of every stage (the deploy's own runner, into a bundle directory that stays), each result saved."""
    root = tmp_path_factory.mktemp("stages")
    opts = _opts(root)
    torch.set_num_threads(1)  # as conftest sets it for every test (this fixture may run before that does)

    @contextmanager
    def bundle():
        (root / "bundle").mkdir()
        yield root / "bundle"

    clock = StageClock()
    context = {"opts": opts, "say": lambda step, msg: None, "user_metric": None, "out": opts.out, "clock": clock}
    # each result saved as its stage ends: what a later stage gets is what that stage gave, before anyone else ran
    run_stages(DEPLOY_STAGES, context, bundle, lambda step, msg: None, clock,
               after=lambda s, result: _save(root / f"{s.gives}.pkl", result))
    shutil.copytree(root / "bundle", root / "pristine")  # the bundle directory as the run left it
    assert not opts.out.exists()
    return root


def _inputs(stage, root: Path, said: list) -> dict:
    """The stage's declared needs: the run context, and earlier results read back from their saved files."""
    context = {"opts": _opts(root), "say": lambda step, msg: said.append((step, msg)), "user_metric": None,
               "out": root / "never", "bundle_dir": root / "bundle", "clock": StageClock(marks={stage.name: 0.0})}
    return {n: context[n] if n in context else _load(root / f"{n}.pkl") for n in stage.needs}


def _sections(result) -> str | None:
    """What a result puts into the report (its report dicts and engine parts), as JSON."""
    if result is None:
        return None
    parts = {k: getattr(result, k) for k in ("report", "baseline", "engines", "settings", "baseline_latency", "host",
                                             "verdicts", "files", "tensorrt_qdq") if hasattr(result, k)}
    if isinstance(parts.get("engines"), tuple):  # build's entries: their rows
        parts["engines"] = [(e.key, e.row) for e in parts["engines"]]
    return json.dumps(parts, default=str, sort_keys=True)


def _ran(build):
    return {e.key for e in build.engines if e.engine is not None}


def _check_load(out, saved, i):
    assert out.sha256 == saved.sha256 and out.input_shape == saved.input_shape == (1, 16, 16)
    assert {r: len(d) for r, d in out.splits.sets.items()} == {r: len(d) for r, d in saved.splits.sets.items()}
    assert {k: v for k, v in out.report.items() if k != "created_unix"} == \
        {k: v for k, v in saved.report.items() if k != "created_unix"}


def _check_fold(out, saved, i):
    assert torch.equal(out.example, saved.example) and np.array_equal(out.real_x, saved.real_x)
    assert out.report["provenance"] == saved.report["provenance"] and out.report["max_rel_error"] < 1e-5
    with torch.no_grad():
        x = torch.from_numpy(out.real_x)
        assert torch.allclose(out.module(x), i["load"].loaded.model(x), atol=1e-4)


def _check_check(out, saved, i):
    assert out.files == saved.files and (i["bundle_dir"] / out.files["check_html"]).is_file()
    assert out.report["summary"] == saved.report["summary"] and len(out.report["layers"]) == len(saved.report["layers"])


def _check_export(out, saved, i):
    assert out.files == saved.files and out.fp32_onnx.is_file() and out.folded_checkpoint.is_file()
    x = i["fold"].real_x
    with torch.no_grad():
        ref = i["fold"].module(torch.from_numpy(x)).numpy()
    assert np.allclose(OrtEngine(out.fp32_onnx).run(x), ref, atol=1e-4)


def _check_quantize(out, saved, i):
    assert set(out.result.files) == set(saved.result.files) and out.files == saved.files
    assert all(Path(p).is_file() for p in out.result.files.values())
    assert out.report["calibration"]["method"] == saved.report["calibration"]["method"]


def _check_build(out, saved, i):
    assert [e.key for e in out.engines] == [e.key for e in saved.engines] and _ran(out) == _ran(saved)
    x = i["fold"].real_x
    with torch.no_grad():
        ref = i["fold"].module(torch.from_numpy(x)).numpy()
    for e in out.engines:
        if e.engine is not None and e.row["precision"] == "fp32":
            assert np.allclose(e.engine.run(x), ref, atol=1e-3), e.key


def _check_evaluate(out, saved, i):
    assert set(out.engines) == _ran(i["build"]) and out.baseline == saved.baseline
    assert np.array_equal(out.reference, saved.reference) and out.samples == saved.samples
    for k, part in out.engines.items():
        assert part["accuracy"]["value"] == saved.engines[k]["accuracy"]["value"], k


def _check_bench(out, saved, i):
    assert set(out.engines) == _ran(i["build"]) and out.files == {"loadgen_logs": "loadgen"}
    assert out.baseline_latency["p50_ms"] > 0 and all(p["latency"]["p50_ms"] > 0 for p in out.engines.values())


def _check_gate(out, saved, i):
    assert out.passed is saved.passed is True and out.verdicts == saved.verdicts
    assert set(out.verdicts) == {e.key for e in i["build"].engines if e.row["status"] != "skipped"}


def _check_write(out, saved, i):
    bundle = i["bundle_dir"]
    assert json.loads((bundle / "report.json").read_text()) == json.loads(json.dumps(out.report, default=str))
    assert all((bundle / rel).exists() for rel in out.files.values()) and set(out.files) == set(saved.files)
    rows = out.report["engines"]
    for e, row in zip(i["build"].engines, rows):  # each row carries what evaluate and bench found for that key
        if e.engine is not None:
            assert row["accuracy"] == i["evaluate"].engines[e.key]["accuracy"]
            assert row["latency"]["p50_ms"] == i["bench"].engines[e.key]["latency"]["p50_ms"]
            assert row["verdict"] == i["gate"].verdicts[e.key]
    assert set(out.report["timings_s"]) == {"write", "total"} and out.report["check"]["measured"]


CHECKS = {"load": _check_load, "fold": _check_fold, "check": _check_check, "export": _check_export,
          "quantize": _check_quantize, "build": _check_build, "evaluate": _check_evaluate, "bench": _check_bench,
          "gate": _check_gate, "write": _check_write}


def test_every_stage_has_a_check():
    assert list(CHECKS) == list(STAGES)


@pytest.mark.parametrize("name", STAGES)
def test_each_stage_runs_alone_from_saved_inputs(name, saved):
    stage = BY_NAME[name]
    shutil.rmtree(saved / "bundle")
    shutil.copytree(saved / "pristine", saved / "bundle")  # the paths in the saved results point into it
    said: list = []
    inputs = _inputs(stage, saved, said)
    before = {n: _sections(v) for n, v in inputs.items() if n in BY_NAME}
    out = stage.fn(**inputs)
    assert {n: _sections(inputs[n]) for n in before} == before  # no stage changes what an earlier one gave
    assert type(out).__name__ == stage.returns
    CHECKS[name](out, _load(saved / f"{stage.gives}.pkl"), inputs)
    assert all(step == name for step, _ in said), said  # its progress lines carry its own name


def test_quantize_judges_every_choice_without_the_unfolded_model(saved, tmp_path):
    """The selection set's reference is the folded FP32 file (equal to the unfolded model within the fold's
    verified error): the unfolded model, a quarter of the cost at 224x224, runs only on the test set."""
    from dataclasses import replace

    from edgerep.quant.pipeline import FOLDED_REFERENCE

    stage = BY_NAME["quantize"]
    shutil.rmtree(saved / "bundle")
    shutil.copytree(saved / "pristine", saved / "bundle")
    inputs = _inputs(stage, saved, [])
    inputs["opts"] = replace(inputs["opts"], cache_dir=tmp_path / "cold")  # nothing cached: a run would show

    def refuse(*a, **k):
        raise AssertionError("the unfolded model ran in the quantize stage")

    inputs["load"].loaded.model.forward = refuse
    out = stage.fn(**inputs)
    assert out.report["reference"]["source"] == FOLDED_REFERENCE and out.report["reference"]["onnx_fp32_drop"] == 0


def test_a_second_evaluate_runs_no_torch_model(saved):
    """Evaluate run again on the fixture's cache reads the unfolded reference and every engine, the folded model in
    torch too (keyed by checkpoint, weights and source: ``torch_identity``): nothing is recomputed."""
    stage = BY_NAME["evaluate"]
    shutil.rmtree(saved / "bundle")
    shutil.copytree(saved / "pristine", saved / "bundle")
    said: list = []
    inputs = _inputs(stage, saved, said)

    def refuse(*a, **k):
        raise AssertionError("a torch model ran in a second evaluate")

    inputs["load"].loaded.model.forward = refuse
    torch_engines = [e.engine for e in inputs["build"].engines if e.engine is not None and e.engine.name == "torch-cpu"]
    assert torch_engines
    for eng in torch_engines:
        eng.model.forward = refuse
    out = stage.fn(**inputs)
    first = _load(saved / f"{stage.gives}.pkl")
    np.testing.assert_array_equal(out.reference, first.reference)
    assert out.engines == first.engines  # every engine's accuracy and drop, as the first run measured them
    lines = [m for _, m in said]
    assert any(m.startswith("unfolded reference: ") and "read from the cache" in m for m in lines), lines
    assert any(m.startswith("torch-cpu/fp32: ") and "read from the outputs cache" in m for m in lines), lines


def test_a_second_check_reads_the_check_cache(saved, tmp_path, monkeypatch):
    """The check run again with the same checkpoint, code, data and settings reads its report and plots from the
    ``check`` cache folder: the same page, byte for byte, and no check pass. Other code or other calibration
    inputs run the check."""
    from dataclasses import replace

    import edgerep.quant.check as check_mod

    stage = BY_NAME["check"]
    shutil.rmtree(saved / "bundle")
    shutil.copytree(saved / "pristine", saved / "bundle")
    said: list = []
    inputs = _inputs(stage, saved, said)
    inputs["opts"] = replace(inputs["opts"], cache_dir=tmp_path / "cache")
    real, calls = check_mod.check_model, []
    monkeypatch.setattr(check_mod, "check_model", lambda *a, **k: calls.append(1) or real(*a, **k))

    def page(bundle: Path) -> dict:
        return {f.name: f.read_bytes() for f in sorted((bundle / "check").iterdir())}

    first = stage.fn(**inputs)
    assert len(calls) == 1 and list((tmp_path / "cache" / "check").glob("check-*.json"))
    shown = page(inputs["bundle_dir"])
    assert any(n.endswith(".png") for n in shown)
    shutil.rmtree(inputs["bundle_dir"] / "check")

    def redraw(*a, **k):
        raise AssertionError("a plot was drawn again")

    with monkeypatch.context() as m:
        for name in ("plot_sqnr_bars", "plot_weights", "plot_attribution"):
            m.setattr(f"edgerep.report.check_html.{name}", redraw)
        again = stage.fn(**inputs)
    assert len(calls) == 1, "the check ran again"
    assert any("read from the check cache" in m for _, m in said), said
    assert again.report == first.report and page(inputs["bundle_dir"]) == shown
    assert again.check_report.to_dict() == first.check_report.to_dict()

    import edgerep.code_identity as ci

    digest = ci.source_digest
    monkeypatch.setattr(ci, "source_digest", lambda m: "edited" + digest(m))  # an upgrade of the model's code
    stage.fn(**inputs)
    assert len(calls) == 2  # checked again
    monkeypatch.setattr(ci, "source_digest", digest)
    import edgerep.pipeline as pipeline

    batch_for = pipeline.batch_for
    monkeypatch.setattr(pipeline, "batch_for", lambda shape, **k: batch_for(shape, **k) if "budget" in k else 7)
    stage.fn(**inputs)  # the calibration inputs in other batches: another key
    assert len(calls) == 3
