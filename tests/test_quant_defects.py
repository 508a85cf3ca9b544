"""Quantization defects found by an expert read (issue: honest accuracy), each pinned by a test:
bias correction on quantized layers only, Q/DQ on residual Adds only, MatMul per-channel axis in the
TensorRT lint, the TensorRT stand-in's session options, a "mixed" model that is not INT8, and
selection without labels."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from edgerep.quant.calibrate import ArrayDataset, calibrate
from edgerep.quant.cpu_features import parse_cpuinfo
from edgerep.quant.export import export_onnx
from edgerep.quant.lint import lint_tensorrt_qdq
from edgerep.quant.policy import TENSORRT
from edgerep.quant.qdq import QdqConfig, quantizable_nodes, residual_adds, write_qdq
from test_quant_cpu_features import AVX2, VNNI


class _ConvMatMul(nn.Module):
    """conv -> relu -> conv (+ residual) -> pool -> x @ W + b (MatMul + bias Add, as a 3-D Linear exports)."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        a = torch.relu(self.c1(x))
        b = torch.relu(self.c2(a) + a)  # residual Add: two activations
        v = b.mean((2, 3)).unsqueeze(1)  # (N, 1, 8): a 3-D Linear exports as MatMul + Add
        return self.fc(v).squeeze(1)


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("defects")
    torch.manual_seed(0)
    m = _ConvMatMul().eval()
    export_onnx(m, d / "fp32.onnx", (1, 8, 8))
    x = np.random.default_rng(0).standard_normal((64, 1, 8, 8)).astype(np.float32)
    return d, calibrate(d / "fp32.onnx", ArrayDataset(x), method="minmax"), x


def _biases(path) -> dict[str, np.ndarray]:
    m = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    return {n.name: inits[n.input[2]] for n in m.graph.node if n.op_type in ("Conv", "Gemm") and len(n.input) > 2
            and n.input[2] in inits}


def test_bias_correction_touches_only_the_layers_that_are_quantized(model_files):
    d, cal, _ = model_files
    nodes = quantizable_nodes(onnx.load(str(d / "fp32.onnx")))
    first = next(n for n in nodes if "c1" in n or n.endswith("Conv"))
    cfg = QdqConfig(quantize_bias=False, bias_correction=True)
    info = write_qdq(d / "fp32.onnx", d / "only.onnx", cal, cfg, only_nodes=[first])
    assert list(info.bias_corrected) == [first] and info.bias_corrected[first] > 0, info.bias_corrected
    before, after = _biases(d / "fp32.onnx"), _biases(d / "only.onnx")
    assert set(after) == set(before) and len(before) == 2, (before.keys(), after.keys())  # c1, c2
    # the quantized layer's bias moved by the correction it reports; every float layer keeps its bias
    assert np.abs(after[first] - before[first]).max() == pytest.approx(info.bias_corrected[first], rel=0.01)  # float32 bias
    for name, b in before.items():
        if name != first:
            assert np.array_equal(after[name], b), name
    every = write_qdq(d / "fp32.onnx", d / "all.onnx", cal, cfg)
    assert set(every.bias_corrected) == set(before), every.bias_corrected  # all quantized: all corrected
    moved = _biases(d / "all.onnx")
    assert all(np.abs(moved[n] - before[n]).max() == pytest.approx(c, rel=0.01) and c > 0
               for n, c in every.bias_corrected.items()), every.bias_corrected


def test_qdq_goes_on_residual_adds_only_not_on_a_matmul_bias_add(model_files):
    from edgerep.quant.qdq import _add_qdq_on_adds

    d, cal, _ = model_files
    fp32 = onnx.load(str(d / "fp32.onnx"))
    adds = [n for n in fp32.graph.node if n.op_type == "Add"]
    res = residual_adds(fp32)
    assert len(adds) == 2 and [n.name for n in res] == ["/Add"]  # the residual one, not /fc/Add (MatMul bias)
    assert _add_qdq_on_adds(fp32, cal) == 2  # both inputs of the residual Add; none on the bias Add
    producers = {o: n for n in fp32.graph.node for o in n.output}
    bias_add = next(n for n in fp32.graph.node if n.name == "/fc/Add")
    assert all(producers.get(t) is None or producers[t].op_type == "MatMul" for t in bias_add.input)
    resid = next(n for n in fp32.graph.node if n.name == "/Add")
    assert all(producers[t].op_type == "DequantizeLinear" for t in resid.input)


