"""`edgerep deploy` end to end on the shipped digits demo: bundle contents, table, gate, degraded
models failing the gate, and interrupted deploys leaving nothing at the output path."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgerep.cli import main

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "checkpoints" / "repvgg_digits.pt"
FAST = ["--calib-samples", "128", "--bench-seconds", "0.2", "--no-check"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """One full deploy (check included) of the README's demo checkpoint, shared by the tests."""
    out = tmp_path_factory.mktemp("deploy") / "bundle"
    rc = main(["deploy", str(DEMO), "--out", str(out), "--bench-seconds", "0.3", "--max-drop", "0.5",
               "--cache-dir", str(out.parent / "cache")])
    assert rc == 0
    return out


def test_bundle_has_every_artifact(bundle):
    names = {p.name for p in bundle.iterdir()}
    for f in ("model.folded.pt", "model.fp32.onnx", "model.int8.onnx", "manifest.json", "report.json",
              "report.md", "report.html"):
        assert f in names, f
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["inputs"]["checkpoint_sha256"] and manifest["versions"]["onnxruntime"]
    assert manifest["seed"] == 0 and manifest["settings"]["target"] == "x86-cpu"
    for rel in manifest["files"].values():
        assert (bundle / rel).exists(), rel
    assert not [p for p in bundle.parent.iterdir() if ".edgerep-tmp-" in p.name]


def test_report_measures_every_engine_against_unfolded(bundle):
    r = json.loads((bundle / "report.json").read_text())
    assert r["fold"]["max_rel_error"] < 1e-5 and r["fold"]["convs_after"] < r["fold"]["convs_before"]
    assert r["baseline"]["accuracy"]["value"] >= 97.0
    keys = {(e["name"], e["precision"]) for e in r["engines"] if e["status"] == "built"}
    assert {("onnxruntime-cpu", "fp32"), ("onnxruntime-cpu", "int8"), ("torch-cpu", "fp32")} <= keys
    int8 = next(e for e in r["engines"] if e["precision"] == "int8")
    # accuracy measured on the optimized INT8 session, within the budget
    assert int8["drop"]["of"] == "top1" and int8["drop"]["value"] <= 0.5
    assert int8["describe"]["optimization"] == "all"  # the fused kernels a user runs, not a QDQ simulation
    for e in r["engines"]:
        assert e["latency"]["p50_ms"] > 0 and e["verdict"] == "pass"
    assert r["gate"]["passed"] is True
    assert r["check"]["summary"]["layers"] > 0
    html = (bundle / "report.html").read_text()
    assert "data:image/png;base64" in html and "onnxruntime-cpu" in html


def test_bundle_passes_gate_cli(bundle, tmp_path):
    junit = tmp_path / "gate.xml"
    assert main(["gate", str(bundle / "report.json"), "--max-drop", "0.5", "--junit", str(junit)]) == 0
    assert 'failures="0"' in junit.read_text()


