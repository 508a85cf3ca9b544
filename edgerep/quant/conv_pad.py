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

import re

import numpy as np

__all__ = ["SLICE_SUFFIX", "fast_width", "pad_narrow_convs", "unpad", "unpadded_rows"]

SLICE_SUFFIX = "/slice_real"  # the Slice after a padded conv's QuantizeLinear: ``<conv name>/slice_real``


_PAD = "_padded"


def fast_width(channels: int, minimum: int = 16, multiple: int = 4) -> int:
    """The output channel count the fast kernel takes: at least ``minimum`` and a multiple of ``multiple``."""
    return max(minimum, -(-channels // multiple) * multiple)


def _padding_site(conv, inits, producer, readers, outputs):
    """(weight DQ, bias DQ or None, output QuantizeLinear) when ``conv`` is a quantized group-1 Conv: input,
    weight and bias from DequantizeLinear nodes (weight and bias of initializers, read by this conv only), its
    output read by one QuantizeLinear only; else None."""
    def dq_of(t: str):
        n = producer.get(t)
        ok = n is not None and n.op_type == "DequantizeLinear" and len(readers.get(t, [])) == 1 and \
            all(x in inits for x in n.input if x)
        return n if ok else None

    if conv.op_type != "Conv" or any(a.name == "group" and a.i != 1 for a in conv.attribute):
        return None
    x_dq, w_dq = producer.get(conv.input[0]), dq_of(conv.input[1])
    has_bias = len(conv.input) > 2 and bool(conv.input[2])
    b_dq = dq_of(conv.input[2]) if has_bias else None
    users = readers.get(conv.output[0], [])
    if x_dq is None or x_dq.op_type != "DequantizeLinear" or w_dq is None or (has_bias and b_dq is None) \
            or conv.output[0] in outputs or len(users) != 1 or users[0].op_type != "QuantizeLinear":
        return None
    return w_dq, b_dq, users[0]


def pad_narrow_convs(model, minimum: int = 16, multiple: int = 4) -> list[str]:
    """Rewrite ``model`` (a QDQ file) in place: every quantized group-1 ``Conv`` (``_padding_site``) whose output
    channels are not ``fast_width`` gets zero filters up to it and a Slice after its QuantizeLinear. Returns the
    convs padded."""
    from onnx import helper, numpy_helper

    from edgerep.quant.onnx_graph import consumers, drop_unread_initializers, drop_value_info

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    readers = consumers(model)
    outputs = {o.name for o in g.output}
    padded, stale, new_nodes, replaced = [], set(), [], set()
    for conv in g.node:
        site = _padding_site(conv, inits, producer, readers, outputs)
        if site is None:
            continue
        w_dq, b_dq, q = site
        cout = int(numpy_helper.to_array(inits[w_dq.input[0]]).shape[0])
        width = fast_width(cout, minimum, multiple)
        if width == cout:
            continue
        for dq in [d for d in (w_dq, b_dq) if d is not None]:
            per_channel = any(a.name == "axis" and a.i == 0 for a in dq.attribute)
            for k, t in enumerate(dq.input):
                if not t:
                    continue
                a = numpy_helper.to_array(inits[t])
                if k > 0 and not (per_channel and a.ndim == 1 and a.shape[0] == cout):
                    continue  # a per-tensor scale / zero point: nothing to pad
                fill = np.zeros_like(a[:1]) if k != 1 else a[:1]  # values and zero points 0; scales: a real one
                pad = np.concatenate([a, np.repeat(fill, width - cout, axis=0)], axis=0)
                name = f"{t}{_PAD}{width}"
                g.initializer.append(numpy_helper.from_array(pad.astype(a.dtype), name))
                replaced.add(t)
                dq.input[k] = name
        real = q.output[0]
        q.output[0] = f"{real}{_PAD}{width}"
        consts = {f"{real}_slice_{k}": np.array(v, np.int64) for k, v in (("starts", [0]), ("ends", [cout]),
                                                                       ("axes", [1]))}
        g.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items())
        new_nodes.append(helper.make_node("Slice", [q.output[0], *consts], [real], name=f"{conv.name}{SLICE_SUFFIX}"))
        stale.add(conv.output[0])
        padded.append(conv.name)
    g.node.extend(new_nodes)
    drop_unread_initializers(model, replaced)
    drop_value_info(model, stale)  # the conv's float output has the padded width now
    return padded


def unpad(model) -> list[str]:
    """Undo ``pad_narrow_convs`` in place (readers that map a QDQ file's weights and tensors onto the FP32 file's:
    AdaRound's grids, ``edgerep debug``): each padded conv's weight, scale, zero point and bias back to its real
    channels under their original names, its QuantizeLinear writing the sliced tensor's name again, the Slice
    gone. The same function, bit for bit. Returns the convs unpadded."""
    from onnx import numpy_helper

    from edgerep.quant.onnx_graph import drop_unread_initializers

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    slices = [n for n in g.node if n.op_type == "Slice" and n.name.endswith(SLICE_SUFFIX)]
    done, drop_nodes, drop_inits = [], [], set()
    for sl in slices:
        conv = next((n for n in g.node if n.name == sl.name[: -len(SLICE_SUFFIX)]), None)
        q = producer.get(sl.input[0])
        if conv is None or q is None or sl.input[2] not in inits:
            continue
        cout = int(numpy_helper.to_array(inits[sl.input[2]])[0])
        for t in conv.input[1:]:
            dq = producer.get(t)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            for k, name in enumerate(dq.input):
                m = re.fullmatch(rf"(.+){_PAD}(\d+)", name)
                a = numpy_helper.to_array(inits[name]) if m and name in inits else None
                if a is None or a.ndim == 0 or a.shape[0] != int(m.group(2)):
                    continue
                base = m.group(1)
                if base not in inits:
                    restored = numpy_helper.from_array(a[:cout].copy(), base)
                    g.initializer.append(restored)
                    inits[base] = restored
                dq.input[k] = base
                drop_inits.add(name)
        q.output[0] = sl.output[0]
        drop_nodes.append(sl)
        drop_inits.update(sl.input[1:])
        done.append(conv.name)
    for n in drop_nodes:
        g.node.remove(n)
    drop_unread_initializers(model, drop_inits)
    return done


def unpadded_rows(stored: np.ndarray, rows: int) -> np.ndarray | None:
    """``stored``'s first ``rows`` filters when it is a weight padded by ``pad_narrow_convs`` from ``rows`` filters
    (its padding all zero), else None."""
    if stored.shape[0] != fast_width(rows) or stored.shape[0] == rows or stored[rows:].any():
        return None
    return stored[:rows]
