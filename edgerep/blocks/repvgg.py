"""RepVGG (Ding et al. 2021): KxK+BN, 1x1+BN and identity BN in parallel, summed, then ReLU."""
from __future__ import annotations

from dataclasses import replace

from torch import Tensor, nn

from edgerep.blocks.base import ReparamBlock
from edgerep.blocks.layers import check_odd, conv_bn, conv_bn_kernel, sum_branches
from edgerep.fold.kernel import ConvKernel, bn_as_kernel

__all__ = ["RepVGGBlock", "conv_bn", "conv_bn_kernel"]


class RepVGGBlock(ReparamBlock):
    """Train-time RepVGG block; folds to one KxK conv (K odd, any stride, groups, dilation).

    Submodules (official key in brackets): ``dense.conv`` / ``dense.bn`` (``rbr_dense``),
    ``one_by_one.conv`` / ``one_by_one.bn`` (``rbr_1x1``; absent when K == 1), ``identity``
    (a BatchNorm2d, ``rbr_identity``; only when ``in == out`` and ``stride == 1``), ``act``.
    Branch names: ``dense``, ``1x1``, ``identity``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1, dilation: int = 1, act: nn.Module | None = None, use_identity: bool = True):
        super().__init__()
        check_odd(kernel_size, "RepVGGBlock")
        pad = dilation * (kernel_size // 2)
        self.in_channels, self.out_channels, self.stride, self.groups = in_channels, out_channels, stride, groups
        self.dense = conv_bn(in_channels, out_channels, kernel_size, stride, pad, dilation, groups)
        # the 1x1 sits at the centre of the KxK grid: padding pad - dilation*(K//2) = 0
        self.one_by_one = conv_bn(in_channels, out_channels, 1, stride, 0, 1, groups) if kernel_size > 1 else None
        self.identity = (nn.BatchNorm2d(in_channels)
                         if use_identity and in_channels == out_channels and stride == 1 else None)
        self.kernel_size, self.dilation = kernel_size, dilation
        self.act = act if act is not None else nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(sum_branches(x, self.dense, self.one_by_one, self.identity))

    def branch_kernels(self) -> dict[str, ConvKernel]:
        out = {"dense": conv_bn_kernel(self.dense)}
        if self.one_by_one is not None:
            # a 1x1 ignores dilation; give it the dense branch's so the branch sum accepts it
            out["1x1"] = replace(conv_bn_kernel(self.one_by_one), dilation=(self.dilation, self.dilation))
        if self.identity is not None:
            out["identity"] = bn_as_kernel(self.identity, 1, self.groups, self.dilation)
        return out
