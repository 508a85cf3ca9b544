"""The CI gate: thresholds, baseline comparison, JUnit/Markdown output, CLI exit codes."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from edgerep.bench.gate import GateThresholds, evaluate_gate, junit_xml, markdown_summary
from edgerep.cli import main
from edgerep.errors import EdgerepError
from report_dicts import acc, drop

V1 = Path(__file__).resolve().parent / "data" / "report_v1" / "report.json"


def _report(drop_int8=0.2, p50=2.0, top1=98.0):
    """A hand-made /2 report, as far as the gate reads it (the CLI test below uses a whole saved report)."""
    return {
        "schema": "edgerep.report/2",
        "model": {"name": "m", "sha256": "ab" * 32},
        "fold": {"max_rel_error": 3e-7},
        "baseline": {"name": "torch-cpu", "precision": "fp32", "accuracy": acc(top1)},
        "engines": [
            {"name": "onnxruntime-cpu", "precision": "fp32", "status": "built",
             "latency": {"p50_ms": p50 * 2, "p99_ms": p50 * 3}, "accuracy": acc(top1, cosine=1.0),
             "drop": drop(0.0)},
            {"name": "onnxruntime-cpu", "precision": "int8", "status": "built",
             "latency": {"p50_ms": p50, "p99_ms": p50 * 1.5}, "accuracy": acc(top1 - drop_int8, cosine=0.99),
             "drop": drop(drop_int8)},
            {"name": "tensorrt", "precision": "int8", "status": "skipped", "reason": "TensorRT is not installed"},
        ],
    }


def test_passes_within_budget_and_ignores_skipped_engines():
    r = evaluate_gate(_report(drop_int8=0.3), GateThresholds(max_drop=0.5))
    assert r.passed
    assert {c.engine for c in r.checks if c.name == "max_drop"} == {"onnxruntime-cpu/fp32", "onnxruntime-cpu/int8"}


def test_fails_on_drop_with_reason_naming_engine_and_drop():
    r = evaluate_gate(_report(drop_int8=3.25), GateThresholds(max_drop=0.5))
    assert not r.passed
    (fail,) = r.failures
    assert fail.engine == "onnxruntime-cpu/int8"
    assert "3.25" in fail.message and "drop" in fail.message


def test_latency_and_p99_and_engine_filter():
    th = GateThresholds(max_latency_ms=3.0, engines=["*/int8"])
    assert evaluate_gate(_report(p50=2.0), th).passed
    r = evaluate_gate(_report(p50=4.0), th)
    assert [c.name for c in r.failures] == ["max_latency_ms"]
    r = evaluate_gate(_report(p50=2.0), GateThresholds(max_p99_ms=2.5, engines=["*/int8"]))
    assert [c.name for c in r.failures] == ["max_p99_ms"]


def test_no_matching_engine_fails():
    r = evaluate_gate(_report(), GateThresholds(max_drop=1, engines=["tensorrt/*"]))
    assert not r.passed and r.failures[0].name == "engines_present"


def test_inexact_fold_fails_by_default():
    rep = _report()
    rep["fold"]["max_rel_error"] = 1e-2
    r = evaluate_gate(rep, GateThresholds())
    assert [c.name for c in r.failures] == ["fold_exact"]


def test_baseline_regressions():
    base = _report(p50=2.0, top1=98.0)
    new = _report(p50=2.5, top1=97.0)
    r = evaluate_gate(new, GateThresholds(max_latency_regression_pct=10, engines=["*/int8"]), baseline=base)
    (f,) = r.failures
    assert f.name == "max_latency_regression_pct" and f.value == pytest.approx(25.0)
    r = evaluate_gate(new, GateThresholds(max_accuracy_regression=0.5, engines=["*/int8"]), baseline=base)
    (f,) = r.failures
    assert f.name == "max_accuracy_regression" and f.value == pytest.approx(1.0)


def test_fidelity_thresholds_for_unlabelled_models():
    r = evaluate_gate(_report(), GateThresholds(min_cosine=0.995))
    assert [c.engine for c in r.failures] == ["onnxruntime-cpu/int8"]


def test_junit_and_markdown():
    r = evaluate_gate(_report(drop_int8=2.0), GateThresholds(max_drop=0.5))
    root = ET.fromstring(junit_xml(r))
    assert root.get("failures") == "1" and int(root.get("tests")) == len(r.checks)
    assert len(root.findall(".//failure")) == 1
    md = markdown_summary(r, _report())
    assert "FAILED" in md and "onnxruntime-cpu/int8" in md and "| check |" in md


def test_toml_config(tmp_path):
    cfg = tmp_path / "gate.toml"
    cfg.write_text('[gate]\nmax_drop = 0.5\nengines = ["*/int8"]\n')
    th = GateThresholds.from_toml(cfg)
    assert th.max_drop == 0.5 and th.engines == ["*/int8"]
    assert th.merged(max_drop=1.0).max_drop == 1.0
    cfg.write_text("[gate]\nmax_dorp = 0.5\n")
    with pytest.raises(EdgerepError, match="max_dorp"):
        GateThresholds.from_toml(cfg)
    cfg.write_text("[gate\n")
    with pytest.raises(EdgerepError, match="TOML"):
        GateThresholds.from_toml(cfg)


def test_cli_exit_codes(tmp_path, capsys):
    saved = json.loads(V1.read_text())  # a whole report (main's /1 digits deploy): the CLI validates what it reads
    good = tmp_path / "good.json"
    good.write_text(json.dumps(saved))
    saved["engines"][1]["drop_vs_unfolded"] = 4.0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(saved))
    junit = tmp_path / "g.xml"
    md = tmp_path / "g.md"
    assert main(["gate", str(good), "--max-drop", "0.5"]) == 0
    assert main(["gate", str(bad), "--max-drop", "0.5", "--junit", str(junit), "--markdown", str(md)]) == 1
    err = capsys.readouterr().err
    assert "top1 drop vs unfolded fp32 4.00 points" in err
    assert "<failure" in junit.read_text() and "FAILED" in md.read_text()
    assert main(["gate", str(tmp_path / "missing.json"), "--max-drop", "0.5"]) == 2
    (tmp_path / "junk.json").write_text("{not json")
    assert main(["gate", str(tmp_path / "junk.json")]) == 2
    assert "not a JSON report" in capsys.readouterr().err


def test_latency_verdicts_on_noisy_measurements_say_so():
    rep = _report(p50=2.0)
    rep["engines"][1]["latency"] |= {"noisy": True, "noise_reason": "CV 2.10 > 0.5", "queries": 500}
    r = evaluate_gate(rep, GateThresholds(max_latency_ms=3.0, max_p99_ms=2.5))
    noisy = {(c.name, c.engine, c.passed) for c in r.noisy}
    # the int8 row was noisy: its pass (p50) and its fail (p99) are both flagged; the quiet fp32 row is not
    assert noisy == {("max_latency_ms", "onnxruntime-cpu/int8", True), ("max_p99_ms", "onnxruntime-cpu/int8", False)}
    assert all("NOISY measurement: CV 2.10 > 0.5" in c.message for c in r.noisy)
    md = markdown_summary(r)
    assert "Noisy latency measurements" in md and "⚠️ noisy" in md
    assert r.to_dict()["noisy_checks"] == 2


def test_a_p99_that_was_not_measured_fails_and_says_why():
    rep = _report()
    rep["engines"][1]["latency"] = {"p50_ms": 1.0, "p99_ms": None, "queries": 200}
    (fail,) = [c for c in evaluate_gate(rep, GateThresholds(max_p99_ms=100, engines=["*/int8"])).failures]
    assert "too few queries for an early-stopping p99: 200" in fail.message


def test_a_noisy_pair_cannot_fail_the_latency_regression_limit():
    """Issue 20.13's sibling in the gate: the baseline comparison judges the pair as `diff` does."""
    base, new = _report(p50=1.0), _report(p50=1.613)
    for r, noisy in ((base, True), (new, True)):
        r["engines"][1]["latency"] |= {"p90_ms": r["engines"][1]["latency"]["p50_ms"] * 1.55, "noisy": noisy,
                                       "noise_reason": "CV 0.62 > 0.5"}
    th = GateThresholds(max_latency_regression_pct=10, engines=["*/int8"])
    (c,) = [c for c in evaluate_gate(new, th, baseline=base).checks if c.name == "max_latency_regression_pct"]
    assert c.passed and c.noisy and "too noisy to judge" in c.message and "noise band ±55%" in c.message
    for r in (base, new):
        r["engines"][1]["latency"]["noisy"] = False
    (c,) = [c for c in evaluate_gate(new, th, baseline=base).checks if c.name == "max_latency_regression_pct"]
    assert not c.passed and "beyond noise" in c.message
    new["engines"][1]["latency"]["p50_ms"] = 1.4  # +40% inside a quiet pair's ±55% band: within noise
    (c,) = [c for c in evaluate_gate(new, th, baseline=base).checks if c.name == "max_latency_regression_pct"]
    assert c.passed and "within noise" in c.message


