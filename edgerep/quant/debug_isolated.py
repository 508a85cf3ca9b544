"""Each layer's own INT8 error, isolated: the FP32 reference's input fed into the layer's INT8 version.

For layer ``L`` of a QDQ file, its *region* is the QDQ graph walked back from the tensor the next layer
reads (``L``'s output after its ReLU / output Q/DQ) until the raw outputs of the other layers or the
model input: ``L``'s weight and bias Q/DQ, the Q/DQ pairs its input passes through since the previous
layers (with their ReLU / PReLU / pooling), ``L`` itself, and the ops after it. ``L``'s output
quantizer keeps its range (a ReLU fused into a Q/DQ lives in its clamp) but not its rounding: its
rounding is its consumers' input error, counted in theirs. The region runs on the FP32 reference's
tensors at its boundary, so no error comes from upstream: the region's output vs the reference's is the
error ``L``'s own quantizers cause alone ("quantize one layer at a time", as AIMET's / ModelOpt's
per-layer sensitivity, measured where the next layer reads the layer rather than at the model output).

Cost: one pass of the reference with the boundary tensors exposed, then one pass of each layer's region
(its own op and the elementwise ops in front of it) over at most ``SAMPLES`` images, ``ISO_BATCH`` at a
time: about two FP32 passes over those images in all.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from edgerep.errors import EdgerepError

#: images the isolated measure reads by default (the first of the selection set)
SAMPLES = 32
#: images per pass (the reference exposes every boundary tensor at once)
ISO_BATCH = 8


@dataclass
class Region:
    """One layer's isolated graph: its feeds (reference tensors), its output, its ONNX model."""

    node: str
    feeds: list[str]
    target: str
    model: object


#: integer range of a zero point's ONNX type (TensorProto UINT8, INT8, UINT16, INT16)
_RANGE = {2: (0, 255), 3: (-128, 127), 4: (0, 65535), 5: (-32768, 32767)}


def _as_clip(q_node, inits: dict, name: str):
    """The range of the quantizer ``q_node`` (its clamp: where a ReLU fused into it lives) without its
    rounding: ``Clip(x, (qmin - zp) s, (qmax - zp) s)``; ``Identity`` for a per-channel quantizer, a computed
    scale or an integer type without a range here."""
    from onnx import helper, numpy_helper

    if q_node.input[1] not in inits:  # a computed scale: no constant range to keep
        return helper.make_node("Identity", [q_node.input[0]], list(q_node.output), name=name), []
    s = numpy_helper.to_array(inits[q_node.input[1]]).astype(np.float64)
    zi = inits.get(q_node.input[2]) if len(q_node.input) > 2 else None
    z = numpy_helper.to_array(zi).astype(np.float64) if zi is not None else np.zeros_like(s)
    rng = _RANGE.get(zi.data_type if zi is not None else 2)  # no zero point: uint8
    if s.size != 1 or rng is None:
        return helper.make_node("Identity", [q_node.input[0]], list(q_node.output), name=name), []
    lo_q, hi_q = rng
    lo = numpy_helper.from_array(np.asarray((lo_q - z.item()) * s.item(), np.float32), name + "_lo")
    hi = numpy_helper.from_array(np.asarray((hi_q - z.item()) * s.item(), np.float32), name + "_hi")
    return helper.make_node("Clip", [q_node.input[0], lo.name, hi.name], list(q_node.output), name=name), [lo, hi]


