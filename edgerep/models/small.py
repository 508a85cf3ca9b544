"""Small VGG-style digits nets (1x16x16) built from other block families on the RepVGG skeleton."""
from __future__ import annotations

from torch import nn

from edgerep.models.registry import register_model
from edgerep.models.repvgg import DIGITS_DEPTHS, DIGITS_WIDTHS, SMALL_STRIDES, RepVGG


def acnet_block(cin: int, cout: int, stride: int, groups: int) -> nn.Module:
    from edgerep.blocks import ACBlock

    return ACBlock(cin, cout, 3, stride=stride, groups=groups)


def dbb_block(cin: int, cout: int, stride: int, groups: int) -> nn.Module:
    from edgerep.blocks import DiverseBranchBlock

    return DiverseBranchBlock(cin, cout, 3, stride=stride, groups=groups)


@register_model("acnet_digits", "acnet", "small VGG-style net of ACNet blocks for 1x16x16 digits", (1, 16, 16), 10)
def acnet_digits(num_classes: int = 10, in_channels: int = 1) -> RepVGG:
    return RepVGG(DIGITS_WIDTHS, DIGITS_DEPTHS, num_classes, in_channels, SMALL_STRIDES, block_fn=acnet_block)


@register_model("dbb_digits", "dbb", "small VGG-style net of Diverse Branch Blocks for 1x16x16 digits", (1, 16, 16),
                10)
def dbb_digits(num_classes: int = 10, in_channels: int = 1) -> RepVGG:
    return RepVGG(DIGITS_WIDTHS, DIGITS_DEPTHS, num_classes, in_channels, SMALL_STRIDES, block_fn=dbb_block)
