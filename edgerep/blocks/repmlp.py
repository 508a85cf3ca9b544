"""RepMLP (Ding et al. 2022): an FC layer over each h x w partition of the feature map plus
parallel conv+BN branches on the same partitions; conv -> FC conversion (``conv_as_fc``) merges
the convs into the FC, which deploys as one (h, w)-strided conv and a pixel rearrangement."""
from __future__ import annotations

import copy

from torch import Tensor, nn

from edgerep.blocks.base import ReparamBlock
from edgerep.blocks.layers import check_odd, conv_bn, conv_bn_kernel
from edgerep.fold.kernel import ConvKernel, add_kernels, conv_as_fc, fuse_linear_bn, regroup, to_dense
from edgerep.errors import FoldError

__all__ = ["RepMLPBlock", "PartitionFC"]


def _to_partitions(x: Tensor, h: int, w: int) -> Tensor:
    n, c, hh, ww = x.shape
    if hh % h or ww % w:
        raise ValueError(f"RepMLP needs the input size {hh}x{ww} to be a multiple of the partition {h}x{w}")
    return x.reshape(n, c, hh // h, h, ww // w, w).permute(0, 2, 4, 1, 3, 5).reshape(-1, c, h, w)


def _from_partitions(y: Tensor, n: int, hp: int, wp: int) -> Tensor:
    _, o, h, w = y.shape
    return y.reshape(n, hp, wp, o, h, w).permute(0, 3, 1, 4, 2, 5).reshape(n, o, hp * h, wp * w)


class RepMLPBlock(ReparamBlock):
    """Partition FC (``fc3``: ``C*h*w -> O*h*w``, grouped by ``groups``, then ``fc3_bn``) plus
    ``repconv{k}`` conv+BN branches (k in ``conv_kernels``, same groups) on each partition, summed.

    Official RepMLPNet names: ``fc3`` (a 1x1 ``nn.Conv2d`` on the flattened partition),
    ``fc3_bn`` (``BatchNorm1d(O*h*w)``), ``repconv{k}.conv`` / ``.bn``, ``act``. The global
    perceptron of the paper is not included (it is not affine). Branch names ``fc``, ``conv1``,
    ``conv3``, ...; each is the branch as a ``(h, w)``-strided conv on the whole map.
    The input's height and width must be multiples of the partition size.
    """

    def __init__(self, in_channels: int, out_channels: int, partition: tuple[int, int] = (4, 4),
                 conv_kernels: tuple[int, ...] = (1, 3), groups: int = 1, act: nn.Module | None = None):
        super().__init__()
        h, w = partition
        for k in conv_kernels:
            check_odd(k, "RepMLPBlock")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"{in_channels}->{out_channels} channels are not divisible by groups={groups}")
        self.in_channels, self.out_channels, self.groups, self.partition = in_channels, out_channels, groups, (h, w)
        self.conv_kernels = tuple(conv_kernels)
        self.fc3 = nn.Conv2d(in_channels * h * w, out_channels * h * w, 1, 1, 0, bias=False, groups=groups)
        self.fc3_bn = nn.BatchNorm1d(out_channels * h * w)
        for k in self.conv_kernels:
            self.add_module(f"repconv{k}", conv_bn(in_channels, out_channels, k, 1, k // 2, 1, groups))
        self.act = act if act is not None else nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        n, _, hh, ww = x.shape
        h, w = self.partition
        parts = _to_partitions(x, h, w)
        fc = self.fc3_bn(self.fc3(parts.reshape(parts.shape[0], -1, 1, 1)).flatten(1))
        y = fc.reshape(-1, self.out_channels, h, w)
        for k in self.conv_kernels:
            y = y + getattr(self, f"repconv{k}")(parts)
        return self.act(_from_partitions(y, n, hh // h, ww // w))

    def _as_partition_conv(self, weight: Tensor, bias: Tensor) -> ConvKernel:
        """An FC matrix ``(O*h*w, C*h*w)`` as the equivalent (h, w)-strided conv (output order O, h, w)."""
        h, w = self.partition
        return ConvKernel(weight.reshape(-1, self.in_channels, h, w), bias, (h, w), 0, 1, 1)

    def branch_kernels(self) -> dict[str, ConvKernel]:
        h, w = self.partition
        fc = ConvKernel.from_conv(self.fc3)
        wmat, bias = fuse_linear_bn(to_dense(fc).weight[:, :, 0, 0], None, self.fc3_bn)
        out = {"fc": self._as_partition_conv(wmat, bias)}
        for k in self.conv_kernels:
            kw, kb = conv_as_fc(conv_bn_kernel(getattr(self, f"repconv{k}")), (self.in_channels, h, w))
            out[f"conv{k}"] = self._as_partition_conv(kw, kb)
        return out

    def equivalent_kernel(self) -> ConvKernel:
        total = add_kernels(*self.branch_kernels().values())
        if self.groups > 1:
            try:
                total = regroup(total, self.groups)
            except FoldError:
                pass
        return total

    def to_deploy(self) -> nn.Module:
        """``PartitionFC``: one (h, w)-strided conv producing ``O*h*w`` channels, rearranged to (O, H, W)."""
        ref = self.fc3.weight
        conv = self.equivalent_kernel().to_conv2d(dtype=ref.dtype, device=ref.device)
        return PartitionFC(conv, self.out_channels, self.partition, copy.deepcopy(self.act))


class PartitionFC(nn.Module):
    """A folded RepMLP block: ``conv`` (kernel = stride = partition) then depth-to-space per partition."""

    def __init__(self, conv: nn.Conv2d, out_channels: int, partition: tuple[int, int], act: nn.Module | None = None):
        super().__init__()
        self.conv, self.out_channels, self.partition = conv, out_channels, tuple(partition)
        self.act = act if act is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h, w = self.partition
        if x.shape[2] % h or x.shape[3] % w:
            raise ValueError(f"input size {tuple(x.shape[2:])} is not a multiple of the partition {h}x{w}")
        y = self.conv(x)  # (n, O*h*w, hp, wp)
        n, _, hp, wp = y.shape
        y = y.reshape(n, self.out_channels, h, w, hp, wp).permute(0, 1, 4, 2, 5, 3)
        return self.act(y.reshape(n, self.out_channels, hp * h, wp * w))