def _region(q, node_name: str, boundary: set[str], target: str) -> Region:
    """``node_name``'s region of the QDQ model ``q`` (see the module doc): walked back from ``target``
    (the tensor the next layer reads) to the ``boundary`` tensors; the quantizers between the layer and
    ``target`` keep their range but not their rounding."""
    import onnx
    from onnx import helper

    prod = {o: n for n in q.graph.node for o in n.output}
    cons: dict[str, list] = {}
    for n in q.graph.node:
        for t in n.input:
            cons.setdefault(t, []).append(n)
    inits = {i.name: i for i in q.graph.initializer}
    graph_inputs = {i.name for i in q.graph.input} - set(inits)
    layer = next(n for n in q.graph.node if n.name == node_name)
    after: set[str] = set()  # the handed-on ops between the layer and target
    t = layer.output[0]
    while t != target:
        nxt = cons.get(t) or []
        if len(nxt) != 1:
            raise EdgerepError(f"{node_name}: its output does not reach {target} through single-consumer ops")
        after.add(nxt[0].name)
        t = nxt[0].output[0]
    keep: dict[str, object] = {}
    feeds: list[str] = []
    used: set[str] = set()
    stack, seen = [target], set()
    while stack:
        t = stack.pop()
        if not t or t in seen:
            continue
        seen.add(t)
        if t in inits:
            used.add(t)
        elif t in boundary or t in graph_inputs:
            feeds.append(t)
        elif t in prod:
            p = prod[t]
            if p.name not in keep:
                keep[p.name] = p
                stack.extend(p.input)
        else:
            raise EdgerepError(f"tensor {t} (read by {node_name}) has no producer in the INT8 file")
    nodes, extra = [], []
    for n in q.graph.node:
        if n.name not in keep:
            continue
        if n.name in after and n.op_type == "QuantizeLinear":
            n, more = _as_clip(n, inits, n.name + "__range")
            extra += more
        elif n.name in after and n.op_type == "DequantizeLinear":
            n = helper.make_node("Identity", [n.input[0]], list(n.output), name=n.name + "__identity")
        nodes.append(n)
    need = {i for n in nodes for i in n.input}
    g = helper.make_graph(nodes, f"isolated_{node_name}",
                          [helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in feeds],
                          [helper.make_empty_tensor_value_info(target)],
                          [inits[i] for i in sorted(used) if i in need] + extra)
    m = helper.make_model(g, opset_imports=list(q.opset_import))
    m.ir_version = q.ir_version
    return Region(node_name, feeds, target, m)


def build_regions(q, f, nodes: Sequence[str], targets: Sequence[str]) -> list[Region]:
    """Each layer's region (``nodes`` in graph order, ``targets`` the INT8 file's tensors the next layer
    reads). The layers' raw outputs must be tensors of the reference too (fed from it)."""
    q_nodes = {n.name: n for n in q.graph.node}
    f_tensors = {o for n in f.graph.node for o in n.output} | {i.name for i in f.graph.input}
    raw = {q_nodes[name].output[0] for name in nodes}
    regions = []
    for name, target in zip(nodes, targets):
        own = q_nodes[name].output[0]
        r = _region(q, name, raw - {own}, target)
        missing = [t for t in r.feeds if t not in f_tensors]
        if missing:
            raise EdgerepError(f"layer {name} reads {missing[0]}, which the FP32 file does not have",
                               hint="debug a QDQ file written from the bundle's FP32 file (tensor names kept)")
        regions.append(r)
    return regions


def isolated_sums(q, f, nodes: Sequence[str], targets: Sequence[str], references: Sequence[str], x: np.ndarray,
                  session, sums_factory, threads: int | None = None) -> list:
    """Per layer, the running sums (``sums_factory()``, ``.add(reference, got)``) of its region's output
    (``targets``, tensors of the QDQ model ``q``) vs the reference ``f``'s (``references``) on ``x``: one
    pass of ``f`` plus one pass per layer's region, ``ISO_BATCH`` images at a time. ``session(model,
    optimization, threads=...)`` opens an onnxruntime session."""
    from edgerep.quant.onnx_outputs import with_outputs

    regions = build_regions(q, f, nodes, targets)
    fed = {i.name for i in f.graph.input}
    outs = [t for t in dict.fromkeys([t for r in regions for t in r.feeds] + list(references)) if t not in fed]
    fs = session(with_outputs(f, outs), "disable", threads=threads)
    rs = [session(r.model, "disable", threads=threads) for r in regions]
    inp = fs.get_inputs()[0]
    fixed = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else None
    batch = fixed or ISO_BATCH
    sums = [sums_factory() for _ in regions]
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        n = len(xb)
        if fixed and n < fixed:
            xb = np.concatenate([xb, np.zeros((fixed - n, *xb.shape[1:]), dtype=xb.dtype)])
        ref = dict(zip(outs, fs.run(outs, {inp.name: xb})))
        ref[inp.name] = xb
        for r, s, acc, want in zip(regions, rs, sums, references):
            got = s.run([r.target], {t: ref[t] for t in r.feeds})[0]
            acc.add(ref[want][:n], got[:n])
    return sums


__all__ = ["SAMPLES", "ISO_BATCH", "Region", "build_regions", "isolated_sums"]
