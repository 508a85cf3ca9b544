"""Diverse Branch Block (Ding et al. 2021): KxK+BN, 1x1+BN, 1x1->KxK and 1x1->avgpool (each
with BN) in parallel; folds to one KxK conv, exactly at the borders thanks to BN-and-pad."""
from __future__ import annotations

from dataclasses import replace

from torch import Tensor, nn

from edgerep.blocks.base import ReparamBlock
from edgerep.blocks.layers import (BNAndPad, IdentityBasedConv1x1, check_odd, conv_bn, conv_bn_kernel,
                                   sum_branches)
from edgerep.fold.kernel import ConvKernel, avgpool_kernel, compose, fuse_bn

__all__ = ["DiverseBranchBlock"]


class DiverseBranchBlock(ReparamBlock):
    """Train-time DBB (any odd K, stride, groups; no dilation); folds to one KxK conv.

    Submodules use the official DBB names, so official state dicts load as they are:

    - ``dbb_origin.conv`` / ``dbb_origin.bn``: the KxK conv + BN (branch ``dense``).
    - ``dbb_1x1.conv`` / ``dbb_1x1.bn``: 1x1 conv + BN, unless the block is depthwise
      (``groups >= out == in``) (branch ``1x1``).
    - ``dbb_avg``: unless depthwise: ``conv`` (1x1) -> ``bn`` (BNAndPad, keys ``bn.bn.*``) ->
      ``avg`` (KxK average pool, no padding) -> ``avgbn``; for depthwise blocks only ``avg``
      (padded, count_include_pad) -> ``avgbn`` (branch ``avgpool``).
    - ``dbb_1x1_kxk``: ``idconv1`` (identity-based 1x1, when the internal width equals ``in``)
      or ``conv1`` -> ``bn1`` (BNAndPad) -> ``conv2`` (KxK, no padding) -> ``bn2`` (branch ``1x1-kxk``).
    - ``act`` (ReLU by default; pass ``nn.Identity()`` for a bare conv replacement).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1, act: nn.Module | None = None, internal_channels_1x1_3x3: int | None = None):
        super().__init__()
        check_odd(kernel_size, "DiverseBranchBlock")
        k, p = kernel_size, kernel_size // 2
        self.in_channels, self.out_channels, self.stride, self.groups = in_channels, out_channels, stride, groups
        self.kernel_size = kernel_size
        self.dbb_origin = conv_bn(in_channels, out_channels, k, stride, p, 1, groups)

        self.dbb_avg = nn.Sequential()
        # official rule: 1x1 branch and the 1x1 before the pool only when groups < out; a block
        # whose pool could not read its input directly (in != out) keeps them as well
        pool_input_directly = groups >= out_channels and in_channels == out_channels
        if not pool_input_directly:
            self.dbb_avg.add_module("conv", nn.Conv2d(in_channels, out_channels, 1, 1, 0, groups=groups, bias=False))
            self.dbb_avg.add_module("bn", BNAndPad(out_channels, p))
            self.dbb_avg.add_module("avg", nn.AvgPool2d(k, stride, 0))
            self.dbb_1x1: nn.Sequential | None = conv_bn(in_channels, out_channels, 1, stride, 0, 1, groups)
        else:
            self.dbb_avg.add_module("avg", nn.AvgPool2d(k, stride, p))
            self.dbb_1x1 = None
        self.dbb_avg.add_module("avgbn", nn.BatchNorm2d(out_channels))

        internal = internal_channels_1x1_3x3
        if internal is None:
            internal = 2 * in_channels if pool_input_directly else in_channels
        self.dbb_1x1_kxk = nn.Sequential()
        if internal == in_channels:
            self.dbb_1x1_kxk.add_module("idconv1", IdentityBasedConv1x1(in_channels, groups))
        else:
            self.dbb_1x1_kxk.add_module("conv1", nn.Conv2d(in_channels, internal, 1, 1, 0, groups=groups, bias=False))
        self.dbb_1x1_kxk.add_module("bn1", BNAndPad(internal, p))
        self.dbb_1x1_kxk.add_module("conv2", nn.Conv2d(internal, out_channels, k, stride, 0, groups=groups,
                                                       bias=False))
        self.dbb_1x1_kxk.add_module("bn2", nn.BatchNorm2d(out_channels))
        self.act = act if act is not None else nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(sum_branches(x, self.dbb_origin, self.dbb_avg, self.dbb_1x1_kxk, self.dbb_1x1))

    def branch_kernels(self) -> dict[str, ConvKernel]:
        p = (self.kernel_size // 2,) * 2
        out = {"dense": conv_bn_kernel(self.dbb_origin)}
        if self.dbb_1x1 is not None:
            out["1x1"] = conv_bn_kernel(self.dbb_1x1)

        seq = self.dbb_1x1_kxk
        first = seq.idconv1.kernel() if hasattr(seq, "idconv1") else ConvKernel.from_conv(seq.conv1)
        first = fuse_bn(first, seq.bn1.bn)
        # conv2 runs unpadded on bn1's bias-padded output: as a kernel it is a padded KxK whose
        # border sees the first conv's bias, which is exactly what compose(..., True) models
        second = replace(fuse_bn(ConvKernel.from_conv(seq.conv2), seq.bn2), padding=p)
        out["1x1-kxk"] = compose(first, second, first_output_padded_with_bias=True)

        avg = self.dbb_avg
        device = avg.avgbn.running_mean.device
        pool = avgpool_kernel(self.out_channels, self.kernel_size, self.stride, p, groups=self.out_channels,
                              device=device)
        if hasattr(avg, "conv"):
            pre = fuse_bn(ConvKernel.from_conv(avg.conv), avg.bn.bn)
            pool = compose(pre, pool, first_output_padded_with_bias=True)
        out["avgpool"] = fuse_bn(pool, avg.avgbn)
        return out
