"""A drop in a report table names its unit and metric in words (report.json keeps the metric's key)."""
from edgerep.report.rows import drop_text


def test_a_drop_names_its_unit_and_metric_unless_it_is_top1():
    assert drop_text({"of": "top1", "unit": "points", "value": 0.5, "vs": "unfolded fp32"}) == "+0.50"
    assert drop_text({"of": "psnr", "unit": "dB", "value": 0.04, "vs": "unfolded fp32"}) == "+0.04 dB PSNR"
    assert drop_text({"of": "map", "unit": "points", "value": -0.2, "vs": "unfolded fp32"}) == "-0.20 points mAP"
    assert drop_text({"of": "top1_agreement", "unit": "points", "value": 0.0,
                      "vs": "unfolded fp32"}) == "+0.00 points top-1 agreement"
    assert drop_text(None) == "–"


def _quant(task: str, top1: float | None) -> dict:
    cand = {"policy": "u8s8", "top1": top1, "drop": 0.06, "latency_ms": 13.6, "accepted": True, "reason": "holds"}
    return {"quantization": {"reference": {"task": task, "samples": 149}, "candidates": [cand],
                             "cpu_policy": {"name": "u8s8", "reason": "holds"},
                             "tensorrt": {"simulated_drop": 0.19, "simulated_top1": top1}}}


def test_report_page_int8_section_speaks_the_tasks_unit():
    from edgerep.report.page import _int8

    sr = _int8(_quant("sr", None), {})
    assert "<th>drop (dB)</th>" in sr and "top-1" not in sr and "simulated drop +0.19 dB" in sr
    cls = _int8(_quant("classify", 98.0), {})
    assert "<th>top-1 on the optimized session</th>" in cls and "<th>drop (points)</th>" in cls
    assert "simulated top-1 98.00%, simulated drop +0.19 points" in cls


def test_fleet_scores_classify_detect_and_sr_and_refuses_another_task():
    """Fleet deploy scores every task edgerep has (detect and SR merged from the nodes' predictions / per-image
    scores: tests/test_fleet_tasks.py); a bundle of a task it cannot score is refused (exit 2), naming it."""
    from pathlib import Path
    from types import SimpleNamespace

    import pytest

    from edgerep.errors import EdgerepError
    from edgerep.fleet.scoring import task_of

    def bundle(task):
        return SimpleNamespace(path=Path("b"), report={"task": {"name": task}} if task else {},
                               manifest={"settings": {"postprocess": "m:f" if task == "detect" else None}})

    for task in ("classify", "detect", "sr"):
        assert task_of(bundle(task))["name"] == task
    assert task_of(bundle("detect"))["postprocess"] == "m:f"  # the node decodes as the bundle's deploy did
    assert task_of(bundle(None))["name"] == "classify"  # a /1 report (no task): a classifier
    with pytest.raises(EdgerepError, match="task is 'segment'; fleet deploy scores classify, detect, sr") as e:
        task_of(bundle("segment"))
    assert "--data synthetic" in e.value.hint
    assert task_of(bundle("segment"), "synthetic")["name"] == "segment"  # latency only: nothing to score
