"""PReLU -> Max(x, a x) / Min(x, a x) in the CPU INT8 files (edgerep.quant.prelu): the same function bit for bit,
only where every slope is on one side of 1, in every CPU policy's file and never in the TensorRT file."""
from __future__ import annotations

import numpy as np
import pytest


def _prelu_model(slopes: np.ndarray):
    from onnx import TensorProto, helper, numpy_helper

    c = len(slopes)
    g = helper.make_graph([helper.make_node("PRelu", ["x", "a"], ["y"], name="act")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 5, 7])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, 5, 7])],
                          [numpy_helper.from_array(slopes.astype(np.float32).reshape(c, 1, 1), "a")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _run(model, x):
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("slopes, op", [([0.25, -0.3, 1.0, 0.0], "Max"), ([1.0, 1.5, 3.0, 7.25], "Min")])
def test_prelu_rewrite_is_the_same_function_bit_for_bit(slopes, op):
    from edgerep.quant.prelu import prelu_as_max

    m = _prelu_model(np.array(slopes))
    x = np.random.default_rng(0).standard_normal((1, 4, 5, 7)).astype(np.float32) * 3
    x[0, :, 0, 0] = 0.0
    want = _run(m, x)
    assert prelu_as_max(m) == 1
    assert [n.op_type for n in m.graph.node] == ["Mul", op]
    assert np.array_equal(_run(m, x), want)


def test_prelu_with_slopes_on_both_sides_of_one_is_left_alone():
    from edgerep.quant.prelu import prelu_as_max

    m = _prelu_model(np.array([0.5, 2.0, 0.1, 0.2]))
    assert prelu_as_max(m) == 0 and [n.op_type for n in m.graph.node] == ["PRelu"]


def test_cpu_policies_rewrite_prelu_the_tensorrt_file_keeps_it(tmp_path):
    """Every CPU policy's QDQ file (each ISA's candidates) of a PReLU net has no PRelu left and the same outputs as
    that file with PRelu put back; the TensorRT file keeps PRelu (TensorRT's native parametric-ReLU layer)."""
    import onnx
    import onnxruntime as ort
    import torch
    from onnx import helper

    from edgerep.quant.calibrate import calibrate
    from edgerep.quant.cpu_features import CpuFeatures
    from edgerep.quant.export import export_onnx
    from edgerep.quant.policy import TENSORRT, cpu_candidates
    from edgerep.quant.qdq import write_qdq
    from edgerep.quant.calibrate import ArrayDataset

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.PReLU(8),
                              torch.nn.Conv2d(8, 3, 3, padding=1)).eval()
    with torch.no_grad():
        net[1].weight.uniform_(0.05, 0.6)
    fp32 = tmp_path / "m.onnx"
    export_onnx(net, fp32, (3, 16, 16))
    x = np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32)
    cal = calibrate(fp32, ArrayDataset(x, name="prelu"), method="minmax", batch_size=4)
    policies = {p.name: p for isa in (dict(avx2=True), dict(avx2=True, avx512f=True, avx512_vnni=True))
                for p in cpu_candidates(CpuFeatures("x86_64", "t", 2, **isa))}
    assert policies and all(p.qdq.prelu_as_max for p in policies.values()) and not TENSORRT.prelu_as_max
    for pol in policies.values():
        path = tmp_path / f"{pol.name}.onnx"
        info = write_qdq(fp32, path, cal, pol.qdq)
        m = onnx.load(str(path))
        assert info.prelu_rewritten == 1 and "PRelu" not in [n.op_type for n in m.graph.node]
        mul = next(n for n in m.graph.node if n.op_type == "Mul")
        mx = next(n for n in m.graph.node if n.op_type == "Max")
        back = [n for n in m.graph.node if n is not mul and n is not mx]
        back.append(helper.make_node("PRelu", list(mul.input), list(mx.output)))
        m2 = onnx.load(str(path))
        del m2.graph.node[:]
        m2.graph.node.extend(back)
        from edgerep.quant.qdq import toposort

        toposort(m2)
        so = ort.SessionOptions()
        for k, v in pol.session_config.items():
            so.add_session_config_entry(k, v)
        run = [ort.InferenceSession(mm.SerializeToString(), so, providers=["CPUExecutionProvider"])
               for mm in (m, m2)]
        a, b = (s.run(None, {"input": x})[0] for s in run)
        assert np.array_equal(a, b), pol.name
    write_qdq(fp32, tmp_path / "trt.onnx", cal, TENSORRT)
    assert "PRelu" in [n.op_type for n in onnx.load(str(tmp_path / "trt.onnx")).graph.node]


def test_fp32_engine_runs_prelu_as_max_the_int8_engine_runs_its_file(tmp_path):
    """onnxruntime's FP32 engine runs the exported file's PReLUs as Max (the same rewrite the CPU INT8 files
    carry), so INT8/FP32 latency compares the same activation kernels; outputs equal the file run as it is, the
    file on disk is untouched, and describe() says how many were rewritten. Other precisions run their file as is."""
    import onnx

    from edgerep.engines.onnxruntime_engine import OrtEngine

    m = _prelu_model(np.array([0.25, -0.3, 1.0, 0.0]))
    path = tmp_path / "m.onnx"
    onnx.save(m, path)
    before = path.read_bytes()
    x = np.random.default_rng(1).standard_normal((1, 4, 5, 7)).astype(np.float32)
    fp32 = OrtEngine(path, precision="fp32", threads=1)
    assert fp32.describe()["prelu_as_max"] == 1
    assert np.array_equal(fp32.run(x), _run(m, x))
    assert path.read_bytes() == before
    assert OrtEngine(path, precision="int8", threads=1).describe()["prelu_as_max"] == 0
    assert OrtEngine(path, precision="fp32", threads=1, prelu_as_max=False).describe()["prelu_as_max"] == 0
