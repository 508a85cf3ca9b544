"""The TensorRT findings fixed with the fleet (plans are now built on the devices): plan reuse compares
the batch range and GPU fallback, the device index comes from the profile, DLA placement is read from
the engine inspector, and the QDQ lint is never skipped silently."""
from __future__ import annotations

import dataclasses
import json
import sys

import pytest

from edgerep.engines import plan_cache as pc
from edgerep.engines import tensorrt_engine as te
from edgerep.engines.dla_placement import dla_placement
from edgerep.engines.profiles import load_profile
from edgerep.errors import EngineError


def _sidecar_for(settings: te.BuildSettings, tmp_path, **kw) -> pc.PlanSidecar:
    """A sidecar as build_plan writes it for ``settings``, read back from disk."""
    side = pc.PlanSidecar(tensorrt_version="10.3.0", gpu_name="Orin (nvgpu)", compute_capability="8.7",
                          onnx_sha256="ab" * 32, precision=settings.precision, device=settings.device,
                          dla_core=settings.dla_core, gpu_fallback=settings.gpu_fallback and settings.dla_core is not None,
                          workspace_mb=settings.workspace_mb, opt_level=settings.opt_level,
                          batch_min=settings.batch_min, batch_opt=settings.batch_opt, batch_max=settings.batch_max,
                          **kw)
    plan = tmp_path / "model.int8.cuda0.plan"
    pc.write_sidecar(plan, side)
    return pc.read_sidecar(plan)


def _gpu_int8(profile):
    return next(e for e in profile.engines if e.backend == "tensorrt" and e.device == "cuda:0" and e.precision == "int8")


def test_a_profile_batch_change_makes_the_old_plan_stale(tmp_path):
    agx = load_profile("jetson-agx-orin")
    old = te.BuildSettings.from_profile(agx, _gpu_int8(agx))
    side = _sidecar_for(old, tmp_path)
    assert pc.settings_problems(side, old.reuse_settings()) == []
    bigger = dataclasses.replace(agx, batch_sizes=[4, 64])  # the profile's batches changed
    new = te.BuildSettings.from_profile(bigger, _gpu_int8(bigger))
    problems = pc.settings_problems(side, new.reuse_settings())
    assert any(p.startswith("batch_max 32 -> 64") for p in problems)
    assert any(p.startswith("batch_opt 1 -> 4") for p in problems)
    static = _sidecar_for(old, tmp_path, static_batch=True)  # a static-batch ONNX fixes the batch itself
    assert pc.settings_problems(static, new.reuse_settings()) == []


def test_gpu_fallback_is_part_of_plan_reuse(tmp_path):
    agx = load_profile("jetson-agx-orin")
    dla = te.BuildSettings.from_profile(agx, next(e for e in agx.engines if e.device == "dla:0"))
    side = _sidecar_for(dla, tmp_path)
    assert side.gpu_fallback is True and pc.settings_problems(side, dla.reuse_settings()) == []
    strict = dataclasses.replace(dla, gpu_fallback=False)
    assert pc.settings_problems(side, strict.reuse_settings()) == ["gpu_fallback True -> False"]


def test_device_index_comes_from_the_profile(tmp_path):
    prof = tmp_path / "two-gpus.toml"
    prof.write_text('name = "two-gpus"\ndescription = "second GPU"\n[[engines]]\nbackend = "tensorrt"\n'
                    'precision = "fp16"\ndevice = "cuda:1"\n')
    p = load_profile(prof)
    s = te.BuildSettings.from_profile(p, p.engines[0])
    assert s.gpu_index == 1 and s.reuse_settings()["device"] == "cuda:1"
    assert te.cuda_index("cuda:3") == 3 and te.cuda_index("dla:1") == 0 and te.cuda_index("cuda") == 0


def test_dla_placement_names_gpu_fallbacks():
    detailed = {"Layers": [
        {"Name": "input to nvm", "LayerType": "Reformat"},
        {"Name": "{ForeignNode[/stage0/conv/Conv.../stage3/relu/Relu]}", "LayerType": "DLA"},
        {"Name": "output from nvm", "LayerType": "Reformat"},
        {"Name": "output copy finish", "LayerType": "NoOp"},
        {"Name": "/head/GlobalAveragePool", "LayerType": "Reduce"},
        {"Name": "/head/fc/Gemm", "LayerType": "CaskGemmConvolution"}]}
    p = dla_placement(json.dumps(detailed))
    assert len(p.dla_subgraphs) == 1 and p.gpu_layers == ["/head/GlobalAveragePool", "/head/fc/Gemm"]
    assert p.summary().startswith("2 layer(s) fell back to the GPU: /head/GlobalAveragePool")
    names_only = {"Layers": ["Reformatting CopyNode for Input Tensor 0 to conv1", "conv1 + relu1", "fc"]}
    none = dla_placement(json.dumps(names_only))
    assert none.dla_subgraphs == [] and none.gpu_layers == ["conv1 + relu1", "fc"]  # build_plan refuses this


def test_qdq_lint_that_cannot_import_is_an_error_not_a_skip(tmp_path, monkeypatch):
    onnx = tmp_path / "model.int8.trt.onnx"
    onnx.write_bytes(b"not read: the lint is missing")
    monkeypatch.setitem(sys.modules, "edgerep.quant.lint", None)  # `from edgerep.quant.lint import` -> ImportError
    with pytest.raises(EngineError, match="QDQ lint cannot run"):
        te.check_tensorrt_qdq(onnx)
