"""What a model costs on one input: parameters, convolution count and FLOPs, counted on the
ops that actually run (so a conv written as ``F.conv2d`` in a forward counts too)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten


@dataclass
class Cost:
    """Parameters, executed convolutions / matmuls, and FLOPs (2 per multiply-accumulate of
    conv and matmul ops, for the whole example batch)."""

    params: int
    convs: int
    matmuls: int
    flops: int


class _CostMode(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.convs = 0
        self.matmuls = 0
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        out = func(*args, **(kwargs or {}))
        if func is aten.convolution.default:
            w = args[1]
            self.convs += 1
            self.flops += 2 * out.numel() * int(w[0].numel())
        elif func in (aten.mm.default, aten.addmm.default):
            a, b = (args[0], args[1]) if func is aten.mm.default else (args[1], args[2])
            self.matmuls += 1
            self.flops += 2 * a.shape[0] * a.shape[1] * b.shape[1]
        elif func is aten.bmm.default:
            a, b = args[0], args[1]
            self.matmuls += 1
            self.flops += 2 * a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]
        return out


@torch.no_grad()
def measure_cost(model: nn.Module, x: Tensor) -> Cost:
    """Run ``model(x)`` once and count what ran."""
    mode = _CostMode()
    with mode:
        model(x)
    return Cost(sum(p.numel() for p in model.parameters()), mode.convs, mode.matmuls, mode.flops)


__all__ = ["Cost", "measure_cost"]
