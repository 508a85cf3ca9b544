"""Narrow INT8 convolutions padded to a width onnxruntime's fast kernel takes, then sliced back on the integers.

onnxruntime's x86 ``QLinearConv`` (group 1) runs a fast kernel only when the output channels are at least 16 and a
multiple of 4; any other count falls back to a path 2-4x slower per output value. Measured on one 2-core AMD EPYC
(avx512_vnni, onnxruntime 1.32.0), 3x3, 16 input channels, 180 x 320: 16 -> 12 outputs 1.5 ms, -> 16 0.7, -> 17 1.7,
-> 20 1.1; at 360 x 640 a 64 -> 4 conv took 23 ms and 64 -> 16 5.7 (``benchmarks/RESULTS.md``). An SR net's last conv
(channels -> colours x scale^2, 12 for RGB x2) and a detector's prediction convs are such layers.

The rewrite: zero filters appended to the weight (scale, zero point and bias padded alike), the output's
QuantizeLinear then a ``Slice`` of the real channels on the u8 / s8 tensor. The real channels' values are the same
bits: each output channel is its own dot product, requantized on the same per-tensor output grid.
"""
from __future__ import annotations

import numpy as np

__all__ = ["fast_width", "pad_narrow_convs"]


def fast_width(channels: int, minimum: int = 16, multiple: int = 4) -> int:
    """The output channel count the fast kernel takes: at least ``minimum`` and a multiple of ``multiple``."""
    return max(minimum, -(-channels // multiple) * multiple)


def pad_narrow_convs(model, minimum: int = 16, multiple: int = 4) -> list[str]:
    """Rewrite ``model`` (a QDQ file) in place: every quantized group-1 ``Conv`` (input, weight and bias from
    DequantizeLinear nodes, its output read by one QuantizeLinear only) whose output channels are not
    ``fast_width`` gets zero filters up to it and a Slice after its QuantizeLinear. Returns the convs padded."""
    from onnx import helper, numpy_helper

    from edgerep.quant.onnx_graph import consumers

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    readers = consumers(model)
    outputs = {o.name for o in g.output}
    padded, stale, new_nodes, replaced = [], set(), [], set()

    def dq_of(t: str):
        n = producer.get(t)
        ok = n is not None and n.op_type == "DequantizeLinear" and len(readers.get(t, [])) == 1 and \
            all(x in inits for x in n.input if x)
        return n if ok else None

    for conv in g.node:
        if conv.op_type != "Conv" or any(a.name == "group" and a.i != 1 for a in conv.attribute):
            continue
        x_dq = producer.get(conv.input[0])
        w_dq = dq_of(conv.input[1])
        b_dq = dq_of(conv.input[2]) if len(conv.input) > 2 and conv.input[2] else None
        users = readers.get(conv.output[0], [])
        if x_dq is None or x_dq.op_type != "DequantizeLinear" or w_dq is None or conv.output[0] in outputs \
                or len(users) != 1 or users[0].op_type != "QuantizeLinear" or (len(conv.input) > 2 and conv.input[2]
                                                                             and b_dq is None):
            continue
        w = numpy_helper.to_array(inits[w_dq.input[0]])
        cout = int(w.shape[0])
        width = fast_width(cout, minimum, multiple)
        if width == cout:
            continue
        for dq in [d for d in (w_dq, b_dq) if d is not None]:
            for k, t in enumerate(dq.input):
                if not t:
                    continue
                a = numpy_helper.to_array(inits[t])
                if a.ndim == 0 or a.shape[0] != cout:  # per-tensor scale / zero point: nothing to pad
                    continue
                fill = np.zeros_like(a[:1]) if k != 1 else a[:1]  # values and zero points 0; scales: a real one
                pad = np.concatenate([a, np.repeat(fill, width - cout, axis=0)], axis=0)
                name = f"{t}_padded{width}"
                g.initializer.append(numpy_helper.from_array(pad.astype(a.dtype), name))
                replaced.add(t)
                dq.input[k] = name
        q = users[0]
        real = q.output[0]
        q.output[0] = f"{real}_padded{width}"
        consts = {f"{real}_slice_{k}": np.array(v, np.int64) for k, v in (("starts", [0]), ("ends", [cout]),
                                                                       ("axes", [1]))}
        g.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items())
        new_nodes.append(helper.make_node("Slice", [q.output[0], *consts], [real], name=f"{conv.name}/slice_real"))
        stale.add(conv.output[0])
        padded.append(conv.name)
    g.node.extend(new_nodes)
    used = {t for n in g.node for t in n.input}
    unused = [i for i in g.initializer if i.name in replaced and i.name not in used]
    for i in unused:
        g.initializer.remove(i)
    if stale:  # the conv's float output has the padded width now: drop its old shape record
        keep = [v for v in g.value_info if v.name not in stale]
        del g.value_info[:]
        g.value_info.extend(keep)
    return padded
