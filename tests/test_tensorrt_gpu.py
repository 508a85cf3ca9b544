"""TensorRT for real: plans built, cached, refused and rebuilt, and their outputs checked against torch.

These run wherever real TensorRT imports and a CUDA GPU exists; elsewhere they are skipped with the reason.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from edgerep.engines import plan_cache as pc
from edgerep.engines import tensorrt_engine as te
from edgerep.engines.factory import build_engines
from edgerep.hashing import sha256_file
from edgerep.engines.profiles import load_profile

TRT_OK, TRT_WHY = te.tensorrt_status()
pytestmark = [pytest.mark.tensorrt, pytest.mark.gpu, pytest.mark.skipif(not TRT_OK, reason=TRT_WHY or "no TensorRT")]


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from edgerep.quant.export import export_onnx

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()
    d = tmp_path_factory.mktemp("trt")
    export_onnx(net, d / "m.onnx", (1, 3, 32, 32))

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.it = iter([{"input": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(8)])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(d / "m.onnx"), str(d / "m.int8.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                   "QuantizeBias": False})  # TensorRT: symmetric, zero point 0, float bias
    return net, d / "m.onnx", d / "m.int8.onnx"


@pytest.mark.parametrize("precision, tol", [("fp32", 5e-3), ("fp16", 2e-2), ("int8", 0.25)])  # fp32 may use TF32
def test_plan_builds_runs_and_is_cached(model_files, tmp_path, precision, tol):
    net, fp32, int8 = model_files
    src = int8 if precision == "int8" else fp32
    settings = te.BuildSettings(precision, batch_min=1, batch_opt=1, batch_max=8, workspace_mb=256)
    r = te.build_or_reuse(src, tmp_path, settings, timing_cache_dir=tmp_path / "tc")
    assert not r.reused and r.plan.is_file()
    side = json.loads(r.sidecar_path.read_text())
    assert side["tensorrt_version"] == te.trt_version() and side["onnx_sha256"] == sha256_file(src)
    assert side["compute_capability"] == te.gpu_info()[1]
    assert (tmp_path / "tc").is_dir() and any((tmp_path / "tc").iterdir())  # timing cache persisted
    eng = te.TensorRTEngine(r.plan)
    x = np.random.default_rng(1).standard_normal((11, 3, 32, 32)).astype(np.float32)  # > max batch: chunks
    y = eng.run(x)
    ref = net(torch.from_numpy(x)).detach().numpy()
    assert y.dtype == np.float32 and y.shape == ref.shape
    assert np.abs(y - ref).max() < tol * max(1.0, np.abs(ref).max())
    np.testing.assert_array_equal(eng.run(x[:1]), eng.run(x[:1]))
    assert te.build_or_reuse(src, tmp_path, settings, timing_cache_dir=tmp_path / "tc").reused


def test_plan_from_other_tensorrt_is_refused_then_rebuilt(model_files, tmp_path):
    _, fp32, _ = model_files
    s = te.BuildSettings("fp16", batch_max=4)
    r = te.build_or_reuse(fp32, tmp_path, s)
    side = json.loads(r.sidecar_path.read_text())
    side["tensorrt_version"] = "8.5.2.2"
    r.sidecar_path.write_text(json.dumps(side))
    with pytest.raises(pc.StalePlanError, match="built with TensorRT 8.5.2.2"):
        te.TensorRTEngine(r.plan)
    with pytest.raises(pc.StalePlanError):
        te.build_or_reuse(fp32, tmp_path, s)
    again = te.build_or_reuse(fp32, tmp_path, s, rebuild=True)
    assert not again.reused and again.sidecar.tensorrt_version == te.trt_version()
    te.TensorRTEngine(again.plan).run(np.zeros((1, 3, 32, 32), np.float32))


def test_factory_builds_tensorrt_for_dgpu(model_files, tmp_path):
    net, fp32, int8 = model_files
    res = build_engines(load_profile("dgpu"), fp32_onnx=fp32, int8_onnx={"tensorrt": int8}, torch_model=net,
                        out_dir=tmp_path)
    by = {r.spec.key: r for r in res}
    assert by["tensorrt-int8-cuda0"].status == "built" and by["tensorrt-int8-cuda0"].artifact.suffix == ".plan"
    assert by["tensorrt-fp16-cuda0"].status == "built"
    res2 = build_engines(load_profile("dgpu"), fp32_onnx=fp32, int8_onnx={"tensorrt": int8}, torch_model=net,
                         out_dir=tmp_path)
    assert {r.spec.key: r.status for r in res2}["tensorrt-int8-cuda0"] == "cached"
