"""Cross-layer equalization (Nagel et al., 2019) on an FP32 ONNX graph.

For Conv1 -> (ReLU / PReLU / pooling / Flatten: positive-homogeneous, per channel) -> Conv2|Gemm, output
channel i of Conv1 is divided by s_i and input channel i of the next layer multiplied by s_i, with
s_i = sqrt(r1_i / r2_i) so both ranges become sqrt(r1_i r2_i). The function is unchanged exactly
(ReLU(x/s) = ReLU(x)/s for s > 0), but a folded RepVGG channel with huge weights (collapsed
identity-BN variance) no longer dominates the next layer's per-tensor activation range.
(Bias correction, the other half of data-free quantization, lives in ``edgerep.quant.qdq``.)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from edgerep.quant.onnx_graph import consumers as onnx_consumers

# ops through which a per-channel positive scale passes unchanged (channel axis 1)
HOMOGENEOUS = ("Relu", "LeakyRelu", "PRelu", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Flatten")


@dataclass
class EqualizeReport:
    """Which layer pairs were equalized and how much the largest channel-range ratio shrank."""

    pairs: list[tuple[str, str]] = field(default_factory=list)
    iterations: int = 0
    max_scale: float = 1.0
    range_ratio_before: float = 1.0  # max over pairs of max(r1) / median(r1) of the first layer
    range_ratio_after: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)


def _attr(node, name, default):
    for a in node.attribute:
        if a.name == name:
            return a.i if a.type == a.INT else a.f
    return default


def find_pairs(model) -> list[tuple[object, object, list]]:
    """(first conv, next Conv/Gemm, ops between) chains that equalization may rescale."""
    inits = {i.name for i in model.graph.initializer}
    consumers = onnx_consumers(model)
    outputs = {o.name for o in model.graph.output}
    pairs = []
    for n in model.graph.node:
        if n.op_type != "Conv" or len(n.input) < 2 or n.input[1] not in inits or _attr(n, "group", 1) != 1:
            continue
        t, between, ok = n.output[0], [], True
        while True:
            cs = consumers.get(t, [])
            if len(cs) != 1 or t in outputs:
                ok = False
                break
            c = cs[0]
            if c.op_type in HOMOGENEOUS and c.input[0] == t:
                # PRelu too: prelu(x / s) = prelu(x) / s for s > 0 whatever the slopes (SR nets are PReLU)
                between.append(c)
                t = c.output[0]
                continue
            break
        if not ok:
            continue
        c = consumers[t][0]
        if c.op_type == "Conv" and c.input[0] == t and len(c.input) > 1 and c.input[1] in inits \
                and _attr(c, "group", 1) == 1:
            pairs.append((n, c, between))
        elif c.op_type == "Gemm" and c.input[0] == t and c.input[1] in inits and not _attr(c, "transA", 0) \
                and any(b.op_type == "Flatten" for b in between):
            pairs.append((n, c, between))
    return pairs


def equalize_model(model, iterations: int = 4, max_scale: float = 1e4) -> EqualizeReport:
    """Equalize every pair in ``model`` (an ``onnx.ModelProto``) in place, ``iterations`` sweeps."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    pairs = find_pairs(model)
    rep = EqualizeReport(pairs=[(a.name, b.name) for a, b, _ in pairs], iterations=iterations)
    if not pairs:
        return rep

    def ratio(w1):
        r = np.abs(w1).reshape(w1.shape[0], -1).max(axis=1)
        return float(r.max() / max(np.median(r), 1e-12))

    # the weights are rescaled as arrays and each written back into its initializer once, at the end: a
    # protobuf message keeps every value a ``CopyFrom`` replaced until the whole model is freed (4 sweeps over
    # RepVGG-A0's 22 pairs held 287 MiB of replaced values). Each step still rounds to the file's dtype.
    arrays: dict[str, np.ndarray] = {}

    def get(name):
        if name not in arrays:
            arrays[name] = numpy_helper.to_array(inits[name])
        return arrays[name].astype(np.float64)

    def put(name, arr):
        arrays[name] = arr.astype(arrays[name].dtype)  # every put follows a get of the same name

    rep.range_ratio_before = max(ratio(get(a.input[1])) for a, _, _ in pairs)
    biggest = 1.0
    for _ in range(iterations):
        for a, b, _between in pairs:
            w1 = get(a.input[1])
            w2 = get(b.input[1])
            if b.op_type == "Gemm":
                w2in = w2 if not _attr(b, "transB", 0) else w2.T  # (in, out)
                if w2in.shape[0] != w1.shape[0]:
                    continue
                r2 = np.abs(w2in).max(axis=1)
            else:
                if w2.shape[1] != w1.shape[0]:
                    continue
                r2 = np.abs(w2).transpose(1, 0, 2, 3).reshape(w2.shape[1], -1).max(axis=1)
            r1 = np.abs(w1).reshape(w1.shape[0], -1).max(axis=1)
            s = np.sqrt(np.maximum(r1, 1e-12) / np.maximum(r2, 1e-12))
            s = np.where((r1 > 0) & (r2 > 0), np.clip(s, 1.0 / max_scale, max_scale), 1.0)
            biggest = max(biggest, float(s.max()), float(1.0 / s.min()))
            put(a.input[1], w1 / s.reshape(-1, 1, 1, 1))
            if len(a.input) > 2 and a.input[2] in inits:
                put(a.input[2], get(a.input[2]) / s)
            if b.op_type == "Gemm":
                put(b.input[1], w2 * (s.reshape(1, -1) if _attr(b, "transB", 0) else s.reshape(-1, 1)))
            else:
                put(b.input[1], w2 * s.reshape(1, -1, 1, 1))
    rep.max_scale = biggest
    rep.range_ratio_after = max(ratio(get(a.input[1])) for a, _, _ in pairs)
    for name, arr in arrays.items():
        inits[name].CopyFrom(numpy_helper.from_array(arr, name))
    return rep
