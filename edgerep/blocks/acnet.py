"""ACNet (Ding et al. 2019): an asymmetric convolution block, KxK + 1xK + Kx1 each with BN,
summed; folds to one KxK conv whose central cross is strengthened."""
from __future__ import annotations

from torch import Tensor, nn

from edgerep.blocks.base import ReparamBlock
from edgerep.blocks.layers import check_odd
from edgerep.fold.kernel import ConvKernel, fuse_bn

__all__ = ["ACBlock"]


class ACBlock(ReparamBlock):
    """Train-time ACNet block (any odd K, stride, groups, dilation); folds to one KxK conv.

    Submodules use the official ACNet names, so official state dicts load as they are:
    ``square_conv`` / ``square_bn`` (KxK), ``hor_conv`` / ``hor_bn`` (1xK), ``ver_conv`` /
    ``ver_bn`` (Kx1), then ``act`` (ReLU by default like every edgerep block; pass
    ``nn.Identity()`` where the ACB replaces a bare conv). Branch names: ``square``, ``hor``, ``ver``.
    The asymmetric kernels are centred in the KxK grid (padding ``0`` across their length-1 axis),
    so every branch produces the same output grid.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1, dilation: int = 1, act: nn.Module | None = None):
        super().__init__()
        check_odd(kernel_size, "ACBlock")
        k, p = kernel_size, dilation * (kernel_size // 2)
        self.in_channels, self.out_channels, self.stride, self.groups = in_channels, out_channels, stride, groups
        self.kernel_size, self.dilation = kernel_size, dilation
        self.square_conv = nn.Conv2d(in_channels, out_channels, k, stride, p, dilation, groups, bias=False)
        self.square_bn = nn.BatchNorm2d(out_channels)
        self.hor_conv = nn.Conv2d(in_channels, out_channels, (1, k), stride, (0, p), dilation, groups, bias=False)
        self.hor_bn = nn.BatchNorm2d(out_channels)
        self.ver_conv = nn.Conv2d(in_channels, out_channels, (k, 1), stride, (p, 0), dilation, groups, bias=False)
        self.ver_bn = nn.BatchNorm2d(out_channels)
        self.act = act if act is not None else nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        y = self.square_bn(self.square_conv(x)) + self.hor_bn(self.hor_conv(x)) + self.ver_bn(self.ver_conv(x))
        return self.act(y)

    def branch_kernels(self) -> dict[str, ConvKernel]:
        return {
            "square": fuse_bn(ConvKernel.from_conv(self.square_conv), self.square_bn),
            "hor": fuse_bn(ConvKernel.from_conv(self.hor_conv), self.hor_bn),
            "ver": fuse_bn(ConvKernel.from_conv(self.ver_conv), self.ver_bn),
        }
