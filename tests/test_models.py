"""The model zoo: every registry model survives save -> load -> fold with the same outputs."""
from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from edgerep.blocks.testing import randomize_
from edgerep.checkpoint import default_meta, load_checkpoint, save_checkpoint
from edgerep.fold.model import count_convs, count_params, fold_model, verify_fold
from edgerep.fold.graph_cost import measure_cost
from edgerep.models import UnknownModelError, create_model, get_model_info, list_models




SMALL_NETS = [m.name for m in list_models() if m.input_shape[1] <= 32]
BIG_NETS = [m.name for m in list_models() if m.input_shape[1] > 32]
#: ImageNet nets are checked at full depth and layout but 1/8 width, on 32x32 inputs (every
#: stage still sees >= 1 pixel); repvgg_a0 is also checked at full size in the fold-speed test
BIG_INPUT = 32
BIG_KWARGS = {"width_scale": 0.125}


def _input(name: str, batch: int = 2) -> torch.Tensor:
    c, h, w = get_model_info(name).input_shape
    if h > 32:
        h = w = BIG_INPUT
    return torch.randn(batch, c, h, w, generator=torch.Generator().manual_seed(1))


def test_registry_lists_the_required_families():
    names = {m.name for m in list_models()}
    for n in ("repvgg_a0", "repvgg_a1", "repvgg_a2", "repvgg_b0", "repvgg_b1", "repvgg_b1g2", "repvgg_b1g4",
              "qarepvgg_a0", "resnet18_acnet", "resnet18_dbb", "repvgg_digits", "acnet_digits", "repvgg_cifar"):
        assert n in names
    assert {"repvgg", "qarepvgg", "acnet", "dbb"} <= {m.family for m in list_models()}


def test_unknown_name_suggests_close_names():
    with pytest.raises(UnknownModelError) as err:
        create_model("repvgg_ao")
    assert "repvgg_ao" in err.value.one_line() and "repvgg_a0" in err.value.one_line()


def test_repvgg_a0_matches_the_published_parameter_counts():
    # RepVGG paper, Table 2: A0 has 9.11M train-time and 8.31M deploy-time parameters
    m = create_model("repvgg_a0").eval()
    assert round(count_params(m) / 1e6, 2) == 9.11
    assert round(count_params(fold_model(m, generic=False)) / 1e6, 2) == 8.31


def test_mobileone_s0_folds_to_the_published_size_and_official_layout():
    # MobileOne paper, Table 7 / ml-mobileone: S0 has 2.1M parameters after re-parameterization
    m = create_model("mobileone_s0").eval()
    assert round(count_params(fold_model(m, generic=False)) / 1e6, 1) == 2.1
    keys = m.state_dict()
    # the official layout: depthwise and pointwise units alternate inside a stage
    assert keys["stage1.0.rbr_conv.3.conv.weight"].shape == (48, 1, 3, 3)
    assert keys["stage1.1.rbr_conv.0.conv.weight"].shape == (48, 48, 1, 1)
    assert "stage1.1.rbr_skip.running_var" in keys


def test_groupwise_variant_groups_every_other_layer():
    m = create_model("repvgg_b1g4")
    # layer index 1 is stage1.0 (dense), 2 is stage1.1 (groups 4), 3 dense, 4 groups 4
    assert m.stage1[0].dense.conv.groups == 1
    assert m.stage1[1].dense.conv.groups == 4
    assert m.stage1[2].dense.conv.groups == 1
    assert m.stage1[3].dense.conv.groups == 4


def _round_trip(name: str, tmp_path, **kwargs) -> None:
    model = randomize_(create_model(name, **kwargs), seed=3)
    meta = default_meta(name, kwargs)
    path = save_checkpoint(tmp_path / f"{name}.pt", model, meta)
    loaded = load_checkpoint(path)
    x = _input(name)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model(x))
    folded = fold_model(loaded.model, generic=False)
    rep = verify_fold(model, folded, x)
    assert rep.max_rel_error < 1e-4, (name, rep)
    # executed convs: a block may run ``F.conv2d`` on its own parameters (ECB, official ECBSR layout)
    assert measure_cost(folded, x).convs < measure_cost(model, x).convs
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules() if not _in_shortcut(folded, m))


def _in_shortcut(model: nn.Module, mod: nn.Module) -> bool:
    # ResNet 1x1 shortcuts keep their conv + BN (the graph folder's job, not the blocks')
    return any(mod in list(s.modules()) for n, s in model.named_modules() if n.endswith("shortcut"))


@pytest.mark.parametrize("name", SMALL_NETS)
def test_round_trip_small_nets_at_full_size(name, tmp_path):
    _round_trip(name, tmp_path)


@pytest.mark.parametrize("name", BIG_NETS)
def test_round_trip_imagenet_nets_at_small_width_and_input(name, tmp_path):
    _round_trip(name, tmp_path, **BIG_KWARGS)


def test_repvgg_a0_folds_in_under_2_seconds_and_matches():
    model = randomize_(create_model("repvgg_a0"), seed=1)
    t0 = time.process_time()  # CPU seconds: the 2-core CI box is shared, wall time would measure neighbours
    folded = fold_model(model, generic=False)
    seconds = time.process_time() - t0
    assert seconds < 2.0, seconds
    rep = verify_fold(model, folded, torch.randn(1, 3, 64, 64))
    assert rep.max_rel_error < 1e-5
    assert count_convs(folded) == 22  # 1 + 2 + 4 + 14 + 1 plain 3x3 convs
