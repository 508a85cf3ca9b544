"""Layers kept in float after a recovery step take back their weights from the model before learning
(``edgerep.quant.qdq.restore_float_weights``); an initializer a quantized layer also reads stays learned."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgerep.errors import EdgerepError
from edgerep.quant.qdq import restore_float_weights


def _model(w: np.ndarray, wc: np.ndarray):
    """Convs a and b read one shared weight ``w``; conv c its own ``wc``."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["ya"], name="a", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["ya", "w"], ["yb"], name="b", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["yb", "wc"], ["y"], name="c", pads=[1, 1, 1, 1])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2, 4, 4])],
                          [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2, 4, 4])],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(wc, "wc")])
    return helper.make_model(g)


def _arrays(model) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


@pytest.fixture()
def original(tmp_path):
    rng = np.random.default_rng(0)
    w, wc = (rng.standard_normal((2, 2, 3, 3)).astype(np.float32) for _ in range(2))
    path = tmp_path / "orig.onnx"
    onnx.save(_model(w, wc), str(path))
    return path, w, wc


def test_restore_float_weights_leaves_an_initializer_a_quantized_layer_shares(original):
    path, w, wc = original
    learned = _model(np.round(w * 4) / 4, np.round(wc * 4) / 4)
    assert restore_float_weights(learned, path, ["a", "c"]) == ["wc"]  # b is quantized and reads w
    got = _arrays(learned)
    assert np.array_equal(got["wc"], wc) and np.array_equal(got["w"], np.round(w * 4) / 4)
    assert restore_float_weights(learned, path, ["a", "b"]) == ["w"]  # both readers in float now
    assert np.array_equal(_arrays(learned)["w"], w)


def test_restore_float_weights_refuses_a_different_shape(original):
    path, w, wc = original
    learned = _model(w, np.zeros((2, 2, 1, 1), np.float32))
    with pytest.raises(EdgerepError, match="'wc' has shape"):
        restore_float_weights(learned, path, ["c"])
