"""The onnxruntime.quantization internals edgerep builds QDQ files with are pinned: a release that
renames or reorders their parameters fails here with the name, not with a wrong Q/DQ file."""
from __future__ import annotations

import inspect

import pytest

from edgerep.errors import EdgerepError
from edgerep.quant import ort_internals
from edgerep.quant.ort_internals import PINNED, check_internals


def test_the_installed_onnxruntime_has_every_pinned_signature():
    assert check_internals() == [], "\n".join(check_internals())


def test_a_reordered_signature_is_named_with_both_parameter_lists(monkeypatch):
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer

    real = inspect.signature(QDQQuantizer.__init__)
    params = list(real.parameters.values())
    params[4], params[5] = params[5], params[4]  # weight_qType <-> activation_qType, as a release might
    monkeypatch.setattr(QDQQuantizer.__init__, "__signature__", real.replace(parameters=params), raising=False)
    problems = check_internals()
    assert len(problems) == 1 and "QDQQuantizer.__init__" in problems[0], problems
    assert "activation_qType, weight_qType" in problems[0] and "weight_qType, activation_qType" in problems[0]
    with pytest.raises(EdgerepError, match="onnxruntime's QDQ quantizer changed"):
        ort_internals.qdq_quantizer(None, per_channel=True, reduce_range=False, weight_qtype=None,
                                    activation_qtype=None, tensors_range=None, nodes_to_quantize=[],
                                    nodes_to_exclude=[], op_types=[], extra_options={})


def test_every_pinned_name_is_one_edgerep_calls():
    """No stale pins: each pinned function's name appears in edgerep's quantization code."""
    from pathlib import Path

    src = "".join(p.read_text() for p in (Path(ort_internals.__file__).parent).glob("*.py")
                  if p.name != "ort_internals.py")
    for spec in PINNED:
        name = spec.partition(":")[2].split(".")[0]
        assert name in src or name == "QDQQuantizer", spec
