"""QARepVGG (Chu et al. 2023): RepVGG with no BN in the 1x1 and identity branches and one BN
after the sum, which keeps the folded kernel's per-channel range INT8-friendly."""
from __future__ import annotations

from dataclasses import replace

from torch import Tensor, nn

from edgerep.blocks.base import ReparamBlock
from edgerep.blocks.layers import check_odd, conv_bn, conv_bn_kernel, sum_branches
from edgerep.fold.kernel import ConvKernel, bn_scale_shift, identity_kernel, scale_channels

__all__ = ["QARepVGGBlock"]


class QARepVGGBlock(ReparamBlock):
    """Train-time QARepVGG block: ``act(bn(dense(x) + conv1x1(x) + x))``; folds to one KxK conv.

    Submodules (official YOLOv6 key in brackets): ``dense.conv`` / ``dense.bn`` (``rbr_dense``),
    ``one_by_one`` (a bias-free 1x1 ``nn.Conv2d``, ``rbr_1x1``; absent when K == 1),
    ``identity`` (``nn.Identity``, ``rbr_identity``; only when ``in == out`` and ``stride == 1``),
    ``bn`` (the post-sum BatchNorm2d, ``bn``), ``act``.
    Branch names: ``dense``, ``1x1``, ``identity``. The post-sum BN's scale is applied to every
    branch (so outliers are attributed to the branch whose weights the scale multiplies); its
    shift is added to the ``dense`` branch's bias, the only branch that already carries one.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1, dilation: int = 1, act: nn.Module | None = None, use_identity: bool = True):
        super().__init__()
        check_odd(kernel_size, "QARepVGGBlock")
        pad = dilation * (kernel_size // 2)
        self.in_channels, self.out_channels, self.stride, self.groups = in_channels, out_channels, stride, groups
        self.kernel_size, self.dilation = kernel_size, dilation
        self.dense = conv_bn(in_channels, out_channels, kernel_size, stride, pad, dilation, groups)
        self.one_by_one = (nn.Conv2d(in_channels, out_channels, 1, stride, 0, groups=groups, bias=False)
                           if kernel_size > 1 else None)
        self.identity = nn.Identity() if use_identity and in_channels == out_channels and stride == 1 else None
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = act if act is not None else nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(sum_branches(x, self.dense, self.one_by_one, self.identity)))

    def branch_kernels(self) -> dict[str, ConvKernel]:
        scale, shift = bn_scale_shift(self.bn)
        d = (self.dilation, self.dilation)
        out = {"dense": scale_channels(conv_bn_kernel(self.dense), scale, shift)}
        if self.one_by_one is not None:
            k = replace(ConvKernel.from_conv(self.one_by_one), dilation=d)
            out["1x1"] = scale_channels(k, scale)
        if self.identity is not None:
            ident = identity_kernel(self.in_channels, 1, self.groups, self.dilation,
                                    device=self.bn.running_mean.device)
            out["identity"] = scale_channels(ident, scale)
        return out
