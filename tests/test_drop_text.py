"""A drop in a report table names its unit and metric in words (report.json keeps the metric's key)."""
from edgerep.report.rows import drop_text


def test_a_drop_names_its_unit_and_metric_unless_it_is_top1():
    assert drop_text({"of": "top1", "unit": "points", "value": 0.5, "vs": "unfolded fp32"}) == "+0.50"
    assert drop_text({"of": "psnr", "unit": "dB", "value": 0.04, "vs": "unfolded fp32"}) == "+0.04 dB PSNR"
    assert drop_text({"of": "map", "unit": "points", "value": -0.2, "vs": "unfolded fp32"}) == "-0.20 points mAP"
    assert drop_text({"of": "top1_agreement", "unit": "points", "value": 0.0,
                      "vs": "unfolded fp32"}) == "+0.00 points top-1 agreement"
    assert drop_text(None) == "–"
