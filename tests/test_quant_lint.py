"""TensorRT-readiness lint: passes on edgerep's TensorRT QDQ file, fails with reasons on what TensorRT rejects."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from edgerep.errors import EdgerepError
from edgerep.quant.calibrate import ArrayDataset, calibrate
from edgerep.quant.export import export_onnx
from edgerep.quant.lint import lint_errors, lint_tensorrt_qdq
from edgerep.quant.policy import TENSORRT
from edgerep.quant.qdq import QdqConfig, write_qdq


class Residual(nn.Module):
    """conv -> relu -> conv, plus the block input: the Add TensorRT wants Q/DQ on."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a = nn.Conv2d(8, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        y = self.b(torch.relu(self.a(x)))
        y = torch.relu(y + x)
        return self.head(y.mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("lint")
    export_onnx(Residual().eval(), d / "fp32.onnx", (3, 8, 8))
    x = np.random.default_rng(0).standard_normal((32, 3, 8, 8)).astype(np.float32)
    cal = calibrate(d / "fp32.onnx", ArrayDataset(x), method="minmax")
    write_qdq(d / "fp32.onnx", d / "trt.onnx", cal, TENSORRT)
    write_qdq(d / "fp32.onnx", d / "u8.onnx", cal, QdqConfig(activation="u8", weight="s8"))
    return d, x


def test_lint_passes_on_edgerep_tensorrt_output(files):
    d, x = files
    assert lint_tensorrt_qdq(d / "trt.onnx") == []
    model = onnx.load(d / "trt.onnx")
    add = next(n for n in model.graph.node if n.op_type == "Add")
    producers = {o: n for n in model.graph.node for o in n.output}
    assert all(producers[t].op_type == "DequantizeLinear" for t in add.input)  # Q/DQ on both Add inputs
    # and the file still computes the model (simulated QDQ close to FP32)
    from edgerep.engines.onnxruntime_engine import OrtEngine

    ref = OrtEngine(d / "fp32.onnx").run(x)
    q = OrtEngine(d / "trt.onnx", optimization="disable").run(x)
    assert np.abs(q - ref).max() < 0.1 * np.abs(ref).max()


def test_lint_fails_on_uint8_asymmetric_activations(files):
    d, _ = files
    errs = lint_errors(lint_tensorrt_qdq(d / "u8.onnx"))
    assert errs
    rules = {e.rule for e in errs}
    assert {"type", "zero-point"} <= rules
    assert any("uint8" in e.message for e in errs) and any("symmetric" in e.message for e in errs)
    assert any(e.node.startswith("input") for e in errs)  # names the node


def test_lint_catches_wrong_axis_per_channel_activation_missing_add_qdq_and_bad_ops(files, tmp_path):
    d, _ = files
    model = onnx.load(d / "trt.onnx")
    # 1. per-channel weight scale on the wrong axis
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    dq = next(n for n in model.graph.node if n.output[0] == conv.input[1])
    kept = [a for a in dq.attribute if a.name != "axis"]
    del dq.attribute[:]
    dq.attribute.extend(kept + [onnx.helper.make_attribute("axis", 1)])
    # 2. take the Q/DQ off one Add input
    add = next(n for n in model.graph.node if n.op_type == "Add")
    producers = {o: n for n in model.graph.node for o in n.output}
    add.input[1] = producers[producers[add.input[1]].input[0]].input[0]
    # 3. a custom-domain op
    model.graph.node.append(onnx.helper.make_node("MyOp", [model.graph.output[0].name], ["z"], domain="com.me"))
    onnx.save(model, tmp_path / "bad.onnx")
    issues = lint_tensorrt_qdq(tmp_path / "bad.onnx")
    rules = {(i.severity, i.rule) for i in issues}
    assert ("error", "axis") in rules
    assert ("warning", "add-qdq") in rules
    assert ("error", "op") in rules


def test_lint_errors_on_files_without_qdq_and_unreadable(files, tmp_path):
    d, _ = files
    assert any(i.rule == "qdq" for i in lint_errors(lint_tensorrt_qdq(d / "fp32.onnx")))
    (tmp_path / "x.onnx").write_bytes(b"garbage")
    with pytest.raises(EdgerepError, match="x.onnx"):
        lint_tensorrt_qdq(tmp_path / "x.onnx")


def test_nonzero_int8_zero_point_is_an_error(files, tmp_path):
    d, _ = files
    model = onnx.load(d / "trt.onnx")
    q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear")
    init = next(i for i in model.graph.initializer if i.name == q.input[2])
    init.CopyFrom(numpy_helper.from_array(np.array(3, dtype=np.int8), init.name))
    onnx.save(model, tmp_path / "zp.onnx")
    assert any(i.rule == "zero-point" for i in lint_errors(lint_tensorrt_qdq(tmp_path / "zp.onnx")))
