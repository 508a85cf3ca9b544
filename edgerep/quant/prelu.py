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


def _unit_slopes(n, inits) -> np.ndarray | None:
    """``n``'s slopes (float64) when it is a PRelu with constant, finite slopes all in [0, 1] (its output,
    ``max(x, a x)``, then lies inside its input's range), else None."""
    from onnx import numpy_helper

    if n.op_type != "PRelu" or len(n.input) != 2 or n.input[1] not in inits:
        return None
    a = numpy_helper.to_array(inits[n.input[1]]).astype(np.float64)
    return a if np.isfinite(a).all() and (a >= 0).all() and (a <= 1).all() else None


def int8_prelus(model) -> list[str]:
    """The PRelu nodes ``prelu_int8`` can run on the integers once quantized: constant slopes, all in [0, 1]."""
    inits = {i.name: i for i in model.graph.initializer}
    return [n.name or n.output[0] for n in model.graph.node if _unit_slopes(n, inits) is not None]


def share_prelu_ranges(model, ranges: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    """``ranges`` with each PReLU's output given its input's range where every slope is in [0, 1] (the output,
    ``max(x, a x)``, then lies inside the input's range): both sides on one grid, so ``prelu_int8`` needs one
    integer multiply. The output's grid is coarser than its own calibrated one by (input span / output span)."""
    inits = {i.name: i for i in model.graph.initializer}
    out = dict(ranges)
    for n in model.graph.node:
        if _unit_slopes(n, inits) is not None and n.input[0] in out and n.output[0] in out:
            out[n.output[0]] = out[n.input[0]]
    return out


def prelu_int8(model) -> int:
    """Rewrite, in place, every PReLU with constant slopes in [0, 1] that sits between a per-tensor
    ``DequantizeLinear`` and a single ``QuantizeLinear`` of the same grid (``share_prelu_ranges``) as integer ops
    on the quantized tensor: ``Max(x_q, Q(depthwise 1x1 conv of DQ(x_q) by the slopes))``. Returns how many.

    The slopes are the conv's per-channel int8 weights: ``w_q = 127`` with scale ``a_c / 127`` (0 with scale 1
    for a zero slope), so the weight is the slope itself; onnxruntime fuses DQ -> Conv -> Q into a depthwise
    ``QLinearConv``. Rounding and saturation are monotone, so ``max(Q(u), Q(v)) = Q(max(u, v))`` and
    ``Q(x) = x_q`` on one grid: the result is the float island ``Q(max(x, a x))`` on that grid, up to the integer
    conv's requantization rounding. onnxruntime has no per-channel quantized PRelu: in float the island
    (DequantizeLinear, Mul, Max, QuantizeLinear) dominated the SR demo's INT8 frame. Measured on it, 360p,
    2 threads, quiet host: a ``QLinearMul`` by the slopes ran ~3.2 ms per layer inside the NHWC graph (its
    per-channel broadcast over 16 innermost values); the depthwise QLinearConv joins the NHWC chain: whole INT8
    frame 62.9 (QLinearMul) -> 55.8 ms median, one thread 60.3 -> 50.9 ms of CPU (same run). On separate
    grids a second integer op would move ``x`` onto the output's grid; such PReLUs are left in float."""
    from onnx import helper, numpy_helper

    from edgerep.quant.onnx_graph import consumers, drop_unread_initializers

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    readers = consumers(model)
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
        c = a.size
        flat = a.reshape(c).astype(np.float32)
        w_q = np.where(flat != 0, 127, 0).astype(np.int8).reshape(c, 1, 1, 1)
        w_s = np.where(flat != 0, flat / np.float32(127), np.float32(1)).astype(np.float32)
        base = n.name or n.output[0]
        k = {t: _fresh(f"{base}/{t}", taken) for t in ("slope_weight", "slope_scale", "slope_zero_point", "x_dq",
                                                        "slope_dq", "times_slope", "times_slope_q")}
        new_inits += [numpy_helper.from_array(w_q, k["slope_weight"]), numpy_helper.from_array(w_s, k["slope_scale"]),
                      numpy_helper.from_array(np.zeros(c, np.int8), k["slope_zero_point"])]
        slopes.add(n.input[1])
        replace[id(n)] = [
            helper.make_node("DequantizeLinear", [x_q, sx, zx], [k["x_dq"]], name=_fresh(f"{base}/x_dq", taken)),
            helper.make_node("DequantizeLinear", [k["slope_weight"], k["slope_scale"], k["slope_zero_point"]],
                             [k["slope_dq"]], axis=0, name=_fresh(f"{base}/slope_dq", taken)),
            helper.make_node("Conv", [k["x_dq"], k["slope_dq"]], [k["times_slope"]], group=c, kernel_shape=[1, 1],
                             name=_fresh(f"{base}/slope_conv", taken)),
            helper.make_node("QuantizeLinear", [k["times_slope"], q.input[1], q.input[2]], [k["times_slope_q"]],
                             name=_fresh(f"{base}/slope_q", taken)),
            helper.make_node("Max", [x_q, k["times_slope_q"]], [q.output[0]], name=_fresh(f"{base}/max_int8", taken))]
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
    drop_unread_initializers(model, slopes)  # the float slopes went with their PRelus, unless another node reads them
    return len(replace)


def _int8_prelu_site(n, inits, producers, readers, outputs):
    """(DequantizeLinear, QuantizeLinear, slopes) when ``n`` is a PRelu with constant slopes in [0, 1] between a
    per-tensor DequantizeLinear and its only reader, a QuantizeLinear on the same grid (scale and zero point)."""
    from onnx import numpy_helper

    a = _unit_slopes(n, inits)
    dq = producers.get(n.input[0]) if a is not None else None
    rd = readers.get(n.output[0], [])
    if dq is None or len(rd) != 1 or dq.op_type != "DequantizeLinear" or n.output[0] in outputs:
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
