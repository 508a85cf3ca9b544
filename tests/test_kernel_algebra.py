"""Each rule of the kernel algebra against a direct torch computation of the same structure
(float64, 1e-10 relative): random channels, odd kernels 1..7, strides, groups, dilation, sizes."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from edgerep.errors import FoldError
from edgerep.fold.kernel import (ConvKernel, add_kernels, avgpool_kernel, bn_as_kernel, bn_scale_shift, compose,
                                 concat_kernels, conv_as_fc, dilate_kernel, fuse_bn, fuse_linear_bn,
                                 identity_kernel, pad_kernel, regroup, scale_channels, split_input_kernels,
                                 to_dense)

D = torch.float64



def close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-10) -> bool:
    assert a.shape == b.shape, (a.shape, b.shape)
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max()) <= tol * max(1.0, float(a.abs().max()))


def rand_bn(n: int, g: torch.Generator) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(n).double().eval()
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(n, generator=g, dtype=D))
        var = torch.rand(n, generator=g, dtype=D) * 2 + 0.1
        var[::2] = 1e-5  # near-degenerate statistics, as after training on a constant channel
        bn.running_var.copy_(var)
        bn.weight.copy_(torch.randn(n, generator=g, dtype=D))  # negative gammas too
        bn.bias.copy_(torch.randn(n, generator=g, dtype=D))
    return bn


@st.composite
def kernels(draw, square: bool = False) -> tuple[ConvKernel, torch.Tensor]:
    """A random ConvKernel (odd kernel, padding keeping the centre) and an input for it."""
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cin, cout = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    kh = draw(st.sampled_from([1, 3, 5, 7]))
    kw = kh if square else draw(st.sampled_from([1, 3, 5, 7]))
    dil = draw(st.sampled_from([1, 2]))
    stride = draw(st.sampled_from([1, 2]))
    w = torch.randn(cout, cin // groups, kh, kw, generator=g, dtype=D)
    b = torch.randn(cout, generator=g, dtype=D)
    k = ConvKernel(w, b, stride, (dil * (kh // 2), dil * (kw // 2)), dil, groups)
    x = torch.randn(2, cin, draw(st.integers(1, 10)), draw(st.integers(1, 10)), generator=g, dtype=D)
    return k, x


@given(kernels(), st.integers(0, 1000))
def test_fuse_bn_equals_conv_then_bn(kx, seed):
    k, x = kx
    bn = rand_bn(k.out_channels, torch.Generator().manual_seed(seed))
    assert close(bn(k.apply(x)), fuse_bn(k, bn).apply(x))


@given(kernels(), st.integers(0, 1000))
def test_scale_channels_equals_affine_after_conv(kx, seed):
    k, x = kx
    g = torch.Generator().manual_seed(seed)
    s, t = torch.randn(k.out_channels, generator=g, dtype=D), torch.randn(k.out_channels, generator=g, dtype=D)
    assert close(k.apply(x) * s.view(1, -1, 1, 1) + t.view(1, -1, 1, 1), scale_channels(k, s, t).apply(x))


@given(st.integers(1, 6), st.integers(1, 6), st.booleans(), st.integers(0, 1000))
def test_fuse_linear_bn_equals_linear_then_bn1d(fin, fout, bias, seed):
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(fin, fout, bias=bias).double()
    bn = nn.BatchNorm1d(fout).double().eval()
    with torch.no_grad():
        bn.running_mean.normal_(generator=g)
        bn.running_var.uniform_(1e-5, 2, generator=g)
        bn.weight.normal_(generator=g)
        bn.bias.normal_(generator=g)
    x = torch.randn(4, fin, generator=g, dtype=D)
    w, b = fuse_linear_bn(lin.weight, lin.bias, bn)
    assert close(bn(lin(x)), x @ w.t() + b)


@given(st.integers(1, 4), st.sampled_from([1, 2]), st.sampled_from([1, 3, 5, 7]), st.sampled_from([1, 2]),
       st.integers(1, 9), st.integers(0, 1000))
def test_identity_and_bn_alone_as_kernels(per, groups, k, dil, size, seed):
    c = per * groups
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, c, size, size + 1, generator=g, dtype=D)
    assert torch.equal(identity_kernel(c, k, groups, dil).apply(x), x)
    bn = rand_bn(c, g)
    assert close(bn(x), bn_as_kernel(bn, k, groups, dil).apply(x))


@given(st.integers(1, 4), st.sampled_from([1, 3, 5]), st.sampled_from([1, 2, 3]), st.booleans(),
       st.integers(3, 10), st.integers(0, 1000))
def test_avgpool_kernel_equals_avgpool(c, k, stride, padded, size, seed):
    pad = k // 2 if padded else 0
    x = torch.randn(2, c, size, size + 2, generator=torch.Generator().manual_seed(seed), dtype=D)
    pool = nn.AvgPool2d(k, stride, pad, count_include_pad=True)
    assert close(pool(x), avgpool_kernel(c, k, stride, pad, groups=c).apply(x))
    assert close(pool(x), avgpool_kernel(c, k, stride, pad, groups=1).apply(x))  # dense form of the same pool


def test_avgpool_without_counting_padding_is_refused():
    with pytest.raises(FoldError, match="count_include_pad"):
        avgpool_kernel(3, 3, 1, 1, count_include_pad=False)


@given(kernels(), st.integers(0, 3), st.integers(0, 3))
def test_pad_kernel_keeps_the_output(kx, dh, dw):
    k, x = kx
    big = pad_kernel(k, (k.kernel_size[0] + 2 * dh, k.kernel_size[1] + 2 * dw))
    assert big.kernel_size == (k.kernel_size[0] + 2 * dh, k.kernel_size[1] + 2 * dw)
    assert close(k.apply(x), big.apply(x))


def test_pad_kernel_refuses_off_centre_and_shrinking():
    k = ConvKernel(torch.ones(1, 1, 3, 3, dtype=D), torch.zeros(1, dtype=D), 1, 1)
    with pytest.raises(FoldError, match="centre"):
        pad_kernel(k, 4)
    with pytest.raises(FoldError, match="down"):
        pad_kernel(k, 1)


@given(kernels())
def test_dilate_kernel_keeps_the_output(kx):
    k, x = kx
    d = dilate_kernel(k)
    assert d.dilation == (1, 1)
    assert d.kernel_size == tuple(k.dilation[i] * (k.kernel_size[i] - 1) + 1 for i in range(2))
    assert close(k.apply(x), d.apply(x))


@given(kernels())
def test_to_dense_and_regroup_round_trip(kx):
    k, x = kx
    dense = to_dense(k)
    assert dense.groups == 1 and close(k.apply(x), dense.apply(x))
    back = regroup(dense, k.groups)
    assert back.groups == k.groups and torch.equal(back.weight, k.weight)


def test_regroup_refuses_a_kernel_that_is_not_block_diagonal():
    k = ConvKernel(torch.ones(4, 4, 1, 1, dtype=D), torch.zeros(4, dtype=D))
    with pytest.raises(FoldError, match="block-diagonal"):
        regroup(k, 2)


@given(kernels(), st.lists(st.tuples(st.sampled_from([1, 3, 5]), st.sampled_from([1, 3, 5]),
                                     st.sampled_from([1, "same"])), min_size=1, max_size=3),
       st.integers(0, 1000))
def test_add_kernels_equals_branch_sum(kx, shapes, seed):
    """Branches of other shapes (centred, same grid) and groups 1 or the first branch's."""
    k, x = kx
    g = torch.Generator().manual_seed(seed)
    branches = [k]
    for kh, kw, grp in shapes:
        grp = k.groups if grp == "same" else 1
        w = torch.randn(k.out_channels, k.in_channels // grp, kh, kw, generator=g, dtype=D)
        pad = (k.dilation[0] * (kh // 2), k.dilation[1] * (kw // 2))
        branches.append(ConvKernel(w, torch.randn(k.out_channels, generator=g, dtype=D), k.stride, pad,
                                   k.dilation, grp))
    total = add_kernels(*branches)
    assert close(sum(b.apply(x) for b in branches), total.apply(x))
    if all(b.groups == k.groups for b in branches):
        assert total.groups == k.groups  # grouped branches stay grouped


@given(kernels(), st.integers(1, 3), st.sampled_from([1, 3, 5]), st.integers(0, 1000))
def test_concat_kernels_equals_channel_concat(kx, cout2, k2, seed):
    k, x = kx
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(cout2, k.in_channels, k2, k2, generator=g, dtype=D)
    other = ConvKernel(w, torch.randn(cout2, generator=g, dtype=D), k.stride,
                       (k.dilation[0] * (k2 // 2), k.dilation[1] * (k2 // 2)), k.dilation, 1)
    assert close(torch.cat([k.apply(x), other.apply(x)], 1), concat_kernels(k, other).apply(x))


@given(st.lists(st.tuples(st.integers(1, 3), st.integers(1, 3), st.sampled_from([1, 3, 5, 7]), st.booleans()),
                min_size=1, max_size=4), st.sampled_from([1, 2]), st.integers(1, 9), st.integers(0, 1000))
def test_split_input_kernels_equals_sliced_convs(parts, stride, size, seed):
    g = torch.Generator().manual_seed(seed)
    ks = []
    for cin, cout, k, dw in parts:
        cout = cin if dw else cout
        w = torch.randn(cout, 1 if dw else cin, k, k, generator=g, dtype=D)
        ks.append(ConvKernel(w, torch.randn(cout, generator=g, dtype=D), stride, k // 2, 1, cin if dw else 1))
    x = torch.randn(2, sum(k.in_channels for k in ks), size, size + 1, generator=g, dtype=D)
    xs = torch.split(x, [k.in_channels for k in ks], 1)
    folded = split_input_kernels(*ks)
    assert close(torch.cat([k.apply(xi) for k, xi in zip(ks, xs)], 1), folded.apply(x))
    if all(p[3] for p in parts):
        assert folded.groups == folded.in_channels  # all depthwise parts -> one depthwise conv


def _conv1x1(cin: int, cout: int, groups: int, bias: bool, g: torch.Generator) -> ConvKernel:
    w = torch.randn(cout, cin // groups, 1, 1, generator=g, dtype=D)
    b = torch.randn(cout, generator=g, dtype=D) if bias else torch.zeros(cout, dtype=D)
    return ConvKernel(w, b, 1, 0, 1, groups)


@given(kernels(square=True), st.integers(1, 3), st.integers(0, 1000))
def test_compose_1x1_without_bias_then_padded_kxk(kx, mid_mul, seed):
    k, x = kx
    g = torch.Generator().manual_seed(seed)
    first = _conv1x1(k.in_channels, k.in_channels * mid_mul, k.groups, False, g)
    # the KxK now reads first's output: rebuild it with matching input width
    w = torch.randn(k.out_channels, first.out_channels // k.groups, *k.kernel_size, generator=g, dtype=D)
    second = ConvKernel(w, k.bias, k.stride, k.padding, k.dilation, k.groups)
    folded = compose(first, second)
    assert close(second.apply(first.apply(x)), folded.apply(x))
    assert folded.groups == k.groups


@given(kernels(square=True), st.integers(0, 1000))
def test_compose_1x1_with_bias_padding_equals_bn_and_pad(kx, seed):
    """1x1 with bias -> KxK that reads the 1x1's output padded with the bias value (DBB)."""
    k, x = kx
    g = torch.Generator().manual_seed(seed)
    first = _conv1x1(k.in_channels, k.in_channels, k.groups, True, g)
    unpadded = ConvKernel(k.weight, k.bias, k.stride, 0, k.dilation, k.groups)
    y1 = first.apply(x)
    ph, pw = k.padding
    padded = F.pad(y1 - first.bias.view(1, -1, 1, 1), [pw, pw, ph, ph]) + first.bias.view(1, -1, 1, 1)
    want = unpadded.apply(padded)
    got = compose(first, k, first_output_padded_with_bias=True).apply(x)
    assert close(want, got)


@given(kernels(), st.integers(1, 4), st.booleans(), st.integers(0, 1000))
def test_compose_kxk_then_1x1(kx, cout2, same_groups, seed):
    k, x = kx
    g = torch.Generator().manual_seed(seed)
    grp = k.groups if same_groups else 1
    second = _conv1x1(k.out_channels, cout2 * grp, grp, True, g)
    folded = compose(k, second)
    assert close(second.apply(k.apply(x)), folded.apply(x))


@given(st.sampled_from([1, 3, 5]), st.sampled_from([1, 3, 5]), st.integers(1, 3), st.integers(1, 3),
       st.integers(1, 3), st.sampled_from([1, 2]), st.integers(0, 1000))
def test_compose_kxk_then_unpadded_kxk_grows_the_kernel(k1, k2, c, m, o, stride2, seed):
    """3x3 then unpadded 3x3 is one 5x5 (ExpandNet's receptive-field rule)."""
    g = torch.Generator().manual_seed(seed)
    a = ConvKernel(torch.randn(m, c, k1, k1, generator=g, dtype=D), torch.randn(m, generator=g, dtype=D), 1, k1 // 2)
    b = ConvKernel(torch.randn(o, m, k2, k2, generator=g, dtype=D), torch.randn(o, generator=g, dtype=D), stride2, 0)
    x = torch.randn(2, c, 11, 12, generator=g, dtype=D)
    folded = compose(a, b)
    assert folded.kernel_size == (k1 + k2 - 1,) * 2
    assert close(b.apply(a.apply(x)), folded.apply(x))


@given(kernels(), st.integers(1, 6), st.integers(1, 6))
def test_conv_as_fc_equals_conv_on_a_fixed_map(kx, h, w):
    k, _ = kx
    x = torch.randn(3, k.in_channels, h, w, dtype=D)
    wm, b = conv_as_fc(k, (k.in_channels, h, w))
    assert close(k.apply(x).flatten(1), x.flatten(1) @ wm.t() + b)


@given(kernels())
def test_output_size_and_round_trip_through_nn_conv(kx):
    k, x = kx
    y = k.apply(x)
    assert tuple(y.shape[2:]) == k.output_size(*x.shape[2:])
    conv = k.to_conv2d(dtype=D)
    assert torch.equal(conv(x), y)
    back = ConvKernel.from_conv(conv)
    assert torch.equal(back.weight, k.weight) and back.groups == k.groups and back.padding == k.padding


def test_bn_refusals():
    bn = nn.BatchNorm2d(3)
    with pytest.raises(FoldError, match="training mode"):
        bn_scale_shift(bn)
    with pytest.raises(FoldError, match="track_running_stats"):
        bn_scale_shift(nn.BatchNorm2d(3, track_running_stats=False).eval())
    bn.eval()
    with torch.no_grad():
        bn.running_var[1] = -1.0
    with pytest.raises(FoldError, match=r"running_var\[1\]"):
        bn_scale_shift(bn)


def test_from_conv_refuses_non_zero_padding():
    with pytest.raises(FoldError, match="padding_mode"):
        ConvKernel.from_conv(nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"))
    with pytest.raises(FoldError, match="string"):
        ConvKernel.from_conv(nn.Conv2d(2, 2, 3, padding="same"))
