"""Cross-layer equalization is exact and shrinks channel-range outliers; bias correction removes
the systematic output shift that weight rounding causes."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from edgerep.engines.onnxruntime_engine import OrtEngine
from edgerep.quant.calibrate import ArrayDataset, calibrate
from edgerep.quant.equalize import equalize_model, find_pairs
from edgerep.quant.export import export_onnx
from edgerep.quant.qdq import QdqConfig, write_qdq


def _net(outlier: float) -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                      nn.MaxPool2d(2), nn.Conv2d(8, 8, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                      nn.Linear(8, 5)).eval()
    with torch.no_grad():
        m[0].weight[2] *= outlier  # one output channel with huge weights (a folded collapsed-BN channel)
        m[0].bias[2] *= outlier
    return m


def test_equalization_is_exact_and_balances_ranges(tmp_path):
    export_onnx(_net(300.0), tmp_path / "m.onnx", (3, 8, 8))
    model = onnx.load(tmp_path / "m.onnx")
    pairs = find_pairs(model)
    assert [(a.op_type, b.op_type) for a, b, _ in pairs] == [("Conv", "Conv"), ("Conv", "Conv"), ("Conv", "Gemm")]
    rep = equalize_model(model)
    onnx.save(model, tmp_path / "eq.onnx")
    # r -> sqrt(r1 r2): the 300x channel ends near sqrt(300) of the median (~17x), not 300x
    assert rep.range_ratio_before > 100 and rep.range_ratio_after < 0.1 * rep.range_ratio_before
    x = np.random.default_rng(0).standard_normal((16, 3, 8, 8)).astype(np.float32)
    a, b = OrtEngine(tmp_path / "m.onnx").run(x), OrtEngine(tmp_path / "eq.onnx").run(x)
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * np.abs(a).max())


def test_bias_correction_removes_the_mean_shift(tmp_path):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(4, 16, 3, padding=1), nn.Flatten(), nn.Linear(16 * 36, 4)).eval()
    export_onnx(m, tmp_path / "m.onnx", (4, 6, 6))
    rng = np.random.default_rng(0)
    x = (2.0 + 0.3 * rng.standard_normal((64, 4, 6, 6))).astype(np.float32)  # inputs with a large mean
    cal = calibrate(tmp_path / "m.onnx", ArrayDataset(x), method="minmax")
    # per-tensor 7-bit weights: coarse rounding, so a systematic shift per output channel
    cfg = dict(activation="u8", per_channel=False, reduce_range=True)
    ref = OrtEngine(tmp_path / "m.onnx").run(x)
    shift = {}
    for bc in (False, True):
        write_qdq(tmp_path / "m.onnx", tmp_path / f"q{bc}.onnx", cal, QdqConfig(**cfg, bias_correction=bc))
        out = OrtEngine(tmp_path / f"q{bc}.onnx", optimization="disable").run(x)
        shift[bc] = float(np.abs((out - ref).mean(axis=0)).mean())
    assert shift[True] < 0.5 * shift[False], shift


@pytest.mark.parametrize("groups", [1, 2])
def test_bias_correction_matches_the_analytic_shift(tmp_path, groups):
    from edgerep.quant.qdq import correct_biases, fake_quant_weight

    torch.manual_seed(1)
    conv = nn.Conv2d(4, 6, 3, padding=1, groups=groups).eval()
    export_onnx(nn.Sequential(conv), tmp_path / "c.onnx", (4, 5, 5))
    x = (1.0 + rng_normal((32, 4, 5, 5))).astype(np.float32)
    cal = calibrate(tmp_path / "c.onnx", ArrayDataset(x), method="minmax")
    model = onnx.load(tmp_path / "c.onnx")
    cfg = QdqConfig(per_channel=True, reduce_range=True)
    done = correct_biases(model, cal, cfg)
    assert len(done) == 1
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    w = conv.weight.detach().numpy().astype(np.float64)
    dw = fake_quant_weight(w, cfg) - w
    mu = x.mean(axis=(0, 2, 3))
    cin = 4 // groups
    want = conv.bias.detach().numpy() - np.array(
        [dw[o].sum(axis=(1, 2)) @ mu[(o // (6 // groups)) * cin:(o // (6 // groups) + 1) * cin] for o in range(6)])
    bias = next(v for k, v in inits.items() if v.shape == (6,))
    np.testing.assert_allclose(bias, want, rtol=1e-5, atol=1e-6)


def rng_normal(shape):
    return np.random.default_rng(2).standard_normal(shape)


def test_equalization_passes_prelu_exactly(tmp_path):
    """PReLU (every ECBSR / SR net's activation) is positively homogeneous per channel: conv -> PReLU -> conv is
    equalized, exactly, whatever the slopes (the hostile ECBSR's drifted channels are this)."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.PReLU(8), nn.Conv2d(8, 8, 3, padding=1), nn.PReLU(8),
                      nn.Conv2d(8, 3, 3, padding=1)).eval()
    with torch.no_grad():
        m[1].weight.uniform_(-0.5, 0.5)  # negative and positive slopes
        m[0].weight[2] *= 100.0
        m[0].bias[2] *= 100.0
        m[2].weight[:, 2] /= 100.0
    export_onnx(m, tmp_path / "m.onnx", (3, 8, 8))
    model = onnx.load(tmp_path / "m.onnx")
    assert [(a.op_type, b.op_type) for a, b, _ in find_pairs(model)] == [("Conv", "Conv"), ("Conv", "Conv")]
    rep = equalize_model(model)
    onnx.save(model, tmp_path / "eq.onnx")
    assert rep.range_ratio_before > 50 and rep.range_ratio_after < 0.2 * rep.range_ratio_before
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    a, b = OrtEngine(tmp_path / "m.onnx").run(x), OrtEngine(tmp_path / "eq.onnx").run(x)
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * np.abs(a).max())


