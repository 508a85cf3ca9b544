"""What every train-time block offers edgerep: its branches as kernels, and its deploy form."""
from __future__ import annotations

import copy

from torch import nn

from edgerep.fold.kernel import ConvKernel, add_kernels


class ReparamBlock(nn.Module):
    """Base of the train-time blocks whose branches sum into one conv (then an activation).

    Subclasses implement ``branch_kernels()``: the named contributions of each train-time
    branch, each already a ``ConvKernel`` on the block's output grid, such that their sum is
    the folded kernel. ``edgerep check`` uses the names to say which branch causes outliers.
    ``to_deploy()`` returns a new plain module and leaves ``self`` untouched.
    """

    #: the non-linearity after the branch sum (kept as is by the fold)
    act: nn.Module

    def branch_kernels(self) -> dict[str, ConvKernel]:  # pragma: no cover - abstract
        raise NotImplementedError

    def equivalent_kernel(self) -> ConvKernel:
        """The one conv the train-time branches fold to (float64)."""
        return add_kernels(*self.branch_kernels().values())

    def to_deploy(self) -> nn.Module:
        """The deploy form: one ``nn.Conv2d`` followed by the block's activation."""
        w = next(self.parameters())
        conv = self.equivalent_kernel().to_conv2d(dtype=w.dtype, device=w.device)
        return FoldedConv(conv, copy.deepcopy(getattr(self, "act", nn.Identity())))


class FoldedConv(nn.Sequential):
    """A folded block: ``conv`` then ``act``. Folding it again is a no-op."""

    def __init__(self, conv: nn.Conv2d, act: nn.Module | None = None):
        super().__init__()
        self.conv = conv
        self.act = act if act is not None else nn.Identity()
