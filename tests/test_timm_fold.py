"""The models users already hold: timm's and torchvision's, folded by ``edgerep.fold_model``
at least as far as timm's own ``reparameterize_model``, and timm state_dicts loaded with
``--arch timm:NAME``. Real libraries (the ``edgerep[timm]`` extra, installed by
scripts/setup.sh), random weights with randomized BN statistics, nothing downloaded.

Each fold records conv count, BN count, max relative error and fold time as test properties;
a failure names what is left and the node that stopped it (``norms_left``, refused regions).
"""
from __future__ import annotations

import copy
import json
import time

import pytest
import torch

import edgerep
from edgerep.checkpoint import load_checkpoint
from edgerep.errors import EdgerepError
from edgerep.blocks.testing import has_train_time_state, randomize_, rel_err
from edgerep.fold.graph_cost import measure_cost
from edgerep.fold.model import fold_model_with_report
from edgerep.models.libraries import LibraryUnavailable, import_timm, import_torchvision

try:
    timm = import_timm()
    from timm.utils.model import reparameterize_model
except LibraryUnavailable as e:  # pragma: no cover - the extra is not installed
    pytest.skip(f"timm is not usable here: {e}", allow_module_level=True)

MAX_REL = 1e-5
SIZE = 32  # small inputs keep the suite fast on 2 cores; benchmarks/timm_fold.py uses 224


def _fold(model: torch.nn.Module, x: torch.Tensor, record_property) -> tuple[torch.nn.Module, dict, float]:
    t0 = time.perf_counter()
    folded, report = fold_model_with_report(model, x)
    seconds = time.perf_counter() - t0
    assert report is not None
    for key in ("convs_before", "convs_after", "norms_before", "norms_after", "max_rel_error"):
        record_property(key, report[key])
    record_property("fold_seconds", round(seconds, 2))
    return folded, report, seconds


def _why(report: dict) -> str:
    """What a failing assertion prints: the BNs left with the node each reads, the refused regions."""
    refused = [f"{r['where']}: {r['reason']}" for r in report["refused_regions"]
               if "max_cost_growth" not in r["reason"]]
    return f"BNs left: {report['norms_left'][:5]}; refused: {refused[:5]}"


def _exact(report: dict) -> float:
    """The fold's error: float32 as run, or float64 when float32 rounding of the model itself
    exceeds the bound (recorded by the folder as max_rel_error_f64)."""
    f64 = report["max_rel_error_f64"]
    return min(report["max_rel_error"], f64 if f64 is not None else float("inf"))


# model -> timm leaves BNs that edgerep folds (its RepGhost / FastViT leftovers, plain conv+BN nets)
TIMM_MODELS = {
    "repvgg_a0": False,        # ByobNet RepVGG: 3-branch blocks
    "mobileone_s0": False,     # ByobNet MobileOne: k over-parameterized branches
    "fastvit_t8": True,        # RepMixer, reparam large-kernel convs; timm keeps 10 BNs in ConvMlp
    "repvit_m0_9": False,      # RepViT: depthwise 3x3 + 1x1 + identity, conv+BN pairs
    "repghostnet_050": True,   # RepGhost: timm keeps the BNs outside its reparam modules
    "resnet18": True,          # plain conv+BN: timm has nothing to reparameterize
}


@pytest.mark.parametrize("name", sorted(TIMM_MODELS))
def test_timm_model_folds_at_least_as_far_as_timm(name: str, record_property) -> None:
    model = randomize_(timm.create_model(name, pretrained=False), seed=0)
    x = torch.randn(1, 3, SIZE, SIZE)
    folded, report, _ = _fold(model, x, record_property)
    theirs = measure_cost(reparameterize_model(copy.deepcopy(model)), x)
    ours = measure_cost(folded, x)
    why = _why(report)
    assert ours.convs <= theirs.convs, f"{name}: {ours.convs} convs left, timm leaves {theirs.convs}; {why}"
    assert ours.norms <= theirs.norms, f"{name}: {ours.norms} BNs left, timm leaves {theirs.norms}; {why}"
    assert ours.norms == 0 and report["norms_left"] == [], f"{name}: {why}"
    if TIMM_MODELS[name]:
        assert theirs.norms > 0  # really beyond timm
    assert _exact(report) <= MAX_REL, f"{name}: {report['max_rel_error']:.2e} ({report['notes']})"
    with torch.no_grad():  # the public API on the same input, independently measured
        assert rel_err(model(x), folded(x)) <= max(MAX_REL, 2 * report["max_rel_error"])
    assert ours.flops <= report["flops_before"]
    assert not [s for s in has_train_time_state(folded) if "BatchNorm" in s]


