"""Lookups and clean-ups over an ONNX graph that several passes need: who reads a tensor, what a set of tensors
depends on, dropping what a rewrite left unread."""
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


def drop_unread_initializers(model, names: Iterable[str]) -> None:
    """Remove the initializers ``names`` that no node reads and no graph output names (what a rewrite replaced)."""
    g = model.graph
    read = {t for n in g.node for t in n.input} | {o.name for o in g.output}
    gone = set(names) - read
    if gone:
        kept = [i for i in g.initializer if i.name not in gone]
        del g.initializer[:]
        g.initializer.extend(kept)


def drop_value_info(model, names: Iterable[str]) -> None:
    """Remove the shape records of tensors ``names`` (a rewrite removed them or changed their shape)."""
    gone = set(names)
    if gone:
        kept = [v for v in model.graph.value_info if v.name not in gone]
        del model.graph.value_info[:]
        model.graph.value_info.extend(kept)


__all__ = ["ancestors", "consumers", "drop_unread_initializers", "drop_value_info"]
