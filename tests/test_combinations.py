"""Combinations of re-parameterization systems fold exactly (float32 1e-5, float64 1e-10 relative),
reach the plain-conv count their algebra allows, keep no BN, and fold idempotently."""
from __future__ import annotations

import copy

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from edgerep.blocks import (DBBBasicBlock, DenseACBlock, ExpandACDBBBlock, PSACBlock, Res2NetACBlock,
                            ReparamBlock)
from edgerep.blocks.testing import rel_err, has_train_time_state, randomize_
from edgerep.fold.model import fold_model




def seeded(seed: int, *shape: int) -> torch.Tensor:
    """Seed the global RNG (module init) and draw the input: replayed examples are identical."""
    torch.manual_seed(seed)
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed + 1))


def check(model: nn.Module, x: torch.Tensor, convs: int) -> nn.Module:
    """Fold (float32 and float64), compare with the unfolded eval model, count the plain convs."""
    model.eval()
    with torch.no_grad():
        folded = fold_model(model)
        e32 = rel_err(model(x), folded(x))
        m64 = copy.deepcopy(model).double()
        e64 = rel_err(m64(x.double()), fold_model(m64)(x.double()))
        again = fold_model(folded)
        assert torch.equal(folded(x), again(x)), "folding a folded model changed it"
    assert e32 <= 1e-5, f"float32 off by {e32:.3g}"
    assert e64 <= 1e-10, f"float64 off by {e64:.3g}"
    assert not has_train_time_state(folded), has_train_time_state(folded)
    assert not any(isinstance(m, ReparamBlock) for m in folded.modules())
    n = sum(isinstance(m, nn.Conv2d) for m in folded.modules())
    assert n == convs, f"expected {convs} plain convs after folding, got {n}"
    return folded


#: combinations are several blocks deep: fewer examples than the single-block tests keep the file fast
few = settings(max_examples=15)
sizes = st.integers(3, 11)
seeds = st.integers(0, 2**16)


@few
@given(st.integers(1, 5), st.integers(1, 5), st.sampled_from([1, 2]), sizes, sizes, seeds)
def test_dbb_resnet_basic_block(cin, cout, stride, h, w, seed):
    x = seeded(seed, 2, cin, h, w)
    m = randomize_(DBBBasicBlock(cin, cout, stride), seed=seed)
    shortcut = 0 if stride == 1 and cin == cout else 1
    check(m, x, convs=2 + shortcut)


@few
@given(st.integers(1, 5), st.integers(1, 5), st.sampled_from([1, 3, 5]), st.sampled_from([1, 2]), sizes, sizes,
       seeds)
def test_expandnet_acnet_dbb_in_one_block(cin, cout, k, stride, h, w, seed):
    x = seeded(seed, 2, cin, h, w)
    # no activation: compare the linear output itself (a ReLU can leave only a tiny maximum to compare to)
    m = randomize_(ExpandACDBBBlock(cin, cout, k, stride, act=nn.Identity()), seed=seed)
    assert {"expand", "hor", "ver", "dbb.dense", "dbb.1x1-kxk", "dbb.avgpool"} <= set(m.branch_kernels())
    folded = check(m, x, convs=1)
    assert next(c for c in folded.modules() if isinstance(c, nn.Conv2d)).kernel_size == (k, k)


@few
@given(st.integers(1, 3), st.integers(2, 4), st.sampled_from([1, 2]), st.integers(2, 8), sizes, sizes, seeds)
def test_res2net_with_acnet_convs(width, scale, stride, cout, h, w, seed):
    cin = 4
    x = seeded(seed, 2, cin, h, w)
    m = randomize_(Res2NetACBlock(cin, cout, width, scale, stride), seed=seed)
    shortcut = 0 if stride == 1 and cin == cout else 1
    check(m, x, convs=2 + (scale - 1) + shortcut)


@few
@given(st.integers(1, 5), st.integers(1, 5),
       st.lists(st.tuples(st.sampled_from([1, 3]), st.sampled_from([1, 3]), st.sampled_from([1, 2])),
                min_size=1, max_size=3, unique=True),
       st.sampled_from([1, 2]), sizes, sizes, seeds)
def test_psconv_with_acnet(cin, cout, scales, stride, h, w, seed):
    x = seeded(seed, 2, cin, h, w)
    m = randomize_(PSACBlock(cin, cout, tuple(scales), stride, act=nn.Identity()), seed=seed)
    folded = check(m, x, convs=1)
    assert next(c for c in folded.modules() if isinstance(c, nn.Conv2d)).kernel_size == m.kernel_size


@few
@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 3), st.sampled_from([None, 2]), sizes, sizes, seeds)
def test_densenet_with_acnet_convs(cin, growth, layers, bn_size, h, w, seed):
    x = seeded(seed, 2, cin, h, w)
    m = randomize_(DenseACBlock(cin, growth, layers, bn_size), seed=seed)
    folded = check(m, x, convs=layers * (2 if bn_size else 1))
    with torch.no_grad():
        assert folded(torch.randn(1, cin, h, w)).shape[1] == cin + layers * growth


def test_combination_trains_then_folds():
    """A few training steps move every BN; the eval-mode fold is still exact."""
    torch.manual_seed(0)
    m = nn.Sequential(ExpandACDBBBlock(3, 4, 3, 2), DBBBasicBlock(4, 4), PSACBlock(4, 4))
    opt = torch.optim.SGD(m.parameters(), lr=0.02)
    for _ in range(3):
        loss = m(torch.randn(4, 3, 10, 10)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    check(m, torch.randn(2, 3, 9, 11), convs=1 + 2 + 1)
