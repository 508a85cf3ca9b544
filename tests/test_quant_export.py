"""ONNX export: named I/O, opset, checker-clean, dynamic batch, onnxruntime FP32 == torch."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from edgerep import fold_model
from edgerep.blocks.repvgg import RepVGGBlock
from edgerep.engines.onnxruntime_engine import OrtEngine
from edgerep.errors import EdgerepError
from edgerep.quant.export import export_onnx


def _model() -> nn.Module:
    m = nn.Sequential(RepVGGBlock(3, 8), RepVGGBlock(8, 8), RepVGGBlock(8, 16, stride=2),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5)).eval()
    with torch.no_grad():
        for bn in m.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.running_var.uniform_(0.5, 2.0)
                bn.running_mean.uniform_(-0.5, 0.5)
    return fold_model(m)


def test_export_is_clean_named_and_matches_torch(tmp_path):
    model = _model()
    rep = export_onnx(model, tmp_path / "m.onnx", (3, 16, 16))
    proto = onnx.load(tmp_path / "m.onnx")
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    assert proto.opset_import[0].version >= 17
    assert not any(n.op_type in ("BatchNormalization", "Identity") for n in proto.graph.node)
    assert rep.max_abs_error <= 1e-4
    x = torch.randn(5, 3, 16, 16)  # dynamic batch: 5 was never exported
    got = OrtEngine(tmp_path / "m.onnx").run(x.numpy())
    with torch.no_grad():
        want = model(x).numpy()
    assert got.shape == (5, 5)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_static_batch_and_bad_arguments(tmp_path):
    model = _model()
    export_onnx(model, tmp_path / "s.onnx", (2, 3, 16, 16), dynamic_batch=False)
    dims = onnx.load(tmp_path / "s.onnx").graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [2, 3, 16, 16]
    with pytest.raises(EdgerepError, match="opset"):
        export_onnx(model, tmp_path / "o.onnx", (3, 16, 16), opset=11)
    with pytest.raises(EdgerepError, match="input_shape"):
        export_onnx(model, tmp_path / "o.onnx", (16, 16))
