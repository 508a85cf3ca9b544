"""ONNX node -> folded layer -> the train-time name the user knows (the fold's provenance).

Exporters name a node after the module scope that made it (``/stage1/stage1.0/conv/Conv``); a graph
folded flat names its folded convs ``reparam``, ``reparam_1`` and a reused activation ``act_1``. A
node that names no folded layer itself (a ReLU, a Q/DQ pair, onnxruntime's fused ``..._nchwc`` and
``..._token_N`` nodes) belongs to the layer whose output it reads. Layers kept in float and profile
rows are named through this one map.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

#: ops that carry one layer's output on (activations, quantization, copies): a node of these belongs
#: to the layer that produced its first input
PASS_THROUGH = {"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Mul", "Identity",
                "QuantizeLinear", "DequantizeLinear", "BatchNormalization", "Reshape", "Flatten", "Transpose"}
WEIGHTED = {"Conv", "Gemm", "MatMul", "ConvTranspose", "QLinearConv", "QLinearMatMul"}
_SUFFIX = re.compile(r"(_token_\d+|_nchwc|_output_\d+)+$")


def module_path(node: str) -> str:
    """The module path an exporter scope names (``/stage1/stage1.0/conv/Conv_token_4`` -> stage1.0.conv;
    ``/backbone/stages.1/stages.1.0/conv/Conv`` -> backbone.stages.1.0.conv: a container's child is named
    after the container's segment, which it replaces, at any depth)."""
    parts: list[str] = []
    for seg in [s for s in node.split("/") if s]:
        if parts and seg.startswith(parts[-1] + "."):
            parts[-1] = seg
        elif re.match(r"^[a-z_][\w.]*$", seg) and not re.search(r"_(output|token)_\d", seg):
            parts.append(seg)
        else:
            break
    return ".".join(parts)


def resolve(path: str, layers: Iterable[str]) -> str | None:
    """The folded weighted layer a module path belongs to (the path itself, or a block's one layer)."""
    layers = set(layers)
    cur = path
    while cur:
        if cur in layers:
            return cur
        under = [k for k in layers if k.startswith(cur + ".")]
        if len(under) == 1:  # the block's one conv
            return under[0]
        if under:
            return None
        cur = cur.rpartition(".")[0]
    return None


def node_layers(onnx_path: str | Path, layers: Iterable[str]) -> dict[str, str]:
    """Node name and output tensor name -> folded layer, for every node of ``onnx_path`` that belongs to one."""
    import onnx

    layers = set(layers)
    model = onnx.load(str(onnx_path), load_external_data=False)
    producer = {o: n for n in model.graph.node for o in n.output}
    memo: dict[str, str | None] = {}

    def layer_of(node, hops: int = 0) -> str | None:
        if node.name in memo:
            return memo[node.name]
        own = resolve(module_path(node.name), layers) if node.name else None
        if own is None and node.op_type in PASS_THROUGH and hops < 8:
            src = next((producer[i] for i in node.input if i in producer), None)
            own = layer_of(src, hops + 1) if src is not None else None
        memo[node.name] = own
        return own

    out: dict[str, str] = {}
    for n in model.graph.node:
        layer = layer_of(n)
        if layer is not None:
            out[n.name] = layer
            for o in n.output:
                out[o] = layer
    return out


def layer_of_node(name: str, names: dict[str, str], layers: Iterable[str]) -> str | None:
    """The folded layer of a node as onnxruntime names it (the file's node, one of its outputs, or a
    node onnxruntime derived from one: ``_nchwc`` / ``_token_N`` suffixes); else by its scope alone."""
    for cand in (name, _SUFFIX.sub("", name)):
        if cand in names:
            return names[cand]
    return resolve(module_path(name), layers)


def provenance_names(onnx_path: str | Path, rows: list[dict]) -> dict[str, dict]:
    """Node name -> its provenance row (``report["fold"]["provenance"]``), for naming ONNX nodes to users."""
    by_layer = {r["layer"]: r for r in rows}
    return {node: by_layer[layer] for node, layer in node_layers(onnx_path, by_layer).items()}


__all__ = ["module_path", "resolve", "node_layers", "layer_of_node", "provenance_names"]
