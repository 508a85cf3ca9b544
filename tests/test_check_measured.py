"""Issue 20.14: where a deploy measured the INT8 model, the check's report leads with the measurement
and its predictions are scored against it (flagged layers that were measured sensitive, and missed ones)."""
from __future__ import annotations

import json

from edgerep.quant.check_score import layer_of, score_check
from report_dicts import acc, drop


def _layer(name: str, verdict: str = "ok", fp16: bool = False) -> dict:
    advice = [{"kind": "keep_fp16", "text": f"keep {name} in FP16"}] if fp16 else [{"kind": "ok", "text": "fine"}]
    return {"name": name, "verdict": verdict, "verdict_with_fixes": verdict, "advice": advice}


def _a0_check() -> dict:
    """The issue's RepVGG-A0 shape: 23 layers, 17 called bad, 15 of them advised FP16."""
    names = [f"stages.{i // 4}.{i % 4}" for i in range(22)] + ["head.fc"]
    return {"layers": [_layer(n, "bad" if i < 17 else "ok", fp16=i < 15) for i, n in enumerate(names)]}


def _quant(excluded=(), drop=0.0, counts=(180, 0, 0)) -> dict:
    n, lost, gained = counts
    verdict = {"holds": True, "drop": drop, "counts": {"n": n, "lost": lost, "gained": gained}}
    name = "u8s8" if not excluded else f"u8s8+fp32[{len(excluded)}]"
    return {"cpu_policy": {"name": name, "drop": drop},
            "candidates": [{"policy": name, "accepted": True, "verdict": verdict}],
            "excluded_nodes": [{"node": node, "target": "cpu", "precision": "fp32"} for node in excluded],
            "tensorrt": {"simulated_drop": 0.0}}


ENGINES = [{"name": "onnxruntime-cpu", "precision": "int8", "drop": drop(0.0), "accuracy": acc(75.0, samples=1000)}]


def test_every_layer_int8_and_no_drop_scores_every_flagged_layer_as_a_false_alarm():
    m = score_check(_a0_check(), _quant(), ENGINES)
    assert m["headline"].startswith("Measured: every layer INT8 on onnxruntime-cpu (u8s8): selection set drop "
                                    "0.00 points (0 of 180 flipped to wrong, 0 to right); test set top-1 drop +0.00 points")
    assert m["scored"].startswith("The check flagged 17 of 23 layers and advised 15 in FP16; 0 of the 17 were "
                                  "measured sensitive")
    assert "met the budget with every flagged layer in INT8" in m["scored"]
    assert m["flagged_sensitive"] == [] and m["sensitive"] == [] and m["budget_held"] is True


def test_layers_kept_in_float_are_the_measured_sensitive_ones():
    excluded = ["/stages/stages.0/stages.0.1/conv/Conv", "/stages/stages.5/stages.5.0/conv/Conv", "/weird/Conv"]
    m = score_check(_a0_check(), _quant(excluded, drop=0.2, counts=(180, 1, 0)), ENGINES)
    assert m["sensitive"] == ["stages.0.1", "stages.5.0"] and m["flagged_sensitive"] == ["stages.0.1"]
    assert m["missed"] == ["stages.5.0"] and m["unmapped_float_nodes"] == ["/weird/Conv"]
    assert "2 of 23 layers kept in FP32 on onnxruntime-cpu" in m["headline"]
    assert "1 of the 17 were measured sensitive" in m["scored"]
    assert "it missed 1 measured sensitive layer(s): stages.5.0" in m["scored"]
    assert layer_of("/stages/stages.1/stages.1.10/conv/Conv", ["stages.1.1", "stages.1.10"]) == "stages.1.10"


def test_a_super_resolution_deploy_states_its_drops_in_db():
    q = _quant(drop=0.04) | {"reference": {"task": "sr"}}
    m = score_check(_a0_check(), q, [])
    assert "selection set drop 0.04 dB (0 of 180" in m["headline"] and ": drop 0.00 dB." in m["headline"]
    assert "points" not in m["headline"]
    assert "selection set drop 0.04 points" in score_check(_a0_check(), _quant(drop=0.04) | {"reference": {"task": "detect"}}, [])["headline"]


def test_layers_of_nested_containers_are_named_when_kept_in_float():
    """A detector's backbone.stages.1.0 exports as /backbone/stages.1/stages.1.0/conv/Conv and heads.0.reg_conv as
    /heads.0/reg_conv/conv/Conv: both layers kept in float are named (the hostile detector's deploy said "every
    layer INT8" with two layers in FP32)."""
    from edgerep.fold.onnx_names import module_path

    assert module_path("/backbone/stages.1/stages.1.0/conv/Conv") == "backbone.stages.1.0.conv"
    assert module_path("/a/b.c/b.c.1/b.c.1.2/conv/Conv_token_3") == "a.b.c.1.2.conv"
    names = ["backbone.stages.1.0", "backbone.stages.1.1", "heads.0.reg_conv", "heads.0.reg_pred"]
    assert layer_of("/backbone/stages.1/stages.1.0/conv/Conv", names) == "backbone.stages.1.0"
    assert layer_of("/heads.0/reg_conv/conv/Conv", names) == "heads.0.reg_conv"
    check = {"layers": [{"name": n, "verdict": "ok"} for n in names]}
    quant = {"cpu_policy": {"name": "u8s8+fp32[2]", "drop": 0.48},
             "excluded_nodes": [{"node": "/backbone/stages.1/stages.1.0/conv/Conv", "target": "cpu"},
                                {"node": "/heads.0/reg_conv/conv/Conv", "target": "cpu"}]}
    m = score_check(check, quant)
    assert m["sensitive"] == ["backbone.stages.1.0", "heads.0.reg_conv"] and m["unmapped_float_nodes"] == []
    assert "2 of 4 layers kept in FP32 on onnxruntime-cpu" in m["headline"] and "every layer INT8" not in m["headline"]


def test_nothing_measured_nothing_scored():
    assert score_check(_a0_check(), {}) is None and score_check({}, _quant()) is None


def test_deploy_report_check_page_and_console_lead_with_the_measurement(demo_bundle, capsys):
    r = json.loads((demo_bundle / "report.json").read_text())
    m = r["check"]["measured"]
    n = r["quantization"]["reference"]["samples"]
    assert m["headline"].startswith("Measured: ") and f"of {n} flipped to wrong" in m["headline"]
    assert "test set top-1 drop" in m["headline"] and m["layers"] == len(r["check"]["layers"])
    flagged = [l["name"] for l in r["check"]["layers"] if l["verdict"] != "ok"]
    assert m["flagged"] == flagged and set(m["flagged_sensitive"]) <= set(flagged)
    page = (demo_bundle / "check" / "check.html").read_text()
    assert page.index("Measured by the deploy") < page.index("Advice (predicted)") < page.index('id="layers"')
    assert m["headline"].replace("+", "") in page.replace("+", "") and "predicted " in page
    md = (demo_bundle / "report.md").read_text()
    assert md.index(f"**{m['headline']}**") > md.index("## Quantization friendliness")
    assert m["scored"] in (demo_bundle / "report.html").read_text()
    from edgerep.report.console import print_engine_table

    print_engine_table(r)
    out = " ".join(capsys.readouterr().out.split())
    assert f"INT8 check vs measurement: {m['headline']}" in out
    # issue 20.11 on the demo: one image of the 180-image selection set is 0.56 points > 0.5, and it is said
    note = r["quantization"]["reference"]["resolution_note"]
    assert "one image of the 180-image selection set is 0.56 points" in note
    assert f"selection set: {note}" in out and note in md
