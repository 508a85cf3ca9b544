"""One contract, every engine: shape, float32 out, batch 1 and N, determinism, describe(), input errors.

Benchmarking and evaluation never branch on the backend, so every engine must behave the same
way on these points. TorchEngine and OrtEngine run here; TensorRT and CUDA variants join where
the hardware exists and are skipped with the reason elsewhere.
"""
from __future__ import annotations

import importlib.util
import json
from typing import Callable

import numpy as np
import pytest
import torch

from edgerep.engines.base import Engine
from edgerep.engines.torch_engine import TorchEngine, cuda_available
from edgerep.errors import EdgerepError

SHAPE = (3, 16, 16)
CLASSES = 10
HAS_ORT_ENGINE = importlib.util.find_spec("edgerep.engines.onnxruntime_engine") is not None


def _model() -> torch.nn.Module:
    """A small folded RepVGG-style net (the shape of what edgerep deploys)."""
    from edgerep.blocks import RepVGGBlock
    from edgerep.fold.model import fold_model

    torch.manual_seed(0)
    net = torch.nn.Sequential(RepVGGBlock(3, 8, stride=2), RepVGGBlock(8, 8), RepVGGBlock(8, 16, stride=2),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, CLASSES))
    for m in net.modules():  # non-trivial BN statistics so the fold is not an identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return fold_model(net.eval())


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    from edgerep.quant.export import export_onnx

    net = _model()
    d = tmp_path_factory.mktemp("contract")
    export_onnx(net, d / "m.onnx", (1, *SHAPE))
    return net, d / "m.onnx"


def _qdq(onnx_path):
    """A QDQ INT8 copy (symmetric, per-channel weights) by onnxruntime's static quantizer, made once."""
    out = onnx_path.with_name("m.int8.onnx")
    if not out.exists():
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

        class Reader(CalibrationDataReader):
            def __init__(self):
                rng = np.random.default_rng(0)
                self.it = iter([{"input": rng.standard_normal((1, *SHAPE)).astype(np.float32)} for _ in range(8)])

            def get_next(self):
                return next(self.it, None)

        quantize_static(str(onnx_path), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return out


def _ort(precision: str = "fp32") -> Callable:
    def make(net, onnx_path):
        from edgerep.engines.onnxruntime_engine import OrtEngine

        path = _qdq(onnx_path) if precision == "int8" else onnx_path
        return OrtEngine(path, precision=precision, threads=1)

    return make


def _trt(precision: str) -> Callable:
    def make(net, onnx_path):
        from edgerep.engines import tensorrt_engine as te

        r = te.build_or_reuse(onnx_path, onnx_path.parent, te.BuildSettings(precision, batch_max=8))
        return te.TensorRTEngine(r.plan)

    return make


def _trt_status() -> tuple[bool, str]:
    from edgerep.engines.tensorrt_engine import tensorrt_status

    return tensorrt_status()


no_cuda = pytest.mark.skipif(not cuda_available(), reason="needs a CUDA device")
no_ort = pytest.mark.skipif(not HAS_ORT_ENGINE, reason="edgerep.engines.onnxruntime_engine not written yet")
no_trt = pytest.mark.skipif(not _trt_status()[0], reason=_trt_status()[1] or "no TensorRT")

ENGINES = [
    pytest.param((lambda net, p: TorchEngine(net), 1e-5), id="torch-cpu-fp32"),
    pytest.param((lambda net, p: TorchEngine(net, precision="fp16"), 2e-2), id="torch-cpu-fp16"),
    pytest.param((_ort("fp32"), 1e-4), id="onnxruntime-cpu-fp32", marks=no_ort),
    pytest.param((_ort("int8"), 0.06), id="onnxruntime-cpu-int8", marks=no_ort),
    pytest.param((lambda net, p: TorchEngine(net, device="cuda"), 1e-3), id="torch-cuda-fp32",
                 marks=[no_cuda, pytest.mark.gpu]),
    pytest.param((lambda net, p: TorchEngine(net, device="cuda", precision="fp16"), 2e-2), id="torch-cuda-fp16",
                 marks=[no_cuda, pytest.mark.gpu]),
    pytest.param((_trt("fp32"), 5e-3), id="tensorrt-fp32", marks=[no_trt, pytest.mark.tensorrt]),
    pytest.param((_trt("fp16"), 2e-2), id="tensorrt-fp16", marks=[no_trt, pytest.mark.tensorrt]),
]


@pytest.fixture(params=ENGINES)
def case(request, artifacts):
    make, tol = request.param
    net, onnx_path = artifacts
    return make(net, onnx_path), net, tol


def _x(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *SHAPE)).astype(np.float32)


def test_is_an_engine_with_the_protocol_fields(case):
    eng, _, _ = case
    assert isinstance(eng, Engine)
    assert isinstance(eng.name, str) and eng.name
    assert eng.precision in ("fp32", "fp16", "int8", "mixed")
    assert eng.device == "cpu" or eng.device.startswith(("cuda:", "dla:"))


@pytest.mark.parametrize("n", [1, 5])
def test_shape_dtype_and_agreement_with_torch(case, n):
    eng, net, tol = case
    x = _x(n)
    y = eng.run(x)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32 and y.shape == (n, CLASSES)
    ref = net(torch.from_numpy(x)).detach().numpy()
    assert np.abs(y - ref).max() <= tol * max(1.0, np.abs(ref).max())


def test_batch_n_equals_n_batches_of_one(case):
    eng, _, tol = case
    x = _x(4, seed=1)
    whole = eng.run(x)
    rows = np.concatenate([eng.run(x[i:i + 1]) for i in range(4)])
    np.testing.assert_allclose(whole, rows, rtol=0, atol=max(1e-5, tol / 4) * max(1.0, np.abs(rows).max()))


def test_deterministic(case):
    eng, _, _ = case
    x = _x(3, seed=2)
    np.testing.assert_array_equal(eng.run(x), eng.run(x))


def test_describe(case):
    eng, _, _ = case
    d = eng.describe()
    assert isinstance(d, dict)
    required = {"name", "precision", "device"}
    assert required <= set(d), f"describe() lacks keys: {sorted(required - set(d))}"
    assert d["name"] == eng.name and d["precision"] == eng.precision and d["device"] == eng.device
    json.dumps(d)  # reports store it as JSON


@pytest.mark.parametrize("bad", [(1, 4, 16, 16), (3, 16, 16), (1, 3, 16)], ids=["channels", "3d", "rank3"])
def test_wrong_input_shape_is_one_line_edgerep_error(case, bad):
    eng, _, _ = case
    with pytest.raises(EdgerepError) as e:
        eng.run(np.zeros(bad, np.float32))
    assert "\n" not in str(e.value) and "\n" not in e.value.one_line()
    assert str(bad[-1]) in str(e.value) or "shape" in str(e.value)
