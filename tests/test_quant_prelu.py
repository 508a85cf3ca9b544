"""PReLU in the CPU INT8 files (edgerep.quant.prelu): between two quantized convs with slopes in [0, 1] it runs on
the integers (QLinearMul + Max, its output on its input's grid); elsewhere as Max(x, a x) / Min(x, a x), the same
function bit for bit, where every slope is on one side of 1; never in the TensorRT file."""
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


def _qdq_prelu_model(slopes: np.ndarray, grid_y: tuple[float, int] | None = None):
    """x (float) -> Q -> DQ -> PRelu -> Q -> DQ -> y on u8 grids: x's (0.05, 120); the output's ``grid_y`` (default
    the same)."""
    from onnx import TensorProto, helper, numpy_helper

    c = len(slopes)
    sy, zy = grid_y or (0.05, 120)
    inits = [numpy_helper.from_array(slopes.astype(np.float32).reshape(c, 1, 1), "a"),
             numpy_helper.from_array(np.array(0.05, np.float32), "sx"), numpy_helper.from_array(np.array(120, np.uint8), "zx"),
             numpy_helper.from_array(np.array(sy, np.float32), "sy"), numpy_helper.from_array(np.array(zy, np.uint8), "zy")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
             helper.make_node("PRelu", ["xd", "a"], ["p"], name="act"),
             helper.make_node("QuantizeLinear", ["p", "sy", "zy"], ["pq"]),
             helper.make_node("DequantizeLinear", ["pq", "sy", "zy"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 5, 7])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, 5, 7])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_prelu_on_the_integers_is_the_float_island_on_its_grid():
    """A PReLU between Q and DQ on one grid runs as Max(x_q, Q(depthwise 1x1 conv by the slopes)) on the u8
    tensor: the conv's weights are the slopes themselves (127 at scale a / 127; 0 for a zero slope); the output
    equals the float island's to one integer step (requantization rounding), most values exactly; onnxruntime
    runs the conv as a QLinearConv; no PRelu is left."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    from edgerep.quant.prelu import prelu_int8

    slopes = np.array([0.0, 0.2, 0.37, 1.0])
    m = _qdq_prelu_model(slopes)
    x = np.random.default_rng(0).uniform(-6, 6, (1, 4, 5, 7)).astype(np.float32)
    want = _run(m, x)
    assert prelu_int8(m) == 1
    ops = [n.op_type for n in m.graph.node]
    assert "PRelu" not in ops and ops.count("Conv") == 1 and ops.count("Max") == 1, ops
    conv = next(n for n in m.graph.node if n.op_type == "Conv")
    assert {a.name: a for a in conv.attribute}["group"].i == 4
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    assert "a" not in inits  # the float slopes went with the PRelu
    w = next(v for k, v in inits.items() if k.endswith("slope_weight"))
    ws = next(v for k, v in inits.items() if k.endswith("slope_scale"))
    assert np.allclose(w.reshape(4).astype(np.float32) * ws, slopes, rtol=1e-6, atol=0)
    got = _run(m, x)
    steps = np.abs(got - want) / 0.05
    assert steps.max() <= 1 + 1e-4 and np.mean(steps < 1e-4) > 0.9
    neg = x < -0.5  # the negative side is where the slopes act: a wrong op (Min) or slope would show here
    assert np.abs(got[neg] - want[neg]).max() <= 0.05 + 1e-6
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(_tmp_opt())
    ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    assert "QLinearConv" in [n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node]


def _tmp_opt():
    import tempfile
    from pathlib import Path

    return Path(tempfile.mkdtemp(prefix="edgerep-prelu-")) / "opt.onnx"


@pytest.mark.parametrize("slopes, grid_y", [([0.25, -0.3, 1.0, 0.0], None), ([1.0, 1.5, 3.0, 7.25], None),
                                             ([0.25, 0.5, 0.1, 0.0], (0.03, 80))],
                         ids=["negative slope", "slopes above 1", "two grids"])
def test_prelu_stays_in_float_unless_slopes_in_0_1_and_one_grid(slopes, grid_y):
    from edgerep.quant.prelu import prelu_int8

    m = _qdq_prelu_model(np.array(slopes), grid_y)
    assert prelu_int8(m) == 0 and "PRelu" in [n.op_type for n in m.graph.node]


def test_share_prelu_ranges_only_where_the_output_lies_inside_the_input_range():
    from edgerep.quant.prelu import share_prelu_ranges

    ranges = {"x": (-4.0, 6.0), "y": (-1.0, 6.0)}
    assert share_prelu_ranges(_prelu_model(np.array([0.25, 0.5, 0.0, 1.0])), {"x": ranges["x"], "y": ranges["y"]}) \
        == {"x": (-4.0, 6.0), "y": (-4.0, 6.0)}
    for slopes in ([0.25, -0.3, 1.0, 0.0], [1.0, 1.5, 3.0, 7.25]):  # max(x, a x) can leave x's range
        assert share_prelu_ranges(_prelu_model(np.array(slopes)), ranges) == ranges


def test_cpu_policies_rewrite_prelu_the_tensorrt_file_keeps_it(tmp_path):
    """Every CPU policy (each ISA's candidates) runs PReLU as Max(x, a x) in float; its ``-prelu8`` twin's file has
    no PRelu and no float island left: a PReLU between two quantized convs runs on the integers (a depthwise 1x1
    conv by the slopes + Max, its output on its input's grid), with outputs within a few output steps of the
    policy's own file; the TensorRT file keeps PRelu (TensorRT's native parametric-ReLU layer)."""
    import onnx
    import torch

    from edgerep.quant.calibrate import ArrayDataset, calibrate
    from edgerep.quant.cpu_features import CpuFeatures
    from edgerep.quant.export import export_onnx
    from edgerep.quant.policy import TENSORRT, cpu_candidates
    from edgerep.quant.qdq import write_qdq

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.PReLU(8),
                              torch.nn.Conv2d(8, 3, 3, padding=1)).eval()
    with torch.no_grad():
        net[1].weight.uniform_(0.05, 0.6)
    fp32 = tmp_path / "m.onnx"
    export_onnx(net, fp32, (3, 16, 16))
    x = np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32)
    cal = calibrate(fp32, ArrayDataset(x, name="prelu"), method="minmax", batch_size=4)
    from edgerep.quant.policy import with_int8_prelu

    plain = {p.name: p for isa in (dict(avx2=True), dict(avx2=True, avx512f=True, avx512_vnni=True))
             for p in cpu_candidates(CpuFeatures("x86_64", "t", 2, **isa))}
    assert plain and all(p.qdq.prelu_as_max and not p.qdq.prelu_int8 for p in plain.values())
    policies = {p.name: p for p in with_int8_prelu(list(plain.values())) if p.qdq.prelu_int8}
    assert sorted(policies) == sorted(f"{n}-prelu8" for n in plain)
    assert not TENSORRT.prelu_as_max and not TENSORRT.prelu_int8
    import onnxruntime as ort

    def run(path, pol):
        so = ort.SessionOptions()
        for k, v in pol.session_config.items():
            so.add_session_config_entry(k, v)
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]

    for pol in policies.values():
        path = tmp_path / f"{pol.name}.onnx"
        info = write_qdq(fp32, path, cal, pol.qdq)
        ops = [n.op_type for n in onnx.load(str(path)).graph.node]
        assert info.prelu_int8 == 1 and "PRelu" not in ops and ops.count("Conv") == 3, (pol.name, ops)
        island = tmp_path / f"{pol.name}-float.onnx"  # its twin: the PReLU in float (Mul, Max) on its own grid
        write_qdq(fp32, island, cal, plain[pol.name[:-len("-prelu8")]].qdq)
        a, b = run(path, pol), run(island, pol)
        assert np.abs(a - b).max() <= 0.03 * np.abs(b).max(), pol.name  # 1.6% measured (the output's coarser grid)
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


def test_a_prelu_model_measures_each_cpu_policy_and_its_integer_prelu_twin(tmp_path):
    """quantize_model on a PReLU net (slopes in [0, 1]) measures every CPU policy beside its ``-prelu8`` twin and
    ships one of them with its reason; a net without PReLU gets no twins; a pinned twin is honoured."""
    import torch

    from edgerep.quant.calibrate import ArrayDataset
    from edgerep.quant.cpu_features import parse_cpuinfo
    from edgerep.quant.export import export_onnx
    from edgerep.quant.options import CalibrationOptions, QuantizeOptions, TargetOptions
    from edgerep.quant.pipeline import quantize_model
    from test_quant_cpu_features import VNNI  # a parsed AVX-512 VNNI cpuinfo: the same candidates on any host

    torch.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((48, 3, 16, 16)).astype(np.float32)
    cpu = parse_cpuinfo(VNNI, "x86_64")
    names = {}
    for act in ("prelu", "relu"):
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1),
                                  torch.nn.PReLU(8) if act == "prelu" else torch.nn.ReLU(),
                                  torch.nn.Conv2d(8, 3, 3, padding=1)).eval()
        if act == "prelu":
            with torch.no_grad():
                net[1].weight.uniform_(0.05, 0.6)
        export_onnx(net, tmp_path / f"{act}.onnx", (3, 16, 16))
        res = quantize_model(tmp_path / f"{act}.onnx", ArrayDataset(x[:24]), ArrayDataset(x[24:]), tmp_path / act,
                             QuantizeOptions(TargetOptions(("cpu",), cpu=cpu), CalibrationOptions("minmax")))
        names[act] = [c.policy for c in res.candidates]
        assert res.cpu_policy.name in names[act]
    assert names["prelu"] == ["u8s8", "u8s8-prelu8", "s8s8", "s8s8-prelu8", "u8s8-w7", "u8s8-w7-prelu8"]
    assert names["relu"] == ["u8s8", "s8s8", "u8s8-w7"]
    pinned = quantize_model(tmp_path / "prelu.onnx", ArrayDataset(x[:24]), ArrayDataset(x[24:]), tmp_path / "pin",
                            QuantizeOptions(TargetOptions(("cpu",), cpu_policies=("u8s8-prelu8",), cpu=cpu),
                                            CalibrationOptions("minmax")))
    assert pinned.cpu_policy.name == "u8s8-prelu8"