def test_bias_correction_rounds_each_weight_grid_once_and_keeps_grids_apart(tmp_path, monkeypatch):
    """The weight rounding is computed once per weights and grid (issue 23's cost: auto's three files, the CPU
    policies and mixed precision's probes share it), and two grids never share an entry."""
    import edgerep.quant.qdq as qdq

    torch.manual_seed(3)
    export_onnx(nn.Sequential(nn.Conv2d(4, 6, 3, padding=1)).eval(), tmp_path / "c.onnx", (4, 5, 5))
    x = (1.0 + rng_normal((16, 4, 5, 5))).astype(np.float32)
    cal = calibrate(tmp_path / "c.onnx", ArrayDataset(x), method="minmax")
    calls = []
    real = qdq.fake_quant_weight
    monkeypatch.setattr(qdq, "fake_quant_weight", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(qdq, "_ROUNDING", type(qdq._ROUNDING)())

    def corrected(cfg):
        model = onnx.load(tmp_path / "c.onnx")
        qdq.correct_biases(model, cal, cfg)
        from onnx import numpy_helper

        return next(numpy_helper.to_array(i) for i in model.graph.initializer if i.dims == [6])

    fine, coarse = QdqConfig(per_channel=True), QdqConfig(per_channel=False, reduce_range=True)
    first = corrected(fine)
    assert corrected(fine).tobytes() == first.tobytes() and len(calls) == 1  # the second file reused it
    other = corrected(coarse)
    assert len(calls) == 2 and not np.array_equal(other, first)
    monkeypatch.setattr(qdq, "_ROUNDING", type(qdq._ROUNDING)())
    assert corrected(coarse).tobytes() == other.tobytes()  # what the memo gave is what a fresh computation gives


def test_equalization_writes_each_initializer_once(tmp_path, monkeypatch):
    """The sweeps rescale arrays; each weight goes back into the model once: a protobuf message keeps every value a
    ``CopyFrom`` replaced until the model is freed (per-sweep writes grew RepVGG-A0's deploy by 287 MiB). The
    result is the per-sweep one, bit for bit: each sweep still rounds to the file's dtype."""
    from onnx import numpy_helper

    export_onnx(_net(300.0), tmp_path / "m.onnx", (3, 8, 8))
    model = onnx.load(tmp_path / "m.onnx")
    # the per-sweep reference: rescale, round to float32, write back, every sweep
    ref = onnx.load(tmp_path / "m.onnx")
    inits = {i.name: i for i in ref.graph.initializer}
    for _ in range(4):
        for a, b, _between in find_pairs(ref):
            w1 = numpy_helper.to_array(inits[a.input[1]]).astype(np.float64)
            w2 = numpy_helper.to_array(inits[b.input[1]]).astype(np.float64)
            gemm = b.op_type == "Gemm"
            r2 = np.abs(w2).max(axis=0) if gemm else np.abs(w2).transpose(1, 0, 2, 3).reshape(w2.shape[1], -1).max(1)
            r1 = np.abs(w1).reshape(w1.shape[0], -1).max(axis=1)
            s = np.sqrt(np.maximum(r1, 1e-12) / np.maximum(r2, 1e-12))
            s = np.where((r1 > 0) & (r2 > 0), np.clip(s, 1e-4, 1e4), 1.0)
            new = {a.input[1]: w1 / s.reshape(-1, 1, 1, 1), b.input[1]: w2 * (s if gemm else s.reshape(1, -1, 1, 1))}
            new[a.input[2]] = numpy_helper.to_array(inits[a.input[2]]).astype(np.float64) / s
            for name, arr in new.items():
                inits[name].CopyFrom(numpy_helper.from_array(arr.astype(np.float32), name))
    writes = []
    real = numpy_helper.from_array
    monkeypatch.setattr(numpy_helper, "from_array", lambda arr, name=None: writes.append(name) or real(arr, name))
    rep = equalize_model(model, iterations=4)
    assert len(rep.pairs) == 3
    assert sorted(writes) == sorted(set(writes)), writes  # once each
    assert len(writes) == 7  # the 3 convs' weights and biases (each conv ends one pair and starts the next), the Gemm
    got = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for i in ref.graph.initializer:
        np.testing.assert_array_equal(got[i.name], numpy_helper.to_array(i), err_msg=i.name)
