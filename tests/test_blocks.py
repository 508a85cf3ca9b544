"""Every train-time block folds exactly: folded output == unfolded eval output (float32 to 1e-5
relative, float64 to 1e-10) over random geometry and random BN statistics, borders included."""
from __future__ import annotations

import copy
from typing import Callable

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from edgerep.blocks import (ACBlock, ConvBNAct, DiverseBranchBlock, DOConv2d, ExpandConv2d, ExpandLinear, MixConv2d,
                            MobileOneBlock, MobileOneStage, PolyScaleConv2d, QARepVGGBlock, RepMLPBlock, RepVGGBlock)
from edgerep.blocks.testing import rel_err, has_train_time_state, randomize_
from edgerep.fold.model import fold_model




def assert_folds_exactly(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Fold in float32 and (separately, from the .double() model) in float64 and compare."""
    model.eval()
    with torch.no_grad():
        folded = fold_model(model)
        err32 = rel_err(model(x), folded(x))
        m64 = copy.deepcopy(model).double()
        f64 = fold_model(m64)
        assert next(f64.parameters()).dtype == torch.float64
        err64 = rel_err(m64(x.double()), f64(x.double()))
    assert err32 <= 1e-5, f"float32 fold off by {err32:.3g} relative"
    assert err64 <= 1e-10, f"float64 fold off by {err64:.3g} relative"
    assert not has_train_time_state(folded), has_train_time_state(folded)
    return folded


@st.composite
def geometry(draw, dilation: bool = True, depthwise_needs_same: bool = False) -> dict:
    """Channels, odd kernel 1..7, stride 1/2, groups incl. depthwise, dilation, odd/even sizes."""
    mode = draw(st.sampled_from(["dense", "grouped", "depthwise"]))
    if mode == "dense":
        g, cin, cout = 1, draw(st.integers(1, 6)), draw(st.integers(1, 6))
    elif mode == "grouped":
        g = draw(st.sampled_from([2, 3]))
        cin, cout = g * draw(st.integers(1, 3)), g * draw(st.integers(1, 3))
    else:
        cin = draw(st.integers(2, 6))
        g, cout = cin, cin
    return dict(
        in_channels=cin, out_channels=cout, groups=g,
        kernel_size=draw(st.sampled_from([1, 3, 5, 7])),
        stride=draw(st.sampled_from([1, 2])),
        dilation=draw(st.sampled_from([1, 2])) if dilation else 1,
        h=draw(st.integers(1, 12)), w=draw(st.integers(1, 12)),
        seed=draw(st.integers(0, 2**16)),
    )


def _input(geo: dict) -> torch.Tensor:
    g = torch.Generator().manual_seed(geo["seed"] + 1)
    return torch.randn(2, geo["in_channels"], geo["h"], geo["w"], generator=g)


def _build(cls: Callable[..., nn.Module], geo: dict, **extra) -> nn.Module:
    kw = {k: v for k, v in geo.items() if k not in ("h", "w", "seed")}
    kw.update(extra)
    torch.manual_seed(geo["seed"])  # conv weights too: a replayed example must be the same example
    return randomize_(cls(**kw), seed=geo["seed"])


@given(geometry())
def test_repvgg_folds_exactly(geo):
    assert_folds_exactly(_build(RepVGGBlock, geo), _input(geo))


@given(geometry())
def test_qarepvgg_folds_exactly(geo):
    assert_folds_exactly(_build(QARepVGGBlock, geo), _input(geo))


@given(geometry())
def test_acblock_folds_exactly(geo):
    assert_folds_exactly(_build(ACBlock, geo), _input(geo))


@given(geometry(dilation=False))
def test_dbb_folds_exactly(geo):
    geo = dict(geo)
    geo.pop("dilation")
    assert_folds_exactly(_build(DiverseBranchBlock, geo), _input(geo))


@given(geometry(), st.integers(1, 4))
def test_mobileone_stage_folds_exactly(geo, k):
    assert_folds_exactly(_build(MobileOneStage, geo, num_conv_branches=k), _input(geo))


@given(geometry(), st.integers(1, 3))
def test_mobileone_block_folds_to_depthwise_then_pointwise(geo, k):
    geo = dict(geo)
    geo.pop("groups")
    m = _build(MobileOneBlock, geo, num_conv_branches=k)
    folded = assert_folds_exactly(m, _input(geo))
    convs = [c for c in folded.modules() if isinstance(c, nn.Conv2d)]
    assert len(convs) == 2
    dw, pw = convs
    assert dw.groups == geo["in_channels"] and dw.kernel_size == (geo["kernel_size"],) * 2
    assert pw.kernel_size == (1, 1) and pw.groups == 1 and pw.out_channels == geo["out_channels"]
    bk = m.branch_kernels()
    assert set(bk) == {"dw", "pw"} and {f"conv.{i}" for i in range(k)} <= set(bk["dw"])


@given(geometry(), st.integers(0, 12))
def test_doconv_folds_exactly(geo, extra_mul):
    k = geo["kernel_size"]
    m = _build(DOConv2d, geo, D_mul=k * k + extra_mul)
    with torch.no_grad():  # D starts at zero: give it a learned-looking value, and the bias too
        if m.D is not None:
            m.D.normal_(0, 0.3)
        m.bias.normal_()
    folded = assert_folds_exactly(m, _input(geo))
    conv = next(c for c in folded.modules() if isinstance(c, nn.Conv2d))
    assert conv.groups == geo["groups"] and conv.kernel_size == (k, k)


@given(geometry())
def test_convbnact_folds_exactly(geo):
    assert_folds_exactly(_build(ConvBNAct, geo), _input(geo))


@given(geometry(), st.integers(1, 3))
def test_expandconv_folds_exactly(geo, expansion):
    geo = dict(geo)
    geo.pop("groups")
    m = _build(ExpandConv2d, geo, expansion=expansion)
    with torch.no_grad():
        m.conv.bias.normal_()  # the middle bias flows through the last 1x1
    folded = assert_folds_exactly(m, _input(geo))
    assert sum(isinstance(c, nn.Conv2d) for c in folded.modules()) == 1


@given(st.lists(st.sampled_from([1, 3, 5]), min_size=2, max_size=3), st.sampled_from([1, 2]), st.integers(1, 5),
       st.integers(1, 5), st.integers(1, 10), st.integers(1, 10), st.integers(0, 2**16))
def test_expandconv_kernel_chain_grows_the_kernel(chain, stride, cin, cout, h, w, seed):
    """ExpandNet's 3x3 + 3x3 -> 5x5: a chain of KxKs (input padded once) folds to one larger conv."""
    torch.manual_seed(seed)
    m = ExpandConv2d(cin, cout, tuple(chain), stride, act=nn.Identity(), expansion=2).eval()
    with torch.no_grad():
        for c in m.modules():
            if isinstance(c, nn.Conv2d) and c.bias is not None:
                c.bias.normal_()
    folded = assert_folds_exactly(m, torch.randn(2, cin, h, w))
    conv = next(c for c in folded.modules() if isinstance(c, nn.Conv2d))
    assert conv.kernel_size == (sum(k - 1 for k in chain) + 1,) * 2 and conv.stride == (stride, stride)


@given(st.integers(1, 6), st.integers(1, 6), st.integers(1, 3), st.integers(0, 2**16))
def test_expandlinear_folds_exactly(fin, fout, expansion, seed):
    torch.manual_seed(seed)
    m = ExpandLinear(fin, fout, expansion).eval()
    folded = assert_folds_exactly(m, torch.randn(5, fin))
    assert [type(c) for c in folded.modules() if isinstance(c, (nn.Linear, nn.Conv2d))] == [nn.Linear]


@given(geometry(), st.lists(st.sampled_from([1, 3, 5, 7]), min_size=1, max_size=3),
       st.sampled_from(["split", "concat", "depthwise"]))
def test_mixconv_folds_exactly(geo, ks, mode):
    geo = dict(geo)
    geo.pop("groups")
    geo.pop("kernel_size")
    n = len(ks)
    geo["in_channels"] = max(geo["in_channels"], n)
    geo["out_channels"] = geo["in_channels"] if mode == "depthwise" else max(geo["out_channels"], n)
    m = _build(MixConv2d, geo, kernel_sizes=tuple(ks), mode="split" if mode == "depthwise" else mode,
               depthwise=mode == "depthwise")
    folded = assert_folds_exactly(m, _input(geo))
    conv = next(c for c in folded.modules() if isinstance(c, nn.Conv2d))
    assert conv.kernel_size == (max(ks),) * 2
    if mode == "depthwise":
        assert conv.groups == geo["in_channels"]


scale_st = st.tuples(st.sampled_from([1, 3, 5]), st.sampled_from([1, 3, 5]), st.sampled_from([1, 2, 3]))


@given(geometry(dilation=False), st.lists(scale_st, min_size=1, max_size=4, unique=True))
def test_polyscale_folds_to_the_largest_kernel(geo, scales):
    torch.manual_seed(geo["seed"])
    m = randomize_(PolyScaleConv2d(geo["in_channels"], geo["out_channels"], tuple(scales), geo["stride"]),
                   seed=geo["seed"])
    folded = assert_folds_exactly(m, _input(geo))
    conv = next(c for c in folded.modules() if isinstance(c, nn.Conv2d))
    assert conv.kernel_size == (max(d * (h - 1) + 1 for h, _, d in scales), max(d * (w - 1) + 1 for _, w, d in scales))
    assert conv.dilation == (1, 1)


def test_polyscale_presets():
    m = randomize_(PolyScaleConv2d.bounded3x3(5, 6), seed=2)
    assert list(m.branch_kernels()) == ["1x1", "1x3", "3x1", "3x3"]
    folded = assert_folds_exactly(m, torch.randn(2, 5, 7, 6))
    assert next(c for c in folded.modules() if isinstance(c, nn.Conv2d)).kernel_size == (3, 3)
    m = randomize_(PolyScaleConv2d.psconv(4, 4, 3, 2, dilations=(1, 2, 3)), seed=2)
    folded = assert_folds_exactly(m, torch.randn(2, 4, 9, 8))
    assert next(c for c in folded.modules() if isinstance(c, nn.Conv2d)).kernel_size == (7, 7)
    # every output channel sees every scale (PSConv's cyclic assignment)
    assert all(bool((mask.sum(dim=1) > 0).all()) for mask in m.masks)


@given(st.integers(1, 2), st.integers(1, 3), st.sampled_from([(2, 2), (3, 5), (4, 4), (1, 3)]),
       st.lists(st.sampled_from([1, 3, 5]), max_size=3, unique=True), st.integers(1, 3), st.integers(1, 2),
       st.integers(0, 2**16))
def test_repmlp_folds_exactly(g, per_group, partition, ks, hp, wp, seed):
    cin, cout = g * per_group, g * (per_group + 1)
    torch.manual_seed(seed)
    m = randomize_(RepMLPBlock(cin, cout, partition, tuple(ks), g), seed=seed)
    x = torch.randn(2, cin, hp * partition[0], wp * partition[1], generator=torch.Generator().manual_seed(seed))
    folded = assert_folds_exactly(m, x)
    convs = [c for c in folded.modules() if isinstance(c, nn.Conv2d)]
    assert len(convs) == 1 and convs[0].stride == partition and convs[0].groups == g
    assert set(m.branch_kernels()) == {"fc"} | {f"conv{k}" for k in ks}


@given(st.integers(0, 1000), st.sampled_from([3, 5]), st.integers(1, 9))
def test_dbb_with_wide_internal_1x1_folds_exactly(seed, k, size):
    """The ``conv1`` variant (internal width != in) of the 1x1 -> KxK branch."""
    torch.manual_seed(seed)
    m = randomize_(DiverseBranchBlock(3, 5, k, 1, 1, internal_channels_1x1_3x3=7), seed=seed)
    assert hasattr(m.dbb_1x1_kxk, "conv1")
    assert_folds_exactly(m, torch.randn(2, 3, size, size + 1))


def test_dbb_border_is_what_makes_the_fold_exact():
    """With a constant input the interior is constant; zero padding and bias padding make the border
    rows differ from the centre, and the fold reproduces them."""
    m = randomize_(DiverseBranchBlock(4, 4, 3, 1, 1, act=nn.Identity()), seed=3)
    x = torch.ones(1, 4, 6, 6)
    with torch.no_grad():
        y, yf = m(x), fold_model(m)(x)
    assert (y[..., 0, :] - y[..., 2, :]).abs().max() > 1e-3  # the border really is special
    assert rel_err(y, yf) <= 1e-5


def test_branch_kernels_sum_to_the_folded_kernel_and_are_named():
    m = randomize_(QARepVGGBlock(4, 4, 3), seed=1)
    ks = m.branch_kernels()
    assert set(ks) == {"dense", "1x1", "identity"}
    total = m.equivalent_kernel()
    dense_sum = sum(torch.nn.functional.pad(k.weight, [(3 - k.kernel_size[1]) // 2] * 2 +
                                            [(3 - k.kernel_size[0]) // 2] * 2) for k in ks.values())
    assert torch.allclose(total.weight, dense_sum, atol=1e-12)
    # the post-sum BN's shift lives in the dense branch; the others carry no bias
    assert ks["1x1"].bias.abs().max() == 0 and ks["identity"].bias.abs().max() == 0
    assert torch.allclose(total.bias, ks["dense"].bias)
    assert set(ACBlock(2, 2).eval().branch_kernels()) == {"square", "hor", "ver"}
    assert set(DiverseBranchBlock(2, 4).eval().branch_kernels()) == {"dense", "1x1", "1x1-kxk", "avgpool"}


@pytest.mark.parametrize("cls", [RepVGGBlock, QARepVGGBlock, ACBlock, DiverseBranchBlock, MobileOneBlock])
def test_blocks_train_and_fold_after_training(cls):
    """A few SGD steps in train mode (BN statistics move), then the eval fold is still exact."""
    torch.manual_seed(0)
    m = cls(3, 3, 3, 1)
    opt = torch.optim.SGD(m.parameters(), lr=0.05)
    m.train()
    for _ in range(3):
        loss = m(torch.randn(4, 3, 8, 8)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert m.training
    before = {k: v.clone() for k, v in m.state_dict().items()}
    assert_folds_exactly(m, torch.randn(2, 3, 9, 7))
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items()), "fold modified the block"


@pytest.mark.parametrize("cls", [RepVGGBlock, QARepVGGBlock, ACBlock, DiverseBranchBlock, MobileOneStage])
def test_fold_is_idempotent(cls):
    model = randomize_(nn.Sequential(cls(3, 4, 3, 2, groups=1), cls(4, 4, 3, 1, groups=2)), seed=5)
    once = fold_model(model)
    twice = fold_model(once)
    x = torch.randn(2, 3, 11, 10)
    with torch.no_grad():
        assert torch.equal(once(x), twice(x))
    assert {k: v.shape for k, v in once.state_dict().items()} == {k: v.shape for k, v in twice.state_dict().items()}
    convs = [m for m in twice.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 2 and convs[1].groups == 2


def test_odd_kernel_is_required():
    for cls in (RepVGGBlock, QARepVGGBlock, ACBlock, DiverseBranchBlock, MobileOneStage, MobileOneBlock):
        with pytest.raises(ValueError, match="odd"):
            cls(2, 2, 4)


def _single_conv_blocks() -> list[nn.Module]:
    return [RepVGGBlock(4, 4, 3), QARepVGGBlock(4, 4, 3, groups=2), ACBlock(4, 6, 5, 2), DiverseBranchBlock(4, 4, 3),
            DiverseBranchBlock(4, 4, 3, groups=4), MobileOneStage(4, 4, 3, num_conv_branches=3),
            DOConv2d(4, 6, 3, groups=2), ExpandConv2d(4, 6, 3), MixConv2d(6, 6, (1, 3, 5)),
            MixConv2d(6, 6, (3, 5), mode="concat"), PolyScaleConv2d.bounded3x3(4, 4), ConvBNAct(4, 4, 3)]


@pytest.mark.parametrize("block", _single_conv_blocks(), ids=lambda b: type(b).__name__)
def test_branch_kernels_are_named_and_sum_to_the_folded_conv(block):
    """The contract ``edgerep check`` relies on: named branches on one grid whose sum is the fold."""
    m = randomize_(block, seed=11)
    ks = m.branch_kernels()
    assert ks and all(isinstance(n, str) and n for n in ks)
    x = torch.randn(2, m.in_channels, 7, 6, dtype=torch.float64)
    branch_sum = sum(k.apply(x) for k in ks.values())
    assert rel_err(branch_sum, m.equivalent_kernel().apply(x)) <= 1e-10
    folded = m.to_deploy()
    with torch.no_grad():
        assert rel_err(m.act(branch_sum.float()), folded(x.float())) <= 1e-5


@given(cin=st.integers(1, 6), h=st.integers(1, 9), w=st.integers(1, 9), seed=st.integers(0, 10_000))
def test_branch_sum_in_place_without_autograd_is_bit_identical_and_leaves_the_input_alone(cin, h, w, seed):
    """``sum_branches`` accumulates in place under ``no_grad`` (memory): the outputs equal the out-of-place sum
    bit for bit, with autograd on it still trains, and an identity branch first never writes into ``x``."""
    from edgerep.blocks.layers import sum_branches

    torch.manual_seed(seed)
    a = nn.Sequential(nn.Conv2d(cin, cin, 3, padding=1), nn.Sigmoid())  # sigmoid keeps its output for backward
    b = nn.Conv2d(cin, cin, 3, padding=1)
    first_out = []
    a.register_forward_hook(lambda _m, _i, out: first_out.append(out))
    x = torch.randn(2, cin, h, w)
    x0 = x.clone()
    with torch.no_grad():
        want = a(x) + b(x) + x
        got = sum_branches(x, a, None, b, nn.Identity())
        first_identity = sum_branches(x, nn.Identity(), a, b)
    assert torch.equal(got, want) and torch.equal(x, x0)
    assert got.data_ptr() == first_out[-2].data_ptr()  # accumulated into the first branch's output: no new tensor
    assert torch.equal(first_identity, x + a(x).detach() + b(x).detach()) and torch.equal(x, x0)
    xg = x.clone().requires_grad_(True)
    sum_branches(xg, a, b, nn.Identity()).sum().backward()  # in place, the sigmoid's saved output would be overwritten
    assert xg.grad is not None and torch.isfinite(xg.grad).all()
