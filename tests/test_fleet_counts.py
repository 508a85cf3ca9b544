"""Fleet pieces that need no cluster: shard bounds, additive accuracy counts, the merged gate, trust checks."""
from __future__ import annotations

import numpy as np
import pytest

from edgerep.bench.accuracy import score
from report_dicts import acc, drop
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
    assert merged["metric"] == "top1" and merged["unit"] == "%"
    assert merged["value"] == whole["value"] == score(out, labels, ref).top1  # the same float, not close
    assert merged["correct"] == whole["correct"] and merged["samples"] == 1001
    mf, wf = merged["fidelity"], whole["fidelity"]
    assert mf["top1_agreement"] == wf["top1_agreement"]
    assert mf["cosine"] == pytest.approx(wf["cosine"], rel=1e-12)
    assert mf["sqnr_db"] == pytest.approx(score(out, labels, ref).fidelity.sqnr_db, rel=1e-9)


def test_resource_names_round_trip():
    assert resource_name("jetson-orin-nano") == "edgerep-target:jetson-orin-nano"
    assert targets_of({"CPU": 1, "edgerep-target:x86-cpu": 1, "edgerep-target:dgpu": 1}) == ["dgpu", "x86-cpu"]


@pytest.mark.parametrize("bad", ["/etc/passwd", "../x.onnx", "a/../../b", ""])
def test_received_file_names_cannot_leave_the_work_folder(bad):
    with pytest.raises(EdgerepError):
        safe_relative(bad)


