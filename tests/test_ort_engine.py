"""OrtEngine: the Engine protocol, explicit settings recorded, FP32 and INT8 sessions."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgerep.engines.base import Engine
from edgerep.engines.onnxruntime_engine import OrtEngine
from edgerep.errors import EngineError
from edgerep.quant.calibrate import ArrayDataset, calibrate
from edgerep.quant.export import export_onnx
from edgerep.quant.qdq import QdqConfig, write_qdq


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    path = tmp_path_factory.mktemp("ort") / "m.onnx"
    export_onnx(m, path, (3, 12, 12))
    return m, path


def test_fp32_engine_protocol_and_describe(fp32):
    model, path = fp32
    eng = OrtEngine(path, threads=1, optimization="basic", session_config={"session.intra_op.allow_spinning": "0"})
    assert isinstance(eng, Engine)
    assert (eng.name, eng.precision, eng.device) == ("onnxruntime-cpu", "fp32", "cpu")
    x = np.random.default_rng(0).standard_normal((3, 3, 12, 12)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(eng.run(x), model(torch.from_numpy(x)).numpy(), atol=1e-5)
    d = eng.describe()
    assert d["threads"] == 1 and d["optimization"] == "basic"
    assert d["session_config"] == {"session.intra_op.allow_spinning": "0"}
    assert d["providers"] == ["CPUExecutionProvider"]
    assert d["onnxruntime"] and d["cpu_isa"]


def test_int8_engine_runs_fused_and_simulated(fp32, tmp_path):
    _, path = fp32
    x = np.random.default_rng(1).standard_normal((32, 3, 12, 12)).astype(np.float32)
    cal = calibrate(path, ArrayDataset(x), method="minmax")
    write_qdq(path, tmp_path / "q.onnx", cal, QdqConfig(activation="u8", reduce_range=True))
    ref = OrtEngine(path).run(x)
    fused = OrtEngine(tmp_path / "q.onnx", precision="int8").run(x)
    sim = OrtEngine(tmp_path / "q.onnx", precision="int8", optimization="disable").run(x)
    scale = np.abs(ref).max()
    assert np.abs(fused - ref).max() < 0.1 * scale  # quantized, but close
    assert np.abs(fused - ref).max() > 0  # ...and really quantized
    assert np.abs(sim - ref).max() < 0.1 * scale


def test_engine_errors(fp32, tmp_path):
    _, path = fp32
    with pytest.raises(EngineError, match="not found"):
        OrtEngine(tmp_path / "missing.onnx")
    with pytest.raises(EngineError, match="precision"):
        OrtEngine(path, precision="int4")
    with pytest.raises(EngineError, match="optimization"):
        OrtEngine(path, optimization="max")
    with pytest.raises(EngineError, match="providers"):
        OrtEngine(path, providers=["NoSuchExecutionProvider"])
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    with pytest.raises(EngineError, match="cannot load"):
        OrtEngine(tmp_path / "bad.onnx")
