"""Each layer's own INT8 error, isolated: the FP32 reference's input fed into the layer's INT8 version.

For layer ``L`` of a QDQ file, its *region* is the QDQ graph walked back from ``L``'s inputs until the
raw outputs of the other layers or the model input: ``L``'s weight and bias Q/DQ, the Q/DQ pairs its
input passes through since the previous layers (with their ReLU / PReLU / pooling), and ``L`` itself;
then the FP32 model's own ops from ``L`` to where the next layer reads it (its ReLU, Clip, ...). ``L``'s
output quantizer is not in it (rounding and range: that is its consumers' input quantizer, counted in
theirs; a ReLU the QDQ file fused into it comes back as the FP32 model's ReLU). The region runs on the
FP32 reference's tensors at its boundary, so no error comes from upstream: the region's output vs the
reference's is the error ``L``'s own quantizers cause alone ("quantize one layer at a time", as AIMET's /
ModelOpt's per-layer sensitivity, measured where the next layer reads the layer rather than at the model
output).

Cost: one pass of the reference with the boundary tensors exposed, then one pass of each layer's region
(its own op and the elementwise ops in front of it) over at most ``SAMPLES`` images, ``ISO_BATCH`` at a
time: about two FP32 passes over those images in all.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from edgerep.errors import EdgerepError
from edgerep.quant.onnx_graph import consumers

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


class _Index:
    """A model's lookups, built once for all its layers' regions: each tensor's producer and readers, the
    nodes and the initializers by name."""

    def __init__(self, model):
        self.model = model
        self.prod = {o: n for n in model.graph.node for o in n.output}
        self.cons = consumers(model)
        self.nodes = {n.name: n for n in model.graph.node}
        self.inits = {i.name: i for i in model.graph.initializer}


def _tail(f: _Index, f_node, target: str) -> list:
    """The FP32 model's ops from ``f_node``'s output to ``target`` (ReLU, Clip, ...: one consumer each)."""
    out, t = [], f_node.output[0]
    while t != target:
        nxt = f.cons.get(t) or []
        if len(nxt) != 1:
            raise EdgerepError(f"{f_node.name}: its output does not reach {target} through single-consumer ops")
        out.append(nxt[0])
        t = nxt[0].output[0]
    return out


def _region(q: _Index, f: _Index, node_name: str, boundary: set[str], target: str) -> Region:
    """``node_name``'s region (see the module doc): the QDQ model ``q`` walked back from the layer's inputs
    to the ``boundary`` tensors, the layer, then the FP32 model ``f``'s ops from the layer to ``target``."""
    import onnx
    from onnx import helper

    prod, inits = q.prod, q.inits
    graph_inputs = {i.name for i in q.model.graph.input} - set(inits)
    layer, f_layer = q.nodes[node_name], f.nodes[node_name]
    keep: set[str] = set()
    feeds: list[str] = []
    used: set[str] = set()
    stack, seen = list(layer.input), set()
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
            if prod[t].name not in keep:
                keep.add(prod[t].name)
                stack.extend(prod[t].input)
        else:
            raise EdgerepError(f"tensor {t} (read by {node_name}) has no producer in the INT8 file")
    own = onnx.NodeProto()
    own.CopyFrom(layer)
    own.ClearField("output")
    own.output.extend(f_layer.output)  # the name the FP32 tail reads (a fused ReLU renames it in the QDQ file)
    tail = _tail(f, f_layer, target)
    tail_inits = [f.inits[i] for n in tail for i in n.input if i in f.inits and i not in used]
    g = helper.make_graph([n for n in q.model.graph.node if n.name in keep] + [own] + tail, f"isolated_{node_name}",
                          [helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in feeds],
                          [helper.make_empty_tensor_value_info(target)],
                          [inits[i] for i in sorted(used)] + tail_inits)
    m = helper.make_model(g, opset_imports=list(q.model.opset_import))
    m.ir_version = q.model.ir_version
    return Region(node_name, feeds, target, m)


def build_regions(q_model, f_model, nodes: Sequence[str], targets: Sequence[str]) -> list[Region]:
    """Each layer's region (``nodes`` in graph order, ``targets`` the FP32 model's tensors the next layer
    reads). The layers' raw outputs in the QDQ file must be tensors of the FP32 model too (fed from it)."""
    q, f = _Index(q_model), _Index(f_model)
    f_tensors = set(f.prod) | {i.name for i in f_model.graph.input}
    q_nodes = q.nodes
    raw = {q_nodes[name].output[0] for name in nodes}
    regions = []
    for name, target in zip(nodes, targets):
        r = _region(q, f, name, raw - {q_nodes[name].output[0]}, target)
        missing = [t for t in r.feeds if t not in f_tensors]
        if missing:
            raise EdgerepError(f"layer {name} reads {missing[0]}, which the FP32 file does not have",
                               hint="debug a QDQ file written from the bundle's FP32 file (tensor names kept)")
        regions.append(r)
    return regions


def isolated_sums(q, f, nodes: Sequence[str], targets: Sequence[str], x: np.ndarray, session, sums_factory,
                  threads: int | None = None) -> list:
    """Per layer, the running sums (``sums_factory()``, ``.add(reference, got)``) of its region's output vs
    the reference ``f``'s, at ``targets`` (the FP32 model's tensors the next layer reads), on ``x``: one
    pass of ``f`` plus one pass per layer's region, ``ISO_BATCH`` images at a time. ``session(model,
    optimization, threads=...)`` opens an onnxruntime session."""
    from edgerep.quant.onnx_outputs import with_outputs

    regions = build_regions(q, f, nodes, targets)
    fed = {i.name for i in f.graph.input}
    outs = [t for t in dict.fromkeys([t for r in regions for t in r.feeds] + list(targets)) if t not in fed]
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
        for r, s, acc in zip(regions, rs, sums):
            got = s.run([r.target], {t: ref[t] for t in r.feeds})[0]
            acc.add(ref[r.target][:n], got[:n])
    return sums


__all__ = ["SAMPLES", "ISO_BATCH", "Region", "build_regions", "isolated_sums"]
