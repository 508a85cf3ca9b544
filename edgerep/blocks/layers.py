"""Small train-time layers the block families share: conv+BN, DBB's BN-and-pad and identity-based 1x1.

Each layer also says how it reads as a ``ConvKernel`` so a block's fold is a composition
of the kernel algebra's rules, never a hand-written formula.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgerep.fold.kernel import ConvKernel, bn_scale_shift, fuse_bn

IntPair = int | tuple[int, int]


def conv_bn(cin: int, cout: int, k: IntPair, stride: int = 1, padding: IntPair = 0,
            dilation: IntPair = 1, groups: int = 1) -> nn.Sequential:
    """A bias-free conv followed by BN, with the ``conv`` / ``bn`` names the official code uses."""
    seq = nn.Sequential()
    seq.add_module("conv", nn.Conv2d(cin, cout, k, stride, padding, dilation, groups, bias=False))
    seq.add_module("bn", nn.BatchNorm2d(cout))
    return seq


def conv_bn_kernel(seq: nn.Sequential) -> ConvKernel:
    """The kernel of a ``conv_bn`` pair: the conv with its BN fused (float64)."""
    return fuse_bn(ConvKernel.from_conv(seq.conv), seq.bn)


class BNAndPad(nn.Module):
    """DBB's "BN and pad": BN, then pad the output by ``pad`` with the BN's *bias value*
    (``beta - mean * gamma / sigma`` per channel) instead of zeros.

    A 1x1 -> BN -> KxK chain whose KxK pads with zeros is not one conv at the borders; padding
    with the value a zero input would have produced makes the fold exact. Submodule ``bn``
    (official key layout ``...bn.bn.*``).
    """

    def __init__(self, num_features: int, pad: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, eps, momentum)
        self.pad = int(pad)

    def pad_values(self) -> Tensor:
        """The per-channel value a zero input maps to (what the border is filled with)."""
        bn = self.bn
        gamma = bn.weight.detach() if bn.weight is not None else torch.ones_like(bn.running_var)
        beta = bn.bias.detach() if bn.bias is not None else torch.zeros_like(bn.running_var)
        return beta - bn.running_mean * gamma / torch.sqrt(bn.running_var + bn.eps)

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn(x)
        return pad_with_values(y, self.pad_values(), self.pad) if self.pad > 0 else y

    def scale_shift(self) -> tuple[Tensor, Tensor]:
        """The eval-mode BN as ``x * scale + shift`` (float64; refuses training mode)."""
        return bn_scale_shift(self.bn)


def pad_with_values(y: Tensor, values: Tensor, pad: int) -> Tensor:
    """Pad ``y`` (N, C, H, W) by ``pad`` pixels on every side with ``values[c]`` per channel (not zeros):
    the value a zero input gives the layer before, so a following unpadded KxK equals a padded one
    after folding (DBB's BN-and-pad, ECBSR's bias padding)."""
    y = F.pad(y, [pad, pad, pad, pad])
    v = values.to(y.dtype).view(1, -1, 1, 1)
    y[:, :, :pad, :] = v
    y[:, :, -pad:, :] = v
    y[:, :, :, :pad] = v
    y[:, :, :, -pad:] = v
    return y


class IdentityBasedConv1x1(nn.Conv2d):
    """A bias-free 1x1 conv whose kernel is ``identity + weight`` (``weight`` starts at zero).

    DBB's ``idconv1``: the 1x1 -> KxK branch starts as a plain KxK. The identity is a
    non-persistent buffer, so the state dict holds only the learned delta (official layout).
    """

    def __init__(self, channels: int, groups: int = 1):
        super().__init__(channels, channels, 1, 1, 0, groups=groups, bias=False)
        if channels % groups:
            raise ValueError(f"{channels} channels are not divisible by groups={groups}")
        per = channels // groups
        ident = torch.zeros(channels, per, 1, 1)
        idx = torch.arange(channels)
        ident[idx, idx % per, 0, 0] = 1.0
        self.register_buffer("id_tensor", ident, persistent=False)
        nn.init.zeros_(self.weight)

    def get_actual_kernel(self) -> Tensor:
        return self.weight + self.id_tensor.to(self.weight.dtype)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.get_actual_kernel(), None, 1, 0, 1, self.groups)

    def kernel(self) -> ConvKernel:
        """The 1x1 as a ``ConvKernel`` (identity included), float64."""
        w = self.get_actual_kernel().detach().to(torch.float64)
        return ConvKernel(w, w.new_zeros(w.shape[0]), 1, 0, 1, self.groups)


def check_odd(kernel_size: int, who: str) -> None:
    """Blocks centre their branches in the KxK grid: that needs an odd K."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"{who} needs an odd kernel_size >= 1, got {kernel_size}")


__all__ = ["conv_bn", "conv_bn_kernel", "BNAndPad", "IdentityBasedConv1x1", "check_odd", "pad_with_values"]


def sum_branches(x: Tensor, *branches: nn.Module | None) -> Tensor:
    """The train-time parallel branches' outputs on ``x``, summed; absent (``None``) branches skipped.

    Without autograd the sum accumulates in place into the first branch's output (the same additions, bit for
    bit): one activation less alive per block (RepVGG-A0 at 224, batch 13: a forward's peak 162 -> 99 MiB).
    Never into ``x`` itself or a view of it (an identity branch first)."""
    present = [b for b in branches if b is not None]
    y = present[0](x)
    inplace = not torch.is_grad_enabled() and y.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()
    for b in present[1:]:
        z = b(x)
        if inplace and z.shape == y.shape and z.dtype == y.dtype:  # else y + z broadcasts or promotes: a new tensor
            y += z
        else:
            y = y + z
    return y
