"""Quant-hostile reparam models built by a documented, physically plausible mechanism.

Mechanism (as reported for trained RepVGG; see docs/check.md): weight decay drives the BN
gammas of a few output channels of a block towards zero, so those channels of the block's
output are almost constant ("dying" channels). The *next* block's identity branch is a BN on
that output, and its running variance, estimated on data, collapses to ~1e-4 in those
channels. Folding turns the identity BN into a centre tap ``gamma / sigma`` ~ 100, while the
dense 3x3 taps stay ~0.05: a per-tensor INT8 scale set by the outlier rounds nearly every
other weight of the layer to zero.

``make_hostile`` applies the mechanism to any model of edgerep blocks: scale the gammas of the
chosen producer blocks' output channels by ``factor``, then re-estimate every BN's running
statistics on data (nothing is written by hand: the tiny variances are *measured*).
In QARepVGG form the identity branch has no BN, so the same collapse leaves the next block's
folded kernel ordinary: that is the control ``check`` must pass.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import torch
from torch import Tensor, nn

_BN = nn.modules.batchnorm._BatchNorm

MECHANISM = ("BN gammas of a few output channels of a producer block decayed to ~0 (x{factor:g}); "
             "BN statistics re-estimated on data, so the next block's identity BN measures a collapsed "
             "running variance in those channels and its gamma/sigma explodes when folded")


@dataclass
class HostileModel:
    """A model made hostile (or its control), and where the outliers should appear."""

    model: nn.Module
    collapsed: dict[str, list[int]]  # producer block path -> collapsed output channels
    expected_layers: list[str]  # consumer blocks with an identity BN: the layers check must flag
    input_shape: tuple[int, int, int]
    mechanism: str
    notes: dict = field(default_factory=dict)


def _has_identity(block: nn.Module) -> bool:
    return getattr(block, "identity", None) is not None


def _chains(model: nn.Module) -> list[tuple[str, nn.Module, str, nn.Module]]:
    """(producer path, producer, consumer path, consumer) for consecutive blocks in a Sequential
    whose consumer has an identity branch."""
    out = []
    for path, mod in model.named_modules():
        if not isinstance(mod, nn.Sequential):
            continue
        kids = list(mod.named_children())
        for (n1, a), (n2, b) in zip(kids, kids[1:]):
            if hasattr(a, "branch_kernels") and _has_identity(b):
                p = f"{path}.{n1}" if path else n1
                c = f"{path}.{n2}" if path else n2
                out.append((p, a, c, b))
    return out


def collapse_channels(block: nn.Module, channels: list[int], factor: float) -> None:
    """Scale the gamma of ``channels`` in every BN of ``block`` that acts on its output channels."""
    out_ch = getattr(block, "out_channels", None)
    with torch.no_grad():
        for m in block.modules():
            if isinstance(m, _BN) and m.weight is not None and (out_ch is None or m.num_features == out_ch):
                m.weight[channels] *= factor


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[Tensor]) -> None:
    """Re-estimate every BN's running mean / variance on ``batches`` (cumulative average), then eval."""
    bns = [m for m in model.modules() if isinstance(m, _BN)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    try:
        for x in batches:
            model(x)
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom
        model.eval()


def synthetic_batches(input_shape: tuple[int, int, int], n_batches: int = 8, batch_size: int = 32,
                      seed: int = 0) -> list[Tensor]:
    """Standard-normal input batches (preprocessed images have about zero mean, unit variance)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch_size, *input_shape, generator=g) for _ in range(n_batches)]


def make_hostile(model: nn.Module, *, input_shape: tuple[int, int, int], producers: dict[str, list[int]] | None = None,
                 n_blocks: int = 2, n_channels: int = 3, factor: float = 0.01,
                 batches: Iterable[Tensor] | None = None, seed: int = 0) -> HostileModel:
    """Apply the collapsed-channel mechanism to ``model`` in place and return where it bites.

    ``producers``: block path -> channels to collapse; by default ``n_blocks`` producer blocks
    that feed an identity block, spread over the network, ``n_channels`` seeded channels each.
    ``batches``: data for re-estimating BN statistics (default: seeded standard-normal inputs).
    """
    chains = _chains(model)
    by_path = {p: (blk, c, cb) for p, blk, c, cb in chains}
    if producers is None:
        if not chains:
            raise ValueError("no block is followed by a block with an identity branch")
        idx = torch.linspace(0, len(chains) - 1, min(n_blocks, len(chains))).round().long().unique().tolist()
        g = torch.Generator().manual_seed(seed)
        producers = {}
        for i in idx:
            p, blk, _, _ = chains[i]
            producers[p] = sorted(torch.randperm(blk.out_channels, generator=g)[:n_channels].tolist())
    mods = dict(model.named_modules())
    expected = []
    for p, chans in producers.items():
        if p not in mods:
            raise ValueError(f"no module {p!r} in the model")
        collapse_channels(mods[p], chans, factor)
        if p in by_path:
            expected.append(by_path[p][1])
    recalibrate_bn(model, batches if batches is not None else synthetic_batches(input_shape, seed=seed))
    return HostileModel(model, dict(producers), expected, tuple(input_shape), MECHANISM.format(factor=factor),
                        {"factor": factor})


DEFAULT_WIDTHS = (16, 32, 48, 64, 64)
DEFAULT_DEPTHS = (1, 2, 3, 1)


def hostile_arch(kind: str = "repvgg", num_classes: int = 10, in_channels: int = 3,
                 widths: tuple[int, ...] = DEFAULT_WIDTHS, depths: tuple[int, ...] = DEFAULT_DEPTHS) -> nn.Module:
    """The bare small RepVGG / QARepVGG architecture of ``build_hostile_model`` (a checkpoint
    ``arch`` factory: ``edgerep.quant.hostile:hostile_arch``)."""
    from edgerep.models.repvgg import RepVGG, qarepvgg_block, repvgg_block

    fns = {"repvgg": repvgg_block, "qarepvgg": qarepvgg_block}
    if kind not in fns:
        raise ValueError(f"kind must be one of {sorted(fns)}, got {kind!r}")
    return RepVGG(tuple(widths), tuple(depths), num_classes=num_classes, in_channels=in_channels, block_fn=fns[kind])


def hostile_digits(model: nn.Module, input_shape: tuple[int, int, int], train) -> HostileModel:
    """The classification hostile benchmark: a copy of the digits RepVGG ``model`` with the gammas of 3 channels of
    2 producer blocks x0.01 and every BN's statistics re-measured on ``train``'s batches (a digits data set)
    (``benchmarks/hostile_ptq.py``, ``benchmarks/hostile_debug.py`` and the debug tests build it so)."""
    import copy

    return make_hostile(copy.deepcopy(model).eval(), input_shape=tuple(input_shape), n_blocks=2, n_channels=3,
                        factor=0.01, batches=[torch.from_numpy(x) for x, _ in train.batches(128)])


def build_hostile_model(kind: str = "repvgg", *, seed: int = 0, factor: float = 0.01, n_channels: int = 3,
                        input_shape: tuple[int, int, int] = (3, 32, 32), num_classes: int = 10,
                        widths: tuple[int, ...] = DEFAULT_WIDTHS,
                        depths: tuple[int, ...] = DEFAULT_DEPTHS) -> HostileModel:
    """A small RepVGG (``kind="repvgg"``) or QARepVGG (``"qarepvgg"``) with the same seeded collapse
    in ``stage2.0`` and ``stage3.1``; the consumers ``stage2.1`` and ``stage3.2`` have identity branches."""
    torch.manual_seed(seed)
    model = hostile_arch(kind, num_classes, input_shape[0], widths, depths)
    g = torch.Generator().manual_seed(seed + 1)
    producers = {"stage2.0": sorted(torch.randperm(widths[2], generator=g)[:n_channels].tolist()),
                 "stage3.1": sorted(torch.randperm(widths[3], generator=g)[:n_channels].tolist())}
    h = make_hostile(model, input_shape=input_shape, producers=producers, factor=factor, seed=seed)
    h.notes.update({"kind": kind, "seed": seed, "arch_kwargs": {"kind": kind, "num_classes": num_classes,
                                                              "in_channels": input_shape[0], "widths": list(widths),
                                                              "depths": list(depths)}})
    return h


def save_hostile_checkpoint(path, kind: str = "repvgg", **kwargs) -> HostileModel:
    """Build a hostile model (or its QARepVGG control) and save it as an edgerep checkpoint that
    ``edgerep check`` / ``deploy`` load (inputs are standard-normal: mean 0, std 1)."""
    from edgerep.checkpoint import CheckpointMeta, save_checkpoint

    h = build_hostile_model(kind, **kwargs)
    c = h.input_shape[0]
    meta = CheckpointMeta(arch="edgerep.quant.hostile:hostile_arch", arch_kwargs=h.notes["arch_kwargs"],
                          input_shape=h.input_shape, mean=(0.0,) * c, std=(1.0,) * c,
                          extra={"hostile": {"mechanism": h.mechanism, "collapsed": h.collapsed,
                                             "expected_layers": h.expected_layers, "factor": h.notes["factor"]}})
    save_checkpoint(path, h.model, meta)
    return h


__all__ = ["HostileModel", "MECHANISM", "make_hostile", "build_hostile_model", "hostile_arch",
           "save_hostile_checkpoint", "collapse_channels",
           "recalibrate_bn", "synthetic_batches"]
