"""Plan sidecars, refusal of plans from another TensorRT/GPU, timing-cache paths, build settings, FP16 ONNX."""
from __future__ import annotations

import hashlib
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from edgerep.engines import plan_cache as pc
from edgerep.engines import tensorrt_engine as te
from edgerep.engines.profiles import load_profile
from edgerep.errors import EdgerepError, EngineError


def _sidecar(**kw) -> pc.PlanSidecar:
    base = dict(tensorrt_version="10.3.0", gpu_name="Orin (nvgpu)", compute_capability="8.7",
                onnx_sha256="ab" * 32, precision="int8", device="cuda:0")
    base.update(kw)
    return pc.PlanSidecar(**base)


def test_plan_and_sidecar_paths(tmp_path):
    p = pc.plan_path(tmp_path, "/x/model.int8.tensorrt.onnx", "int8", "dla:0")
    assert p == tmp_path / "model.int8.dla0.plan"
    assert pc.plan_path(tmp_path, "m.onnx", "fp16", "cuda:0").name == "m.fp16.cuda0.plan"
    assert pc.plan_path(tmp_path, "model.int8.trt.onnx", "int8", "cuda:0").name == "model.int8.cuda0.plan"
    assert pc.sidecar_path(p).name == "model.int8.dla0.plan.json"


def test_sidecar_round_trip_has_every_key(tmp_path):
    plan = tmp_path / "m.int8.cuda0.plan"
    s = _sidecar(batch_max=8, input_shape=[3, 32, 32], dla_core=None)
    path = pc.write_sidecar(plan, s)
    data = json.loads(path.read_text())
    assert set(data) == set(pc.SIDECAR_KEYS)
    assert data["tensorrt_version"] == "10.3.0" and data["compute_capability"] == "8.7"
    assert data["onnx_sha256"] == "ab" * 32 and data["gpu_name"] == "Orin (nvgpu)"
    back = pc.read_sidecar(plan)
    assert back == s


def test_sidecar_missing_corrupt_or_incomplete_names_the_file(tmp_path):
    plan = tmp_path / "m.plan"
    with pytest.raises(EngineError, match=r"m\.plan\.json: plan sidecar missing"):
        pc.read_sidecar(plan)
    pc.sidecar_path(plan).write_text("{not json")
    with pytest.raises(EngineError, match="unreadable"):
        pc.read_sidecar(plan)
    pc.sidecar_path(plan).write_text(json.dumps({"tensorrt_version": "10.3.0"}))
    with pytest.raises(EngineError, match="lacks field 'gpu_name'"):
        pc.read_sidecar(plan)


@pytest.mark.parametrize("here, words", [
    (dict(tensorrt_version="10.7.0", gpu_name="Orin (nvgpu)", compute_capability="8.7"),
     ["TensorRT 10.3.0", "TensorRT 10.7.0"]),
    (dict(tensorrt_version="10.3.0", gpu_name="NVIDIA H100", compute_capability="9.0"),
     ["compute capability 8.7", "this GPU is 9.0 (NVIDIA H100)"]),
    (dict(tensorrt_version="10.3.0", gpu_name="Orin NX", compute_capability="8.7"),
     ["built on Orin (nvgpu)", "this GPU is Orin NX"]),
])
def test_plan_from_another_tensorrt_or_gpu_is_refused(tmp_path, here, words):
    plan = tmp_path / "m.int8.cuda0.plan"
    with pytest.raises(pc.StalePlanError) as e:
        pc.ensure_compatible(plan, _sidecar(), **here)
    line = e.value.one_line()
    assert isinstance(e.value, EdgerepError) and e.value.exit_code == 2 and "\n" not in line
    assert str(plan) in line and "version tag does not match" in line and "--rebuild" in line
    for w in words:
        assert w in line


def test_matching_plan_is_accepted():
    s = _sidecar()
    assert pc.compatibility_problems(s, tensorrt_version="10.3.0", gpu_name="Orin (nvgpu)",
                                     compute_capability="8.7") == []
    pc.ensure_compatible("m.plan", s, tensorrt_version="10.3.0", gpu_name="Orin (nvgpu)", compute_capability="8.7")


