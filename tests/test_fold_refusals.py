"""The fold refuses with FoldError and a clear message instead of approximating: training mode,
a biased 1x1 -> padded KxK without border handling, branches on different grids, and friends."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from edgerep.blocks import ACBlock, DiverseBranchBlock, MobileOneBlock, QARepVGGBlock, RepVGGBlock
from edgerep.blocks.testing import randomize_
from edgerep.errors import EdgerepError, FoldError
from edgerep.fold.kernel import ConvKernel, add_kernels, compose, concat_kernels, conv_as_fc, fuse_bn
from edgerep.fold.model import fold_model

D = torch.float64


def k(cout: int, cin: int, kh: int, kw: int | None = None, stride: int = 1, padding=None, dilation: int = 1,
      groups: int = 1, bias: float = 0.0) -> ConvKernel:
    kw = kh if kw is None else kw
    pad = padding if padding is not None else (dilation * (kh // 2), dilation * (kw // 2))
    return ConvKernel(torch.randn(cout, cin // groups, kh, kw, dtype=D), torch.full((cout,), bias, dtype=D),
                      stride, pad, dilation, groups)


@pytest.mark.parametrize("cls", [RepVGGBlock, QARepVGGBlock, ACBlock, DiverseBranchBlock, MobileOneBlock])
def test_training_mode_is_refused_with_the_module_path(cls):
    model = nn.Sequential(nn.Identity(), nn.Sequential(cls(3, 3, 3)))
    model.train()
    with pytest.raises(FoldError, match="training mode") as e:
        fold_model(model)
    assert "1.0" in str(e.value) and "eval()" in (e.value.hint or "")
    with pytest.raises(FoldError, match="training mode"):  # the block itself refuses too
        model[1][0].to_deploy()
    assert isinstance(e.value, EdgerepError)  # the CLI turns it into exit code 2


def test_biased_1x1_then_padded_kxk_is_refused_without_border_handling():
    first, second = k(4, 3, 1, bias=0.5), k(5, 4, 3)
    with pytest.raises(FoldError, match="border") as e:
        compose(first, second)
    assert "BN and pad" in (e.value.hint or "")
    # the refusal is not overcautious: without the bias, or with bias padding, it folds
    compose(k(4, 3, 1), second)
    compose(first, second, first_output_padded_with_bias=True)


def test_kxk_then_padded_kxk_is_refused():
    with pytest.raises(FoldError, match="zero-pads the first one's output"):
        compose(k(4, 3, 3), k(5, 4, 3))


def test_strided_first_conv_then_kxk_is_refused():
    with pytest.raises(FoldError, match="strided or dilated"):
        compose(k(4, 3, 3, stride=2), k(5, 4, 3, padding=0))


def test_a_bn_after_a_conv_in_training_mode_is_refused():
    bn = nn.BatchNorm2d(4).double()
    with pytest.raises(FoldError, match="training mode"):
        fuse_bn(k(4, 3, 3), bn)


def test_branches_with_mismatched_strides_are_refused():
    with pytest.raises(FoldError, match="stride") as e:
        add_kernels(k(4, 3, 3, stride=1), k(4, 3, 1, stride=2))
    assert "different grids" in str(e.value)


def test_branches_off_the_common_grid_are_refused():
    # a 1x1 with padding 1 is not centred like a 3x3 with padding 1: outputs would be shifted
    with pytest.raises(FoldError, match="not centred on the same output grid"):
        add_kernels(k(4, 3, 3), k(4, 3, 1, padding=1))
    with pytest.raises(FoldError, match="dilation"):
        add_kernels(k(4, 3, 3, dilation=1), k(4, 3, 3, dilation=2))
    with pytest.raises(FoldError, match="channels"):
        add_kernels(k(4, 3, 3), k(5, 3, 3))
    with pytest.raises(FoldError, match="output grid"):
        concat_kernels(k(4, 3, 3, stride=1), k(4, 3, 3, stride=2))


def test_conv_as_fc_refuses_the_wrong_input_width():
    with pytest.raises(FoldError, match="reads 3 channels"):
        conv_as_fc(k(4, 3, 3), (5, 4, 4))


def test_a_corrupt_bn_inside_a_block_names_the_block():
    m = randomize_(nn.Sequential(RepVGGBlock(3, 3)), seed=0)
    with torch.no_grad():
        m[0].dense.bn.running_var[2] = float("nan")
    with pytest.raises(FoldError, match=r"running_var\[2\]") as e:
        fold_model(m)
    assert str(e.value).startswith("0:")  # located at the block that failed


def test_refusal_leaves_the_model_untouched():
    m = randomize_(nn.Sequential(DiverseBranchBlock(3, 4, 3)), seed=1)
    before = {n: t.clone() for n, t in m.state_dict().items()}
    m.train()
    with pytest.raises(FoldError):
        fold_model(m)
    assert all(torch.equal(before[n], t) for n, t in m.state_dict().items())
    assert isinstance(m[0], DiverseBranchBlock)
