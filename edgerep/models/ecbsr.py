"""ECBSR (Zhang et al., "Edge-oriented Convolution Block for Real-time Super Resolution on Mobile
Devices", 2021): a plain stack of ECBs, a residual from the input, and a pixel shuffle.

Layout as the official ``ECBSR`` (``backbone`` = head ECB, ``module_nums`` body ECBs, a linear tail
ECB to ``colors * scale**2`` channels; ``upsampler`` = ``nn.PixelShuffle``), so official state dicts
load by name. Input: RGB in [0, 1], any H x W (fully convolutional); output: RGB at ``scale`` x H x W.
The input residual repeats each colour over its ``scale**2`` sub-pixels (``repeat_interleave``), i.e. a
nearest-neighbour upscale of the input is what the network learns to correct; for ``colors=1`` it is the
official broadcast.
"""
from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from edgerep.blocks.ecb import ECB
from edgerep.models.registry import register_model

__all__ = ["ECBSR", "ecbsr_x2"]


def _act(kind: str, channels: int) -> nn.Module:
    acts = {"prelu": lambda: nn.PReLU(num_parameters=channels), "relu": nn.ReLU, "linear": nn.Identity}
    if kind not in acts:
        raise ValueError(f"act_type {kind!r}: expected one of {', '.join(acts)}")
    return acts[kind]()


class ECBSR(nn.Module):
    """Head ECB (colors -> channels), ``module_nums`` ECBs (channels -> channels), a linear tail ECB
    (channels -> colors * scale**2), plus the input residual, then ``PixelShuffle(scale)``."""

    def __init__(self, module_nums: int = 4, channel_nums: int = 16, with_idt: bool = False,
                 act_type: str = "prelu", scale: int = 2, colors: int = 3, depth_multiplier: float = 2.0):
        super().__init__()
        if scale < 1 or colors < 1 or channel_nums < 1 or module_nums < 0:
            raise ValueError("ECBSR needs scale, colors, channel_nums >= 1 and module_nums >= 0")
        self.scale, self.colors = int(scale), int(colors)
        layers: list[nn.Module] = [ECB(colors, channel_nums, depth_multiplier, _act(act_type, channel_nums), with_idt)]
        for _ in range(module_nums):
            layers.append(ECB(channel_nums, channel_nums, depth_multiplier, _act(act_type, channel_nums), with_idt))
        layers.append(ECB(channel_nums, colors * scale * scale, depth_multiplier, nn.Identity(), with_idt))
        self.backbone = nn.Sequential(*layers)
        self.upsampler = nn.PixelShuffle(scale)

    def forward(self, x: Tensor) -> Tensor:
        # shuffle(body(x) + repeat_interleave(x)) written as shuffle(body(x)) + nearest(x): the same numbers (the
        # shuffle is a permutation), but the shuffle reads the last conv's output alone, so an INT8 file moves it
        # onto the integers (1 byte a value, not 4) and the residual is one nearest upscale of the input
        return self.upsampler(self.backbone(x)) + F.interpolate(x, scale_factor=self.scale, mode="nearest")


@register_model("ecbsr_x2", "ecb", "ECBSR-M4C16 x2 super-resolution (RGB in [0, 1], any H x W; output 2H x 2W)",
                (3, 32, 32), num_classes=0, task="sr")
def ecbsr_x2(module_nums: int = 4, channel_nums: int = 16, colors: int = 3, act_type: str = "prelu",
             with_idt: bool = False) -> ECBSR:
    return ECBSR(module_nums, channel_nums, with_idt, act_type, 2, colors)