def test_gate_fails_lost_and_nodeless_rows_and_groups_junit_by_target_engine():
    built = {"target": "x86-cpu", "node": "a-1", "scope": "node", "name": "onnxruntime-cpu", "precision": "int8",
             "status": "built", "latency": {"p50_ms": 0.1, "p99_ms": 0.2}, "accuracy": acc(99.0),
             "drop": drop(0.1)}
    lost = {**built, "node": "b-2", "status": "lost", "reason": "lost: node died or disconnected (NodeDiedError)"}
    lost = {k: v for k, v in lost.items() if k not in ("latency", "accuracy", "drop")}
    nodeless = {"target": "dgpu", "node": "-", "scope": "node", "name": "tensorrt-cuda", "precision": "int8",
                "status": "no node", "reason": "no node for target"}
    report = {"fold": {"max_rel_error": 1e-7}, "baseline": {"accuracy": acc(99.0, classes=10)},
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
           "status": "built", "latency": {"p50_ms": 0.1}, "accuracy": acc(25.0), "drop": drop(0.0)}
    stats = {"source": "calibration", "samples": 64, "layers": [{"layer": "c1.1", "channels": 16, "mean_shift": 131.0,
                                                                 "var_ratio": 6.6e4, "var_direction": "larger"}]}
    report = {"fold": {"max_rel_error": 1e-7}, "input_statistics": stats,
              "baseline": {"accuracy": acc(25.0, classes=10),
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


# ---------------------------------------------------------------------------------
# merged rows, failed jobs and what counts as lost (issue 20.16)
# ---------------------------------------------------------------------------------
def _node(label: str):
    from types import SimpleNamespace

    host, _, nid = label.partition("-")
    return SimpleNamespace(label=label, node_id=nid * 8, hostname=host)


def _res(label: str, shards: dict[int, dict]) -> dict:
    host, _, nid = label.partition("-")
    row = {"name": "onnxruntime-cpu", "precision": "fp32", "device": "cpu", "status": "built", "reason": "",
           "requested": "onnxruntime-fp32-cpu", "latency": {"p50_ms": 0.1, "p99_ms": 0.2},
           "counts": {str(i): c for i, c in shards.items()}}
    return {"node_id": nid * 8, "hostname": host, "versions": {}, "host": {}, "timings_s": {}, "artifacts": {},
            "shards": list(shards), "rows": [row]}


def _report(done, lost=(), failed=()):
    from types import SimpleNamespace

    from edgerep.fleet.deploy import _Job
    from edgerep.fleet.report import FleetOutcome, FleetSetup, build_report

    ref = [{"samples": 10, "correct1": 10, "correct5": 10, "agree": None, "cos_sum": None, "signal": None,
            "noise": None, "nonfinite": 0},
           {"samples": 10, "correct1": 2, "correct5": 10, "agree": None, "cos_sum": None, "signal": None,
            "noise": None, "nonfinite": 0}]
    shards = [{"index": i, "start": 10 * i, "stop": 10 * i + 10, "classes": 10, "reference": r} for i, r in enumerate(ref)]
    job = (lambda label, sh: _Job("x86-cpu", _node(label), sh, bench=True))
    bundle = SimpleNamespace(path="b", report={"fold": {"max_rel_error": 0.0}}, name="b")
    setup = FleetSetup(bundle=bundle, ref=SimpleNamespace(source="unfolded"), data="digits", same_test_set=True,
                       targets=["x86-cpu"], by_target={"x86-cpu": ["a", "b"]}, shards=shards, sharded=True, batch=1)
    report = build_report(setup, FleetOutcome(done=[(job(lb, list(sh)), _res(lb, sh)) for lb, sh in done],
                                              lost=[(job(lb, sh), why) for lb, sh, why in lost],
                                              failed=[(job(lb, sh), why) for lb, sh, why in failed]))
    return report, gate_fleet(report, GateThresholds(max_drop=0.5))


def test_merged_row_with_a_missing_shard_compares_on_the_same_shards():
    """Node a scored shard 0 exactly as the reference (10 of 10); shard 1 (reference 2 of 10) never came back.
    The merged row's drop is 0.0 on shard 0, not 100 - 60 = -40.0 against the reference on both shards."""
    exact = {"samples": 10, "correct1": 10, "correct5": 10, "agree": None, "cos_sum": None, "signal": None,
             "noise": None, "nonfinite": 0}
    report, g = _report(done=[("a-1", {0: exact})], lost=[("b-2", [1], "node died or disconnected (NodeDiedError)")])
    (merged,) = [r for r in report["rows"] if r["scope"] == "merged"]
    assert merged["drop"] == drop(0.0) and merged["accuracy"]["samples"] == 10
    assert merged["status"] == "lost" and merged["shards_missing"] == [1]
    assert not g.passed


def test_a_job_that_raised_fails_its_rows_with_the_error():
    """A task exception is not a lost connection: the node's rows are `failed` with the error, its shards are
    named unscored on the merged row, and the gate fails naming both, even though node a answered."""
    exact = {"samples": 10, "correct1": 10, "correct5": 10, "agree": None, "cos_sum": None, "signal": None,
             "noise": None, "nonfinite": 0}
    report, g = _report(done=[("a-1", {0: exact})],
                        failed=[("b-2", [1], "NotADirectoryError: [Errno 20] Not a directory: '/x/fleet'")])
    rows = {(r["node"], r["scope"]): r for r in report["rows"]}
    node = rows[("b-2", "node")]
    assert node["status"] == "failed" and "NotADirectoryError" in node["reason"] and "recovered_by" not in node
    merged = rows[("merged (1 shard(s))", "merged")]
    assert merged["status"] == "failed" and "b-2: failed (NotADirectoryError" in merged["reason"]
    fails = {(c.name, c.engine) for c in g.failures}
    assert ("engine_built", "x86-cpu:onnxruntime-cpu/fp32@b-2") in fails
    assert any(c.engine.endswith("@merged (1 shard(s))") and "NotADirectoryError" in c.message for c in g.failures)


def test_task_errors_are_not_lost_connections():
    ray_exc = pytest.importorskip("ray.exceptions", reason="Ray is not installed (pip install 'edgerep[fleet]')")
    from edgerep.fleet.deploy import is_task_error

    raised = ray_exc.RayTaskError("run_job", "Traceback ...", NotADirectoryError(20, "Not a directory"))
    assert is_task_error(raised.as_instanceof_cause()) and is_task_error(raised)
    assert not is_task_error(ray_exc.WorkerCrashedError())
    assert not is_task_error(ray_exc.NodeDiedError("node died"))
    assert not is_task_error(ray_exc.RayTaskError("run_job", "tb", ray_exc.WorkerCrashedError()))  # a loss inside
    # through the data-only wire: the node's own error (sent as data) is the device failing; Ray's ends are losses
    from edgerep.fleet import wire

    assert is_task_error(wire.TaskFailed("on the node: NotADirectoryError: [Errno 20] Not a directory"))
    for lost in (wire.WorkerCrashedError("WORKER_DIED"), wire.NodeDiedError("NODE_DIED"),
                 wire.TaskCancelledError("TASK_CANCELLED"), wire.RemoteFailure("the task returned no data (OBJECT_LOST)")):
        assert not is_task_error(lost)
