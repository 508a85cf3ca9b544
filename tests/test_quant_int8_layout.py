"""Exact layout rewrites of the CPU INT8 files: the pixel shuffle on the integers (edgerep.quant.movement) and narrow
convs padded to the width onnxruntime's fast x86 kernel takes, sliced back on the integers (edgerep.quant.conv_pad).
Both must leave every output bit as it was and keep onnxruntime's QLinearConv fusion."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from edgerep.quant.calibrate import ArrayDataset, calibrate
from edgerep.quant.conv_pad import fast_width
from edgerep.quant.cpu_features import CpuFeatures
from edgerep.quant.policy import TENSORRT, cpu_candidates
from edgerep.quant.qdq import QdqConfig, write_qdq


@pytest.fixture(scope="module")
def sr_file(tmp_path_factory):
    """A folded ECBSR x2 (16 channels, its tail conv 16 -> 12) exported with dynamic H x W, and minmax ranges."""
    from edgerep.blocks.testing import randomize_
    from edgerep.fold.model import fold_model
    from edgerep.models.ecbsr import ECBSR
    from edgerep.quant.export import export_onnx

    d = tmp_path_factory.mktemp("layout")
    torch.manual_seed(0)
    net = fold_model(randomize_(ECBSR(module_nums=1, channel_nums=16), seed=0).eval())
    fp32 = d / "sr.fp32.onnx"
    export_onnx(net, fp32, (3, 12, 12), dynamic_hw=True)
    x = np.random.default_rng(0).random((6, 3, 12, 12), dtype=np.float32)
    return fp32, calibrate(fp32, ArrayDataset(x, name="sr"), method="minmax", batch_size=6), d


def _session(path, optimized=None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    if optimized:
        so.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _written(sr_file, name, **flags):
    import onnx

    fp32, cal, d = sr_file
    info = write_qdq(fp32, d / f"{name}.onnx", cal, QdqConfig(prelu_as_max=True, **flags))
    return info, onnx.load(info.path)


def test_pixel_shuffle_moves_onto_the_integers_with_the_same_output_bits(sr_file):
    plain_info, _ = _written(sr_file, "plain")
    info, m = _written(sr_file, "moved", movement_int8=True)
    assert plain_info.movement_int8 == [] and info.movement_int8 == ["/upsampler/DepthToSpace"]
    producer = {o: n for n in m.graph.node for o in n.output}
    shuffle = next(n for n in m.graph.node if n.op_type == "DepthToSpace")
    assert producer[shuffle.input[0]].op_type == "QuantizeLinear"  # it reads the u8 tensor, not a float one
    x = np.random.default_rng(1).random((2, 3, 20, 28), dtype=np.float32)  # another size: dynamic H x W
    want = _session(plain_info.path).run(None, {"input": x})[0]
    got = _session(info.path).run(None, {"input": x})[0]
    assert got.shape == (2, 3, 40, 56) and np.array_equal(got, want)


def test_narrow_conv_is_padded_to_the_fast_width_and_sliced_back_bit_for_bit(sr_file, tmp_path):
    import onnx
    from onnx import numpy_helper

    plain_info, _ = _written(sr_file, "plain2")
    info, m = _written(sr_file, "padded", pad_narrow_convs=True)
    assert info.padded_convs == ["/backbone/backbone.2/conv/Conv"]  # 16 -> 12; the 16-wide convs are left
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    conv = next(n for n in m.graph.node if n.name == info.padded_convs[0])
    producer = {o: n for n in m.graph.node for o in n.output}
    w_dq = producer[conv.input[1]]
    w, scale = inits[w_dq.input[0]], inits[w_dq.input[1]]
    assert w.shape[0] == 16 and not w[12:].any() and (scale > 0).all() and len(scale) == 16
    used = {t for n in m.graph.node for t in n.input}
    assert all(i.name in used for i in m.graph.initializer)  # the unpadded copies are gone
    x = np.random.default_rng(2).random((2, 3, 17, 23), dtype=np.float32)
    want = _session(plain_info.path).run(None, {"input": x})[0]
    got = _session(info.path, optimized=tmp_path / "opt.onnx").run(None, {"input": x})[0]
    assert np.array_equal(got, want)
    ops = [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    assert "Conv" not in ops and ops.count("QLinearConv") == 3  # every conv still fused into the INT8 kernel


def test_fast_width_is_the_least_width_the_kernel_takes():
    for c in range(1, 80):
        w = fast_width(c)
        assert w >= max(c, 16) and w % 4 == 0 and (w - 4 < max(c, 16))
    assert [fast_width(c) for c in (4, 12, 16, 17, 20, 22)] == [16, 16, 16, 20, 20, 24]


def test_layout_rewrites_go_to_the_cpu_files_padding_only_where_it_was_measured():
    def pols(**isa):
        return cpu_candidates(CpuFeatures("x86_64", "t", 2, **isa))

    vnni512 = pols(avx2=True, avx512f=True, avx512_vnni=True)
    assert all(p.qdq.movement_int8 and p.qdq.pad_narrow_convs for p in vnni512)
    for other in (pols(avx2=True), pols(avx2=True, avx_vnni=True),
                  cpu_candidates(CpuFeatures("aarch64", "t", 2, neon=True, arm_dotprod=True))):
        assert all(p.qdq.movement_int8 and not p.qdq.pad_narrow_convs for p in other)
    assert not TENSORRT.movement_int8 and not TENSORRT.pad_narrow_convs


def test_movement_leaves_a_per_channel_or_shared_dequantization_alone():
    from onnx import TensorProto, helper, numpy_helper

    from edgerep.quant.movement import movement_on_integers

    def graph(scale: np.ndarray, readers: int):
        inits = [numpy_helper.from_array(np.zeros((1, 8, 2, 2), np.uint8), "q"),
                 numpy_helper.from_array(scale.astype(np.float32), "s"),
                 numpy_helper.from_array(np.zeros(scale.shape, np.uint8), "z")]
        nodes = [helper.make_node("DequantizeLinear", ["q", "s", "z"], ["f"], axis=1),
                 helper.make_node("DepthToSpace", ["f"], ["y"], blocksize=2)]
        outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
        if readers == 2:
            nodes.append(helper.make_node("Relu", ["f"], ["r"]))
            outs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, None))
        return helper.make_model(helper.make_graph(nodes, "g", [], outs, inits))

    assert len(movement_on_integers(graph(np.array(0.1), 1))) == 1
    assert movement_on_integers(graph(np.full(8, 0.1), 1)) == []  # per channel: the shuffle moves channels
    assert movement_on_integers(graph(np.array(0.1), 2)) == []  # another reader needs the float tensor


def test_unpad_gives_back_the_unpadded_file_and_readers_see_real_filters(sr_file):
    """Readers that map a CPU file onto the FP32 file (AdaRound's grids, the learned-weights readback, debug) see
    a padded conv as it was quantized: unpad restores the same initializers and graph; the optimized session's
    padded weights hold the real filters exactly."""
    from onnx import numpy_helper

    from edgerep.quant.adaround import max_optimized_difference, optimized_int8_weights, qdq_int8_weights
    from edgerep.quant.conv_pad import unpad

    plain_info, plain = _written(sr_file, "plain3")
    info, m = _written(sr_file, "padded3", pad_narrow_convs=True)
    assert unpad(m) == info.padded_convs
    arrays = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    want = {i.name: numpy_helper.to_array(i) for i in plain.graph.initializer}
    assert arrays.keys() == want.keys() and all(np.array_equal(arrays[k], want[k]) for k in want)
    assert [n.op_type for n in m.graph.node] == [n.op_type for n in plain.graph.node]
    stored = qdq_int8_weights(info.path)  # read from the padded file
    plain_q = qdq_int8_weights(plain_info.path)
    assert stored.keys() == plain_q.keys() and all(np.array_equal(stored[k], plain_q[k]) for k in plain_q)
    assert max_optimized_difference(plain_q, optimized_int8_weights(info.path)) == 0


def test_debug_reads_a_cpu_file_with_every_layout_rewrite_layer_for_layer(sr_file):
    """A -prelu8 file (slope convs the FP32 file lacks), a shuffle on the integers and a padded conv: debug still
    proves the file was quantized from the FP32 one and compares each layer on a float tensor, never an integer
    one (which read -60 dB SQNRs)."""
    import onnx

    from edgerep.quant.debug import _load, handed_tensor, weighted_nodes, weights_match

    fp32, _, _ = sr_file
    info, _ = _written(sr_file, "all-rewrites", prelu_int8=True, movement_int8=True, pad_narrow_convs=True)
    assert info.prelu_int8 and info.movement_int8 and info.padded_convs
    q, f = _load(info.path), onnx.load(str(fp32))
    ok, why = weights_match(q, f)
    assert ok, why
    f_nodes = {n.name for n in f.graph.node}
    producer = {o: n for n in q.graph.node for o in n.output}
    layers = [n for n in weighted_nodes(q) if n.name in f_nodes]
    assert len(layers) == 3
    for n in layers:
        t = handed_tensor(q, n)
        assert producer[t].op_type != "QuantizeLinear", (n.name, t)


def test_per_tensor_weights_are_padded_without_touching_their_one_scale(sr_file):
    """With per-tensor weights the DequantizeLinear's one scale stays one (padding it would turn it into a per-axis
    scale on the wrong axis); the output is the same bits."""
    from onnx import numpy_helper

    plain_info, _ = _written(sr_file, "pt-plain", per_channel=False)
    info, m = _written(sr_file, "pt-padded", per_channel=False, pad_narrow_convs=True)
    assert info.padded_convs == ["/backbone/backbone.2/conv/Conv"]
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    producer = {o: n for n in m.graph.node for o in n.output}
    conv = next(n for n in m.graph.node if n.name == info.padded_convs[0])
    w_dq = producer[conv.input[1]]
    assert inits[w_dq.input[0]].shape[0] == 16 and inits[w_dq.input[1]].size == 1
    x = np.random.default_rng(3).random((1, 3, 15, 19), dtype=np.float32)
    assert np.array_equal(_session(info.path).run(None, {"input": x})[0],
                          _session(plain_info.path).run(None, {"input": x})[0])


def test_the_float_tail_of_a_tensorrt_file_adds_the_residual_in_float_from_the_float_input(sr_file):
    """TensorRT's file quantizes residual Add inputs (s8) so TensorRT can fuse them into convs; an Add after the
    last conv fuses into nothing, and there it rounded the SR output image itself (0.085 dB on the hostile net with
    every conv in float). The tail's Add keeps float inputs and its residual reads the model input, not its int8
    copy (128 levels for an image in [0, 1] on the symmetric grid)."""
    import onnx

    from edgerep.quant.qdq import quantizable_nodes

    fp32, cal, d = sr_file
    info = write_qdq(fp32, d / "trt.onnx", cal, TENSORRT)
    m = onnx.load(info.path)
    assert info.add_inputs_quantized == 0 and "/Add" in info.float_tail
    resize = next(n for n in m.graph.node if n.op_type == "Resize")
    assert resize.input[0] == "input"
    read = {t for n in m.graph.node for t in n.input} | {o.name for o in m.graph.output}
    assert all(n.output[0] in read for n in m.graph.node)  # no Q / DQ left that nothing reads
    # every conv in float: nothing is left to round, the file computes the FP32 file's numbers
    all_float = write_qdq(fp32, d / "trt-float.onnx", cal, TENSORRT,
                          exclude_nodes=quantizable_nodes(onnx.load(str(fp32))))
    x = np.random.default_rng(4).random((1, 3, 14, 18), dtype=np.float32)
    want = _session(fp32).run(None, {"input": x})[0]
    assert np.array_equal(_session(all_float.path).run(None, {"input": x})[0], want)