def test_timm_model_is_left_untouched_and_folds_once() -> None:
    model = randomize_(timm.create_model("repvgg_a0", pretrained=False), seed=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(1, 3, SIZE, SIZE)
    folded = edgerep.fold_model(model, x)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    again = edgerep.fold_model(folded, x)  # folding a folded model changes nothing
    assert measure_cost(again, x).convs == measure_cost(folded, x).convs == 22


# ---------------------------------------------------------------------------------------------
# torchvision
# ---------------------------------------------------------------------------------------------
def _torchvision():
    try:
        return import_torchvision()
    except LibraryUnavailable as e:  # pragma: no cover
        pytest.skip(f"torchvision is not usable here: {e}")


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0"])
def test_torchvision_conv_bn_pairs_fold(name: str, record_property) -> None:
    tv = _torchvision()
    model = randomize_(getattr(tv.models, name)(weights=None), seed=0)
    x = torch.randn(1, 3, SIZE, SIZE)
    folded, report, _ = _fold(model, x, record_property)
    ours = measure_cost(folded, x)
    assert report["norms_before"] > 0 and ours.norms == 0, _why(report)
    assert ours.convs <= report["convs_before"]
    assert _exact(report) <= MAX_REL, report["notes"]


# ---------------------------------------------------------------------------------------------
# --arch timm:NAME
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def timm_state_dict(tmp_path_factory) -> tuple:
    torch.manual_seed(0)
    model = randomize_(timm.create_model("repvgg_a0", pretrained=False, num_classes=10), seed=2)
    path = tmp_path_factory.mktemp("timm") / "repvgg_a0.pth"
    torch.save(model.state_dict(), path)  # what a timm user holds
    return model, path


def test_arch_timm_loads_a_timm_state_dict_as_it_is(timm_state_dict) -> None:
    model, path = timm_state_dict
    loaded = load_checkpoint(path, arch="timm:repvgg_a0")
    assert loaded.meta.arch == "timm:repvgg_a0"
    assert loaded.meta.input_shape == (3, 224, 224)  # timm's config for the name
    assert loaded.meta.arch_kwargs == {"num_classes": 10}  # read off timm's classifier, head.fc
    assert set(loaded.model.state_dict()) == set(model.state_dict())
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model(x))


def test_arch_timm_folds_to_an_edgerep_checkpoint_that_reads_back(timm_state_dict, tmp_path, capsys) -> None:
    from edgerep.cli import main

    _, path = timm_state_dict
    out = tmp_path / "a0.folded.pt"
    assert main(["fold", str(path), "--arch", "timm:repvgg_a0", "--input-shape", f"3,{SIZE},{SIZE}",
                 "-o", str(out), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["fold"]["convs_before"] == 44 and rep["graph"]["convs_after"] == 22
    assert rep["graph"]["norms_before"] == 61 and rep["graph"]["norms_after"] == 0
    assert rep["fold"]["max_rel_error"] <= MAX_REL
    back = load_checkpoint(out)
    assert back.meta.folded and back.meta.arch == "timm:repvgg_a0"
    assert measure_cost(back.model, torch.zeros(1, 3, SIZE, SIZE)).convs == 22


@pytest.mark.parametrize("arch,kwargs,needle", [
    ("timm:repvgg_a00", None, "timm:repvgg_a0"),          # a typo: the close name is suggested
    ("timm:repvgg_a0", {"pretrained": True}, "downloads nothing"),
    ("timm:repvgg_a0", {"no_such_arg": 1}, "no_such_arg"),
])
def test_arch_timm_bad_input_is_one_line_naming_it(timm_state_dict, arch, kwargs, needle) -> None:
    _, path = timm_state_dict
    with pytest.raises(EdgerepError) as e:
        load_checkpoint(path, arch=arch, arch_kwargs=kwargs)
    text = f"{e.value} {e.value.hint or ''}"
    assert needle in text and "\n" not in str(e.value), text


def test_deploy_of_a_timm_state_dict_asks_for_mean_and_std_naming_timms(timm_state_dict, tmp_path, capsys) -> None:
    """timm's config gives the input shape; mean/std it only suggests (they are the pretrained weights'):
    deploy refuses to guess them and names timm's values to copy."""
    from edgerep.cli import main

    _, path = timm_state_dict
    rc = main(["deploy", str(path), "--arch", "timm:repvgg_a0", "--input-shape", f"3,{SIZE},{SIZE}", "--data", "digits",
               "--out", str(tmp_path / "b"), "--no-check"])
    err = capsys.readouterr().err
    assert rc == 2 and "no preprocessing" in err and not (tmp_path / "b").exists()
    assert "timm's config for timm:repvgg_a0 says --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225" in err, err


def test_zoo_says_timm_names_are_accepted(capsys) -> None:
    from edgerep.cli import main

    assert main(["zoo"]) == 0
    out = capsys.readouterr().out
    assert "--arch timm:NAME" in out and f"timm {timm.__version__}" in out


def test_fold_command_names_what_it_left(tmp_path, capsys) -> None:
    """RepGhost: the cost-split regions are printed with their place and reason, and the BN count."""
    from edgerep.cli import main

    model = randomize_(timm.create_model("repghostnet_050", pretrained=False, num_classes=10), seed=3)
    path = tmp_path / "repghost.pth"
    torch.save(model.state_dict(), path)
    assert main(["fold", str(path), "--arch", "timm:repghostnet_050", "--input-shape", f"3,{SIZE},{SIZE}",
                 "-o", str(tmp_path / "out.pt")]) == 0
    out = " ".join(capsys.readouterr().out.split())  # the console may wrap long lines
    assert "batch norms 112 -> 0" in out
    assert "left unfolded blocks.1.0.shortcut" in out and "max_cost_growth=2" in out
