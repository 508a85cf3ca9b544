"""The ECB (ECBSR's Edge-oriented Convolution Block) folds exactly to one 3x3 conv: random channels,
with and without the 1x1 -> 3x3 expansion and the identity, odd sizes, float64 to 1e-10, borders
included (each 1x1's output is padded with its bias, and the fold reproduces it)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from edgerep.blocks import ECB, SeqConv3x3
from edgerep.blocks.ecb import EDGE_FILTERS
from edgerep.blocks.testing import has_train_time_state, randomize_, rel_err
from edgerep.fold.model import fold_model

from test_blocks import assert_folds_exactly


def _ecb(cin: int, cout: int, dm: float, idt: bool, act: nn.Module | None, seed: int) -> ECB:
    torch.manual_seed(seed)
    return randomize_(ECB(cin, cout, dm, act=act, with_idt=idt), seed=seed)


@given(st.integers(1, 6), st.integers(1, 6), st.sampled_from([0.5, 1.0, 2.0, 3.0]), st.booleans(),
       st.sampled_from(["prelu", "identity", "relu"]), st.integers(1, 11), st.integers(1, 11), st.integers(0, 2**16))
def test_ecb_folds_exactly(cin, cout, dm, idt, act, h, w, seed):
    """float32 to 1e-5 and float64 to 1e-10 relative (assert_folds_exactly), one 3x3 conv, no state left."""
    acts = {"prelu": None, "identity": nn.Identity(), "relu": nn.ReLU()}
    dm = max(dm, 1.0 / cout)  # at least one middle channel
    m = _ecb(cin, cout, dm, idt, acts[act], seed)
    x = torch.randn(2, cin, h, w, generator=torch.Generator().manual_seed(seed + 1))
    folded = assert_folds_exactly(m, x)
    convs = [c for c in folded.modules() if isinstance(c, nn.Conv2d)]
    assert len(convs) == 1 and convs[0].kernel_size == (3, 3) and convs[0].padding == (1, 1)
    names = set(m.branch_kernels())
    assert names == {"3x3", "1x1-3x3", "1x1-sobelx", "1x1-sobely", "1x1-laplacian"} | (
        {"identity"} if idt and cin == cout else set())


def test_ecb_without_expansion_and_identity_branch():
    """depth_multiplier 1 (no expansion: the middle width is ``out``) and the identity only when in == out."""
    m = _ecb(4, 4, 1.0, True, None, 3)
    assert m.conv1x1_3x3.k0.shape == (4, 4, 1, 1) and m.with_idt
    assert _ecb(4, 4, 2.0, False, None, 3).conv1x1_3x3.k0.shape == (8, 4, 1, 1)
    assert not ECB(3, 4, with_idt=True).with_idt  # no identity across a channel change
    assert_folds_exactly(m, torch.randn(1, 4, 5, 9))


def test_ecb_border_is_what_makes_the_fold_exact():
    """A constant input gives a constant interior; the bias-padded border rows differ from zero padding,
    and the folded 3x3 (zero padded) reproduces the bias-padded train-time output at every border pixel."""
    m = _ecb(3, 4, 2.0, False, nn.Identity(), 7).double()
    x = torch.ones(1, 3, 6, 5, dtype=torch.float64)
    with torch.no_grad():
        y, yf = m(x), fold_model(m)(x)
        # the same branches with a zero-padded 1x1 output: what ignoring the border bias would give
        zero_padded = m.conv3x3(x)
        for seq in (m.conv1x1_3x3, m.conv1x1_sbx, m.conv1x1_sby, m.conv1x1_lpl):
            y0 = F.conv2d(x, seq.k0, seq.b0)
            groups = 1 if seq.type == "conv1x1-conv3x3" else seq.out_channels
            b = seq.b1 if seq.type == "conv1x1-conv3x3" else seq.bias
            zero_padded = zero_padded + F.conv2d(y0, seq.second_weight(), b, padding=1, groups=groups)
    assert (y[..., 0, :] - zero_padded[..., 0, :]).abs().max() > 1e-2  # the border really is special
    assert torch.allclose(y[..., 1:-1, 1:-1], zero_padded[..., 1:-1, 1:-1], atol=1e-12)  # the interior is not
    assert rel_err(y, yf) <= 1e-12


@pytest.mark.parametrize("kind", list(EDGE_FILTERS))
def test_edge_branch_is_scale_times_fixed_filter(kind):
    """Each edge branch's kernel is the 1x1 composed with ``scale_c * filter`` (the filter itself untouched)."""
    torch.manual_seed(0)
    s = SeqConv3x3(kind, 1, 2)
    with torch.no_grad():
        s.k0.fill_(1.0)
        s.b0.zero_()
        s.scale.copy_(torch.tensor([2.0, -0.5]).view(2, 1, 1, 1))
    k = s.kernel()
    want = torch.tensor(EDGE_FILTERS[kind], dtype=torch.float64)
    assert torch.equal(k.weight[0, 0], 2.0 * want) and torch.equal(k.weight[1, 0], -0.5 * want)
    assert torch.equal(s.mask[0, 0], want.float())
    with pytest.raises(ValueError, match="seq_type"):
        SeqConv3x3("conv1x1-prewitt", 1, 1)


def test_ecb_fold_twice_is_a_noop_and_leaves_no_dead_parameters():
    model = randomize_(nn.Sequential(ECB(3, 8), ECB(8, 8, with_idt=True), ECB(8, 4, act=nn.Identity())), seed=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    once = fold_model(model)
    twice = fold_model(once)
    x = torch.randn(2, 3, 9, 7)
    with torch.no_grad():
        assert torch.equal(once(x), twice(x))
        assert rel_err(model(x), once(x)) <= 1e-5
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "fold modified the model"
    assert not has_train_time_state(once)
    # what is left: per block one 3x3 weight + bias and the PReLU slopes, nothing else
    assert sorted(once.state_dict()) == sorted(twice.state_dict()) == sorted(
        [f"{i}.conv.{p}" for i in range(3) for p in ("weight", "bias")] + ["0.act.weight", "1.act.weight"])


def test_ecb_trains_then_folds():
    """A few Adam steps move every learned part (scales included); the fold is still exact."""
    torch.manual_seed(0)
    m = ECB(3, 4)
    opt = torch.optim.Adam(m.parameters(), lr=0.05)
    for _ in range(3):
        loss = (m(torch.randn(2, 3, 8, 8)) - 1).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert m.conv1x1_sbx.scale.abs().max() > 1e-2 and m.conv1x1_sbx.mask.grad is None
    m.eval()
    m64 = copy.deepcopy(m).double()
    x = torch.randn(1, 3, 7, 9, dtype=torch.float64)
    with torch.no_grad():
        assert rel_err(m64(x), fold_model(m64)(x)) <= 1e-10