def test_a_latency_run_loadgen_called_invalid_is_not_a_result():
    rep = _report(p50=2.0)
    rep["engines"][1]["latency"] |= {"valid": False, "invalid_reason": "min duration not met"}
    r = evaluate_gate(rep, GateThresholds(max_latency_ms=3.0, engines=["*/int8"]))
    (fail,) = r.failures
    assert fail.name == "max_latency_ms" and "INVALID" in fail.message and "min duration not met" in fail.message
    assert fail.value is None
    # too few queries for early stopping (a count the user fixed): the p50 stands, the tail does not
    rep["engines"][1]["latency"]["invalid_scope"] = "tail"
    assert evaluate_gate(rep, GateThresholds(max_latency_ms=3.0, engines=["*/int8"])).passed
    assert not evaluate_gate(rep, GateThresholds(max_p99_ms=30.0, engines=["*/int8"])).passed


@pytest.mark.parametrize("key,value,words", [
    ("var_ratio", 2.21, "or the calibration images differ from the training images"),
    ("mean_shift", 0.67, "or the calibration images differ from the training images"),
    ("var_ratio", 6.6e4, "is likely wrong"),
    ("mean_shift", 130.0, "is likely wrong"),
])
def test_input_statistics_failure_names_the_causes_a_factor_can_have(key, value, words):
    """A 2.2x variance or 0.67 std shift is what other photos make (the demo detector on a folder of other
    photos): the message names both causes; 65,000x (a forgotten /255) names the preprocessing alone."""
    layer = {"layer": "stem.bn", "channels": 16, "mean_shift": 0.1, "var_ratio": 1.1, "var_direction": "smaller"}
    layer[key] = value
    r = _report()
    r["input_statistics"] = {"source": "calibration", "samples": 48, "layers": [layer]}
    g = evaluate_gate(r, GateThresholds(max_drop=0.5))
    bad = [c for c in g.failures if c.name == f"input_{key}"]
    assert not g.passed and len(bad) == 1 and words in bad[0].message and "preprocessing" in bad[0].message
    other = "is likely wrong" if words.startswith("or the") else "or the calibration images differ"
    assert other not in bad[0].message
