"""The generic graph folder on blocks it has never seen (tests/unseen_blocks.py), on every edgerep
block (against the per-block kernel algebra), and on structures it must refuse."""
from __future__ import annotations

import copy
import io
import json
import pickle

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import edgerep
import edgerep.blocks as blocks
from edgerep.blocks.testing import rel_err
from edgerep.errors import FoldError
from edgerep.fold.graph import fold_graph
from edgerep.fold.graph_cost import measure_cost
from edgerep.fold.model import fold_model_with_report

from unseen_blocks import (
    AssembledKernel,
    BasicBlock,
    DataDependent,
    DOConv2dLike,
    ExpandChain,
    FiveBranchAsym,
    ForeignDBB,
    FrozenBatchNorm2d,
    FunctionalBlock,
    InvertedResidual,
    MixConvLike,
    MobileOneUnit,
    OfficialACBlock,
    OfficialECB,
    OfficialRepVGGBlock,
    PlainModuleECB,
    ScaledResidualFC,
    SeparableNoAct,
    SerialBiasPadded,
    TinyNet,
    randomize_bn,
)

RTOL = 1e-5



def n_bn(m: nn.Module) -> int:
    return sum(isinstance(x, nn.modules.batchnorm._BatchNorm) for x in m.modules())


@torch.no_grad()
def check_exact(model: nn.Module, x: torch.Tensor, result) -> None:
    ref, out = model(x), result.module(x)
    assert out.shape == ref.shape
    assert rel_err(ref, out) < RTOL, rel_err(ref, out)
    assert result.max_rel_error is not None and result.max_rel_error < RTOL


# ---------------------------------------------------------------------------------
# foreign blocks, folded with no per-block code
# ---------------------------------------------------------------------------------
def _official_repvgg_deploy(block: OfficialRepVGGBlock) -> nn.Module:
    d = copy.deepcopy(block)
    d.switch_to_deploy()
    return d


def _official_mobileone_deploy(unit: MobileOneUnit) -> nn.Module:
    d = copy.deepcopy(unit)
    d.dw.reparameterize()
    d.pw.reparameterize()
    return d


