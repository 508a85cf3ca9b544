"""`edgerep bench` on a bundle, a checkpoint and an ONNX file; its report feeds `edgerep gate`."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgerep.cli import main

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "checkpoints" / "repvgg_digits.pt"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "bundle"
    assert main(["deploy", str(DEMO), "--out", str(out), "--no-check", "--calib-samples", "64",
                 "--bench-seconds", "0.05", "--eval-samples", "64"]) == 0
    return out


def test_bench_bundle_times_every_engine_against_unfolded(bundle, tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", str(bundle), "--batch-sizes", "1", "4", "--iterations", "5", "--warmup", "1",
                 "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["baseline"]["name"].endswith("unfolded")
    names = {(e["name"], e["precision"]) for e in r["engines"]}
    assert {("onnxruntime-cpu", "fp32"), ("onnxruntime-cpu", "int8")} <= names
    for e in r["engines"] + [r["baseline"]]:
        assert set(e["latency_by_batch"]) == {"1", "4"}
        for s in e["latency_by_batch"].values():
            assert s["iterations"] == 5 and s["p50_ms"] <= s["p99_ms"] and s["throughput_ips"] > 0
    int8 = next(e for e in r["engines"] if e["precision"] == "int8")
    # the CPU policy's session settings travel from the bundle into the benchmarked session
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert int8["describe"]["session_config"] == (manifest["cpu_policy"].get("session_config") or {})
    assert r["host"]["cpu_count"] and "torch_threads" in r["host"]
    # a bench report gates on latency like a deploy report; it measures no accuracy, so it says so
    assert main(["gate", str(out), "--max-latency-ms", "10000"]) == 1  # "no accuracy measured"
    assert main(["gate", str(out), "--no-accuracy-gate", "--max-latency-ms", "10000"]) == 0
    assert main(["gate", str(out), "--no-accuracy-gate", "--max-latency-ms", "0.000001"]) == 1


def test_bench_onnx_and_checkpoint(bundle, capsys):
    assert main(["bench", str(bundle / "model.fp32.onnx"), "--iterations", "3", "--warmup", "0", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["engines"][0]["name"] == "onnxruntime-cpu" and r["model"]["input_shape"] == [1, 16, 16]
    assert main(["bench", str(DEMO), "--iterations", "3", "--warmup", "0", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["engines"][0]["name"] == "torch-cpu" and r["baseline"]["name"] == "torch-cpu-unfolded"


def test_bench_bad_input(tmp_path, capsys):
    assert main(["bench", str(tmp_path / "nope.pt")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["bench", str(tmp_path), "--iterations", "1"]) == 2
    assert "not a bundle" in capsys.readouterr().err
    assert main(["bench", str(DEMO), "--batch-sizes", "0"]) == 2