def test_degraded_model_fails_gate(bundle, tmp_path, capsys):
    """Perturb one folded conv of the shipped FP32 ONNX, evaluate it exactly as deploy does, gate it."""
    from edgerep.bench.entry import engine_accuracy, engine_latency
    from edgerep.checkpoint import load_checkpoint
    from edgerep.data import open_dataset
    from edgerep.engines.onnxruntime_engine import OrtEngine

    m = onnx.load(bundle / "model.fp32.onnx")
    conv_weights = [n.input[1] for n in m.graph.node if n.op_type == "Conv"]
    init = next(i for i in m.graph.initializer if i.name == conv_weights[len(conv_weights) // 2])
    w = numpy_helper.to_array(init).copy()
    w += np.random.default_rng(0).standard_normal(w.shape).astype(w.dtype) * 3 * w.std()
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    bad_path = tmp_path / "degraded.onnx"
    onnx.save(m, bad_path)

    report = json.loads((bundle / "report.json").read_text())
    meta = load_checkpoint(DEMO).meta
    ds = open_dataset("digits", split="test", meta=meta)
    labels = np.concatenate([y for _, y in ds.batches(256)])
    eng = OrtEngine(bad_path, precision="fp32")
    entry = {"name": eng.name, "precision": eng.precision, "device": eng.device, "status": "built",
             **engine_latency(eng, next(ds.batches(1))[0], seconds=0.05),
             **engine_accuracy(eng, ds, labels=labels, ref_accuracy=report["baseline"]["accuracy"])}
    report["engines"] = [entry]
    degraded = tmp_path / "report.json"
    degraded.write_text(json.dumps(report))
    assert entry["drop"]["of"] == "top1" and entry["drop"]["value"] > 0.5
    assert main(["gate", str(degraded), "--max-drop", "0.5"]) == 1
    err = capsys.readouterr().err
    assert "top1 drop vs unfolded fp32" in err and "onnxruntime-cpu/fp32" in err


def test_existing_bundle_kept_without_force(bundle, capsys):
    before = (bundle / "report.json").read_bytes()
    assert main(["deploy", str(DEMO), "--out", str(bundle)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (bundle / "report.json").read_bytes() == before


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_killing_deploy_leaves_no_bundle(tmp_path, sig):
    out = tmp_path / "bundle"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen([sys.executable, "-m", "edgerep", "deploy", str(DEMO), "--out", str(out), *FAST],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    deadline = time.time() + 120
    # wait until the bundle is being written (its hidden temporary directory exists)
    while time.time() < deadline and not [q for q in tmp_path.iterdir() if ".edgerep-tmp-" in q.name]:
        if p.poll() is not None:
            pytest.fail(f"deploy ended before it could be interrupted: {p.stderr.read()[-2000:]}")
        time.sleep(0.05)
    time.sleep(0.3)
    p.send_signal(sig)
    p.wait(timeout=60)
    assert p.returncode != 0
    assert not out.exists()
    assert not [q for q in tmp_path.iterdir() if ".edgerep-tmp-" in q.name]


def test_unknown_architecture_deploys_through_the_graph_folder(tmp_path):
    """A state_dict of a net edgerep has no code for (official-style blocks written as plain modules),
    loaded with --arch package.module:factory, folds through the traced-graph folder and deploys."""
    import torch
    from unseen_blocks import randomize_bn, tinynet_digits

    model = randomize_bn(tinynet_digits(), seed=3)
    torch.save(model.state_dict(), tmp_path / "foreign.pt")
    out = tmp_path / "bundle"
    rc = main(["deploy", str(tmp_path / "foreign.pt"), "--arch", "unseen_blocks:tinynet_digits",
               "--input-shape", "1,16,16", "--data", "digits", "--mean", "0.5", "--std", "0.5", "--out", str(out), *FAST,
               "--eval-samples", "64", "--max-drop", "-1"])
    assert rc == 0
    r = json.loads((out / "report.json").read_text())
    assert r["fold"]["convs_after"] < r["fold"]["convs_before"] and r["fold"]["max_rel_error"] < 1e-5
    assert {e["precision"] for e in r["engines"] if e["status"] == "built"} >= {"fp32", "int8"}


@pytest.mark.skipif(__import__("edgerep.engines.tensorrt_engine", fromlist=["x"]).tensorrt_status()[0],
                    reason="TensorRT is here: its INT8 engine runs the file, nothing stands in")
def test_standin_deploy_gates_the_tensorrt_qdq_file_it_ships(tmp_path, capsys):
    """jetson-orin-nano on a machine without TensorRT: onnxruntime stands in for the TensorRT engines, yet the
    TensorRT QDQ file ships. It is linted and scored on the test set (onnxruntime on that very file), and
    both are gate checks: a lint error or a simulated drop over the budget fails `edgerep gate` (issue 20.15)."""
    out = tmp_path / "b"
    rc = main(["deploy", str(DEMO), "--out", str(out), "--target", "jetson-orin-nano", *FAST,
               "--cache-dir", str(tmp_path / "cache")])
    assert rc == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    t = report["tensorrt_qdq"]
    assert (out / t["file"]).is_file() and t["file"] == Path(report["quantization"]["files"]["tensorrt"]).name
    assert t["accuracy"]["samples"] == report["baseline"]["accuracy"]["samples"] > 100  # the whole test set
    assert t["drop"]["of"] == "top1" and t["lint_errors"] == [] and t["verdict"] == "pass"
    checks = {c["name"]: c for c in report["gate"]["checks"] if c["engine"] == "tensorrt-qdq/int8"}
    assert set(checks) == {"tensorrt_qdq_lint", "tensorrt_qdq_drop"} and all(c["passed"] for c in checks.values())
    assert checks["tensorrt_qdq_drop"]["value"] == t["drop"]["value"]
    absent = [c for c in report["gate"]["checks"] if c["name"] == "engine_absent"]
    assert [c["engine"] for c in absent] == ["tensorrt-cuda/fp16"]  # its stand-in, onnxruntime FP32, is listed already
    capsys.readouterr()
    for field, value, failed in (("lint_errors", ["error: [zero-point] conv: nonzero zero point"], "tensorrt_qdq_lint"),
                                 ("drop", {"of": "top1", "unit": "points", "value": 3.0, "vs": "unfolded fp32"},
                                  "tensorrt_qdq_drop")):
        bad = json.loads((out / "report.json").read_text())
        bad["tensorrt_qdq"][field] = value
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        assert main(["gate", str(tmp_path / "bad.json"), "--json"]) == 1
        res = json.loads(capsys.readouterr().out)
        assert [c["name"] for c in res["checks"] if not c["passed"]] == [failed]
