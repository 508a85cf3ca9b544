"""An engine whose outputs hold NaN or Inf fails its row and the gate, by name (issue 20.18).

The engines are real onnxruntime sessions over tiny ONNX files: ``Log(x)`` gives NaN on a negative input,
``Log(Abs(x))`` is the same model without the fault (the reference)."""
from __future__ import annotations

import numpy as np
import pytest

from edgerep.bench import metrics
from edgerep.bench.accuracy import collect_outputs, score
from edgerep.bench.entry import engine_accuracy
from edgerep.report.models import dump
from edgerep.bench.gate import GateThresholds, evaluate_gate
from edgerep.engines.onnxruntime_engine import OrtEngine
from edgerep.fleet.counts import accuracy, merge, shard_counts
from edgerep.fleet.gate import gate_fleet
from edgerep.quant.calibrate import ArrayDataset

onnx = pytest.importorskip("onnx")


def _log_model(path, *ops: str):
    """input [N, 4] -> ops in a chain -> logits [N, 4]."""
    from onnx import TensorProto, helper

    nodes, prev = [], "input"
    for i, op in enumerate(ops):
        out = "logits" if i == len(ops) - 1 else f"t{i}"
        nodes.append(helper.make_node(op, [prev], [out]))
        prev = out
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def _data():
    """Six rows; in the first four column 0 is negative (log: NaN) and the label is column 1, the largest
    finite logit, so NaN-last ranking (argsort) would call them right; the last two are clean."""
    x = np.array([[-0.1, 0.9, 0.2, 0.1], [-0.2, 0.8, 0.3, 0.1], [-0.05, 0.7, 0.1, 0.2], [-0.3, 0.6, 0.2, 0.4],
                  [0.9, 0.1, 0.2, 0.3], [0.1, 0.2, 0.3, 0.8]], np.float32)
    y = np.array([1, 1, 1, 1, 0, 3], np.int64)
    return ArrayDataset(x, y)


def test_nan_engine_fails_its_row_and_the_gate_by_name(tmp_path):
    ds = _data()
    ref_eng = OrtEngine(_log_model(tmp_path / "ref.onnx", "Abs", "Log"), precision="fp32", threads=1)
    nan_eng = OrtEngine(_log_model(tmp_path / "nan.onnx", "Log"), precision="fp32", threads=1)
    ref_out, labels = collect_outputs(ref_eng, ds.batches(64))
    base = dump(score(ref_out, labels, ref_out))
    assert (base["metric"], base["value"]) == ("top1", 100.0) and base["nonfinite"] == 0
    row = {"name": nan_eng.name, "precision": "int8", "status": "built",
           **engine_accuracy(nan_eng, ds, labels=labels, reference=ref_out, ref_accuracy=base)}
    out, _ = collect_outputs(nan_eng, ds.batches(64))
    assert np.isnan(out[:4, 0]).all()  # onnxruntime really gives NaN
    acc = row["accuracy"]
    assert acc["nonfinite"] == 4 and acc["value"] == pytest.approx(100 * 2 / 6)  # a NaN row is never right
    assert acc["fidelity"]["cosine"] is None  # no mean cosine over rows that have none (a zero-norm rule must not say 1.0)
    assert acc["fidelity"]["top1_agreement"] == pytest.approx(100 * 2 / 6)  # never agrees (argmax would pick the NaN)
    report = {"fold": {"max_rel_error": 0.0}, "baseline": {"accuracy": {**base, "classes": 4}}, "engines": [row]}
    g = evaluate_gate(report, GateThresholds(max_drop=100.0))  # even a budget the drop fits
    assert not g.passed
    (bad,) = [c for c in g.failures if c.name == "finite_outputs"]
    assert bad.engine == "onnxruntime-cpu/int8" and "NaN or Inf" in bad.message and "4 of 6" in bad.message
    # a NaN reference fails the gate as the baseline
    nan_base = dump(score(out, labels, out))
    g = evaluate_gate({**report, "baseline": {"accuracy": {**nan_base, "classes": 4}}, "engines": []},
                      GateThresholds(max_drop=None))
    assert any(c.name == "finite_outputs" and c.engine == "baseline" and not c.passed for c in g.checks)


def test_nan_rows_fail_a_fleet_row_through_its_counts(tmp_path):
    """The fleet scores engines as additive counts: a NaN row fails its node row there too."""
    ds = _data()
    ref_out = OrtEngine(_log_model(tmp_path / "ref.onnx", "Abs", "Log"), precision="fp32").run(ds.x)
    out = OrtEngine(_log_model(tmp_path / "nan.onnx", "Log"), precision="fp32").run(ds.x)
    counts = merge([shard_counts(out[:3], ds.y[:3], ref_out[:3]), shard_counts(out[3:], ds.y[3:], ref_out[3:])])
    acc = accuracy(counts)
    assert acc["nonfinite"] == 4 and acc["value"] == pytest.approx(100 * 2 / 6) and acc["fidelity"]["cosine"] is None
    ref_acc = accuracy(shard_counts(ref_out, ds.y, None))
    row = {"target": "x86-cpu", "node": "a-1", "scope": "node", "name": "onnxruntime-cpu", "precision": "fp32",
           "status": "built", "accuracy": acc, "drop": {"of": "top1", "unit": "points", "value": 0.0}}
    res = gate_fleet({"fold": {"max_rel_error": 0.0}, "baseline": {"accuracy": {**ref_acc, "classes": 4}},
                      "rows": [row]}, GateThresholds(max_drop=100.0))
    assert not res.passed and [c.name for c in res.failures] == ["finite_outputs"]
    assert res.failures[0].engine == "x86-cpu:onnxruntime-cpu/fp32@a-1"


def test_topk_and_argmax_agree_on_rows_with_nan_or_inf():
    logits = np.array([[np.nan, 1.0, 0.0], [2.0, np.inf, 0.0], [0.0, 1.0, 2.0]], np.float32)
    labels = np.array([1, 1, 2])
    assert metrics.topk_correct(logits, labels, 1) == 1 and metrics.topk_correct(logits, labels, 3) == 1
    assert metrics.nonfinite_rows(logits) == 2
    assert metrics.argmax_agreement(logits, logits) == pytest.approx(1 / 3)
