"""MobileOne (Vasu et al. 2023) nets laid out exactly like apple/ml-mobileone's ``mobileone.py``:
``stage0`` (one 3x3 unit), ``stage1..4`` alternating depthwise 3x3 and pointwise 1x1 units
(``edgerep.blocks.MobileOneStage``, which keeps the official ``rbr_conv`` / ``rbr_scale`` /
``rbr_skip`` names), ``gap``, ``linear``. Official state_dicts therefore load key for key."""
from __future__ import annotations

from torch import Tensor, nn

from edgerep.models.registry import register_model
from edgerep.models.repvgg import scale_width


def _unit(cin: int, cout: int, k: int, stride: int, groups: int, branches: int) -> nn.Module:
    from edgerep.blocks import MobileOneStage

    return MobileOneStage(cin, cout, k, stride=stride, groups=groups, num_conv_branches=branches)


class MobileOne(nn.Module):
    """``widths``: stage0..stage4 (5 entries); ``num_blocks``: stage1..4; ``strides``: stage0..4."""

    def __init__(self, widths: tuple[int, ...], num_blocks: tuple[int, ...], num_classes: int = 1000,
                 in_channels: int = 3, num_conv_branches: int = 4, strides: tuple[int, ...] = (2, 2, 2, 2, 2)):
        super().__init__()
        self.stage0 = _unit(in_channels, widths[0], 3, strides[0], 1, 1)
        cin = widths[0]
        for i in range(4):
            units: list[nn.Module] = []
            for j in range(num_blocks[i]):
                stride = strides[i + 1] if j == 0 else 1
                units.append(_unit(cin, cin, 3, stride, cin, num_conv_branches))  # depthwise
                units.append(_unit(cin, widths[i + 1], 1, 1, 1, num_conv_branches))  # pointwise
                cin = widths[i + 1]
            setattr(self, f"stage{i + 1}", nn.Sequential(*units))
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stage4(self.stage3(self.stage2(self.stage1(self.stage0(x)))))
        return self.linear(self.gap(x).flatten(1))


@register_model("mobileone_s0", "mobileone", "MobileOne-S0, ImageNet (4 over-parameterized branches)",
                (3, 224, 224), 1000)
def mobileone_s0(num_classes: int = 1000, in_channels: int = 3, width_scale: float = 1.0) -> MobileOne:
    w = (min(64, int(64 * 0.75)), int(64 * 0.75), 128, 256, int(512 * 2.0))
    return MobileOne(tuple(scale_width(v, width_scale) for v in w), (2, 8, 10, 1), num_classes, in_channels)


@register_model("mobileone_digits", "mobileone", "small MobileOne for 1x16x16 digits", (1, 16, 16), 10)
def mobileone_digits(num_classes: int = 10, in_channels: int = 1) -> MobileOne:
    return MobileOne((16, 24, 32, 48, 64), (1, 2, 2, 1), num_classes, in_channels, num_conv_branches=2,
                     strides=(1, 2, 2, 2, 1))