def test_timing_cache_path_is_per_version_and_gpu(tmp_path, monkeypatch):
    a = pc.timing_cache_path("10.3.0", "Orin (nvgpu)", "8.7", tmp_path)
    assert a == tmp_path / "timing-trt10.3.0-sm87-orin-nvgpu.cache"
    assert pc.timing_cache_path("10.7.0", "Orin (nvgpu)", "8.7", tmp_path) != a
    assert pc.timing_cache_path("10.3.0", "NVIDIA H100 80GB HBM3", "9.0", tmp_path) != a
    monkeypatch.setenv("EDGEREP_CACHE", str(tmp_path / "c"))
    assert pc.timing_cache_path("10.3.0", "x", "8.7").parent == tmp_path / "c" / "tensorrt"
    monkeypatch.delenv("EDGEREP_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert pc.cache_root() == tmp_path / "xdg" / "edgerep"
    assert pc.load_timing_cache(a) == b""
    pc.atomic_write(a, b"\x01\x02")
    assert pc.load_timing_cache(a) == b"\x01\x02" and not list(a.parent.glob("*.tmp"))


def test_sha256_file_streams_in_blocks(tmp_path):
    """The one streaming hash (plan sidecars, manifests, calibration keys): blocks smaller than the file."""
    from edgerep.hashing import sha256_file

    f = tmp_path / "x.onnx"
    f.write_bytes(b"edgerep" * 1000)
    assert sha256_file(f, chunk=100) == sha256_file(f) == hashlib.sha256(b"edgerep" * 1000).hexdigest()


def test_build_settings_from_profiles():
    agx = load_profile("jetson-agx-orin")
    gpu = next(e for e in agx.engines if e.backend == "tensorrt" and e.device == "cuda:0")
    dla = next(e for e in agx.engines if e.device == "dla:0")
    s = te.BuildSettings.from_profile(agx, gpu)
    assert (s.batch_min, s.batch_opt, s.batch_max) == (1, 1, 32) and s.dla_core is None
    assert s.workspace_mb == 4096 and s.opt_level == 3 and s.precision == "int8"
    d = te.BuildSettings.from_profile(agx, dla)
    assert d.dla_core == 0 and d.gpu_fallback and (d.batch_min, d.batch_max) == (1, 1)  # DLA: static shapes


def test_flags_per_tensorrt_major():
    """EXPLICIT_BATCH only before 10, no precision flags on 11 (strongly typed only), FP16+INT8 for Q/DQ on 10."""
    fake = SimpleNamespace(NetworkDefinitionCreationFlag=SimpleNamespace(EXPLICIT_BATCH=0, STRONGLY_TYPED=1),
                           BuilderFlag=SimpleNamespace(FP16="FP16", INT8="INT8"))
    assert te.network_flags(fake, 8, False) == 1
    assert te.network_flags(fake, 10, False) == 0 and te.network_flags(fake, 10, True) == 2
    assert te.network_flags(fake, 11, True) == 0
    assert te.precision_flags(fake, 10, "int8", False) == ["FP16", "INT8"]
    assert te.precision_flags(fake, 10, "fp16", False) == ["FP16"]
    assert te.precision_flags(fake, 10, "fp32", False) == []
    assert te.precision_flags(fake, 10, "fp32", True) == ["FP16"]  # DLA has no FP32
    assert te.precision_flags(fake, 11, "int8", False) == [] and te.precision_flags(fake, 11, "fp16", True) == []
    assert te.BuildSettings("fp16").strongly_typed(11) and not te.BuildSettings("fp16").strongly_typed(10)


@pytest.fixture(scope="module")
def fp32_onnx(tmp_path_factory):
    from edgerep.quant.export import export_onnx

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    d = tmp_path_factory.mktemp("fp16")
    export_onnx(net, d / "m.onnx", (1, 3, 16, 16))
    return net, d / "m.onnx"


def test_fp16_onnx_for_tensorrt11(fp32_onnx, tmp_path):
    import onnx
    from onnx import TensorProto
    from onnx.reference import ReferenceEvaluator

    net, src = fp32_onnx
    dst = te.fp16_onnx(src, tmp_path / "m.fp16.onnx")
    m = onnx.load(str(dst))
    assert m.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT  # callers still feed float32
    assert m.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert all(i.data_type == TensorProto.FLOAT16 for i in m.graph.initializer if i.data_type != TensorProto.INT64)
    assert [n.op_type for n in m.graph.node][0] == "Cast" and m.graph.node[-1].op_type == "Cast"
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    y = ReferenceEvaluator(m).run(None, {m.graph.input[0].name: x})[0]
    ref = net(torch.from_numpy(x)).detach().numpy()
    assert y.dtype == np.float32 and y.shape == ref.shape
    err = np.abs(y - ref).max()
    assert 0 < err < 1e-2  # really FP16 arithmetic, and close


def test_fp16_onnx_refuses_qdq(fp32_onnx, tmp_path):
    import onnx
    from onnx import helper

    _, src = fp32_onnx
    m = onnx.load(str(src))
    m.graph.node.insert(0, helper.make_node("QuantizeLinear", ["input", "s"], ["q"]))
    onnx.save(m, str(tmp_path / "q.onnx"))
    with pytest.raises(EngineError, match="Q/DQ"):
        te.fp16_onnx(tmp_path / "q.onnx", tmp_path / "out.onnx")


@pytest.mark.skipif(te.tensorrt_status()[0], reason="checks behaviour where TensorRT is absent")
def test_build_or_reuse_without_tensorrt_says_why(fp32_onnx, tmp_path):
    _, src = fp32_onnx
    with pytest.raises(EngineError, match="TensorRT unavailable"):
        te.build_or_reuse(src, tmp_path, te.BuildSettings("fp16"))
    assert not list(tmp_path.glob("*.plan"))


def test_qdq_files_tensorrt_would_reject_are_refused_before_building(fp32_onnx, tmp_path):
    pytest.importorskip("edgerep.quant.lint", reason="the INT8 linter is not in this checkout")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    _, src = fp32_onnx

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.it = iter([{"input": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(src), str(tmp_path / "u8.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)  # asymmetric uint8: CPU-only
    quantize_static(str(src), str(tmp_path / "s8.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False})
    with pytest.raises(EngineError) as e:
        te.check_tensorrt_qdq(tmp_path / "u8.onnx")
    line = e.value.one_line()
    assert "u8.onnx: not a TensorRT-ready QDQ file" in line and "zero point" in line and "\n" not in line
    te.check_tensorrt_qdq(tmp_path / "s8.onnx")  # symmetric int8, float bias: accepted
