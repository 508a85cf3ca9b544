"""`edgerep quantize` through the real CLI entry point: files, JSON, exit codes."""
from __future__ import annotations

import json

import numpy as np
import onnx

from edgerep.cli import main
from schema_check import validate
from test_quant_helpers import digits_splits, export_folded, trained_digits


def test_quantize_onnx_with_npz_data(tmp_path, capsys):
    fp32 = export_folded(trained_digits(), tmp_path / "m.onnx")
    x, y = digits_splits()["calib"]
    np.savez(tmp_path / "calib.npz", x=x, y=y)
    xt, yt = digits_splits()["test"]
    np.savez(tmp_path / "test.npz", x=xt, y=yt)
    out = tmp_path / "out"
    rc = main(["quantize", str(fp32), "--data", str(tmp_path / "calib.npz"), "--eval-data", str(tmp_path / "test.npz"),
               "--targets", "cpu,tensorrt", "--json", "-o", str(out)])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((out / "quantize.json").read_text())
    validate(saved, "edgerep.quantize/2")  # the published schema (docs/schema/quantize-2.schema.json)
    assert printed == saved
    assert printed["cpu_policy"]["name"] == saved["cpu_policy"]["name"]
    auto = saved["calibration"]["auto_logit_error"]
    assert saved["lint_passed"] and saved["calibration"]["method"] == min(auto, key=auto.get)
    assert saved["candidates"] and all(c["reason"] for c in saved["candidates"])
    assert saved["reference"]["held_out"] and saved["reference"]["top1"] > 90  # the npz reached the model as is
    assert saved["cpu_policy"]["drop"] <= 0.5
    for f in ("model.int8.onnx", "model.int8.trt.onnx"):
        onnx.checker.check_model(onnx.load(out / f))
    assert {p.name.split("-")[1] for p in (out / "cache").glob("calib-*.json")} == {"mse", "percentile", "minmax"}


def test_quantize_bad_input_exits_2(tmp_path, capsys):
    rc = main(["quantize", str(tmp_path / "missing.onnx"), "--data", "digits", "-o", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "missing.onnx" in err and len(err.strip().splitlines()) == 1
    fp32 = export_folded(trained_digits(), tmp_path / "m.onnx")
    rc = main(["quantize", str(fp32), "--data", str(tmp_path / "nope.npz"), "-o", str(tmp_path / "o")])
    assert rc == 2 and "nope.npz" in capsys.readouterr().err
    rc = main(["quantize", str(fp32), "--data", "digits", "--calib-samples", "0", "-o", str(tmp_path / "o")])
    assert rc == 2


def test_help_teaches(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["quantize", "--help"])
    text = capsys.readouterr().out
    assert "saturate" in text and "examples:" in text and "--max-drop" in text
