"""A quant-hostile RepVGG that per-channel PTQ with cross-layer equalization does *not* rescue: dying ReLUs.

Mechanism (dead ReLU units are common in trained ReLU networks: a large step or weight decay pushes a
channel's BN shift beta far below zero and the unit stops firing): in a few output channels of a producer
block every BN's beta moves ``sigmas`` of its own |gamma| down, so the pre-activation mean sits at least
``sigmas`` standard deviations below zero and the channel fires on a tiny fraction of the pixels. The next
block's identity-branch BN, re-estimated on data, measures that channel's collapsed running variance and,
folded, becomes a centre tap ``gamma / sigma`` hundreds of times the dense taps.

Unlike ``edgerep.quant.hostile`` (gammas decayed: the producer's weights in those channels shrink too, so
cross-layer equalization moves the scale back and per-channel PTQ recovers fully), here the producer's
weights are ordinary: equalization can only split the outlier between the consumer's weights and the
producer's *activation* range, so both the rounding of the consumer's weights and the per-tensor activation
range stay hurt. Nothing is written by hand: only the betas move; every variance is measured.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from edgerep.quant.hostile import _BN, _chains, recalibrate_bn

MECHANISM = ("dying ReLU: in {n} output channels of each producer block ({producers}) every BN's beta moved "
             "{sigmas:g} x |gamma| down (the unit fires on a tiny fraction of pixels); BN statistics re-estimated "
             "on data, so the next block's identity BN measures a collapsed running variance and its "
             "gamma/sigma explodes when folded")


@dataclass
class DeadReluModel:
    """A model with dying-ReLU channels, where they are, and the mechanism in words."""

    model: nn.Module
    dead: dict[str, list[int]]  # producer block path -> channels that (almost) never fire
    consumers: list[str]  # blocks whose identity BN sees the dead channels
    mechanism: str


def kill_channels(block: nn.Module, channels: list[int], sigmas: float) -> int:
    """Move beta of ``channels`` down by ``sigmas * |gamma|`` in every BN of ``block`` on its output channels;
    returns how many BNs were changed."""
    out_ch = getattr(block, "out_channels", None)
    changed = 0
    with torch.no_grad():
        for m in block.modules():
            if isinstance(m, _BN) and m.affine and (out_ch is None or m.num_features == out_ch):
                m.bias[channels] -= sigmas * m.weight[channels].abs()
                changed += 1
    return changed


def make_dead_relu(model: nn.Module, batches: list[Tensor], *, n_channels: int = 4, sigmas: float = 5.0,
                   seed: int = 0) -> DeadReluModel:
    """Apply the dying-ReLU mechanism, in place, to every block that feeds a block with an identity branch
    (``n_channels`` seeded channels each), then re-estimate BN statistics on ``batches`` (training data)."""
    if sigmas <= 0 or n_channels <= 0:
        raise ValueError(f"sigmas and n_channels must be positive, got {sigmas!r}, {n_channels!r}")
    chains = _chains(model)
    if not chains:
        raise ValueError("no block is followed by a block with an identity branch")
    g = torch.Generator().manual_seed(seed)
    dead: dict[str, list[int]] = {}
    for path, block, _, _ in chains:
        chans = sorted(torch.randperm(block.out_channels, generator=g)[:n_channels].tolist())
        if kill_channels(block, chans, sigmas) == 0:
            raise ValueError(f"{path}: no BN on its {block.out_channels} output channels")
        dead[path] = chans
    recalibrate_bn(model, batches)
    text = MECHANISM.format(n=n_channels, producers=", ".join(dead), sigmas=sigmas)
    return DeadReluModel(model, dead, [c for _, _, c, _ in chains], text)


__all__ = ["DeadReluModel", "MECHANISM", "kill_channels", "make_dead_relu"]