@pytest.mark.parametrize("stride,cout", [(1, 6), (1, 4), (2, 6)])
def test_official_repvgg_matches_official_fold(stride: int, cout: int) -> None:
    m = randomize_bn(OfficialRepVGGBlock(4, cout, 3, stride, 1), seed=stride)
    x = torch.randn(2, 4, 11, 10)
    r = fold_graph(m, x)
    check_exact(m, x, r)
    official = _official_repvgg_deploy(m)
    assert r.convs_after == measure_cost(official, x).convs == 1
    assert r.convs_before == 2
    conv = r.module.get_submodule(_only_conv_path(r.module))
    torch.testing.assert_close(conv.weight, official.rbr_reparam.weight, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(conv.bias, official.rbr_reparam.bias, rtol=1e-5, atol=1e-6)
    branches = 3 if (stride == 1 and cout == 4) else 2
    assert [reg.kind for reg in r.folded_regions] == [f"{branches}-branch sum"]
    assert n_bn(r.module) == 0


def _only_conv_path(m: nn.Module) -> str:
    paths = [n for n, x in m.named_modules() if isinstance(x, nn.Conv2d)]
    assert len(paths) == 1, paths
    return paths[0]


def test_official_mobileone_keeps_depthwise_and_matches_official_fold() -> None:
    m = randomize_bn(MobileOneUnit(6, 8, k=3))
    x = torch.randn(2, 6, 9, 9)
    r = fold_graph(m, x)
    check_exact(m, x, r)
    official = _official_mobileone_deploy(m)
    assert r.convs_after == measure_cost(official, x).convs == 2
    assert r.convs_before == 3 + 1 + 3  # dw: 3 KxK + 1x1 scale; pw: 3 1x1
    convs = [x for x in r.module.modules() if isinstance(x, nn.Conv2d)]
    assert sorted(c.groups for c in convs) == [1, 6]  # depthwise stays depthwise
    assert r.params_after == sum(p.numel() for p in official.parameters())
    assert r.flops_after == measure_cost(official, x).flops < r.flops_before


def test_five_branch_asymmetric_block_folds_to_one_5x5() -> None:
    m = randomize_bn(FiveBranchAsym(5))
    x = torch.randn(2, 5, 12, 7)  # non-square: both axes' borders matter
    r = fold_graph(m, x)
    check_exact(m, x, r)
    assert r.convs_after == 1 and r.convs_before == 4
    conv = r.module.get_submodule(_only_conv_path(r.module))
    assert conv.kernel_size == (5, 5) and conv.padding == (2, 2)
    assert r.folded_regions[0].kind == "5-branch sum"
    assert isinstance(r.module.act, nn.SiLU)  # the non-linearity is kept


@pytest.mark.parametrize("cin,cout,stride", [(4, 4, 1), (4, 6, 2)])
def test_foreign_dbb_with_bn_and_pad_folds_to_one_conv(cin: int, cout: int, stride: int) -> None:
    m = randomize_bn(ForeignDBB(cin, cout, 3, stride))
    x = torch.randn(2, cin, 10, 9)
    r = fold_graph(m, x)
    check_exact(m, x, r)
    assert (r.convs_before, r.convs_after) == (5, 1)
    assert r.refused_regions == []
    assert n_bn(r.module) == 0
    assert "setitem" not in r.module.code  # the border writes went with the folded branch
    assert r.folded_regions[0].kind == "4-branch sum"


def test_dbb_pad_with_wrong_value_is_refused_and_still_exact() -> None:
    import torch.nn.functional as F

    class WrongFill(nn.Module):
        """BN, then pad writing beta (not the BN's zero-input value) into the border."""

        def __init__(self, c: int):
            super().__init__()
            self.bn = nn.BatchNorm2d(c)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = F.pad(self.bn(x), [1, 1, 1, 1])
            v = self.bn.bias.detach().view(1, -1, 1, 1)
            y[:, :, :1, :] = v
            y[:, :, -1:, :] = v
            y[:, :, :, :1] = v
            y[:, :, :, -1:] = v
            return y

    m = randomize_bn(nn.Sequential(nn.Conv2d(4, 4, 1, bias=False), WrongFill(4), nn.Conv2d(4, 4, 3), nn.ReLU()))
    x = torch.randn(2, 4, 8, 8)
    r = fold_graph(m, x)
    check_exact(m, x, r)
    assert any("border" in why for _, why in r.refused_regions), r.refused_regions
    assert r.convs_after == 2


@pytest.mark.parametrize("cin,cout,idt", [(3, 6, False), (5, 5, True)])
def test_official_ecb_folds_to_one_conv_and_loads_into_edgerep_ecb(cin: int, cout: int, idt: bool) -> None:
    """ECBSR's own block (bias-padded 1x1 outputs by slice assignment, ``scale * mask`` depthwise) folds to
    one 3x3 with no per-block code; its state dict loads into edgerep's ECB, whose fold agrees."""
    torch.manual_seed(1)
    m = OfficialECB(cin, cout, 2.0, with_idt=idt).eval()
    x = torch.randn(2, cin, 11, 9)
    r = fold_graph(m, x)
    check_exact(m, x, r)
    assert (r.convs_before, r.convs_after) == (9, 1) and r.refused_regions == []
    assert "setitem" not in r.module.code
    assert r.folded_regions[0].kind == f"{6 if idt else 5}-branch sum"
    ours = blocks.ECB(cin, cout, 2.0, with_idt=idt)
    ours.load_state_dict(m.state_dict())  # official key names, mask included
    ours.eval()
    assert rel_err(m(x), ours(x)) < 1e-6
    assert rel_err(r.module(x), edgerep.fold_model(ours)(x)) < RTOL


@pytest.mark.parametrize("border,groups_from_input", [("bias", False), ("bias", True), ("zeros", True)])
def test_users_own_plain_module_ecb_folds_via_fold_model(border: str, groups_from_input: bool) -> None:
    """An ECB written with plain modules (nn.Conv2d 1x1s, depthwise convs whose weight is a fixed Sobel /
    Laplacian buffer times a learned scale, ``groups=x.shape[1]`` too) folds to one 3x3 conv, exactly at the
    borders of an odd, non-square input: the 1x1 output padded with its bias, or a bias-free 1x1."""
    torch.manual_seed(2)
    m = PlainModuleECB(3, 5, border, groups_from_input).eval()
    x = torch.randn(2, 3, 13, 7)
    folded, report = fold_model_with_report(m, x)
    assert rel_err(m(x), folded(x)) < RTOL
    assert report["refused_regions"] == [] and measure_cost(folded, x).convs == 1
    conv = next(c for c in folded.modules() if isinstance(c, nn.Conv2d))
    assert conv.kernel_size == (3, 3) and conv.padding == (1, 1) and conv.groups == 1
    x64 = torch.randn(1, 3, 9, 11, dtype=torch.float64)
    m64 = copy.deepcopy(m).double()
    assert rel_err(m64(x64), fold_graph(m64, x64).module(x64)) < 1e-10  # float64: exact, not rounding-close


def test_users_ecb_with_a_biased_1x1_under_zero_padding_is_refused_and_still_exact() -> None:
    """A biased 1x1 then a zero-padded depthwise edge filter: no single 3x3 has that border. Refused, named."""
    torch.manual_seed(3)
    m = PlainModuleECB(3, 5, "zeros-biased", True).eval()
    x = torch.randn(2, 3, 9, 7)
    r = fold_graph(m, x)
    check_exact(m, x, r)
    assert len(r.refused_regions) == 3 and all("border" in why for _, why in r.refused_regions)
    assert r.convs_after == r.convs_before == 7


def test_a_spatial_size_read_still_ends_a_region() -> None:
    """Only a channel count (``x.shape[1]``) is read from the example; ``x.shape[-1]`` is the example's size."""
    class SizeScaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.a(x)
            return self.b(y * (1.0 / y.shape[-1]))

    m = SizeScaled().eval()
    r = fold_graph(m, torch.randn(1, 3, 8, 8))
    x = torch.randn(1, 3, 8, 5)  # another width: a baked 1/8 would be wrong here
    assert rel_err(m(x), r.module(x)) < RTOL


@pytest.mark.parametrize("padding,stride", [(1, 1), (0, 1), (0, 2)])
def test_official_acblock_incl_crop_variant_folds_to_one_conv(padding: int, stride: int) -> None:
    m = randomize_bn(OfficialACBlock(4, 5, 3, stride, padding))
    x = torch.randn(2, 4, 10, 9)
    r = fold_graph(m, x)
    check_exact(m, x, r)
    assert (r.convs_before, r.convs_after) == (3, 1) and r.refused_regions == []
    conv = r.module.get_submodule(_only_conv_path(r.module))
    assert conv.kernel_size == (3, 3) and conv.padding == (padding, padding)


def test_crop_then_padded_conv_is_not_folded() -> None:
    class CropPad(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, 1, 1)
            self.bn = nn.BatchNorm2d(3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bn(self.conv(x[:, :, 1:-1, 1:-1]))

    m = randomize_bn(CropPad())
    x = torch.randn(1, 3, 8, 8)
    r = fold_graph(m, x)
    check_exact(m, x, r)
    assert any("crop" in why for _, why in r.refused_regions)
    assert [reg.where for reg in r.folded_regions] == [["conv", "bn"]]


def test_doconv_kernel_composition_is_constant_folded() -> None:
    m = DOConv2dLike(4, 6).eval()
    x = torch.randn(2, 4, 9, 9)
    r = fold_graph(m, x)
    check_exact(m, x, r)
    conv = r.module.get_submodule(_only_conv_path(r.module))
    torch.testing.assert_close(conv.weight, m.composed_kernel(), rtol=1e-5, atol=1e-6)
    assert r.params_after == 6 * 4 * 9 + 6 < r.params_before  # D, W, d_diag are gone
    assert "einsum" not in r.module.code


def test_frozen_batchnorm_written_as_arithmetic_folds_into_the_conv() -> None:
    m = nn.Sequential(nn.Conv2d(3, 6, 3, 2, 1, bias=False), FrozenBatchNorm2d(6), nn.ReLU()).eval()
    x = torch.randn(2, 3, 9, 9)
    r = fold_graph(m, x)
    check_exact(m, x, r)
    assert [reg.where[0] for reg in r.folded_regions] == ["0"] and not list(r.module.buffers())
    conv = r.module.get_submodule("0")
    assert isinstance(conv, nn.Conv2d) and conv.bias is not None


def test_kernel_assembled_by_item_assignment_is_constant_folded() -> None:
    m = randomize_bn(AssembledKernel(4))
    x = torch.randn(2, 4, 7, 9)
    r = fold_graph(m, x)
    check_exact(m, x, r)
    assert r.convs_after == 1 and r.refused_regions == [] and n_bn(r.module) == 0
    assert "setitem" not in r.module.code and "zeros" not in r.module.code


def test_resnet_basic_block_folds_conv_bn_and_keeps_the_residual_add() -> None:
    m = randomize_bn(BasicBlock(4, 8, stride=2))
    x = torch.randn(2, 4, 10, 10)
    r = fold_graph(m, x)
    check_exact(m, x, r)
    assert (r.convs_before, r.convs_after) == (3, 3)
    assert sorted(reg.kind for reg in r.folded_regions) == ["conv1x1+bn", "conv3x3+bn", "conv3x3+bn"]
    assert n_bn(r.module) == 0
    assert "iadd" in r.module.code or "+=" in r.module.code or "add" in r.module.code
    # the downsample conv+BN became a conv in place of the original conv
    assert isinstance(r.module.get_submodule("downsample.0"), nn.Conv2d)


def test_mobilenet_v2_blocks_fold_conv_bn_keep_depthwise_and_residual() -> None:
    m = randomize_bn(nn.Sequential(InvertedResidual(8, 8, 1, 4), InvertedResidual(8, 12, 2, 2)))
    x = torch.randn(2, 8, 9, 9)
    r = fold_graph(m, x)
    check_exact(m, x, r)
    assert (r.convs_before, r.convs_after) == (6, 6) and n_bn(r.module) == 0
    assert sorted(c.groups for c in r.module.modules() if isinstance(c, nn.Conv2d)) == [1, 1, 1, 1, 16, 32]
    assert r.refused_regions == []
    again = fold_graph(r.module, x)  # folding a folded model changes nothing
    assert again.folded_regions == [] and again.convs_after == 6 and again.params_after == r.params_after


def test_expandnet_chain_folds_to_one_3x3() -> None:
    m = randomize_bn(ExpandChain(4, r=4))
    x = torch.randn(2, 4, 8, 8)
    r = fold_graph(m, x)
    check_exact(m, x, r)
    assert (r.convs_before, r.convs_after) == (3, 1)
    assert r.flops_after < r.flops_before / 10


def test_mixconv_split_concat_folds_to_one_depthwise_conv() -> None:
    m = randomize_bn(MixConvLike(6))
    x = torch.randn(2, 6, 9, 9)
    r = fold_graph(m, x)
    check_exact(m, x, r)
    conv = r.module.get_submodule(_only_conv_path(r.module))
    assert conv.groups == 6 and conv.kernel_size == (5, 5)
    assert "split" not in r.module.code and "cat" not in r.module.code


def test_functional_style_block_folds_to_one_conv() -> None:
    m = FunctionalBlock(4).eval()
    x = torch.randn(2, 4, 9, 8)
    r = fold_graph(m, x)
    check_exact(m, x, r)
    assert (r.convs_before, r.convs_after) == (2, 1) and r.refused_regions == []
    assert r.folded_regions[0].kind == "4-branch sum"


def test_wrong_example_input_is_a_user_error() -> None:
    m = randomize_bn(OfficialRepVGGBlock(4, 4))
    with pytest.raises(FoldError, match=r"example input of shape \(1, 3, 8, 8\)"):
        fold_graph(m, torch.randn(1, 3, 8, 8))


def test_linear_chain_with_bn1d_and_layer_scale_folds_to_one_linear() -> None:
    m = randomize_bn(ScaledResidualFC(6))
    x = torch.randn(5, 6)
    r = fold_graph(m, x)
    check_exact(m, x, r)
    lins = [x for x in r.module.modules() if isinstance(x, nn.Linear)]
    assert len(lins) == 1 and n_bn(r.module) == 0


# ---------------------------------------------------------------------------------
# refusals: left unfolded, reported, model still exact
# ---------------------------------------------------------------------------------
def test_serial_biased_1x1_into_padded_3x3_is_refused_and_reported() -> None:
    m = randomize_bn(SerialBiasPadded(4))
    x = torch.randn(2, 4, 8, 8)
    r = fold_graph(m, x)
    check_exact(m, x, r)
    assert len(r.refused_regions) == 1
    where, why = r.refused_regions[0]
    assert where == "conv" and "bias" in why and "pad" in why
    # each side still folds on its own: 1x1+BN and 3x3+BN
    assert sorted(reg.kind for reg in r.folded_regions) == ["conv1x1+bn", "conv3x3+bn"]
    assert r.convs_after == 2 and n_bn(r.module) == 0


def test_costly_collapse_is_folded_in_parts() -> None:
    m = randomize_bn(SeparableNoAct(16, 16))
    x = torch.randn(2, 16, 8, 8)
    r = fold_graph(m, x)
    check_exact(m, x, r)
    assert len(r.refused_regions) == 1 and "MACs" in r.refused_regions[0][1]
    assert [reg.where for reg in r.folded_regions] == [["pw", "bn"]]
    assert r.convs_after == 2 and r.flops_after == r.flops_before and n_bn(r.module) == 0
    full = fold_graph(m, x, max_cost_growth=None)  # asked for: one dense conv, exact
    check_exact(m, x, full)
    assert full.convs_after == 1 and full.flops_after > 5 * r.flops_after


def test_data_dependent_forward_falls_back_to_children() -> None:
    m = randomize_bn(DataDependent(4))
    x = torch.randn(2, 4, 8, 8)
    r = fold_graph(m, x)
    check_exact(m, x, r)
    assert any(w == "<model>" and "not traceable" in why for w, why in r.refused_regions)
    assert {tuple(reg.where) for reg in r.folded_regions} == {("branch.conv", "branch.bn"),
                                                              ("extra.conv", "extra.bn")}
    assert n_bn(r.module) == 0


def test_untraceable_submodule_is_opaque_and_folded_on_its_own() -> None:
    m = randomize_bn(nn.Sequential(OfficialRepVGGBlock(4, 4), DataDependent(4), OfficialRepVGGBlock(4, 4)))
    x = torch.randn(2, 4, 8, 8)
    r = fold_graph(m, x)
    check_exact(m, x, r)
    assert any(n.startswith("1: not traceable") for n in r.notes), r.notes
    assert r.convs_after == 4 and n_bn(r.module) == 0  # 1 + 2 (unsummed: data-dependent) + 1


def test_training_mode_is_refused_with_its_path() -> None:
    m = randomize_bn(nn.Sequential(OfficialRepVGGBlock(4, 4), OfficialRepVGGBlock(4, 4)))
    m[1].rbr_dense.bn.train()
    with pytest.raises(FoldError, match=r"1\.rbr_dense\.bn"):
        fold_graph(m, torch.randn(1, 4, 6, 6))


def test_dilated_branches_fold_and_nonlinearity_splits_regions() -> None:
    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(4, 4, 3, 1, 1)
            self.b = nn.Conv2d(4, 4, 3, 1, 2, dilation=2)
            self.c = nn.Conv2d(4, 4, 3, 1, 1)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            y = self.a(x) + self.b(x)  # 3x3 + 3x3 dilated 2: one 5x5 with holes
            return y, self.c(torch.relu(y))  # never folded across the ReLU

    m = Mixed().eval()
    x = torch.randn(1, 4, 8, 8)
    r = fold_graph(m, x)
    assert r.refused_regions == []
    assert r.convs_after == 2
    assert {c.kernel_size for c in r.module.modules() if isinstance(c, nn.Conv2d)} == {(5, 5), (3, 3)}
    for a, b in zip(m(x), r.module(x)):
        assert rel_err(a, b) < RTOL


# ---------------------------------------------------------------------------------
# the result object
# ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    m = randomize_bn(TinyNet())
    x = torch.randn(2, 3, 16, 16)
    before = copy.deepcopy(m.state_dict())
    return m, x, before, fold_graph(m, x)


def test_result_is_picklable_reloadable_and_reports_counts(tiny) -> None:
    m, x, before, r = tiny
    check_exact(m, x, r)
    for k, v in m.state_dict().items():  # the input model is untouched
        assert torch.equal(v, before[k])
    d = r.to_dict()
    json.dumps(d)
    assert d["convs_before"] == 19 and d["convs_after"] == 8
    assert d["params_after"] < d["params_before"] and d["flops_after"] < d["flops_before"]
    assert all(reg["became"].startswith(("Conv2d", "Linear")) for reg in d["folded_regions"])
    assert n_bn(r.module) == 0 and not list(r.module.buffers())
    # state_dict round trip into the same structure with its weights wiped
    other = copy.deepcopy(r.module)
    with torch.no_grad():
        for p in other.parameters():
            p.zero_()
    buf = io.BytesIO()
    torch.save(r.module.state_dict(), buf)
    buf.seek(0)
    other.load_state_dict(torch.load(buf, weights_only=True))
    assert rel_err(m(x), other(x)) < RTOL
    clone = pickle.loads(pickle.dumps(r.module))
    assert rel_err(m(x), clone(x)) < RTOL


def test_fold_model_uses_the_graph_folder_on_unseen_models() -> None:
    m = randomize_bn(TinyNet())
    x = torch.randn(1, 3, 16, 16)
    folded = edgerep.fold_model(m, x)
    assert rel_err(m(x), folded(x)) < RTOL
    assert measure_cost(folded, x).convs == 8 and n_bn(folded) == 0


# ---------------------------------------------------------------------------------
# agreement with the per-block kernel algebra on every edgerep block
# ---------------------------------------------------------------------------------
IMG = (2, 4, 11, 9)  # odd, non-square: every border and stride phase shows up
EDGEREP_BLOCKS: dict[str, tuple] = {
    # case: (class name, factory, input shape)
    "RepVGGBlock": ("RepVGGBlock", lambda B: B(4, 4, 3), IMG),
    "RepVGGBlock-s2-g2": ("RepVGGBlock", lambda B: B(4, 6, 3, stride=2, groups=2), IMG),
    "RepVGGBlock-d2": ("RepVGGBlock", lambda B: B(4, 4, 3, dilation=2), IMG),
    "QARepVGGBlock": ("QARepVGGBlock", lambda B: B(4, 4, 3), IMG),
    "ACBlock": ("ACBlock", lambda B: B(4, 6, 3), IMG),
    "ACBlock-k5-s2": ("ACBlock", lambda B: B(4, 4, 5, stride=2), IMG),
    "DiverseBranchBlock": ("DiverseBranchBlock", lambda B: B(4, 4, 3), IMG),
    "DiverseBranchBlock-s2": ("DiverseBranchBlock", lambda B: B(4, 6, 3, stride=2), IMG),
    "DiverseBranchBlock-dw": ("DiverseBranchBlock", lambda B: B(4, 4, 3, groups=4), IMG),
    "DOConv2d": ("DOConv2d", lambda B: B(4, 6, 3), IMG),
    "ExpandConv2d": ("ExpandConv2d", lambda B: B(4, 6, 3), IMG),
    "ExpandConv2d-3+3": ("ExpandConv2d", lambda B: B(4, 6, (3, 3)), IMG),
    "ExpandLinear": ("ExpandLinear", lambda B: B(6, 5), (3, 6)),
    "MixConv2d": ("MixConv2d", lambda B: B(6, 6, (3, 5, 7)), (2, 6, 11, 9)),
    "MixConv2d-dw": ("MixConv2d", lambda B: B(6, 6, (3, 5), depthwise=True), (2, 6, 11, 9)),
    "MixConv2d-concat": ("MixConv2d", lambda B: B(4, 6, (3, 5), mode="concat"), IMG),
    "MobileOneStage": ("MobileOneStage", lambda B: B(4, 4, 3, num_conv_branches=2), IMG),
    "MobileOneBlock": ("MobileOneBlock", lambda B: B(4, 6), IMG),
    "PolyScaleConv2d": ("PolyScaleConv2d", lambda B: B(4, 4), IMG),
    "DBBBasicBlock": ("DBBBasicBlock", lambda B: B(4, 6, stride=2), IMG),
    "ExpandACDBBBlock": ("ExpandACDBBBlock", lambda B: B(4, 4), IMG),
    "Res2NetACBlock": ("Res2NetACBlock", lambda B: B(16, 16), (2, 16, 11, 9)),
    "PSACBlock": ("PSACBlock", lambda B: B(4, 4), IMG),
    # RepMLP's partition FC reshapes and permutes the map: the graph folder keeps that part (exactly)
    # and folds the rest; the per-block fold (fold_model runs it first) does the conv -> FC step
    "RepMLPBlock": ("RepMLPBlock", lambda B: B(4, 4), (2, 4, 8, 8)),
    "ECB": ("ECB", lambda B: B(4, 6), IMG),
    "ECB-idt-dm1": ("ECB", lambda B: B(4, 4, 1.0, with_idt=True), IMG),
}
PARTIAL = {"RepMLPBlock"}


@pytest.mark.parametrize("case", sorted(EDGEREP_BLOCKS))
def test_agrees_with_per_block_algebra(case: str) -> None:
    name, factory, shape = EDGEREP_BLOCKS[case]
    cls = getattr(blocks, name, None)
    if cls is None:
        pytest.skip(f"edgerep.blocks.{name} does not exist yet")
    from edgerep.blocks.testing import rel_err, randomize_

    block = randomize_(factory(cls), seed=3)
    x = torch.randn(*shape)
    r = fold_graph(block, x)
    check_exact(block, x, r)
    reference = edgerep.fold_model(block)  # the per-block kernel algebra only
    assert rel_err(reference(x), r.module(x)) < RTOL
    ref_cost = measure_cost(reference, x)
    if case in PARTIAL:
        assert r.convs_after <= r.convs_before and r.folded_regions
        return
    assert r.refused_regions == [], r.refused_regions
    assert (r.convs_after, measure_cost(r.module, x).matmuls) == (ref_cost.convs, ref_cost.matmuls)
    assert r.params_after <= ref_cost.params and r.flops_after <= ref_cost.flops
    assert n_bn(r.module) == 0
    if hasattr(block, "equivalent_kernel") and r.convs_after == 1:
        k = block.equivalent_kernel()
        conv = r.module.get_submodule(_only_conv_path(r.module))
        from edgerep.fold.kernel import ConvKernel, to_dense

        w = to_dense(ConvKernel(conv.weight.detach().double(), conv.bias.detach().double(), groups=conv.groups)).weight
        kw = to_dense(k).weight
        assert w.shape == kw.shape
        assert float((w - kw).abs().max() / kw.abs().max()) < RTOL
        assert float((conv.bias.detach().double() - k.bias).abs().max() / k.bias.abs().max().clamp_min(1e-12)) < RTOL


# ---------------------------------------------------------------------------------
# property: any set of parallel conv+BN branches on one grid folds to one exact conv
# ---------------------------------------------------------------------------------
class RandomBranches(nn.Module):
    def __init__(self, cin: int, cout: int, shapes: list[tuple[int, int]], stride: int, groups: int,
                 identity: bool):
        super().__init__()
        self.branches = nn.ModuleList()
        for kh, kw in shapes:
            self.branches.append(nn.Sequential(
                nn.Conv2d(cin, cout, (kh, kw), stride, (kh // 2, kw // 2), groups=groups, bias=False),
                nn.BatchNorm2d(cout)))
        self.idbn = nn.BatchNorm2d(cin) if identity else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.branches[0](x)
        for b in self.branches[1:]:
            y = y + b(x)
        if self.idbn is not None:
            y = y + self.idbn(x)
        return torch.relu(y)


@settings(max_examples=15)
@given(shapes=st.lists(st.tuples(st.sampled_from([1, 3, 5]), st.sampled_from([1, 3, 5])), min_size=1, max_size=4),
       stride=st.sampled_from([1, 2]), groups=st.sampled_from([1, 2]), identity=st.booleans(),
       h=st.integers(5, 10), w=st.integers(5, 10), seed=st.integers(0, 100))
def test_property_parallel_branches_fold_exactly(shapes, stride, groups, identity, h, w, seed) -> None:
    torch.manual_seed(seed)
    identity = identity and stride == 1
    m = randomize_bn(RandomBranches(4, 4, shapes, stride, groups, identity), seed=seed)
    x = torch.randn(2, 4, h, w)
    r = fold_graph(m, x)
    check_exact(m, x, r)
    assert r.convs_after == 1 and r.refused_regions == []
    conv = r.module.get_submodule(_only_conv_path(r.module))
    assert conv.kernel_size == (max(s[0] for s in shapes), max(s[1] for s in shapes))
    assert conv.groups == groups


def test_constant_example_input_still_checks_kernels(monkeypatch) -> None:
    """An all-zeros example only shows biases; the folder then also checks on a random input, so a
    kernel that is wrong away from zero is caught. The fault is injected into the algebra's branch
    sum (weights 1% off, biases right): the region must be refused and the model stay exact."""
    import dataclasses

    import edgerep.fold.graph_affine as ga

    real = ga.add_kernels

    def slightly_wrong(*ks):
        k = real(*ks)
        return dataclasses.replace(k, weight=k.weight * 1.01)

    m = randomize_bn(FiveBranchAsym(4))
    monkeypatch.setattr(ga, "add_kernels", slightly_wrong)
    r = fold_graph(m, torch.zeros(1, 4, 7, 7))
    assert any("differs" in why for _, why in r.refused_regions), r.refused_regions
    x = torch.randn(1, 4, 7, 7)
    assert rel_err(m(x), r.module(x)) < RTOL
    assert r.convs_after == 4 and n_bn(r.module) == 1  # each conv branch folds its BN; the identity BN stays
    monkeypatch.setattr(ga, "add_kernels", real)
    r = fold_graph(m, torch.zeros(1, 4, 7, 7))
    assert rel_err(m(x), r.module(x)) < RTOL and r.convs_after == 1


# ---------------------------------------------------------------------------------
# property: random serial / parallel affine chains never come back inexact
# ---------------------------------------------------------------------------------
OPS = st.sampled_from(["conv1", "conv1b", "conv3", "conv3p0", "conv1x3", "bn", "pad1", "avg3", "avg2s2", "scale"])


class RandomChain(nn.Module):
    """Two parallel chains of affine ops on one input, summed when their shapes agree, then ReLU."""

    def __init__(self, c: int, left: list[str], right: list[str]):
        super().__init__()
        self.left = nn.Sequential(*[self._op(o, c) for o in left])
        self.right = nn.Sequential(*[self._op(o, c) for o in right])

    @staticmethod
    def _op(name: str, c: int) -> nn.Module:
        return {
            "conv1": lambda: nn.Conv2d(c, c, 1, bias=False),
            "conv1b": lambda: nn.Conv2d(c, c, 1, bias=True),
            "conv3": lambda: nn.Conv2d(c, c, 3, 1, 1, bias=True),
            "conv3p0": lambda: nn.Conv2d(c, c, 3, 1, 0, bias=False),
            "conv1x3": lambda: nn.Conv2d(c, c, (1, 3), 1, (0, 1), bias=False),
            "bn": lambda: nn.BatchNorm2d(c),
            "pad1": lambda: nn.ZeroPad2d(1),
            "avg3": lambda: nn.AvgPool2d(3, 1, 1),
            "avg2s2": lambda: nn.AvgPool2d(2, 2),
            "scale": lambda: nn.Identity(),
        }[name]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.left(x), self.right(x)
        y = a + b if a.shape == b.shape else a
        return torch.relu(y)


@settings(max_examples=25)
@given(left=st.lists(OPS, min_size=1, max_size=4), right=st.lists(OPS, min_size=0, max_size=3),
       seed=st.integers(0, 50))
def test_property_random_chains_fold_exactly_or_are_refused(left, right, seed) -> None:
    torch.manual_seed(seed)
    m = randomize_bn(RandomChain(3, left, right), seed=seed)
    x = torch.randn(2, 3, 9, 8)
    r = fold_graph(m, x)
    check_exact(m, x, r)
    assert r.convs_after <= r.convs_before
    # what was refused was still folded in parts: no BN after a conv survives
    for w, why in r.refused_regions:
        assert why and w


def test_same_padding_folds_and_reflect_padding_is_left_alone() -> None:
    class Pads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 3, 3, padding="same")
            self.b = nn.Conv2d(3, 3, (1, 5), padding="same", dilation=2)
            self.bn = nn.BatchNorm2d(3)
            self.c = nn.Conv2d(3, 3, 3, padding=1, padding_mode="reflect")
            self.bn2 = nn.BatchNorm2d(3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bn2(self.c(self.bn(self.a(x) + self.b(x))))

    m = randomize_bn(Pads())
    x = torch.randn(1, 3, 9, 10)
    r = fold_graph(m, x)
    check_exact(m, x, r)
    assert r.convs_after == 2 and n_bn(r.module) == 1  # the reflect-padded conv keeps its BN
    assert r.module.c.padding_mode == "reflect"


def test_token_linears_with_identity_and_layer_scale_fold_to_one_linear() -> None:
    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.c = nn.Linear(8, 32), nn.Linear(32, 8), nn.Linear(8, 8)
            self.ls = nn.Parameter(torch.rand(8) + 0.5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(x + self.b(self.a(x)) * self.ls + self.c(x) * 0.5)

    m = Tokens().eval()
    x = torch.randn(2, 5, 8)
    r = fold_graph(m, x)
    check_exact(m, x, r)
    assert [reg.became for reg in r.folded_regions] == ["Linear(8->8)"]
    assert r.params_after == 8 * 8 + 8 and r.flops_after < r.flops_before / 8


# ---------------------------------------------------------------------------------
# the whole-model check is made in float64, not against float32 rounding (issue 20.17)
# ---------------------------------------------------------------------------------
def _deep_tiny_variances(depth: int = 10, width: int = 8) -> nn.Module:
    """(Conv -> BN -> ReLU) x depth, a quarter of the channels with running_var ~1e-5: the unfolded
    model's own float32 error (~5e-7 here) must not become room for a wrong fold."""
    from edgerep.blocks.testing import randomize_

    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
    return randomize_(nn.Sequential(*layers), seed=3)


@pytest.mark.parametrize("kind", ["multi-branch", "deep"])
def test_fold_slightly_off_is_refused_in_float64(kind: str, monkeypatch) -> None:
    """A fault injected into every folded kernel (a relative 3e-7 on the weights, under the per-region
    float64 check's 1e-6 and under float32 rounding of a deep net) must not be accepted: the whole folded
    model, run in float64, is held to 1e-9 of the float64 original, and the model comes back unfolded."""
    import edgerep.fold.graph as graph
    from edgerep.fold.graph_trace import to_double

    m = randomize_bn(FiveBranchAsym(4)) if kind == "multi-branch" else _deep_tiny_variances()
    c = 4 if kind == "multi-branch" else 8
    x = torch.randn(2, c, 7, 7, generator=torch.Generator().manual_seed(0))
    clean = fold_graph(m, x)
    assert clean.folded_regions and clean.refused_regions == []
    real = graph._build if hasattr(graph, "_build") else graph._materialize

    def off(region, dtype):
        module, became = real(region, dtype)
        with torch.no_grad():
            module.weight.mul_(1 + 3e-7)
        return module, became

    monkeypatch.setattr(graph, "_materialize", off)
    r = fold_graph(m, x)
    assert r.folded_regions == [] and any(w == "<model>" and "float64" in why for w, why in r.refused_regions), \
        r.refused_regions
    with torch.no_grad():  # what came back is the model itself, exact in float64
        assert rel_err(to_double(m)(x.double()), to_double(r.module)(x.double())) == 0.0
    assert clean.max_rel_error_f64 is not None and clean.max_rel_error_f64 < 1e-12  # exact: summation order only


def test_block_fold_slightly_off_is_refused_in_float64(monkeypatch) -> None:
    """edgerep's own blocks fold by their ``to_deploy()`` (no graph pass); a fault of a relative 3e-7 in the
    kernel they materialize hides under any float32 tolerance (deploy's 1e-4) but not under the model-level
    float64 check of ``fold_model``: FoldError, naming the float64 error (issue 20.17)."""
    from edgerep.blocks.testing import randomize_
    from edgerep.fold.kernel import ConvKernel

    m = randomize_(nn.Sequential(blocks.RepVGGBlock(4, 4), blocks.RepVGGBlock(4, 8, stride=2)), seed=1)
    x = torch.randn(2, 4, 9, 9, generator=torch.Generator().manual_seed(0))
    folded = edgerep.fold_model(m, x)
    assert rel_err(m(x), folded(x)) < RTOL
    real = ConvKernel.to_conv2d

    def off(self, dtype=None, device=None):
        conv = real(self, dtype=dtype, device=device)
        with torch.no_grad():
            conv.weight.mul_(1 + 3e-7)
        return conv

    monkeypatch.setattr(ConvKernel, "to_conv2d", off)
    with pytest.raises(FoldError, match="float64"):
        edgerep.fold_model(m, x)
