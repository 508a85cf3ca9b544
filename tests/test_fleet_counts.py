"""Fleet pieces that need no cluster: shard bounds, additive accuracy counts, the merged gate, trust checks."""
from __future__ import annotations

import numpy as np
import pytest

from edgerep.bench.accuracy import score
from edgerep.bench.gate import GateThresholds
from edgerep.errors import EdgerepError
from edgerep.fleet import resource_name, targets_of
from edgerep.fleet.counts import accuracy, merge, shard_counts
from edgerep.fleet.gate import gate_fleet, junit_xml
from edgerep.fleet.payload import safe_relative, shard_bounds


@pytest.mark.parametrize("n,k", [(539, 2), (539, 3), (10, 10), (3, 5), (0, 2), (1000, 7)])
def test_shard_bounds_cover_every_row_once(n, k):
    b = shard_bounds(n, k)
    assert b[0][0] == 0 and b[-1][1] == n and all(x[1] == y[0] for x, y in zip(b, b[1:]))
    sizes = [s - a for a, s in b]
    assert max(sizes) - min(sizes) <= 1


def test_merged_counts_equal_the_whole_to_the_last_sample():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((1001, 10)).astype(np.float32)
    out = ref + 0.8 * rng.standard_normal(ref.shape).astype(np.float32)
    labels = rng.integers(0, 10, 1001)
    whole = accuracy(shard_counts(out, labels, ref))
    parts = [shard_counts(out[a:b], labels[a:b], ref[a:b]) for a, b in shard_bounds(1001, 3)]
    merged = accuracy(merge(parts))
    assert merged["top1"] == whole["top1"] == score(out, labels, ref).top1  # the same float, not close
    assert merged["top1_agreement"] == whole["top1_agreement"] and merged["samples"] == 1001
    assert merged["cosine"] == pytest.approx(whole["cosine"], rel=1e-12)
    assert merged["sqnr_db"] == pytest.approx(score(out, labels, ref).sqnr_db, rel=1e-9)


def test_resource_names_round_trip():
    assert resource_name("jetson-orin-nano") == "edgerep-target:jetson-orin-nano"
    assert targets_of({"CPU": 1, "edgerep-target:x86-cpu": 1, "edgerep-target:dgpu": 1}) == ["dgpu", "x86-cpu"]


@pytest.mark.parametrize("bad", ["/etc/passwd", "../x.onnx", "a/../../b", ""])
def test_received_file_names_cannot_leave_the_work_folder(bad):
    with pytest.raises(EdgerepError):
        safe_relative(bad)


def test_gate_fails_lost_and_nodeless_rows_and_groups_junit_by_target_engine():
    built = {"target": "x86-cpu", "node": "a-1", "scope": "node", "name": "onnxruntime-cpu", "precision": "int8",
             "status": "built", "latency": {"p50_ms": 0.1, "p99_ms": 0.2}, "accuracy": {"top1": 99.0},
             "drop_vs_unfolded": 0.1}
    lost = {**built, "node": "b-2", "status": "lost", "reason": "lost: node died or disconnected (NodeDiedError)"}
    lost = {k: v for k, v in lost.items() if k not in ("latency", "accuracy", "drop_vs_unfolded")}
    nodeless = {"target": "dgpu", "node": "-", "scope": "node", "name": "tensorrt-cuda", "precision": "int8",
                "status": "no node", "reason": "no node for target"}
    report = {"fold": {"max_rel_error": 1e-7}, "baseline": {"accuracy": {"top1": 99.0, "samples": 100, "classes": 10}},
              "rows": [built, lost, nodeless]}
    res = gate_fleet(report, GateThresholds(max_drop=0.5))
    assert not res.passed
    failed = {c.name for c in res.failures}
    assert failed == {"node_lost", "no_node"}
    xml = junit_xml(report, res)
    assert xml.count("<testcase") == 4 and xml.count("<failure") == 2  # fold, baseline, x86-cpu int8, dgpu int8
    assert 'classname="edgerep.fleet.x86-cpu" name="onnxruntime-cpu/int8"' in xml
    recovered = {**lost, "recovered_by": "a-1"}
    assert gate_fleet({**report, "rows": [built, recovered]}, GateThresholds(max_drop=0.5)).passed
    unlabelled = gate_fleet({**report, "baseline": {"accuracy": None}, "rows": [built]}, GateThresholds())
    assert [c.name for c in unlabelled.failures] == ["accuracy_measured"]  # said once, not per row


def test_fleet_gate_keeps_the_bundles_set_up_checks_once():
    """The bundle's input statistics and expected top-1 travel into the fleet report and fail its gate once."""
    row = {"target": "x86-cpu", "node": "a-1", "scope": "node", "name": "onnxruntime-cpu", "precision": "int8",
           "status": "built", "latency": {"p50_ms": 0.1}, "accuracy": {"top1": 25.0}, "drop_vs_unfolded": 0.0}
    stats = {"source": "calibration", "samples": 64, "layers": [{"layer": "c1.1", "channels": 16, "mean_shift": 131.0,
                                                                 "var_ratio": 6.6e4, "var_direction": "larger"}]}
    report = {"fold": {"max_rel_error": 1e-7}, "input_statistics": stats,
              "baseline": {"accuracy": {"top1": 25.0, "samples": 100, "classes": 10},
                           "expected": {"top1": 97.0, "source": "--expect-top1"}},
              "rows": [row, {**row, "node": "b-2"}]}
    res = gate_fleet(report, GateThresholds(max_drop=0.5))
    assert sorted(c.name for c in res.failures) == ["baseline_expected", "input_mean_shift", "input_var_ratio"]


@pytest.mark.parametrize("argv,words", [
    (["fleet", "status", "--address", "nohost"], "is not HOST:PORT"),
    (["fleet", "status", "--address", "127.0.0.1:1"], "no Ray head answers there"),
    (["fleet", "deploy", "{tmp}", "--address", "127.0.0.1:1"], "not a bundle (no manifest.json)"),
    (["fleet", "join", "--address", "127.0.0.1:1", "--target", "no-such-profile"], "no-such-profile"),
])
def test_fleet_bad_input_is_one_line_and_exit_2(argv, words, tmp_path, capsys):
    pytest.importorskip("ray")
    from edgerep.cli import main

    rc = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and words in err[0] and err[0].startswith("edgerep fleet: error: ")
