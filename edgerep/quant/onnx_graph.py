"""Lookups over an ONNX graph that several passes need: who reads a tensor, what a set of tensors depends on."""
from __future__ import annotations

from typing import Iterable


def consumers(model) -> dict[str, list]:
    """Tensor name -> the nodes of ``model`` that read it."""
    out: dict[str, list] = {}
    for n in model.graph.node:
        for t in n.input:
            out.setdefault(t, []).append(n)
    return out


def ancestors(model, tensors: Iterable[str]) -> set[int]:
    """Positions in ``model.graph.node`` of every node that ``tensors`` depend on: their producers, walked back
    through the producers of those nodes' inputs (graph inputs and initializers end the walk). Positions, not
    ``id()``: protobuf hands out a new Python object for a node each time the list is read."""
    nodes = list(model.graph.node)
    producer = {o: i for i, n in enumerate(nodes) for o in n.output}
    todo = [t for t in tensors if t in producer]
    seen, keep = set(todo), set()
    while todo:
        i = producer[todo.pop()]
        if i in keep:
            continue
        keep.add(i)
        for t in nodes[i].input:
            if t and t in producer and t not in seen:
                seen.add(t)
                todo.append(t)
    return keep


__all__ = ["ancestors", "consumers"]
