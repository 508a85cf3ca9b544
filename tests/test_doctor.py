"""`edgerep doctor`: real versions and devices of this machine, CPU ISA read from cpuinfo, each with a meaning."""
from __future__ import annotations

import importlib.metadata
import json

import pytest

from edgerep.cli import main
from edgerep.commands import doctor

X86_AVX2 = "processor\t: 0\nmodel name\t: Old Xeon\nflags\t\t: fpu sse2 avx avx2 fma\nprocessor\t: 1\nflags : x\n"
X86_VNNI = "processor\t: 0\nmodel name\t: Ice Lake\nflags\t\t: avx2 avx512f avx512_vnni\n"
X86_AMX = "processor\t: 0\nmodel name\t: Sapphire Rapids\nflags\t\t: avx2 avx512f avx512_vnni avx_vnni amx_int8\n"
ORIN = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes asimddp\nprocessor\t: 1\nFeatures : fp\n"


def _facts(data):
    return {(f["section"], f["item"]): f for f in data["facts"]}


def test_json_reports_this_machine(capsys):
    assert main(["doctor", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    facts = _facts(data)
    assert facts[("python", "torch")]["value"] == importlib.metadata.version("torch")
    assert facts[("python", "onnx")]["value"] == importlib.metadata.version("onnx")
    import onnxruntime as ort

    assert facts[("onnxruntime", "onnxruntime")]["value"] == ort.__version__
    assert data["onnxruntime_providers"] == ort.get_available_providers()
    assert all(f["meaning"] and f["status"] in ("ok", "warn", "missing", "info") for f in data["facts"])
    import torch

    assert len(data["cuda_devices"]) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    from edgerep.engines.tensorrt_engine import tensorrt_status

    assert data["tensorrt"]["available"] == tensorrt_status()[0]
    if not data["tensorrt"]["available"] and data["tensorrt"]["stubs"]:
        assert "type hints only" in facts[("tensorrt", "TensorRT")]["value"]  # stubs are not TensorRT
    assert data["suggested_target"] in ("x86-cpu", "dgpu") or data["jetson"]
    assert data["cpu"]["int8_dot"] == facts[("cpu", "INT8 path")]["value"]


def test_table_output(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "edgerep doctor" in out and "INT8 path" in out and "suggested profile" in out


@pytest.mark.parametrize("text, best, status, word", [
    (X86_AVX2, "avx2", "warn", "7-bit"),
    (X86_VNNI, "avx512_vnni", "ok", "without saturation"),
    (X86_AMX, "amx", "ok", "without saturation"),
])
def test_cpu_isa_meaning(tmp_path, text, best, status, word):
    f = tmp_path / "cpuinfo"
    f.write_text(text)
    data = doctor.collect(f)
    facts = _facts(data)
    assert data["cpu"]["int8_dot"] == best
    path = facts[("cpu", "INT8 path")]
    assert path["value"] == best and path["status"] == status and word in path["meaning"]
    if best != "avx2":  # AVX2 present but not the INT8 path: its saturation note must not show
        assert "saturate" not in facts[("cpu", "AVX2")]["meaning"]
    assert facts[("cpu", "AVX512-VNNI")]["value"] == ("yes" if "avx512_vnni" in text else "no")


def test_suggested_target():
    assert doctor.suggest_target(None, []) == "x86-cpu"
    assert doctor.suggest_target(None, [{"name": "RTX 4090"}]) == "dgpu"
    assert doctor.suggest_target({"model": "NVIDIA Jetson AGX Orin Developer Kit"}, []) == "jetson-agx-orin"
    assert doctor.suggest_target({"model": "NVIDIA Jetson Orin Nano Developer Kit"}, []) == "jetson-orin-nano"
    assert doctor.suggest_target({"model": "NVIDIA Jetson Xavier NX Developer Kit"}, []) == "jetson-xavier-nx"
    from edgerep.engines.profiles import load_profile

    for name in ("x86-cpu", "dgpu", "jetson-agx-orin", "jetson-orin-nano", "jetson-xavier-nx"):
        assert load_profile(name).name == name  # every suggestion is a shipped profile
