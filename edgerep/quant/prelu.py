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

__all__ = ["int8_prelus", "prelu_as_max", "prelu_int8", "share_prelu_ranges"]


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


def int8_prelus(model) -> list[str]:
    """The PRelu nodes ``prelu_int8`` can run on the integers once quantized: constant slopes, all in [0, 1]."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    out = []
    for n in model.graph.node:
        if n.op_type == "PRelu" and len(n.input) == 2 and n.input[1] in inits:
            a = numpy_helper.to_array(inits[n.input[1]])
            if np.isfinite(a).all() and (a >= 0).all() and (a <= 1).all():
                out.append(n.name or n.output[0])
    return out


def share_prelu_ranges(model, ranges: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    """``ranges`` with each PReLU's output given its input's range where every slope is in [0, 1] (the output,
    ``max(x, a x)``, then lies inside the input's range): both sides on one grid, so ``prelu_int8`` needs one
    integer multiply. The output's grid is coarser than its own calibrated one by (input span / output span)."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    out = dict(ranges)
    for n in model.graph.node:
        if n.op_type != "PRelu" or len(n.input) != 2 or n.input[1] not in inits:
            continue
        a = numpy_helper.to_array(inits[n.input[1]])
        if np.isfinite(a).all() and (a >= 0).all() and (a <= 1).all() and n.input[0] in out and n.output[0] in out:
            out[n.output[0]] = out[n.input[0]]
    return out


def prelu_int8(model) -> int:
    """Rewrite, in place, every PReLU with constant slopes in [0, 1] that sits between a per-tensor
    ``DequantizeLinear`` and a single ``QuantizeLinear`` of the same grid (``share_prelu_ranges``) as integer ops
    on the quantized tensor: ``Max(x_q, QLinearMul(x_q, a_q))``. Returns how many.

    Rounding and saturation are monotone, so ``max(Q(u), Q(v)) = Q(max(u, v))`` and ``Q(x) = x_q`` on one grid:
    the result equals the float island ``Q(max(x, a x))`` on that grid except for the slopes, stored on their own
    8-bit grid (at most half a step of ``max a / 255`` each). onnxruntime has no per-channel quantized PRelu; the
    float island (DequantizeLinear, Mul, Max, QuantizeLinear) runs ~11.5 ms per 16-channel 360 x 640 map, these
    two integer ops ~3.7 ms (2 threads, avx512_vnni); the SR demo's whole 360p frame 74.1 -> 58.4 ms of CPU on one
    thread. ``QLinearMul`` is an onnxruntime contrib op (com.microsoft):
    only the onnxruntime CPU files get this rewrite. On separate grids it would take a second QLinearMul to move
    ``x`` onto the output's grid: no faster than the float island (measured), so such PReLUs are left."""
    from onnx import helper, numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    readers: dict[str, list] = {}
    for n in g.node:
        for t in n.input:
            readers.setdefault(t, []).append(n)
    outputs = {o.name for o in g.output}
    taken = {n.name for n in g.node} | {o for n in g.node for o in n.output} | set(inits)
    drop: set[int] = set()
    replace: dict[int, list] = {}  # id(PRelu) -> the integer ops in its place
    new_inits, slopes = [], set()
    for n in g.node:
        found = _int8_prelu_site(n, inits, producers, readers, outputs)
        if found is None:
            continue
        dq, q, a = found
        x_q, sx, zx = dq.input[0], dq.input[1], dq.input[2]
        zdtype = numpy_helper.to_array(inits[zx]).dtype
        aq, sa, za = _quantize_slopes(a, zdtype)
        base = n.name or n.output[0]
        names = {k: _fresh(f"{base}/{k}", taken) for k in ("slope_q", "slope_scale", "slope_zero_point", "times_slope")}
        new_inits += [numpy_helper.from_array(aq, names["slope_q"]),
                      numpy_helper.from_array(np.array(sa, np.float32), names["slope_scale"]),
                      numpy_helper.from_array(np.array(za, zdtype), names["slope_zero_point"])]
        slopes.add(n.input[1])
        replace[id(n)] = [
            helper.make_node("QLinearMul", [x_q, sx, zx, names["slope_q"], names["slope_scale"],
                                            names["slope_zero_point"], q.input[1], q.input[2]], [names["times_slope"]],
                             name=_fresh(f"{base}/slope_qlinearmul", taken), domain="com.microsoft"),
            helper.make_node("Max", [x_q, names["times_slope"]], [q.output[0]], name=_fresh(f"{base}/max_int8", taken))]
        drop.add(id(q))
        if len(readers[dq.output[0]]) == 1:
            drop.add(id(dq))
    if not replace:
        return 0
    nodes = []
    for n in g.node:
        if id(n) not in drop:
            nodes += replace.get(id(n), [n])
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(new_inits)
    used = {t for n in g.node for t in n.input} | outputs
    gone = slopes - used  # the float slopes went with their PRelus (unless something else reads them)
    kept = [i for i in g.initializer if i.name not in gone]
    del g.initializer[:]
    g.initializer.extend(kept)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return len(replace)


def _int8_prelu_site(n, inits, producers, readers, outputs):
    """(DequantizeLinear, QuantizeLinear, slopes) when ``n`` is a PRelu with constant slopes in [0, 1] between a
    per-tensor DequantizeLinear and its only reader, a QuantizeLinear on the same grid (scale and zero point)."""
    from onnx import numpy_helper

    if n.op_type != "PRelu" or len(n.input) != 2 or n.input[1] not in inits:
        return None
    a = numpy_helper.to_array(inits[n.input[1]]).astype(np.float64)
    dq = producers.get(n.input[0])
    rd = readers.get(n.output[0], [])
    if not (np.isfinite(a).all() and (a >= 0).all() and (a <= 1).all()) or dq is None or len(rd) != 1 \
            or dq.op_type != "DequantizeLinear" or n.output[0] in outputs:
        return None
    q = rd[0]
    if q.op_type != "QuantizeLinear" or len(dq.input) != 3 or len(q.input) != 3:
        return None
    vals = [inits.get(t) for t in (dq.input[1], dq.input[2], q.input[1], q.input[2])]
    if any(v is None or numpy_helper.to_array(v).size != 1 for v in vals):
        return None
    sx, zx, sy, zy = (numpy_helper.to_array(v) for v in vals)
    if zx.dtype != zy.dtype or zx.dtype not in (np.uint8, np.int8) or sx != sy or zx != zy:
        return None
    return dq, q, a


def _quantize_slopes(a: np.ndarray, dtype) -> tuple[np.ndarray, float, int]:
    """The slopes on an 8-bit asymmetric grid of ``dtype`` that holds 0: (integers, scale, zero point)."""
    lo, hi = min(float(a.min()), 0.0), max(float(a.max()), 0.0)
    info = np.iinfo(dtype)
    scale = (hi - lo) / (info.max - info.min) if hi > lo else 1.0
    zp = int(np.clip(np.round(info.min - lo / scale), info.min, info.max))
    q = np.clip(np.round(a / scale) + zp, info.min, info.max).astype(dtype)
    return q, float(np.float32(scale)), zp

