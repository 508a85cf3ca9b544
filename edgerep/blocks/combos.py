"""Combinations of re-parameterization systems, each folding as far as its algebra reaches.

- ``DBBBasicBlock``: a ResNet basic block whose convs are DBBs (folds to conv-ReLU-conv + shortcut).
- ``ExpandACDBBBlock``: ExpandNet + ACNet + DBB branches in one block (folds to one KxK conv).
- ``Res2NetACBlock``: a Res2Net bottleneck whose hierarchical 3x3s are ACBs.
- ``PSACBlock``: poly-scale regions + ACNet asymmetric branches (folds to one conv).
- ``DenseACBlock``: a DenseNet block whose layers are (1x1 +) ACB convs.

Blocks that reach one conv are ``ReparamBlock``s; the others keep their non-linear skeleton and
``fold_model`` folds each sub-block in place (so folding stays idempotent).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from edgerep.blocks.acnet import ACBlock
from edgerep.blocks.base import ReparamBlock
from edgerep.blocks.convbn import ConvBNAct
from edgerep.blocks.dbb import DiverseBranchBlock
from edgerep.blocks.expandnet import ExpandConv2d
from edgerep.blocks.layers import check_odd, conv_bn, conv_bn_kernel
from edgerep.blocks.psconv import PolyScaleConv2d
from edgerep.fold.kernel import ConvKernel, fuse_bn

__all__ = ["DBBBasicBlock", "ExpandACDBBBlock", "Res2NetACBlock", "PSACBlock", "DenseACBlock"]


class DBBBasicBlock(nn.Module):
    """``relu(conv2(conv1(x)) + shortcut(x))`` with ``conv1`` / ``conv2`` DBBs (3x3; conv1 strided,
    with ReLU) and ``shortcut`` an identity or a 1x1 ``ConvBNAct`` (no activation) when the shape
    changes. Folds to two plain 3x3 convs (+ a 1x1 shortcut); the ReLU keeps them apart."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, groups: int = 1):
        super().__init__()
        self.conv1 = DiverseBranchBlock(in_channels, out_channels, 3, stride, groups, act=nn.ReLU())
        self.conv2 = DiverseBranchBlock(out_channels, out_channels, 3, 1, groups, act=nn.Identity())
        self.shortcut: nn.Module = (nn.Identity() if stride == 1 and in_channels == out_channels
                                    else ConvBNAct(in_channels, out_channels, 1, stride, act=nn.Identity()))
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class ExpandACDBBBlock(ReparamBlock):
    """One KxK block training ExpandNet, ACNet and DBB branches together; folds to one KxK conv.

    Submodules: ``expand`` (an ``ExpandConv2d`` 1x1 -> KxK -> 1x1 chain, no activation) + ``expand_bn``;
    ``hor`` (1xK) and ``ver`` (Kx1) ``conv``/``bn`` pairs; ``dbb`` (a ``DiverseBranchBlock`` without
    activation); ``act``. Branch names: ``expand``, ``hor``, ``ver``, ``dbb.dense``, ``dbb.1x1``,
    ``dbb.1x1-kxk``, ``dbb.avgpool``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 act: nn.Module | None = None, expansion: int = 2):
        super().__init__()
        check_odd(kernel_size, "ExpandACDBBBlock")
        k, p = kernel_size, kernel_size // 2
        self.in_channels, self.out_channels, self.stride, self.kernel_size = in_channels, out_channels, stride, k
        self.expand = ExpandConv2d(in_channels, out_channels, k, stride, act=nn.Identity(), expansion=expansion,
                                   bias=False)
        self.expand_bn = nn.BatchNorm2d(out_channels)
        self.hor = conv_bn(in_channels, out_channels, (1, k), stride, (0, p))
        self.ver = conv_bn(in_channels, out_channels, (k, 1), stride, (p, 0))
        self.dbb = DiverseBranchBlock(in_channels, out_channels, k, stride, act=nn.Identity())
        self.act = act if act is not None else nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        y = self.expand_bn(self.expand(x)) + self.hor(x) + self.ver(x) + self.dbb(x)
        return self.act(y)

    def branch_kernels(self) -> dict[str, ConvKernel]:
        out = {"expand": fuse_bn(self.expand.equivalent_kernel(), self.expand_bn),
               "hor": conv_bn_kernel(self.hor), "ver": conv_bn_kernel(self.ver)}
        out.update({f"dbb.{n}": k for n, k in self.dbb.branch_kernels().items()})
        return out


class Res2NetACBlock(nn.Module):
    """Res2Net bottleneck with ACB 3x3s (official ordering): ``conv1`` (1x1 ``ConvBNAct``) -> split
    into ``scale`` parts; ``y1 = K1(x1)``, ``yi = Ki(xi + y{i-1})`` for the first ``scale - 1`` parts
    (``convs``: ACBs with ReLU), the last part passes through (``pool``: 3x3 average pool when
    strided, where every ACB is strided and the hierarchy is cut); concat -> ``conv3`` (1x1, no act)
    -> ``+ shortcut`` -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, width: int = 4, scale: int = 4, stride: int = 1):
        super().__init__()
        if scale < 2:
            raise ValueError(f"Res2Net needs scale >= 2, got {scale}")
        self.width, self.scale, self.stride = width, scale, stride
        self.conv1 = ConvBNAct(in_channels, width * scale, 1)
        self.convs = nn.ModuleList(ACBlock(width, width, 3, stride) for _ in range(scale - 1))
        # count_include_pad average pooling is a conv too: it folds in the graph folder, and runs as is here
        self.pool = nn.AvgPool2d(3, stride, 1) if stride > 1 else nn.Identity()
        self.conv3 = ConvBNAct(width * scale, out_channels, 1, act=nn.Identity())
        self.shortcut: nn.Module = (nn.Identity() if stride == 1 and in_channels == out_channels
                                    else ConvBNAct(in_channels, out_channels, 1, stride, act=nn.Identity()))
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        parts = torch.split(self.conv1(x), self.width, dim=1)
        outs, prev = [], None
        for i, conv in enumerate(self.convs):
            inp = parts[i] if prev is None or self.stride > 1 else parts[i] + prev
            prev = conv(inp)
            outs.append(prev)
        outs.append(self.pool(parts[-1]))
        return self.act(self.conv3(torch.cat(outs, dim=1)) + self.shortcut(x))


