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
            # 5 queries: a p50, but no early-stopping p90 (64 queries) or p99 (662 queries)
            assert s["queries"] == 5 and s["p50_ms"] > 0 and s["p90_ms"] is None and s["p99_ms"] is None
            assert s["throughput_ips"] > 0 and s["scenario"] == "single-stream" and s["cv"] >= 0
            assert isinstance(s["noisy"], bool) and (s["noise_reason"] is None) == (not s["noisy"])
    int8 = next(e for e in r["engines"] if e["precision"] == "int8")
    # the CPU policy's session settings travel from the bundle into the benchmarked session
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert int8["describe"]["session_config"] == (manifest["cpu_policy"].get("session_config") or {})
    assert r["host"]["cpu_count"] and "torch_threads" in r["host"]
    # a bench report gates on latency like a deploy report; it measures no accuracy, so it says so
    assert main(["gate", str(out), "--max-latency-ms", "10000"]) == 1  # "no accuracy measured"
    assert main(["gate", str(out), "--no-accuracy-gate", "--max-latency-ms", "10000"]) == 0
    assert main(["gate", str(out), "--no-accuracy-gate", "--max-latency-ms", "0.000001"]) == 1
    # no p99 from 5 queries: a p99 threshold cannot pass, and the gate says why
    assert main(["gate", str(out), "--no-accuracy-gate", "--max-p99-ms", "10000"]) == 1


def test_deploy_records_single_stream_latency_with_loadgen_logs_in_bundle(bundle):
    r = json.loads((bundle / "report.json").read_text())
    assert r["bench"]["scenario"] == "single-stream" and r["bench"]["load_before"]["cores"]
    for e in [r["baseline"]] + [e for e in r["engines"] if e.get("latency")]:
        lat = e["latency"]
        for key in ("scenario", "queries", "p50_ms", "p90_ms", "p99_ms", "throughput_ips", "cv", "loadgen",
                    "noisy", "noise_reason"):
            assert key in lat, key
        assert lat["scenario"] == "single-stream" and lat["queries"] >= 64 and lat["p90_ms"] is not None
        assert lat["loadgen"] and lat["timer"] == "loadgen"
        logs = bundle / "loadgen" / "single-stream"
        assert (logs / f"{e['name']}-{e['precision']}-b1" / "mlperf_log_summary.txt").is_file()


def test_bench_offline_picks_the_best_batch_and_logs_into_the_bundle(bundle, capsys):
    assert main(["bench", str(bundle), "--scenario", "offline", "--batch-sizes", "1", "8", "--seconds", "0.05",
                 "--min-queries", "64", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    for e in r["engines"] + [r["baseline"]]:
        by = e["latency_by_batch"]
        best = max(by.values(), key=lambda s: s["throughput_ips"])
        assert e["latency"] == best and best["scenario"] == "offline"
        assert all(s["queries"] >= 64 and s["samples"] == s["queries"] * s["batch"] for s in by.values())
    assert (bundle / "loadgen" / "offline" / "onnxruntime-cpu-int8-b8" / "mlperf_log_detail.txt").is_file()
    assert not list(Path.cwd().glob("mlperf_log_*"))  # never into the current folder


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
    assert main(["bench", str(DEMO), "--samples-per-query", "0"]) == 2


def test_bench_profile_maps_the_slowest_layers_to_folded_layers_and_train_blocks(bundle, capsys):
    assert main(["bench", str(bundle), "--iterations", "3", "--warmup", "1", "--profile", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    from edgerep.checkpoint import load_checkpoint

    folded = load_checkpoint(bundle / "model.folded.pt").model
    convs = {n for n, m in folded.named_modules() if type(m).__name__ == "Conv2d"}
    for e in [r["baseline"]] + r["engines"]:
        prof = e["profile"]
        rows = prof["top"]
        assert 0 < len(rows) <= 10 and prof["runs"] > 0
        assert sum(row["share"] for row in rows) <= 1.0 + 1e-9
        assert [row["ms_per_run"] for row in rows] == sorted((row["ms_per_run"] for row in rows), reverse=True)
        conv_rows = [row for row in rows if row["op"] in ("Conv", "QLinearConv", "Conv2d")]
        assert conv_rows
        for row in conv_rows:  # every conv is named and traced to the RepVGG block it was folded from
            if e is not r["baseline"]:
                assert row["layer"] in convs
            assert "RepVGGBlock" in row["block"] and row["layer"].startswith(row["block"].split(" ")[0])
    assert {e["profile"]["source"].split()[0] for e in r["engines"]} == {"onnxruntime", "torch.profiler"}
