"""Data movement on the integers: a permutation of values (``DepthToSpace``, ``SpaceToDepth``) that reads a
per-tensor ``DequantizeLinear`` runs on the quantized tensor instead, with the dequantization after it.

The same numbers, bit for bit: a per-tensor dequantization maps every value alike (``s (q - z)``), so moving a
pure permutation across it changes nothing but the bytes moved, 1 a value instead of 4. onnxruntime does not do
this itself for these ops: the pixel shuffle after a super-resolution net's last conv stays in float after the
conv's DequantizeLinear (8 ms of the SR demo's 38 ms INT8 frame at 360 x 640, 2 threads; ``benchmarks/sr_latency.py``).
Written into the CPU INT8 files (``QdqConfig.movement_int8``); the TensorRT file is left as quantized (TensorRT
places its own reformats around shuffles).
"""
from __future__ import annotations

import numpy as np

__all__ = ["MOVEMENT_OPS", "movement_on_integers"]

MOVEMENT_OPS = ("DepthToSpace", "SpaceToDepth")


def _scalar(inits: dict, name: str) -> bool:
    """``name`` is a one-value initializer (a per-tensor scale or zero point)."""
    from onnx import numpy_helper

    return name in inits and np.asarray(numpy_helper.to_array(inits[name])).size == 1


def movement_on_integers(model) -> list[str]:
    """Rewrite ``model`` in place: every ``DequantizeLinear`` with a per-tensor scale (and zero point) whose output
    only one ``MOVEMENT_OPS`` node reads (and is no graph output) swaps places with it. Returns the names of the
    ops moved onto the integers; the caller re-sorts the graph (``qdq.toposort``)."""
    from edgerep.quant.onnx_graph import consumers, drop_value_info

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    readers = consumers(model)
    outputs = {o.name for o in g.output}
    moved, stale = [], set()
    for dq in list(g.node):
        if dq.op_type != "DequantizeLinear" or dq.output[0] in outputs:
            continue
        users = readers.get(dq.output[0], [])
        if len(users) != 1 or users[0].op_type not in MOVEMENT_OPS:
            continue
        if not all(_scalar(inits, t) for t in dq.input[1:] if t):
            continue
        op = users[0]
        float_in, float_out = dq.output[0], op.output[0]
        on_integers = f"{float_out}_integers"
        op.input[0], op.output[0] = dq.input[0], on_integers
        dq.input[0], dq.output[0] = on_integers, float_out
        stale.add(float_in)
        moved.append(op.name or float_out)
    drop_value_info(model, stale)  # the float tensor between them no longer exists
    return moved
