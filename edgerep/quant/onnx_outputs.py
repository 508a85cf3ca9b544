"""Intermediate activations of an ONNX model read by exposing them as graph outputs (debug, AdaRound)."""
from __future__ import annotations

from typing import Sequence


def with_outputs(model, names: Sequence[str]):
    """A copy of ``model`` whose graph also outputs the tensors ``names`` (types left to onnxruntime's inference)."""
    import onnx
    from onnx import helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for t in names:
        if t not in have:
            m.graph.output.append(helper.make_empty_tensor_value_info(t))
            have.add(t)
    return m
