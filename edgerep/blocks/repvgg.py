"""RepVGG (Ding et al. 2021): KxK+BN, 1x1+BN and identity BN in parallel, summed, then ReLU."""
from __future__ import annotations

from torch import Tensor, nn

from edgerep.blocks.base import ReparamBlock
from edgerep.fold.kernel import ConvKernel, bn_as_kernel, fuse_bn


def conv_bn(cin: int, cout: int, k: int | tuple[int, int], stride: int = 1, padding: int | tuple[int, int] = 0,
            dilation: int = 1, groups: int = 1) -> nn.Sequential:
    """A bias-free conv followed by BN, with the ``conv`` / ``bn`` names the official code uses."""
    seq = nn.Sequential()
    seq.add_module("conv", nn.Conv2d(cin, cout, k, stride, padding, dilation, groups, bias=False))
    seq.add_module("bn", nn.BatchNorm2d(cout))
    return seq


def conv_bn_kernel(seq: nn.Sequential) -> ConvKernel:
    return fuse_bn(ConvKernel.from_conv(seq.conv), seq.bn)


class RepVGGBlock(ReparamBlock):
    """Train-time RepVGG block; folds to one KxK conv (K odd, any stride, groups, dilation).

    The identity branch exists only when ``in == out`` and ``stride == 1``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1, dilation: int = 1, act: nn.Module | None = None, use_identity: bool = True):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"RepVGGBlock needs an odd kernel, got {kernel_size}")
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
        y = self.dense(x)
        if self.one_by_one is not None:
            y = y + self.one_by_one(x)
        if self.identity is not None:
            y = y + self.identity(x)
        return self.act(y)

    def branch_kernels(self) -> dict[str, ConvKernel]:
        out = {"dense": conv_bn_kernel(self.dense)}
        if self.one_by_one is not None:
            k = conv_bn_kernel(self.one_by_one)
            if self.dilation != 1:  # a 1x1 ignores dilation; give it the dense branch's for the sum
                from dataclasses import replace

                k = replace(k, dilation=(self.dilation, self.dilation))
            out["1x1"] = k
        if self.identity is not None:
            out["identity"] = bn_as_kernel(self.identity, 1, self.groups, self.dilation)
        return out
