"""MobileOne (Vasu et al. 2023): k over-parameterized KxK+BN branches, a 1x1+BN branch and an
identity BN, in a depthwise stage then a pointwise stage; folds to one depthwise KxK conv and
one pointwise conv (each followed by its activation)."""
from __future__ import annotations

from dataclasses import replace

from torch import Tensor, nn

from edgerep.blocks.base import FoldedConv, ReparamBlock
from edgerep.blocks.layers import check_odd, conv_bn, conv_bn_kernel, sum_branches
from edgerep.fold.kernel import ConvKernel, bn_as_kernel

__all__ = ["MobileOneStage", "MobileOneBlock"]


class MobileOneStage(ReparamBlock):
    """One MobileOne conv (the official ``MobileOneBlock``); folds to one KxK conv.

    Submodules use the official names: ``rbr_conv`` (``nn.ModuleList`` of ``num_conv_branches``
    ``conv``/``bn`` pairs, KxK), ``rbr_scale`` (1x1 ``conv``/``bn``; only when K > 1),
    ``rbr_skip`` (BatchNorm2d; only when ``in == out`` and ``stride == 1``), ``act``.
    Branch names: ``conv.0`` .. ``conv.{k-1}``, ``1x1``, ``identity``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1, dilation: int = 1, act: nn.Module | None = None, num_conv_branches: int = 1,
                 use_identity: bool = True):
        super().__init__()
        check_odd(kernel_size, "MobileOneStage")
        if num_conv_branches < 1:
            raise ValueError(f"MobileOne needs num_conv_branches >= 1, got {num_conv_branches}")
        pad = dilation * (kernel_size // 2)
        self.in_channels, self.out_channels, self.stride, self.groups = in_channels, out_channels, stride, groups
        self.kernel_size, self.dilation = kernel_size, dilation
        self.rbr_skip = (nn.BatchNorm2d(in_channels)
                         if use_identity and in_channels == out_channels and stride == 1 else None)
        self.rbr_conv = nn.ModuleList(conv_bn(in_channels, out_channels, kernel_size, stride, pad, dilation, groups)
                                      for _ in range(num_conv_branches))
        self.rbr_scale = conv_bn(in_channels, out_channels, 1, stride, 0, 1, groups) if kernel_size > 1 else None
        self.act = act if act is not None else nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(sum_branches(x, self.rbr_skip, self.rbr_scale, *self.rbr_conv))

    def branch_kernels(self) -> dict[str, ConvKernel]:
        out = {f"conv.{i}": conv_bn_kernel(b) for i, b in enumerate(self.rbr_conv)}
        if self.rbr_scale is not None:
            out["1x1"] = replace(conv_bn_kernel(self.rbr_scale), dilation=(self.dilation, self.dilation))
        if self.rbr_skip is not None:
            out["identity"] = bn_as_kernel(self.rbr_skip, 1, self.groups, self.dilation)
        return out


class MobileOneBlock(nn.Module):
    """A MobileOne unit: depthwise KxK stage (stride) then pointwise 1x1 stage, each with ``act``.

    Submodules: ``dw`` and ``pw``, both ``MobileOneStage`` (official MobileOne lists them as two
    consecutive blocks of a stage: map ``stageN.{2i}`` -> ``...dw`` and ``stageN.{2i+1}`` -> ``...pw``).
    ``to_deploy()`` gives ``nn.Sequential(dw=FoldedConv, pw=FoldedConv)``; ``branch_kernels()``
    gives ``{"dw": {...}, "pw": {...}}``, the per-stage branches.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 dilation: int = 1, act: nn.Module | None = None, num_conv_branches: int = 1):
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.dw = MobileOneStage(in_channels, in_channels, kernel_size, stride, in_channels, dilation,
                                 act, num_conv_branches)
        self.pw = MobileOneStage(in_channels, out_channels, 1, 1, 1, 1,
                                 None if act is None else _fresh(act), num_conv_branches)

    def forward(self, x: Tensor) -> Tensor:
        return self.pw(self.dw(x))

    def branch_kernels(self) -> dict[str, dict[str, ConvKernel]]:
        return {"dw": self.dw.branch_kernels(), "pw": self.pw.branch_kernels()}

    def to_deploy(self) -> nn.Module:
        """``nn.Sequential`` of the two folded stages (``dw`` depthwise KxK, ``pw`` 1x1)."""
        seq = nn.Sequential()
        for name in ("dw", "pw"):
            folded = getattr(self, name).to_deploy()
            assert isinstance(folded, FoldedConv)
            seq.add_module(name, folded)
        return seq


def _fresh(act: nn.Module) -> nn.Module:
    """A separate copy of an activation module, so the two stages do not share one instance."""
    import copy

    return copy.deepcopy(act)
