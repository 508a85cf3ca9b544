"""What a model costs on one input: parameters, convolution count and FLOPs, counted on the
ops that actually run (so a conv written as ``F.conv2d`` in a forward counts too)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

_CONVS = {F.conv1d, F.conv2d, F.conv3d, torch.conv1d, torch.conv2d, torch.conv3d}
_LINEAR = {F.linear}
_MATMULS = {torch.matmul, Tensor.matmul, Tensor.__matmul__, torch.mm, Tensor.mm, torch.bmm, Tensor.bmm}
_ADDMM = {torch.addmm, Tensor.addmm}
_NORMS = {F.batch_norm, torch.batch_norm}


@dataclass
class Cost:
    """Parameters, executed convolutions / matmuls (linear layers included), FLOPs (2 per
    multiply-accumulate of conv and matmul ops, for the whole example batch), and executed
    batch norms (module or functional)."""

    params: int
    convs: int
    matmuls: int
    flops: int
    norms: int = 0


class _CostMode(TorchFunctionMode):
    """Counts at the torch-function level: cheap (no dispatcher slow path) and sees functional calls."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = 0
        self.matmuls = 0
        self.flops = 0
        self.norms = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func in _CONVS:
            w = args[1] if len(args) > 1 else kwargs["weight"]
            self.convs += 1
            self.flops += 2 * out.numel() * int(w[0].numel())
        elif func in _LINEAR:
            w = args[1] if len(args) > 1 else kwargs["weight"]
            self.matmuls += 1
            self.flops += 2 * out.numel() * int(w.shape[-1])
        elif func in _MATMULS:
            a = args[0]
            self.matmuls += 1
            self.flops += 2 * out.numel() * int(a.shape[-1])
        elif func in _NORMS:
            self.norms += 1
        elif func in _ADDMM:
            a = args[1] if len(args) > 1 else kwargs["mat1"]
            self.matmuls += 1
            self.flops += 2 * out.numel() * int(a.shape[-1])
        return out


@torch.no_grad()
def measure_cost(model: nn.Module, x: Tensor) -> Cost:
    """Run ``model(x)`` once and count what ran."""
    mode = _CostMode()
    with mode:
        model(x)
    return Cost(sum(p.numel() for p in model.parameters()), mode.convs, mode.matmuls, mode.flops, mode.norms)


__all__ = ["Cost", "measure_cost"]
