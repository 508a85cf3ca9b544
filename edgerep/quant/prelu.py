"""PReLU with constant slopes rewritten as ``Max(x, a * x)`` (every slope <= 1) or ``Min(x, a * x)`` (every
slope >= 1): the same function, bit for bit (``fl(a x)`` is on the same side of ``x`` as ``a x``, rounding
being monotone), run by onnxruntime's vectorised ``Mul`` / ``Max`` kernels.

Why: onnxruntime's CPU ``PRelu`` kernel walks its per-channel broadcast element by element; on a 16-channel
360 x 640 map it takes ~25 ms where ``Mul`` + ``Max`` take ~2.5 ms (``benchmarks/sr_ptq.py`` prints both). In a
QDQ file a PReLU between two ``QLinearConv`` runs in float (no quantized PReLU kernel), so it dominated the INT8
SR demo's time. Written into the CPU INT8 files (``QdqConfig.prelu_as_max``); the TensorRT file keeps ``PRelu``
(TensorRT has a native parametric-ReLU layer); the FP32 file stays as exported, and onnxruntime's FP32 engine runs
it with the same rewrite made in memory (``OrtEngine``), so INT8/FP32 latency compares like with like.
"""
from __future__ import annotations

import numpy as np

__all__ = ["prelu_as_max"]


def prelu_as_max(model) -> int:
    """Rewrite, in place, every ``PRelu`` of ``model`` whose slope is an initializer with all slopes <= 1
    (``Max``) or all >= 1 (``Min``); other PReLUs are left. Returns how many were rewritten."""
    from onnx import helper, numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    taken = {n.name for n in g.node} | {o for n in g.node for o in n.output}
    nodes, count = [], 0
    for n in g.node:
        slope = inits.get(n.input[1]) if n.op_type == "PRelu" and len(n.input) == 2 else None
        a = numpy_helper.to_array(slope) if slope is not None else None
        op = None if a is None or not np.isfinite(a).all() else "Max" if (a <= 1).all() else \
            "Min" if (a >= 1).all() else None
        if op is None:
            nodes.append(n)
            continue
        base = n.name or n.output[0]
        scaled = _fresh(f"{n.output[0]}_times_slope", taken)
        nodes += [helper.make_node("Mul", [n.input[0], n.input[1]], [scaled], name=_fresh(f"{base}/slope_mul", taken)),
                  helper.make_node(op, [n.input[0], scaled], [n.output[0]], name=_fresh(f"{base}/{op.lower()}", taken))]
        count += 1
    if count:
        del g.node[:]
        g.node.extend(nodes)
    return count


def _fresh(name: str, taken: set[str]) -> str:
    out, i = name, 1
    while out in taken:
        out, i = f"{name}_{i}", i + 1
    taken.add(out)
    return out
