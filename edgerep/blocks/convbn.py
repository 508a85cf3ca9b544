"""The basic pair: conv + BN (+ activation) as a block, so plain conv-BN layers inside edgerep's
composite blocks fold with the same machinery as the re-parameterized ones."""
from __future__ import annotations

from torch import Tensor, nn

from edgerep.blocks.base import ReparamBlock
from edgerep.blocks.layers import conv_bn_kernel
from edgerep.fold.kernel import ConvKernel

__all__ = ["ConvBNAct"]


class ConvBNAct(ReparamBlock):
    """``act(bn(conv(x)))`` with padding ``dilation * (K // 2)``; folds to one conv (branch ``conv``).

    Submodules: ``conv`` (bias-free), ``bn``, ``act`` (ReLU by default).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 groups: int = 1, dilation: int = 1, act: nn.Module | None = None):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"ConvBNAct needs an odd kernel, got {kernel_size}")
        self.in_channels, self.out_channels, self.stride, self.groups = in_channels, out_channels, stride, groups
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, dilation * (kernel_size // 2),
                              dilation, groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = act if act is not None else nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))

    def branch_kernels(self) -> dict[str, ConvKernel]:
        return {"conv": conv_bn_kernel(self)}  # type: ignore[arg-type]
