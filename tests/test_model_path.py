"""One model path: every accepted checkpoint form works in every command (form x command matrix on a
small branchy 1-channel model), and `check` analyses the fold deploy ships (provenance)."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from edgerep.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from edgerep.cli import main

sys.path.insert(0, str(Path(__file__).parent))
from user_nets import branchy_net, collapse_identity, randomize_bn  # noqa: E402

SHAPE = (1, 16, 16)
USER = ["--arch", "user_nets:branchy_net", "--input-shape", "1,16,16"]
ZOO = ["--arch", "repvgg_digits"]


def _zoo_model():
    from edgerep.blocks.testing import randomize_
    from edgerep.models import create_model

    z = create_model("repvgg_digits")
    randomize_(z, 0)
    return z.eval()


@pytest.fixture(scope="module")
def forms(tmp_path_factory) -> dict[str, tuple[Path, list[str]]]:
    """Every accepted form of a checkpoint: name -> (file, the flags it needs)."""
    d = tmp_path_factory.mktemp("forms")
    user = randomize_bn(branchy_net())
    torch.save(user.state_dict(), d / "user_sd.pt")
    torch.save(user, d / "user_pickled.pt")
    torch.export.save(torch.export.export(user, (torch.randn(1, *SHAPE),)), str(d / "user.pt2"))
    save_checkpoint(d / "user_edgerep.pt", user, CheckpointMeta(arch="user_nets:branchy_net", input_shape=SHAPE,
                                                                 mean=(0.5,), std=(0.5,)))
    zoo = _zoo_model()
    torch.save(zoo.state_dict(), d / "zoo_sd.pt")
    official = {k.replace(".dense.", ".rbr_dense.").replace(".one_by_one.", ".rbr_1x1.")
                .replace(".identity.", ".rbr_identity."): v for k, v in zoo.state_dict().items()}
    assert any("rbr_identity" in k for k in official)
    torch.save(official, d / "zoo_official.pt")
    rng = np.random.default_rng(0)
    np.savez(d / "data.npz", x=rng.standard_normal((48, *SHAPE)).astype(np.float32),
             y=rng.integers(0, 10, 48).astype(np.int64))
    return {
        "edgerep checkpoint (module:factory)": (d / "user_edgerep.pt", []),
        "state_dict --arch module:factory (official names)": (d / "user_sd.pt", USER),
        "state_dict --arch NAME": (d / "zoo_sd.pt", ZOO),
        "official layout --arch NAME": (d / "zoo_official.pt", ZOO),
        ".pt2": (d / "user.pt2", []),
        "pickled module --trust-checkpoint": (d / "user_pickled.pt", ["--trust-checkpoint", "--input-shape", "1,16,16"]),
    }


def _run(argv: list) -> int:
    return main([str(a) for a in argv])


def _data(forms) -> str:
    return str(forms[".pt2"][0].parent / "data.npz")


FORMS = ["edgerep checkpoint (module:factory)", "state_dict --arch module:factory (official names)",
         "state_dict --arch NAME", "official layout --arch NAME", ".pt2", "pickled module --trust-checkpoint"]


@pytest.mark.parametrize("form", FORMS)
def test_every_form_folds_into_a_form_that_reloads(form, forms, tmp_path, capsys):
    path, flags = forms[form]
    out = tmp_path / ("folded.pt2" if path.suffix == ".pt2" else "folded.pt")
    assert _run(["fold", path, *flags, "-o", out, "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["fold"]["max_rel_error"] < 1e-4 and r["fold"]["convs_after"] < r["fold"]["convs_before"]
    trust = "--trust-checkpoint" in flags
    src = load_checkpoint(path, arch=flags[1] if flags[:1] == ["--arch"] else None, trust=trust,
                          input_shape=SHAPE if "--input-shape" in flags else None)
    back = load_checkpoint(out, trust=trust)
    x = torch.randn(1, *SHAPE)
    with torch.no_grad():
        want, got = src.model(x), back.model(x)
    assert torch.allclose(want, got, rtol=1e-4, atol=1e-5)
    assert tuple(back.meta.input_shape) == SHAPE
    from edgerep.fold.graph_cost import measure_cost

    assert measure_cost(back.model, x).convs == r["fold"]["convs_after"]  # the folded form is what reloads


@pytest.mark.parametrize("form", FORMS)
def test_every_form_checks_quantizes_deploys_and_benches(form, forms, tmp_path, capsys):
    path, flags = forms[form]
    data = _data(forms)
    assert _run(["check", path, *flags, "--data", data, "--no-sensitivity", "--calib-limit", "8", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["layers"] and all(layer["verdict"] in ("ok", "warn", "bad") for layer in rep["layers"])
    assert _run(["quantize", path, *flags, "--data", data, "--targets", "cpu", "--calib-samples", "16",
                 "--eval-samples", "16", "-o", tmp_path / "q", "--json"]) == 0
    q = json.loads(capsys.readouterr().out)
    assert Path(q["files"]["cpu"]).is_file()
    assert _run(["deploy", path, *flags, "--data", data, "--no-check", "--calib-samples", "16", "--eval-samples",
                 "16", "--bench-seconds", "0.02", "--max-drop", "-1", "--out", tmp_path / "b", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["model"]["source_format"] and d["fold"]["max_rel_error"] < 1e-4
    assert ".edgerep-tmp-" not in json.dumps(d)  # paths are relative to the bundle, not the temporary folder
    assert d["baseline"]["name"] == "torch-cpu-unfolded"
    assert d["fold"]["provenance"] and all(r["folder"] in ("block", "graph", "block+graph", "none")
                                           for r in d["fold"]["provenance"])
    assert _run(["bench", path, *flags, "--seconds", "0.02", "--warmup", "1", "--json"]) == 0
    b = json.loads(capsys.readouterr().out)
    assert b["baseline"]["name"] == "torch-cpu-unfolded" and b["engines"][0]["name"] == "torch-cpu"
    assert not list((tmp_path).glob(".*.lock"))


def test_onnx_where_the_command_takes_onnx(forms, tmp_path, capsys):
    """quantize, build and bench take an ONNX file; the fp32 ONNX of a .pt2 deploy is one."""
    path, _ = forms[".pt2"]
    data = _data(forms)
    onnx_path = tmp_path / "m.onnx"
    from edgerep.quant.export import export_onnx

    export_onnx(load_checkpoint(path).model, onnx_path, SHAPE)
    assert _run(["quantize", onnx_path, "--data", data, "--targets", "cpu", "--calib-samples", "16",
                 "-o", tmp_path / "q", "--json"]) == 0
    capsys.readouterr()
    assert _run(["build", onnx_path, "--target", "x86-cpu", "--out", tmp_path / "e", "--json"]) == 0
    capsys.readouterr()
    assert _run(["bench", onnx_path, "--seconds", "0.02", "--warmup", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["engines"][0]["name"] == "onnxruntime-cpu"


def test_fold_of_a_pt2_needs_a_pt2_output(forms, tmp_path, capsys):
    path, _ = forms[".pt2"]
    assert _run(["fold", path, "-o", tmp_path / "x.pt"]) == 2
    assert "folds into a .pt2" in capsys.readouterr().err


def test_pt2_matches_the_exported_program_module(forms):
    path, _ = forms[".pt2"]
    ep = torch.export.load(str(path))
    loaded = load_checkpoint(path)
    x = torch.randn(1, *SHAPE)
    with torch.no_grad():
        assert torch.allclose(ep.module()(x), loaded.model(x), rtol=0, atol=1e-6)
    loaded.model.eval()  # ExportedProgram.module().eval() raises; the loaded model does not


def test_check_of_official_names_names_the_identity_branch(tmp_path, capsys):
    """A user's RepVGG block with official names, via --arch module:factory, with two collapsed
    identity-BN channels: the folded layer is flagged, the identity branch and its channels named."""
    model = collapse_identity(randomize_bn(branchy_net()), "stage1.1", (2, 5))
    torch.save(model.state_dict(), tmp_path / "hostile.pt")
    assert _run(["check", tmp_path / "hostile.pt", *USER, "--data", "synthetic", "--calib-limit", "16",
                 "--eval-limit", "8", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    layers = {layer["name"]: layer for layer in rep["layers"]}
    assert set(layers) == {"stage0", "stage1.0", "stage1.1", "linear"}  # the folded layers, not 6 branch convs
    bad = layers["stage1.1"]
    assert bad["verdict"] == "bad" and bad["attribution"]["dominant_branch"] == "identity"
    sentences = [c["sentence"] for c in bad["attribution"]["channels"]]
    assert {c["channel"] for c in bad["attribution"]["channels"]} == {2, 5}
    assert all("identity-BN gamma/sigma" in s and "dense 3x3 conv+BN" in s for s in sentences)
    assert any(a["kind"] == "retrain_qarepvgg" for a in bad["advice"])
    assert not rep["passed"]


def test_provenance_names_the_train_time_branches_and_the_folder():
    """Block folder for edgerep's blocks, graph folder for a user's block with official names."""
    from edgerep.fold.model import fold_with_provenance
    from edgerep.models import create_model

    user = fold_with_provenance(randomize_bn(branchy_net()), torch.randn(2, *SHAPE))
    row = next(r for r in user.provenance if r.name == "stage1.1")
    assert row.folder == "graph" and row.kind == "3-branch sum" and row.block == "OfficialRepVGGBlock"
    assert row.branches == {"rbr_identity": ["stage1.1.rbr_identity"],
                            "rbr_dense": ["stage1.1.rbr_dense.conv", "stage1.1.rbr_dense.bn"],
                            "rbr_1x1": ["stage1.1.rbr_1x1.conv", "stage1.1.rbr_1x1.bn"]}
    assert isinstance(user.module.get_submodule(row.layer), torch.nn.Conv2d)
    own = fold_with_provenance(create_model("repvgg_digits").eval(), torch.randn(2, *SHAPE))
    assert own.counts()["block"] == 7 and own.counts()["graph"] == 0
    assert [r.name for r in own.provenance][:2] == ["stage0", "stage1.0"]


def test_onnx_where_a_command_needs_a_checkpoint_is_a_deliberate_exit_2(forms, tmp_path, capsys):
    onnx_path = tmp_path / "m.onnx"
    from edgerep.quant.export import export_onnx

    export_onnx(load_checkpoint(forms[".pt2"][0]).model, onnx_path, SHAPE)
    for argv in (["fold", onnx_path, "-o", tmp_path / "x.pt"], ["check", onnx_path],
                 ["deploy", onnx_path, "--out", tmp_path / "b"]):
        assert _run(argv) == 2
        err = capsys.readouterr().err.strip()
        errors = [line for line in err.splitlines() if "error:" in line]  # deploy also prints its progress
        assert len(errors) == 1 and "an ONNX model, not a PyTorch checkpoint" in errors[0]
