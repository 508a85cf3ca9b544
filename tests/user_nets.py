"""Users' own architectures, as they would write them: not edgerep blocks, official key names.

``OfficialRepVGGBlock`` is the RepVGG training block as the official code base writes it
(``rbr_dense`` = conv+BN, ``rbr_1x1`` = conv+BN, ``rbr_identity`` = a BN, summed, then ReLU).
``branchy_net`` is a small 1-channel network of them: what `--arch user_nets:branchy_net` loads.
"""
from __future__ import annotations

import torch
from torch import nn


def conv_bn(cin: int, cout: int, k: int, stride: int, padding: int) -> nn.Sequential:
    """The official ``conv_bn`` helper: a Sequential with children ``conv`` and ``bn``."""
    seq = nn.Sequential()
    seq.add_module("conv", nn.Conv2d(cin, cout, k, stride, padding, bias=False))
    seq.add_module("bn", nn.BatchNorm2d(cout))
    return seq


class OfficialRepVGGBlock(nn.Module):
    """conv3x3+BN || conv1x1+BN || identity BN (when shapes allow), summed, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.nonlinearity = nn.ReLU()
        self.rbr_identity = nn.BatchNorm2d(cin) if cin == cout and stride == 1 else None
        self.rbr_dense = conv_bn(cin, cout, 3, stride, 1)
        self.rbr_1x1 = conv_bn(cin, cout, 1, stride, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        id_out = 0 if self.rbr_identity is None else self.rbr_identity(x)
        return self.nonlinearity(self.rbr_dense(x) + self.rbr_1x1(x) + id_out)


class BranchyNet(nn.Module):
    """1x16x16 -> stem block (stride 2) -> two blocks with identity branches -> pool -> linear."""

    def __init__(self, in_channels: int = 1, width: int = 8, num_classes: int = 10):
        super().__init__()
        self.stage0 = OfficialRepVGGBlock(in_channels, width, stride=2)
        self.stage1 = nn.Sequential(OfficialRepVGGBlock(width, width), OfficialRepVGGBlock(width, width))
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage1(self.stage0(x))
        return self.linear(torch.flatten(self.gap(x), 1))


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """BN statistics worth testing a fold against (fresh BNs are the identity)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            with torch.no_grad():
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.2 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
    return model.eval()


def branchy_net(in_channels: int = 1, width: int = 8, num_classes: int = 10) -> BranchyNet:
    """The factory `--arch user_nets:branchy_net` calls."""
    return BranchyNet(in_channels, width, num_classes)


def collapse_identity(model: BranchyNet, block: str = "stage1.1", channels: tuple[int, ...] = (2, 5),
                      var: float = 1e-4) -> BranchyNet:
    """Collapse the identity-BN variance of a few channels (what weight decay does to trained RepVGG)."""
    bn = model.get_submodule(block).rbr_identity
    with torch.no_grad():
        for c in channels:
            bn.running_var[c] = var
            bn.weight[c] = 1.0
    return model


class FlatNet(nn.Module):
    """A user's net written flat: convs, BNs and a two-branch sum as attributes of the model itself,
    one ReLU module reused. The graph folder names the folded sum ``reparam``; users know it as ``layer_b``."""

    def __init__(self, in_channels: int = 1, width: int = 8, num_classes: int = 10):
        super().__init__()
        self.layer_a = nn.Conv2d(in_channels, width, 3, 2, 1, bias=False)
        self.bn_a = nn.BatchNorm2d(width)
        self.layer_b = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn_b = nn.BatchNorm2d(width)
        self.layer_b1 = nn.Conv2d(width, width, 1, 1, 0, bias=False)
        self.bn_b1 = nn.BatchNorm2d(width)
        self.act = nn.ReLU()
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn_a(self.layer_a(x)))
        x = self.act(self.bn_b(self.layer_b(x)) + self.bn_b1(self.layer_b1(x)))
        return self.fc(x.mean((2, 3)))


def flat_net(in_channels: int = 1, width: int = 8, num_classes: int = 10) -> FlatNet:
    """The factory `--arch user_nets:flat_net` calls."""
    return FlatNet(in_channels, width, num_classes)
