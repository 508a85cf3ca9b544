"""Edge-oriented Convolution Block (ECBSR, Zhang et al. 2021): a 3x3 conv, 1x1 -> 3x3, and 1x1 ->
fixed Sobel-x / Sobel-y / Laplacian depthwise filters with learned per-channel scales, summed;
folds to one 3x3 conv, exactly at the borders because each 1x1's output is padded with its bias."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgerep.blocks.base import ReparamBlock
from edgerep.blocks.layers import pad_with_values
from edgerep.fold.kernel import ConvKernel, compose, identity_kernel

__all__ = ["ECB", "SeqConv3x3", "EDGE_FILTERS", "SEQ_TYPES"]

#: the fixed 3x3 filters of the edge branches, as in the official ECBSR masks
EDGE_FILTERS: dict[str, tuple[tuple[float, ...], ...]] = {
    "conv1x1-sobelx": ((1.0, 0.0, -1.0), (2.0, 0.0, -2.0), (1.0, 0.0, -1.0)),
    "conv1x1-sobely": ((1.0, 2.0, 1.0), (0.0, 0.0, 0.0), (-1.0, -2.0, -1.0)),
    "conv1x1-laplacian": ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0)),
}
SEQ_TYPES = ("conv1x1-conv3x3", *EDGE_FILTERS)


class SeqConv3x3(nn.Module):
    """A 1x1 conv (with bias), its output padded by one pixel with that bias, then an unpadded 3x3.

    ``conv1x1-conv3x3``: a dense 3x3 on ``int(out * depth_multiplier)`` middle channels (``k0``, ``b0``,
    ``k1``, ``b1``). Edge types: a depthwise 3x3 whose weight is ``scale * mask`` (``mask`` the fixed
    filter, a buffer; ``scale`` and ``bias`` learned per channel; ``k0``, ``b0`` the 1x1). Parameter
    names are the official ECBSR ones, so official state dicts load as they are.
    """

    def __init__(self, seq_type: str, in_channels: int, out_channels: int, depth_multiplier: float = 1.0):
        super().__init__()
        if seq_type not in SEQ_TYPES:
            raise ValueError(f"seq_type {seq_type!r}: expected one of {', '.join(SEQ_TYPES)}")
        self.type, self.in_channels, self.out_channels = seq_type, in_channels, out_channels
        if seq_type == "conv1x1-conv3x3":
            self.mid_channels = int(out_channels * depth_multiplier)
            if self.mid_channels < 1:
                raise ValueError(f"depth_multiplier {depth_multiplier} leaves no middle channels")
            conv0 = nn.Conv2d(in_channels, self.mid_channels, 1)
            conv1 = nn.Conv2d(self.mid_channels, out_channels, 3)
            self.k0, self.b0 = conv0.weight, conv0.bias
            self.k1, self.b1 = conv1.weight, conv1.bias
        else:
            self.mid_channels = out_channels
            conv0 = nn.Conv2d(in_channels, out_channels, 1)
            self.k0, self.b0 = conv0.weight, conv0.bias
            self.scale = nn.Parameter(torch.randn(out_channels, 1, 1, 1) * 1e-3)
            self.bias = nn.Parameter(torch.randn(out_channels) * 1e-3)
            mask = torch.tensor(EDGE_FILTERS[seq_type]).expand(out_channels, 1, 3, 3).clone()
            self.register_buffer("mask", mask)

    def second_weight(self) -> Tensor:
        """The 3x3 weight applied after the 1x1 (dense, or the scaled fixed filter)."""
        return self.k1 if self.type == "conv1x1-conv3x3" else self.scale * self.mask.to(self.scale.dtype)

    def forward(self, x: Tensor) -> Tensor:
        y0 = pad_with_values(F.conv2d(x, self.k0, self.b0), self.b0.detach(), 1)
        if self.type == "conv1x1-conv3x3":
            return F.conv2d(y0, self.k1, self.b1)
        return F.conv2d(y0, self.second_weight(), self.bias, groups=self.out_channels)

    def kernel(self) -> ConvKernel:
        """The branch as one padded 3x3 (float64): the unpadded 3x3 on the bias-padded 1x1 output is a
        padded 3x3 whose border sees the 1x1's bias, which ``compose(..., True)`` models."""
        first = ConvKernel(self.k0.detach(), self.b0.detach())
        if self.type == "conv1x1-conv3x3":
            second = ConvKernel(self.k1.detach(), self.b1.detach(), padding=1)
        else:
            second = ConvKernel(self.second_weight().detach(), self.bias.detach(), padding=1,
                                groups=self.out_channels)
        return compose(first, second, first_output_padded_with_bias=True)


class ECB(ReparamBlock):
    """Train-time ECB (stride 1, 3x3); folds to one 3x3 conv, then ``act``.

    Submodules (official ECBSR names): ``conv3x3`` (3x3, bias, padding 1; branch ``3x3``),
    ``conv1x1_3x3`` (branch ``1x1-3x3``; middle width ``int(out * depth_multiplier)``),
    ``conv1x1_sbx`` / ``conv1x1_sby`` / ``conv1x1_lpl`` (branches ``1x1-sobelx``, ``1x1-sobely``,
    ``1x1-laplacian``), an identity (branch ``identity``) with ``with_idt`` when ``in == out``, and ``act``:
    ``PReLU(out)`` by default as in ECBSR; pass ``nn.Identity()`` for its ``linear`` blocks.
    """

    def __init__(self, in_channels: int, out_channels: int, depth_multiplier: float = 2.0,
                 act: nn.Module | None = None, with_idt: bool = False):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.depth_multiplier = depth_multiplier
        self.with_idt = bool(with_idt) and in_channels == out_channels
        self.conv3x3 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.conv1x1_3x3 = SeqConv3x3("conv1x1-conv3x3", in_channels, out_channels, depth_multiplier)
        self.conv1x1_sbx = SeqConv3x3("conv1x1-sobelx", in_channels, out_channels)
        self.conv1x1_sby = SeqConv3x3("conv1x1-sobely", in_channels, out_channels)
        self.conv1x1_lpl = SeqConv3x3("conv1x1-laplacian", in_channels, out_channels)
        self.act = act if act is not None else nn.PReLU(num_parameters=out_channels)

    def forward(self, x: Tensor) -> Tensor:
        y = (self.conv3x3(x) + self.conv1x1_3x3(x) + self.conv1x1_sbx(x) + self.conv1x1_sby(x)
             + self.conv1x1_lpl(x))
        if self.with_idt:
            y = y + x
        return self.act(y)

    def branch_kernels(self) -> dict[str, ConvKernel]:
        out = {
            "3x3": ConvKernel.from_conv(self.conv3x3),
            "1x1-3x3": self.conv1x1_3x3.kernel(),
            "1x1-sobelx": self.conv1x1_sbx.kernel(),
            "1x1-sobely": self.conv1x1_sby.kernel(),
            "1x1-laplacian": self.conv1x1_lpl.kernel(),
        }
        if self.with_idt:
            out["identity"] = identity_kernel(self.in_channels, 3, device=self.conv3x3.weight.device)
        return out