class PSACBlock(ReparamBlock):
    """Poly-scale regions (``ps``: a ``PolyScaleConv2d`` without activation) plus ACNet ``hor``
    (1xK) and ``ver`` (Kx1) ``conv``/``bn`` pairs, K the poly-scale conv's largest effective kernel;
    folds to one KxK conv. Branch names: ``ps.<scale>`` (e.g. ``ps.3x3@d2``), ``hor``, ``ver``."""

    def __init__(self, in_channels: int, out_channels: int, scales: tuple[tuple[int, int, int], ...] = ((3, 3, 1),
                 (3, 3, 2)), stride: int = 1, act: nn.Module | None = None):
        super().__init__()
        self.ps = PolyScaleConv2d(in_channels, out_channels, scales, stride, act=nn.Identity())
        kh = max(d * (h - 1) + 1 for h, _, d in self.ps.scales)
        kw = max(d * (w - 1) + 1 for _, w, d in self.ps.scales)
        self.in_channels, self.out_channels, self.stride, self.kernel_size = in_channels, out_channels, stride, (kh, kw)
        self.hor = conv_bn(in_channels, out_channels, (1, kw), stride, (0, kw // 2))
        self.ver = conv_bn(in_channels, out_channels, (kh, 1), stride, (kh // 2, 0))
        self.act = act if act is not None else nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.ps(x) + self.hor(x) + self.ver(x))

    def branch_kernels(self) -> dict[str, ConvKernel]:
        out = {f"ps.{n}": k for n, k in self.ps.branch_kernels().items()}
        out["hor"] = conv_bn_kernel(self.hor)
        out["ver"] = conv_bn_kernel(self.ver)
        return out


class DenseACBlock(nn.Module):
    """A DenseNet block (post-activation): layer ``i`` reads the concat of the input and all earlier
    outputs, runs ``bottleneck`` (1x1 ``ConvBNAct`` to ``bn_size * growth``, optional) then an ACB
    3x3 (ReLU) to ``growth`` channels; the block outputs the full concat. Each layer folds to
    plain convs; the concats stay."""

    def __init__(self, in_channels: int, growth: int = 4, num_layers: int = 3, bn_size: int | None = 2):
        super().__init__()
        self.in_channels, self.growth = in_channels, growth
        layers = []
        for i in range(num_layers):
            cin = in_channels + i * growth
            seq = nn.Sequential()
            if bn_size:
                seq.add_module("bottleneck", ConvBNAct(cin, bn_size * growth, 1))
                cin = bn_size * growth
            seq.add_module("conv", ACBlock(cin, growth, 3))
            layers.append(seq)
        self.layers = nn.ModuleList(layers)
        self.out_channels = in_channels + num_layers * growth

    def forward(self, x: Tensor) -> Tensor:
        feats = [x]
        for layer in self.layers:
            feats.append(layer(torch.cat(feats, dim=1)))
        return torch.cat(feats, dim=1)
