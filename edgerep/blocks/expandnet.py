"""ExpandNet (Guo et al. 2020): a conv trained as a linear chain 1x1 -> kxk -> 1x1 with a wide middle
(and an FC trained as a chain of FCs); with no non-linearity inside, the chain folds to one layer."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from edgerep.blocks.base import ReparamBlock
from edgerep.blocks.layers import check_odd
from edgerep.fold.kernel import FOLD_DTYPE, ConvKernel, compose

__all__ = ["ExpandConv2d", "ExpandLinear"]


class ExpandConv2d(ReparamBlock):
    """``expand`` (1x1, in -> r*in, no bias) -> ``conv`` (KxK, wide, stride, dilation) -> ``project``
    (1x1 -> out, bias); folds to one KxK conv. The receptive field is the KxK's: only one kernel > 1.

    ``kernel_size`` may also be a chain of odd sizes, e.g. ``(3, 3)``: ``conv`` is then an
    ``nn.Sequential`` of KxK convs whose first pads the input by ``K_eff // 2`` and the others pad
    nothing (stride on the last), folding to one ``K_eff = sum(k - 1) + 1`` conv (3x3 + 3x3 -> 5x5).
    The first 1x1 has no bias on purpose: the KxK zero-pads its output, and a bias there would
    make the border differ from any single conv. ``act`` defaults to ReLU. Branch name:
    ``1x1-kxk-1x1``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, ...] = 3, stride: int = 1,
                 dilation: int = 1, act: nn.Module | None = None, expansion: int = 4, bias: bool = True):
        super().__init__()
        chain = (kernel_size,) if isinstance(kernel_size, int) else tuple(kernel_size)
        if not chain:
            raise ValueError("ExpandConv2d needs at least one kernel size")
        for k in chain:
            check_odd(k, "ExpandConv2d")
        if len(chain) > 1 and dilation != 1:
            raise ValueError("a chain of KxK convs folds only without dilation")
        k_eff = sum(k - 1 for k in chain) + 1
        wide = max(1, expansion) * in_channels
        self.in_channels, self.out_channels, self.stride, self.kernel_size = in_channels, out_channels, stride, k_eff
        self.expand = nn.Conv2d(in_channels, wide, 1, bias=False)
        if len(chain) == 1:
            self.conv: nn.Module = nn.Conv2d(wide, wide, k_eff, stride, dilation * (k_eff // 2), dilation, bias=True)
        else:
            self.conv = nn.Sequential(*(
                nn.Conv2d(wide, wide, k, stride if i == len(chain) - 1 else 1, k_eff // 2 if i == 0 else 0, bias=True)
                for i, k in enumerate(chain)))
        self.project = nn.Conv2d(wide, out_channels, 1, bias=bias)
        self.act = act if act is not None else nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.project(self.conv(self.expand(x))))

    def branch_kernels(self) -> dict[str, ConvKernel]:
        convs = [self.conv] if isinstance(self.conv, nn.Conv2d) else list(self.conv)
        k = ConvKernel.from_conv(self.expand)
        for c in convs:
            k = compose(k, ConvKernel.from_conv(c))
        return {"1x1-kxk-1x1": compose(k, ConvKernel.from_conv(self.project))}


class ExpandLinear(nn.Module):
    """FC expansion: ``expand`` (in -> r*max(in, out)) -> ``mid`` (wide -> wide) -> ``project``
    (-> out), all linear with biases; folds to one ``nn.Linear`` (``W3 W2 W1``, ``W3(W2 b1 + b2) + b3``).
    ``branch_kernels()`` gives the folded map as a 1x1 kernel named ``fc-fc-fc`` for the checker."""

    def __init__(self, in_features: int, out_features: int, expansion: int = 4, act: nn.Module | None = None):
        super().__init__()
        wide = max(1, expansion) * max(in_features, out_features)
        self.in_features, self.out_features = in_features, out_features
        self.expand = nn.Linear(in_features, wide)
        self.mid = nn.Linear(wide, wide)
        self.project = nn.Linear(wide, out_features)
        self.act = act if act is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.project(self.mid(self.expand(x))))

    def folded_weight_bias(self) -> tuple[Tensor, Tensor]:
        """The chain as one affine map, computed in float64."""
        w = torch.eye(self.in_features, dtype=FOLD_DTYPE, device=self.expand.weight.device)
        b = torch.zeros(self.in_features, dtype=FOLD_DTYPE, device=w.device)
        for layer in (self.expand, self.mid, self.project):
            lw = layer.weight.detach().to(FOLD_DTYPE)
            w, b = lw @ w, lw @ b + layer.bias.detach().to(FOLD_DTYPE)
        return w, b

    def branch_kernels(self) -> dict[str, ConvKernel]:
        w, b = self.folded_weight_bias()
        return {"fc-fc-fc": ConvKernel(w.reshape(*w.shape, 1, 1), b)}

    def to_deploy(self) -> nn.Module:
        """``nn.Sequential(fc=Linear, act)``."""
        import copy

        w, b = self.folded_weight_bias()
        ref = self.expand.weight
        fc = nn.Linear(self.in_features, self.out_features).to(device=ref.device, dtype=ref.dtype)
        with torch.no_grad():
            fc.weight.copy_(w.to(ref.dtype))
            fc.bias.copy_(b.to(ref.dtype))
        return _fc_act(fc, copy.deepcopy(self.act))


def _fc_act(fc: nn.Linear, act: nn.Module) -> nn.Sequential:
    seq = nn.Sequential()
    seq.add_module("fc", fc)
    seq.add_module("act", act)
    return seq