def test_tensorrt_lint_expects_the_output_axis_for_matmul_weights(model_files, tmp_path):
    d, cal, _ = model_files
    write_qdq(d / "fp32.onnx", tmp_path / "trt.onnx", cal, TENSORRT)
    q = onnx.load(str(tmp_path / "trt.onnx"))
    assert not [i for i in lint_tensorrt_qdq(tmp_path / "trt.onnx") if i.rule == "axis"]  # edgerep's own file passes
    mm = next(n for n in q.graph.node if n.op_type == "MatMul")
    dq = next(n for n in q.graph.node if n.output[0] == mm.input[1])
    axis = next(a for a in dq.attribute if a.name == "axis")
    assert axis.i == 1  # (K, N) weights: N output channels on axis 1
    axis.i = 0
    onnx.save(q, str(tmp_path / "bad.onnx"))
    assert [i for i in lint_tensorrt_qdq(tmp_path / "bad.onnx") if i.rule == "axis"]


def test_tensorrt_standin_gets_a_non_saturating_session_where_the_isa_saturates():
    from edgerep.engines.factory import standin_session_config

    cfg, note = standin_session_config(parse_cpuinfo(AVX2, "x86_64"))
    assert cfg == {"session.x64quantprecision": "1"} and "saturate" in note
    assert standin_session_config(parse_cpuinfo(VNNI, "x86_64")) == (None, "")


def test_more_than_half_the_layers_in_float_is_an_int8_failure(model_files, tmp_path):
    """A budget no INT8 layer can meet: every layer ends in float, which is reported as INT8 failing."""
    from edgerep.quant.pipeline import CalibrationOptions, JudgeOptions, QuantizeOptions, TargetOptions, quantize_model

    d, _, x = model_files
    res = quantize_model(d / "fp32.onnx", ArrayDataset(x[:32]), ArrayDataset(x[32:]), tmp_path,
                         QuantizeOptions(TargetOptions(("cpu",)), CalibrationOptions("minmax", equalize=False),
                                         JudgeOptions(max_drop=0.0)))
    assert res.int8_failure and "not an INT8 model" in res.int8_failure
    assert len(res.excluded_nodes) * 2 > len(quantizable_nodes(onnx.load(str(d / "fp32.onnx"))))
    assert not res.candidates[-1].accepted and res.to_dict()["int8_failure"] == res.int8_failure


def test_selection_without_labels_scores_output_fidelity_not_top1_agreement(model_files, tmp_path):
    from edgerep.engines.onnxruntime_engine import OrtEngine
    from edgerep.quant.pipeline import CalibrationOptions, QuantizeOptions, TargetOptions, cosine_loss, quantize_model

    d, _, x = model_files
    res = quantize_model(d / "fp32.onnx", ArrayDataset(x[:32]), ArrayDataset(x[32:]), tmp_path,
                         QuantizeOptions(TargetOptions(("cpu",)), CalibrationOptions("minmax", equalize=False)))
    assert res.reference["measure"].startswith("100 * (1 - cosine)") and res.reference["labelled"] is False
    chosen = next(c for c in res.candidates if c.policy == res.cpu_policy.name)
    ref = OrtEngine(d / "fp32.onnx").run(x[32:])
    out = OrtEngine(res.files["cpu"], session_config=res.cpu_policy.session_config).run(x[32:])
    assert chosen.top1 is None and chosen.drop == pytest.approx(cosine_loss(out, ref, centered=True), abs=1e-3)
