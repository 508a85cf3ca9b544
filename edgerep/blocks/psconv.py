"""Poly-scale convolution (PSConv-style, Li et al. 2020): different (output, input) channel regions
of one conv see different kernel shapes / dilations; the regions sum into one conv of the largest
effective kernel (dilated taps spread out, smaller shapes padded into the grid)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgerep.blocks.base import ReparamBlock
from edgerep.blocks.mixconv import split_channels
from edgerep.fold.kernel import ConvKernel, bn_scale_shift, dilate_kernel, scale_channels

__all__ = ["PolyScaleConv2d"]

Scale = tuple[int, int, int]  # (kh, kw, dilation)


def _scale_name(s: Scale) -> str:
    kh, kw, d = s
    return f"{kh}x{kw}" + (f"@d{d}" if d != 1 else "")


class PolyScaleConv2d(ReparamBlock):
    """One conv whose channel regions use different scales ``(kh, kw, dilation)``, then BN and ``act``.

    Input and output channels are each split into ``n = len(scales)`` parts; region (output part
    ``i``, input part ``j``) uses scale ``(i + j) % n`` (PSConv's cyclic assignment, so every output
    channel sees every scale). Folds to one conv of the largest effective kernel
    (``dilation * (k - 1) + 1``). Presets: ``PolyScaleConv2d.psconv`` (square kernel, several
    dilations: folds to the largest dilated size) and ``PolyScaleConv2d.bounded3x3`` (1x1, 1x3,
    3x1, 3x3 regions: folds to one 3x3).

    Submodules: ``convs`` (``nn.ModuleList``, one bias-free conv per scale holding the full
    ``(out, in, kh, kw)`` weight; entries outside its regions are masked to zero in forward),
    ``bn``, ``act``. Branch names: the scales (``1x3``, ``3x3@d2``, ...); the BN's scale is applied to
    every branch and its shift is put on the first one.
    """

    def __init__(self, in_channels: int, out_channels: int, scales: tuple[Scale, ...] = ((3, 3, 1), (3, 3, 2)),
                 stride: int = 1, act: nn.Module | None = None):
        super().__init__()
        scales = tuple((int(kh), int(kw), int(d)) for kh, kw, d in scales)
        if not scales:
            raise ValueError("PolyScaleConv2d needs at least one scale")
        for kh, kw, d in scales:
            if kh % 2 == 0 or kw % 2 == 0 or kh < 1 or kw < 1 or d < 1:
                raise ValueError(f"PolyScaleConv2d scales need odd kernel sizes and dilation >= 1, got {(kh, kw, d)}")
        if len(set(scales)) != len(scales):
            raise ValueError(f"PolyScaleConv2d scales repeat: {scales}")
        n = len(scales)
        self.in_channels, self.out_channels, self.stride, self.scales = in_channels, out_channels, stride, scales
        self.convs = nn.ModuleList(
            nn.Conv2d(in_channels, out_channels, (kh, kw), stride, (d * (kh // 2), d * (kw // 2)), d, bias=False)
            for kh, kw, d in scales)
        masks = torch.zeros(n, out_channels, in_channels, 1, 1)
        outs, ins = split_channels(out_channels, n), split_channels(in_channels, n)
        o0 = 0
        for i, co in enumerate(outs):
            c0 = 0
            for j, ci in enumerate(ins):
                masks[(i + j) % n, o0:o0 + co, c0:c0 + ci] = 1.0
                c0 += ci
            o0 += co
        self.register_buffer("masks", masks, persistent=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = act if act is not None else nn.ReLU()

    @classmethod
    def psconv(cls, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
               dilations: tuple[int, ...] = (1, 2, 4), act: nn.Module | None = None) -> "PolyScaleConv2d":
        """PSConv: a square ``kernel_size`` with several dilations; folds to the largest dilated size."""
        return cls(in_channels, out_channels, tuple((kernel_size, kernel_size, d) for d in dilations), stride, act)

    @classmethod
    def bounded3x3(cls, in_channels: int, out_channels: int, stride: int = 1,
                   act: nn.Module | None = None) -> "PolyScaleConv2d":
        """1x1, 1x3, 3x1 and 3x3 regions: every scale fits in 3x3, so it folds to one 3x3."""
        return cls(in_channels, out_channels, ((1, 1, 1), (1, 3, 1), (3, 1, 1), (3, 3, 1)), stride, act)

    def forward(self, x: Tensor) -> Tensor:
        y = 0
        for conv, mask in zip(self.convs, self.masks):
            y = y + F.conv2d(x, conv.weight * mask.to(conv.weight.dtype), None, conv.stride, conv.padding,
                             conv.dilation)
        return self.act(self.bn(y))

    def branch_kernels(self) -> dict[str, ConvKernel]:
        scale, shift = bn_scale_shift(self.bn)
        out = {}
        for i, (s, conv, mask) in enumerate(zip(self.scales, self.convs, self.masks)):
            k = ConvKernel.from_conv(conv)
            k = ConvKernel(k.weight * mask.to(k.weight), k.bias, k.stride, k.padding, k.dilation, 1)
            out[_scale_name(s)] = dilate_kernel(scale_channels(k, scale, shift if i == 0 else None))
        return out
