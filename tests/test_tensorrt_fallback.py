"""Everything around TensorRT that runs without it: the missing-TensorRT error and the factory's fallback."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgerep.engines import tensorrt_engine as te
from edgerep.engines.factory import BuiltEngine, build_engines
from edgerep.engines.profiles import load_profile, parse_profile
from edgerep.errors import EdgerepError, EngineError

TRT_OK, TRT_WHY = te.tensorrt_status()
no_trt = pytest.mark.skipif(TRT_OK, reason="checks behaviour where TensorRT is absent")


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 5)).eval()


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    """A tiny FP32 ONNX (dynamic batch) and a QDQ INT8 copy made by onnxruntime's static quantizer."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from edgerep.quant.export import export_onnx

    d = tmp_path_factory.mktemp("onnx")
    net = _net()
    export_onnx(net, d / "m.onnx", (1, 3, 8, 8))

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.items = iter([{"input": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.items, None)

    quantize_static(str(d / "m.onnx"), str(d / "m.int8.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True)
    return net, d / "m.onnx", d / "m.int8.onnx"


@no_trt
def test_missing_tensorrt_is_one_clear_engine_error():
    assert TRT_WHY  # says why, e.g. only the type stubs are installed
    with pytest.raises(EngineError) as e:
        te.require_tensorrt()
    line = e.value.one_line()
    assert isinstance(e.value, EdgerepError) and "\n" not in line
    assert line.startswith("TensorRT unavailable: ") and TRT_WHY in line and "onnxruntime-cpu" in line


def test_stubs_do_not_count_as_tensorrt():
    try:
        import tensorrt
    except ImportError:
        pytest.skip("tensorrt-stubs not installed here")
    if not hasattr(tensorrt, "Builder"):
        assert TRT_OK is False and "stubs" in TRT_WHY


@no_trt
def test_tensorrt_engine_refuses_to_start_without_tensorrt(tmp_path):
    with pytest.raises(EngineError, match="TensorRT unavailable"):
        te.TensorRTEngine(tmp_path / "m.plan")


@no_trt
def test_dgpu_profile_falls_back_to_onnxruntime_cpu(onnx_files, tmp_path):
    net, fp32, int8 = onnx_files
    msgs: list[str] = []
    res = build_engines(load_profile("dgpu"), fp32_onnx=fp32, int8_onnx={"tensorrt": int8}, torch_model=net,
                        out_dir=tmp_path, progress=msgs.append)
    assert [r.spec.key for r in res] == [e.key for e in load_profile("dgpu").engines]
    by = {r.spec.key: r for r in res}
    trt_int8 = by["tensorrt-int8-cuda0"]
    assert trt_int8.status == "fallback" and trt_int8.actual.key == "onnxruntime-int8-cpu"
    assert TRT_WHY in trt_int8.reason and "onnxruntime-cpu stands in" in trt_int8.reason
    assert trt_int8.artifact == int8 and trt_int8.engine.device == "cpu"
    # fp16 TensorRT falls back to onnxruntime fp32, which the profile already lists by itself
    assert by["tensorrt-fp16-cuda0"].status == "skipped" and by["tensorrt-fp16-cuda0"].engine is None
    assert "already in this profile" in by["tensorrt-fp16-cuda0"].reason
    assert by["onnxruntime-fp32-cpu"].status == "built" and by["onnxruntime-fp32-cpu"].artifact == fp32
    if not torch.cuda.is_available():
        assert by["torch-fp16-cuda0"].status == "fallback" and by["torch-fp16-cuda0"].engine.device == "cpu"
        assert by["torch-fp32-cuda0"].status == "skipped"
    # every engine that exists runs and agrees with torch
    x = np.random.default_rng(3).standard_normal((2, 3, 8, 8)).astype(np.float32)
    ref = net(torch.from_numpy(x)).detach().numpy()
    for r in res:
        if r.engine is not None:
            y = r.engine.run(x)
            tol = 0.1 if r.actual and r.actual.precision == "int8" else 1e-4
            assert y.shape == ref.shape and np.abs(y - ref).max() < tol, r.spec.key
    assert any("building onnxruntime-int8-cpu (for tensorrt-int8-cuda0)" in m for m in msgs)
    d = trt_int8.to_dict()
    assert d["status"] == "fallback" and d["actual"]["backend"] == "onnxruntime" and d["engine"]["device"] == "cpu"


@no_trt
def test_fallback_none_fails_with_reason(onnx_files, tmp_path):
    net, fp32, int8 = onnx_files
    p = parse_profile({"name": "strict", "fallback": "none",
                       "engines": [{"backend": "tensorrt", "precision": "fp16"}, {"backend": "torch"}]})
    res = build_engines(p, fp32_onnx=fp32, int8_onnx=None, torch_model=net, out_dir=tmp_path)
    assert [r.status for r in res] == ["failed", "built"]  # asked for, not here, and no stand-in allowed
    assert res[0].engine is None and TRT_WHY in res[0].reason and 'fallback = "none"' in res[0].reason


def test_missing_inputs_fail_with_reason(onnx_files, tmp_path):
    net, fp32, _ = onnx_files
    res = build_engines(load_profile("x86-cpu"), fp32_onnx=fp32, int8_onnx={}, torch_model=None, out_dir=tmp_path)
    by = {r.spec.key: r for r in res}
    assert by["onnxruntime-fp32-cpu"].status == "built"
    assert by["onnxruntime-int8-cpu"].status == "failed" and "policy 'cpu'" in by["onnxruntime-int8-cpu"].reason
    assert by["torch-fp32-cpu"].status == "skipped" and "torch model" in by["torch-fp32-cpu"].reason
    assert all(isinstance(r, BuiltEngine) for r in res)


@no_trt
def test_skipped_engines_name_no_stand_in(onnx_files, tmp_path):
    net, fp32, _ = onnx_files
    res = build_engines(load_profile("jetson-orin-nano"), fp32_onnx=fp32, int8_onnx={}, torch_model=net,
                        out_dir=tmp_path)
    by = {r.spec.key: r for r in res}
    # TensorRT int8 -> onnxruntime int8, but no QDQ file was given: failed, and nothing stands in
    assert by["tensorrt-int8-cuda0"].status == "failed" and by["tensorrt-int8-cuda0"].actual is None
    assert "no INT8 QDQ ONNX" in by["tensorrt-int8-cuda0"].reason
    assert by["tensorrt-fp16-cuda0"].status == "skipped" and by["tensorrt-fp16-cuda0"].actual is None
    assert by["tensorrt-fp16-cuda0"].to_dict()["actual"]["backend"] == "tensorrt"


# ---------------------------------------------------------------------------------
# what the gate makes of engines that do not run (issue 20.15)
# ---------------------------------------------------------------------------------
def _gate(built):
    from edgerep.bench.gate import GateThresholds, evaluate_gate
    from edgerep.pipeline import engine_rows

    report = {"engines": engine_rows(built)}  # the rows deploy writes, from the factory's own results
    return report, evaluate_gate(report, GateThresholds(max_drop=None, require_accuracy=False))


def test_an_engine_that_fails_to_build_fails_the_gate_naming_why(onnx_files, tmp_path):
    """x86-cpu asks for onnxruntime INT8; its QDQ file is not an ONNX model: onnxruntime refuses it, the
    row says failed with onnxruntime's reason, and the gate fails on it by name (the FP32 engine still runs)."""
    net, fp32, _ = onnx_files
    broken = tmp_path / "m.int8.onnx"
    broken.write_bytes(b"not an onnx model")
    res = build_engines(load_profile("x86-cpu"), fp32_onnx=fp32, int8_onnx={"cpu": broken}, torch_model=net,
                        out_dir=tmp_path)
    by = {r.spec.key: r for r in res}
    assert by["onnxruntime-int8-cpu"].status == "failed" and "cannot load it" in by["onnxruntime-int8-cpu"].reason
    report, g = _gate(res)
    assert not g.passed
    (fail,) = g.failures
    assert fail.name == "engine_built" and fail.engine == "onnxruntime-cpu/int8"
    assert "onnxruntime-int8-cpu" in fail.message and "cannot load it" in fail.message
    assert {r["status"] for r in report["engines"]} == {"built", "failed"}


@no_trt
def test_an_engine_absent_by_the_profiles_rule_passes_and_says_why(onnx_files, tmp_path):
    """dgpu here: TensorRT FP16 would stand in as onnxruntime FP32, which the profile lists by itself; that
    absence is the profile's own rule (fallback = onnxruntime-cpu), so the gate passes and names it."""
    net, fp32, int8 = onnx_files
    res = build_engines(load_profile("dgpu"), fp32_onnx=fp32, int8_onnx={"tensorrt": int8, "cpu": int8},
                        torch_model=net, out_dir=tmp_path)
    report, g = _gate(res)
    assert g.passed, [c.message for c in g.failures]
    absent = [c for c in g.checks if c.name == "engine_absent"]
    assert absent and all(c.passed for c in absent)
    assert any("tensorrt-fp16-cuda0" in c.message and "already in this profile's list" in c.message for c in absent)
