"""The float tail (edgerep.quant.qdq.float_tail): ops after the last weighted layer stay in float in every QDQ file:
a detector's box decode is not put on one 8-bit grid (pixels of all strides at once), a classifier ending in a
Gemm has no tail, and every conv is still quantized."""
from __future__ import annotations

import numpy as np
import torch


class _Decodeish(torch.nn.Module):
    """Two conv levels, their outputs flattened, concatenated, scaled per anchor and offset: a decode tail."""

    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.p8 = torch.nn.Conv2d(8, 4, 1)
        self.c2 = torch.nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.p16 = torch.nn.Conv2d(8, 4, 1)

    def forward(self, x):
        a = torch.relu(self.c1(x))
        b = torch.relu(self.c2(a))
        d = torch.cat([self.p8(a).flatten(2), self.p16(b).flatten(2)], 2)
        s = torch.cat([torch.full((256,), 8.0), torch.full((64,), 16.0)])
        d = d * s
        return torch.cat([d[:, :2] + 100.0, d[:, 2:].sigmoid()], 1)


def _files(tmp_path, net, shape):
    from edgerep.quant.calibrate import ArrayDataset, calibrate
    from edgerep.quant.export import export_onnx

    torch.manual_seed(0)
    fp32 = tmp_path / "m.onnx"
    export_onnx(net.eval(), fp32, shape)
    x = np.random.default_rng(0).standard_normal((8, *shape)).astype(np.float32)
    return fp32, calibrate(fp32, ArrayDataset(x, name="t"), method="minmax", batch_size=8), x


def test_decode_tail_stays_float_and_every_conv_is_quantized(tmp_path):
    import onnx

    from edgerep.quant.policy import TENSORRT
    from edgerep.quant.qdq import QdqConfig, float_tail, quantizable_nodes, write_qdq

    torch.manual_seed(0)
    fp32, cal, x = _files(tmp_path, _Decodeish(), (3, 16, 16))
    model = onnx.load(str(fp32))
    tail = set(float_tail(model))
    ops = {n.op_type for n in model.graph.node if n.name in tail}
    assert {"Mul", "Concat", "Sigmoid", "Add"} <= ops and not ops & {"Conv", "Relu"}
    for cfg in (QdqConfig(), TENSORRT):
        out = tmp_path / "q.onnx"
        info = write_qdq(fp32, out, cal, cfg)
        q = onnx.load(str(out))
        prod = {o: n for n in q.graph.node for o in n.output}
        quantized_after = {prod[n.input[0]].op_type for n in q.graph.node
                           if n.op_type == "QuantizeLinear" and n.input[0] in prod}
        assert not quantized_after & {"Mul", "Concat", "Slice", "Add", "Sigmoid", "Reshape", "Flatten"}, cfg
        assert "Conv" in quantized_after and set(info.float_tail) == tail
        assert sorted(info.quantized_nodes) == sorted(quantizable_nodes(model))


def test_a_classifier_ending_in_a_gemm_has_no_tail(tmp_path):
    import onnx

    from edgerep.quant.qdq import float_tail

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(8, 10))
    fp32, _, _ = _files(tmp_path, net, (3, 12, 12))
    assert float_tail(onnx.load(str(fp32))) == []
