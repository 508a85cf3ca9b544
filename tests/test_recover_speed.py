"""AdaRound's steps sized in multiply-adds (issue 26, cost at 224 x 224): a costly conv layer learns on random
output windows whose input crops give exactly the full conv's outputs; small layers keep the whole-sample steps
and learn the same integers as before."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper

from edgerep.quant.adaround import (AdaRoundOptions, ConvGeometry, Grid, _layer_fn, conv_geometry, conv_window,
                                    learn_rounding, pad_input, step_window)


@st.composite
def _convs(draw):
    g = draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    sy, sx, dy, dx = (draw(st.integers(1, 3)) for _ in range(4))
    pads = tuple(draw(st.integers(0, 3)) for _ in range(4))
    h = draw(st.integers(max(1, (kh - 1) * dy + 1 - pads[0] - pads[2]), 18))
    w = draw(st.integers(max(1, (kw - 1) * dx + 1 - pads[1] - pads[3]), 18))
    geo = ConvGeometry(pads, (sy, sx), (dy, dx), g)
    cin, cout = g * draw(st.integers(1, 2)), g * draw(st.integers(1, 2))
    return g, cin, cout, (kh, kw), geo, (h, w), draw(st.integers(0, 2**31 - 1))


@settings(max_examples=150, deadline=None)
@given(_convs())
def test_window_of_the_padded_input_gives_the_full_convs_outputs_exactly(case):
    g, cin, cout, (kh, kw), geo, (h, w), seed = case
    rng = np.random.default_rng(seed)
    # integer values in float64: every sum is exact, so any other summation order gives the same bits
    x = torch.from_numpy(rng.integers(-9, 10, (4, cin, h, w)).astype(np.float64))
    wt = torch.from_numpy(rng.integers(-9, 10, (cout, cin // g, kh, kw)).astype(np.float64))
    bt = torch.from_numpy(rng.integers(-9, 10, cout).astype(np.float64))
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=list(geo.pads), strides=list(geo.stride),
                            dilations=list(geo.dilation), group=g, kernel_shape=[kh, kw])
    assert conv_geometry(node) == geo
    full = _layer_fn(node)(x, wt, bt)  # the path the whole-sample steps and the final passes take
    oh, ow = full.shape[2:]
    wh, ww = int(rng.integers(1, oh + 1)), int(rng.integers(1, ow + 1))
    oy, ox = int(rng.integers(0, oh - wh + 1)), int(rng.integers(0, ow - ww + 1))
    idx = torch.from_numpy(rng.integers(0, 4, 3))
    got = conv_window(pad_input(x, geo), wt, bt, geo, oy, ox, wh, ww, idx)
    assert torch.equal(got, full[idx][:, :, oy:oy + wh, ox:ox + ww])


def test_step_window_is_none_for_small_steps_and_the_largest_side_in_budget_otherwise():
    assert step_window((32, 32, 3, 3), (20, 20), 32, 1 << 28) is None  # the shipped detector's largest: 118 M
    assert step_window((192, 192, 3, 3), (14, 14), 32, 0) is None  # 0: whole samples always
    per = 192 * 192 * 9
    h, w = step_window((192, 192, 3, 3), (14, 14), 32, 1 << 28)
    assert h == w and 32 * h * h * per <= 1 << 28 < 32 * (h + 1) ** 2 * per  # 5 x 5
    assert step_window((1280, 192, 3, 3), (7, 7), 32, 1 << 28) == (1, 1)  # at least one position
    assert step_window((48, 48, 3, 3), (56, 3), 32, 1 << 26) == (10, 3)  # never wider than the output


def _layer(rng, c=8, side=12):
    w = (rng.standard_normal((c, 4, 3, 3)) * 0.1).astype(np.float32)
    w[:, 0, 1, 1] *= 20  # an in-row outlier: the channel's scale is coarse for every other tap
    b = (rng.standard_normal(c) * 0.1).astype(np.float32)
    x = np.maximum(rng.standard_normal((48, 4, side, side)), 0).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])
    fn = _layer_fn(node)
    with torch.no_grad():
        y = fn(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)).numpy()
    from test_recover import _grid

    return fn, conv_geometry(node), w, b, x, y, _grid(w)


def test_small_layer_learns_the_same_integers_as_the_whole_sample_path():
    fn, geo, w, b, x, y, grid = _layer(np.random.default_rng(1))
    opts = AdaRoundOptions(iters=80)
    assert step_window(w.shape, y.shape[2:], 32, opts.step_macs) is None
    q0, n0, l0, b0 = learn_rounding(fn, w, b, grid, x, y, True, opts)  # no geometry: today's whole-sample steps
    q1, n1, l1, b1 = learn_rounding(fn, w, b, grid, x, y, True, opts, geo)
    assert np.array_equal(q0, q1) and (n0, l0) == (n1, l1) and np.array_equal(b0, b1)
    assert np.sum(q0 != grid.q) > 0  # something was learned, so the equality says something


def test_windowed_steps_learn_as_well_as_whole_samples_on_their_layer():
    fn, geo, w, b, x, y, grid = _layer(np.random.default_rng(0), side=16)
    whole = learn_rounding(fn, w, b, grid, x, y, False, AdaRoundOptions(iters=300), geo)
    macs = 32 * 16 * int(np.prod(w.shape))  # 4 x 4 windows of 32 samples: 1/16 of the positions
    opts = AdaRoundOptions(iters=300, step_macs=macs)
    assert step_window(w.shape, y.shape[2:], 32, macs) == (4, 4)
    q, near, learned, _ = learn_rounding(fn, w, b, grid, x, y, False, opts, geo)
    assert not np.array_equal(q, whole[0])  # the windows were used: another sample of the loss
    assert learned < 0.85 * near, (near, learned)
    assert learned < 1.1 * whole[2], (whole[2], learned)
    assert np.all(np.abs(q.astype(int) - grid.q.astype(int)) <= 1)


def test_adaround_model_passes_each_convs_geometry(tmp_path):
    from edgerep.quant.adaround import adaround_model, max_readback_difference, qdq_int8_weights
    from edgerep.quant.policy import TENSORRT
    from edgerep.quant.qdq import write_qdq

    _net, src, cal, x = _two_conv_net(tmp_path, 8)
    runs = {m: adaround_model(src, tmp_path / f"l{m}.onnx", cal, x, TENSORRT,
                              options=AdaRoundOptions(iters=40, step_macs=m)) for m in (0, 1)}
    convs = [r.node for r in runs[0].layers if "Conv" in r.node]
    assert len(convs) == 2
    # step_macs=1: every conv learns on 1 x 1 windows, another sample of the loss than whole samples
    assert all(not np.array_equal(runs[0].qweights[n], runs[1].qweights[n]) for n in convs)
    write_qdq(runs[1].path, tmp_path / "q.onnx", cal, TENSORRT)
    assert max_readback_difference(runs[1].qweights, qdq_int8_weights(tmp_path / "q.onnx")) == 0


def test_qat_step_batch_is_the_most_samples_within_the_budget():
    from edgerep.quant.qat import step_batch

    assert step_batch(47_000_000, 32, 1 << 32) == 32  # the shipped detector at 160 px: ~1.5 G per step of 32
    assert step_batch(1_360_000_000, 32, 1 << 32) == 3  # RepVGG-A0 at 224 x 224
    assert step_batch(10 ** 12, 32, 1 << 32) == 1  # at least one sample
    assert step_batch(10 ** 12, 32, 0) == 32  # 0: the batch always
    assert step_batch(1000, 32, 31_999) == 31 and step_batch(1000, 32, 32_000) == 32


def _two_conv_net(tmp_path, mid: int):
    """A seeded 1 -> 8 -> ``mid`` channel conv net (the second conv strided) with a 10-way head, exported, and
    minmax ranges on the digits calibration split: (net, ONNX path, calibration, inputs)."""
    from torch import nn

    from edgerep.quant.calibrate import ArrayDataset, calibrate
    from edgerep.quant.export import export_onnx
    from test_quant_helpers import digits_splits

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, mid, 3, stride=2, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(mid, 10)).eval()
    src = tmp_path / "net.onnx"
    export_onnx(net, src, (1, 8, 8))
    x, y = digits_splits()["calib"]
    x = np.ascontiguousarray(x[:, :, :8, :8], dtype=np.float32)
    return net, src, calibrate(src, ArrayDataset(x, y), method="minmax"), x


def _small_qat(tmp_path):
    net, src, cal, x = _two_conv_net(tmp_path, 6)
    with torch.no_grad():
        teacher = net(torch.from_numpy(x)).numpy()
    return src, cal, x, teacher


def test_qat_counts_the_students_multiply_adds_per_sample(tmp_path):
    import onnx

    from edgerep.quant.qat import Student
    from edgerep.quant.qdq import _ensure_node_names

    src, _cal, x, _t = _small_qat(tmp_path)
    model = onnx.load(str(src))
    _ensure_node_names(model)
    s = Student(model, {}, {})
    with torch.no_grad():
        s(torch.from_numpy(x[:5]))
        s(torch.from_numpy(x[:3]))  # counted afresh on each call
    assert s.macs == 8 * 8 * (8 * 1 * 9) + 4 * 4 * (6 * 8 * 9) + 6 * 10  # per sample, whatever the batch


def test_qat_on_a_small_model_steps_as_before_and_a_costly_one_on_fewer_samples(tmp_path):
    from edgerep.quant.policy import TENSORRT
    from edgerep.quant.qat import QatOptions, qat_model

    src, cal, x, teacher = _small_qat(tmp_path)
    runs = {m: qat_model(src, tmp_path / f"q{m}.onnx", cal, x, teacher, TENSORRT,
                         options=QatOptions(steps=6, lr=1e-2, step_macs=m)) for m in (0, 1 << 32, 24_000)}
    assert runs[0].batch == runs[1 << 32].batch == 32 and runs[24_000].batch == 2
    assert all(np.array_equal(runs[0].qweights[k], runs[1 << 32].qweights[k]) for k in runs[0].qweights)
    assert runs[0].loss_first == runs[1 << 32].loss_first and runs[0].loss_last == runs[1 << 32].loss_last
    assert any(not np.array_equal(runs[0].qweights[k], runs[24_000].qweights[k]) for k in runs[0].qweights)


def test_the_layer_passes_run_only_the_nodes_upstream_and_give_the_same_values(tmp_path):
    import onnx
    import onnxruntime as ort

    from edgerep.quant.adaround import _run, _session, upstream
    from edgerep.quant.onnx_outputs import with_outputs
    from edgerep.quant.qdq import _ensure_node_names

    src, _cal, x, _t = _small_qat(tmp_path)
    model = onnx.load(str(src))
    _ensure_node_names(model)
    t = next(n for n in model.graph.node if n.op_type == "Relu").output[0]  # the first ReLU's output
    pruned = upstream(model, [t])
    assert [n.op_type for n in pruned.graph.node] == ["Conv", "Relu"] and [o.name for o in pruned.graph.output] == [t]
    full = ort.InferenceSession(with_outputs(model, [t]).SerializeToString(), providers=["CPUExecutionProvider"])
    want = full.run([t], {full.get_inputs()[0].name: x})[0]
    assert np.array_equal(_run(_session(model, [t], 1), x, [t], batch=64)[t], want)
