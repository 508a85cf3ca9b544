"""MixConv (Tan & Le 2019) and Fire-style concat (SqueezeNet): parallel convs of different kernel
sizes joined by channel concat; kernel pad + concat folds them into one conv of the largest size."""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor, nn

from edgerep.blocks.base import ReparamBlock
from edgerep.blocks.layers import check_odd, conv_bn, conv_bn_kernel
from edgerep.fold.kernel import ConvKernel, concat_kernels, split_input_kernels, to_dense

__all__ = ["MixConv2d", "split_channels"]


def split_channels(channels: int, parts: int) -> list[int]:
    """MixConv's equal split: the first part takes the remainder."""
    sizes = [channels // parts] * parts
    sizes[0] += channels - sum(sizes)
    return sizes


class MixConv2d(ReparamBlock):
    """Parallel ``conv_bn`` branches with kernel sizes ``kernel_sizes``, outputs concatenated.

    ``mode="split"`` (MixConv): input and output channels are split equally between the
    branches; with ``depthwise=True`` each branch is depthwise (needs ``in == out``).
    ``mode="concat"`` (Fire expand): every branch reads the whole input; ``out_channels`` is split.
    Submodules: ``branches`` (``nn.ModuleList`` of ``conv``/``bn`` pairs, in kernel order), ``act``.
    Folds to one conv of the largest kernel (depthwise MixConv stays depthwise). Branch names
    ``k3``, ``k5``, ... (``k3.1`` when a size repeats); ``kernel_parts()`` gives each branch's own
    (unembedded) kernel.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_sizes: tuple[int, ...] = (3, 5, 7),
                 stride: int = 1, dilation: int = 1, act: nn.Module | None = None, mode: str = "split",
                 depthwise: bool = False):
        super().__init__()
        if mode not in ("split", "concat"):
            raise ValueError(f"MixConv2d mode must be 'split' or 'concat', got {mode!r}")
        if depthwise and (mode != "split" or in_channels != out_channels):
            raise ValueError("a depthwise MixConv2d needs mode='split' and in_channels == out_channels")
        for k in kernel_sizes:
            check_odd(k, "MixConv2d")
        n = len(kernel_sizes)
        if n < 1 or out_channels < n or (mode == "split" and in_channels < n):
            raise ValueError(f"MixConv2d cannot split {in_channels}->{out_channels} channels into {n} branches")
        self.in_channels, self.out_channels, self.stride, self.mode = in_channels, out_channels, stride, mode
        self.kernel_sizes = tuple(kernel_sizes)
        outs = split_channels(out_channels, n)
        ins = split_channels(in_channels, n) if mode == "split" else [in_channels] * n
        self.in_splits, self.out_splits = ins, outs
        self.branches = nn.ModuleList(
            conv_bn(ci, co, k, stride, dilation * (k // 2), dilation, ci if depthwise else 1)
            for ci, co, k in zip(ins, outs, kernel_sizes))
        self.act = act if act is not None else nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        if self.mode == "split":
            xs = torch.split(x, self.in_splits, dim=1)
            ys = [b(xi) for b, xi in zip(self.branches, xs)]
        else:
            ys = [b(x) for b in self.branches]
        return self.act(torch.cat(ys, dim=1))

    def kernel_parts(self) -> dict[str, ConvKernel]:
        """Each branch's own kernel (BN fused), named by its kernel size."""
        return {f"k{k}" if self.kernel_sizes.count(k) == 1 else f"k{k}.{i}": conv_bn_kernel(b)
                for i, (k, b) in enumerate(zip(self.kernel_sizes, self.branches))}

    def _join(self, parts: list[ConvKernel]) -> ConvKernel:
        join = split_input_kernels if self.mode == "split" else concat_kernels
        return join(*parts)

    def equivalent_kernel(self) -> ConvKernel:
        """The one conv the branches fold to (kernel pad + concat), grouped where possible."""
        return self._join(list(self.kernel_parts().values()))

    def branch_kernels(self) -> dict[str, ConvKernel]:
        """Each branch embedded in the full output (zeros on the other branches' channels), so
        the named kernels sum to the folded one and the checker can name the branch."""
        parts = self.kernel_parts()
        out = {}
        for name in parts:
            only = [k if n == name else replace(k, weight=torch.zeros_like(k.weight), bias=torch.zeros_like(k.bias))
                    for n, k in parts.items()]
            out[name] = to_dense(self._join(only))
        return out
