"""Kernel rules the graph folder needs beyond ``edgerep.fold.kernel`` (pure functions on
``ConvKernel``, float64): the largest exact grouping of a folded kernel, exact serial composition
of DBB's bias-padded 1x1 (per channel for a depthwise second conv), crops as negative padding,
and matching dilations across branches. Candidates to move into the kernel algebra."""
from __future__ import annotations

import math
from dataclasses import replace

import torch

from edgerep.errors import FoldError
from edgerep.fold.kernel import ConvKernel, compose, dilate_kernel, identity_kernel, regroup, to_dense


def max_groups(k: ConvKernel) -> ConvKernel:
    """The largest grouping under which the kernel is exactly block-diagonal (a depthwise fold
    stays depthwise, a MixConv concat of depthwise convs becomes one depthwise conv)."""
    dense = to_dense(k)
    out, cin = dense.out_channels, dense.in_channels
    nz = (dense.weight != 0).flatten(2).any(-1)  # (out, cin)
    best = 1
    for g in range(math.gcd(out, cin), 1, -1):
        if out % g or cin % g:
            continue
        if nz[: out // g, cin // g:].any():  # the first block row already reads other groups
            continue
        blocks = nz.view(g, out // g, g, cin // g)
        off = blocks.clone()
        idx = torch.arange(g)
        off[idx, :, idx, :] = False
        if not off.any():
            best = g
            break
    return regroup(dense, best) if best > 1 else dense


def compose_exact(a: ConvKernel, b: ConvKernel) -> ConvKernel:
    """``b(a(x))`` as one kernel, with the kernel algebra's rules.

    A 1x1 whose output was padded with its own bias (DBB's BN-and-pad, recorded here as padding on
    the 1x1) is handed to ``compose`` in the form it documents: an unpadded 1x1 and a padded second
    conv with ``first_output_padded_with_bias`` -- exact only when the second conv adds no zero
    padding of its own (or the bias is zero). That also keeps the cheap pointwise path; a
    depthwise second conv (DBB's average pool) is composed per channel instead of densely.
    """
    a, b = a.double(), b.double()
    check_crop_then_pad(a, b)
    pointwise = a.kernel_size == (1, 1) and a.stride == (1, 1)
    if not pointwise or a.padding == (0, 0):
        return compose(a, b)
    if b.padding != (0, 0) and bool(a.bias.abs().max() > 0):
        return compose(a, b)  # zeros around a bias ring: the algebra refuses it with the reason
    a0 = replace(a, padding=(0, 0))
    b1 = replace(b, padding=(b.padding[0] + a.padding[0], b.padding[1] + a.padding[1]))
    if b1.groups == b1.in_channels == b1.out_channels and b1.groups > 1 and a0.out_channels == b1.in_channels:
        dense_a = to_dense(a0).weight[:, :, 0, 0]  # (d, c)
        w = b1.weight[:, 0][:, None] * dense_a[:, :, None, None]  # (d, c, kh, kw)
        bias = b1.bias + a0.bias * b1.weight.sum(dim=(1, 2, 3))
        return ConvKernel(w, bias, b1.stride, b1.padding, b1.dilation, 1)
    return compose(a0, b1, first_output_padded_with_bias=True)


def check_crop_then_pad(a: ConvKernel, b: ConvKernel) -> None:
    """A cropped map (negative padding) then a conv that zero-pads it: the zeros land where the
    uncropped map has data, so no single conv reproduces it."""
    for i, axis in enumerate(("rows", "columns")):
        if a.padding[i] < 0 and b.padding[i] > 0:
            raise FoldError(f"a crop of {-a.padding[i]} {axis} then a conv zero-padding them again: the zeros "
                            "fall inside the uncropped map, no single conv reproduces it")


def is_plain_identity(k: ConvKernel) -> bool:
    if k.kernel_size != (1, 1) or k.stride != (1, 1) or k.out_channels != k.in_channels:
        return False
    if k.bias.abs().max() != 0:
        return False
    ident = identity_kernel(k.out_channels, 1, groups=k.groups, dtype=k.weight.dtype)
    return bool(torch.equal(k.weight, ident.weight))


def match_dilation(a: ConvKernel, b: ConvKernel) -> tuple[ConvKernel, ConvKernel]:
    """Branches with different dilations: a 1x1 takes the other's (it has no taps to spread);
    otherwise both become undilated sparse kernels (PSConv's 3x3 d=2 is a 5x5 with holes)."""
    if a.dilation == b.dilation:
        return a, b
    if a.kernel_size == (1, 1):
        return replace(a, dilation=b.dilation), b
    if b.kernel_size == (1, 1):
        return a, replace(b, dilation=a.dilation)
    return dilate_kernel(a), dilate_kernel(b)


__all__ = ["max_groups", "compose_exact", "check_crop_then_pad", "is_plain_identity", "match_dilation"]
