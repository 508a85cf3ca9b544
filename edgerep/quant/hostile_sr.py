"""A quant-hostile ECBSR made from a trained one by a documented mechanism: unbalanced channel scales.

Mechanism (Nagel et al., "Data-Free Quantization Through Weight Equalization and Bias Correction", 2019,
sec. 3.1; Meller et al., 2019): PReLU is positively homogeneous per channel (``prelu(s x) = s prelu(x)`` for
``s > 0``), so an ECBSR trained without normalization or weight decay (the official recipe: Adam, L1, no
BN) has a free per-channel scale between consecutive blocks: output channel ``c`` of block ``k`` times
``s`` and input channel ``c`` of block ``k + 1`` divided by ``s`` is the same function. Training does not
pin that scale; a network that drifted to ``s`` = tens in a few channels has per-channel activation ranges
tens of times apart, which a per-tensor activation scale (every INT8 runtime's) cannot serve: the
quiet channels keep a few of their 256 levels.

``make_hostile_sr`` applies such a drift to a trained ECBSR (in every branch of the ECBs, so the
train-time model itself carries it, not only the folded one). In FP32 the function is unchanged up to
float rounding; only quantization sees it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from edgerep.blocks.ecb import ECB

MECHANISM = ("per-channel scale drift between consecutive PReLU ECBs (positively homogeneous: the function is "
             "unchanged): output channels {channels} of body blocks {blocks} x{factor:g}, the next block's input "
             "channels / {factor:g}")


@dataclass(frozen=True)
class HostileSR:
    """What ``make_hostile_sr`` did, for the checkpoint's notes."""

    blocks: tuple[int, ...]
    channels: tuple[int, ...]
    factor: float

    def mechanism(self) -> str:
        return MECHANISM.format(channels=list(self.channels), blocks=list(self.blocks), factor=self.factor)


def _branches(block: ECB) -> list[nn.Module]:
    return [block.conv3x3, block.conv1x1_3x3, block.conv1x1_sbx, block.conv1x1_sby, block.conv1x1_lpl]


@torch.no_grad()
def scale_output_channels(block: ECB, channels: list[int], s: float) -> None:
    """Multiply ``block``'s pre-activation output channels by ``s`` (every branch's last weight and bias)."""
    if block.with_idt:
        raise ValueError("an ECB with an identity branch ties its output to its input; scale both or neither")
    for br in _branches(block):
        if isinstance(br, nn.Conv2d):
            br.weight[channels] *= s
            br.bias[channels] *= s
        elif br.type == "conv1x1-conv3x3":
            br.k1[channels] *= s
            br.b1[channels] *= s
        else:  # fixed edge filter: the learned per-channel scale and bias
            br.scale[channels] *= s
            br.bias[channels] *= s


@torch.no_grad()
def scale_input_channels(block: ECB, channels: list[int], s: float) -> None:
    """Multiply the weights ``block`` applies to input channels ``channels`` by ``s`` (each branch's first conv)."""
    for br in _branches(block):
        w = br.weight if isinstance(br, nn.Conv2d) else br.k0
        w[:, channels] *= s


def make_hostile_sr(model: nn.Module, *, blocks: tuple[int, ...] = (0, 1, 2, 3, 4), channels: tuple[int, ...] = (0, 5),
                    factor: float = 32.0) -> HostileSR:
    """Drift ``model`` (an ECBSR: ``model.backbone`` a Sequential of ECBs) in place: for each ``k`` in ``blocks``,
    output ``channels`` of ``backbone[k]`` times ``factor`` and the matching inputs of ``backbone[k + 1]``
    divided by it. Needs a PReLU (or ReLU) after block ``k``: that is what makes the change exact."""
    seq = model.backbone
    if factor <= 0:
        raise ValueError(f"factor {factor}: must be > 0 (a negative scale does not pass a PReLU)")
    for k in blocks:
        if not 0 <= k < len(seq) - 1:
            raise ValueError(f"block {k}: needs a following block (0..{len(seq) - 2})")
        a, b = seq[k], seq[k + 1]
        if not isinstance(a.act, (nn.PReLU, nn.ReLU)):
            raise ValueError(f"backbone.{k}: activation {type(a.act).__name__} is not positively homogeneous")
        scale_output_channels(a, list(channels), factor)
        scale_input_channels(b, list(channels), 1.0 / factor)
    return HostileSR(tuple(blocks), tuple(channels), float(factor))
