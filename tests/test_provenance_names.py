"""Layers keep the user's names wherever edgerep names one: a net written flat (its folded sum is
``reparam`` in the graph, ``layer_b`` to the user) and the same net as a ``.pt2`` program, through the
fold, the check, ONNX nodes (layers kept in float) and ``bench --profile``."""
from __future__ import annotations

import json

import pytest
import torch

from edgerep.cli import main
from edgerep.checkpoint import load_checkpoint
from edgerep.fold.model import fold_with_provenance
from edgerep.fold.onnx_names import provenance_names
from edgerep.quant.export import export_onnx
from edgerep.report.render import to_markdown
from user_nets import flat_net, randomize_bn

USER = ["--arch", "user_nets:flat_net", "--input-shape", "1,16,16"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("flat")
    model = randomize_bn(flat_net(), seed=1)
    torch.save(model.state_dict(), d / "flat.pt")
    torch.export.save(torch.export.export(model, (torch.randn(1, 1, 16, 16),)), str(d / "flat.pt2"))
    return d, model


def _names(rows) -> dict[str, str]:
    return {r.layer: r.name for r in rows}


def test_a_flat_net_and_its_pt2_fold_to_the_users_layer_names(files):
    d, model = files
    sd = fold_with_provenance(model, torch.randn(2, 1, 16, 16))
    assert _names(sd.provenance) == {"layer_a": "layer_a", "reparam": "layer_b", "fc": "fc"}
    pt2 = load_checkpoint(d / "flat.pt2")
    prog = fold_with_provenance(pt2.model, pt2.example_input(2))
    # the program's convs, batch norms and the final linear are modules at the user's paths
    assert _names(prog.provenance) == {"layer_a": "layer_a", "reparam": "layer_b", "fc": "fc"}
    row = prog.layer("reparam")
    assert row.sources == ["layer_b", "bn_b", "layer_b1", "bn_b1", "add"] and row.kind == "2-branch sum"


def test_check_of_a_pt2_names_every_layer_the_user_wrote(files, capsys):
    d, _ = files
    assert main(["check", str(d / "flat.pt2"), "--no-data", "--no-sensitivity", "--json"]) == 0
    names = sorted(layer["name"] for layer in json.loads(capsys.readouterr().out)["layers"])
    assert names == ["fc", "layer_a", "layer_b"]  # not "program" / "add_folded", and the linear is checked


def test_onnx_nodes_and_layers_kept_in_float_are_named_by_provenance(files, tmp_path):
    _, model = files
    fold = fold_with_provenance(model, torch.randn(2, 1, 16, 16))
    export_onnx(fold.module, tmp_path / "m.onnx", (1, 16, 16))
    rows = provenance_names(tmp_path / "m.onnx", [r.to_dict() for r in fold.provenance])
    named = {node: row["name"] for node, row in rows.items() if node.startswith("/")}
    assert named["/reparam/Conv"] == "layer_b" and named["/act_1/Relu"] == "layer_b"  # the reused ReLU
    assert named["/layer_a/Conv"] == named["/act/Relu"] == "layer_a" and named["/fc/Gemm"] == "fc"
    md = to_markdown({"quantization": {"excluded_nodes": [
        {"node": "/reparam/Conv", "layer": "layer_b", "target": "cpu", "precision": "fp32", "why": "x"}]}})
    assert "- `layer_b` (ONNX node `/reparam/Conv`, cpu, fp32): x" in md


def test_bench_profile_names_a_fused_activation_by_the_users_layer(files, tmp_path):
    d, _ = files
    out = tmp_path / "bundle"
    assert main(["deploy", str(d / "flat.pt"), *USER, "--data", "synthetic", "--out", str(out), "--calib-samples", "64", "--bench-seconds", "0.05", "--no-check",
                 "--no-accuracy-gate", "--cache-dir", str(tmp_path / "cache")]) == 0  # an untrained net: latency only
    assert main(["bench", str(out), "--profile", "--iterations", "3", "--warmup", "1", "--timer", "builtin",
                 "--min-queries", "1", "--out", str(tmp_path / "b.json")]) == 0
    r = json.loads((tmp_path / "b.json").read_text())
    fp32 = next(e for e in r["engines"] if e["name"] == "onnxruntime-cpu" and e["precision"] == "fp32")
    rows = {t["node"]: t for t in fp32["profile"]["top"]}
    act1 = [t for n, t in rows.items() if n.startswith("/act_1/Relu")]  # onnxruntime fused it with its conv
    assert act1 and act1[0]["layer"] == "reparam" and act1[0]["block"].startswith("layer_b ("), rows
    assert all(not t["layer"].startswith("act") for t in rows.values()), rows
