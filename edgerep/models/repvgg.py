"""RepVGG-style plain nets (Ding et al. 2021) with the official code's module names.

The top level is ``stage0`` .. ``stage4``, ``gap``, ``linear`` exactly as in the official
``repvgg.py``, so an official state_dict maps onto these models by renaming only the
block-internal keys (see ``edgerep.checkpoint_formats``). The block is pluggable: RepVGG,
QARepVGG, ACNet or DBB blocks give the same skeleton.
"""
from __future__ import annotations

from typing import Callable

from torch import Tensor, nn

from edgerep.models.registry import register_model

#: block_fn(in_channels, out_channels, stride, groups) -> nn.Module
BlockFn = Callable[[int, int, int, int], nn.Module]


def repvgg_block(cin: int, cout: int, stride: int, groups: int) -> nn.Module:
    from edgerep.blocks.repvgg import RepVGGBlock

    return RepVGGBlock(cin, cout, 3, stride=stride, groups=groups)


def qarepvgg_block(cin: int, cout: int, stride: int, groups: int) -> nn.Module:
    from edgerep.blocks import QARepVGGBlock  # lands with the blocks package

    return QARepVGGBlock(cin, cout, 3, stride=stride, groups=groups)


class RepVGG(nn.Module):
    """stage0 (one block) -> stage1..4 (first block strided) -> global average pool -> linear.

    ``widths`` has 5 entries (stage0..stage4), ``num_blocks`` 4 (stage1..stage4).
    ``override_groups_map`` maps a running layer index (stage0 is 0) to a group count, as in
    the official code (groupwise variants B1g2 / B1g4).
    """

    def __init__(self, widths: tuple[int, ...], num_blocks: tuple[int, ...], num_classes: int = 1000,
                 in_channels: int = 3, strides: tuple[int, ...] = (2, 2, 2, 2, 2),
                 override_groups_map: dict[int, int] | None = None, block_fn: BlockFn = repvgg_block):
        super().__init__()
        if len(widths) != 5 or len(num_blocks) != 4 or len(strides) != 5:
            raise ValueError("RepVGG needs 5 widths, 4 stage depths and 5 strides")
        self.override_groups_map = dict(override_groups_map or {})
        self.stage0 = block_fn(in_channels, widths[0], strides[0], 1)
        self.cur_layer_idx = 1
        cin = widths[0]
        for i in range(4):
            blocks = []
            for j in range(num_blocks[i]):
                g = self.override_groups_map.get(self.cur_layer_idx, 1)
                blocks.append(block_fn(cin, widths[i + 1], strides[i + 1] if j == 0 else 1, g))
                cin = widths[i + 1]
                self.cur_layer_idx += 1
            setattr(self, f"stage{i + 1}", nn.Sequential(*blocks))
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stage0(x)
        x = self.stage4(self.stage3(self.stage2(self.stage1(x))))
        return self.linear(self.gap(x).flatten(1))


def scale_width(w: int, scale: float) -> int:
    """``w`` times ``scale``, kept a multiple of 4 (so groupwise layers still divide); exact at 1.0."""
    return w if scale == 1.0 else max(4, int(round(w * scale / 4)) * 4)


def _official_widths(a: float, b: float, scale: float = 1.0) -> tuple[int, ...]:
    w = (min(64, int(64 * a)), int(64 * a), int(128 * a), int(256 * a), int(512 * b))
    return tuple(scale_width(v, scale) for v in w)


_A_DEPTHS = (2, 4, 14, 1)
_B_DEPTHS = (4, 6, 16, 1)
_GROUPWISE_LAYERS = (2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26)
IMAGENET = (3, 224, 224)

# name: (depths, a, b, groups)
_OFFICIAL = {
    "A0": (_A_DEPTHS, 0.75, 2.5, 1),
    "A1": (_A_DEPTHS, 1.0, 2.5, 1),
    "A2": (_A_DEPTHS, 1.5, 2.75, 1),
    "B0": (_B_DEPTHS, 1.0, 2.5, 1),
    "B1": (_B_DEPTHS, 2.0, 4.0, 1),
    "B1g2": (_B_DEPTHS, 2.0, 4.0, 2),
    "B1g4": (_B_DEPTHS, 2.0, 4.0, 4),
}


def _register_official(prefix: str, family: str, block_fn: BlockFn, what: str) -> None:
    for variant, (depths, a, b, groups) in _OFFICIAL.items():
        gmap = {layer: groups for layer in _GROUPWISE_LAYERS} if groups > 1 else None

        def factory(num_classes: int = 1000, in_channels: int = 3, width_scale: float = 1.0,
                    _d=depths, _a=a, _b=b, _g=gmap) -> RepVGG:
            """The official configuration; ``width_scale`` != 1 shrinks every width (tests, quick trials)."""
            return RepVGG(_official_widths(_a, _b, width_scale), _d, num_classes, in_channels,
                          override_groups_map=_g, block_fn=block_fn)

        desc = f"{what}-{variant}, ImageNet" + (f", groupwise g{groups}" if groups > 1 else "")
        register_model(f"{prefix}_{variant.lower()}", family, desc, IMAGENET, 1000)(factory)


_register_official("repvgg", "repvgg", repvgg_block, "RepVGG")
_register_official("qarepvgg", "qarepvgg", qarepvgg_block, "QARepVGG")

# ---- small nets: digits (8x8 resized to 16x16, 1 channel) and CIFAR-sized (3x32x32) inputs -------
DIGITS_WIDTHS = (16, 24, 32, 48, 64)
DIGITS_DEPTHS = (1, 2, 2, 1)
SMALL_STRIDES = (1, 2, 2, 2, 1)  # 16 -> 16 -> 8 -> 4 -> 2 -> 2 (32 -> ... -> 4)


def _small(block_fn: BlockFn, in_channels: int, num_classes: int, widths: tuple[int, ...] = DIGITS_WIDTHS,
           depths: tuple[int, ...] = DIGITS_DEPTHS) -> RepVGG:
    return RepVGG(widths, depths, num_classes, in_channels, SMALL_STRIDES, block_fn=block_fn)


@register_model("repvgg_digits", "repvgg", "small RepVGG for 1x16x16 digits (93k params)", (1, 16, 16), 10)
def repvgg_digits(num_classes: int = 10, in_channels: int = 1) -> RepVGG:
    return _small(repvgg_block, in_channels, num_classes)


@register_model("qarepvgg_digits", "qarepvgg", "small QARepVGG for 1x16x16 digits", (1, 16, 16), 10)
def qarepvgg_digits(num_classes: int = 10, in_channels: int = 1) -> RepVGG:
    return _small(qarepvgg_block, in_channels, num_classes)


@register_model("repvgg_cifar", "repvgg", "RepVGG for 3x32x32 inputs (CIFAR-sized, ~0.5M params)", (3, 32, 32), 10)
def repvgg_cifar(num_classes: int = 10, in_channels: int = 3) -> RepVGG:
    return _small(repvgg_block, in_channels, num_classes, (32, 48, 96, 192, 256), (2, 3, 3, 1))
