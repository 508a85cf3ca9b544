"""Helpers to make a freshly built block look trained: fold tests are only meaningful with
non-trivial BN statistics (tiny variances, negative gammas) and non-zero identity deltas."""
from __future__ import annotations

import torch
from torch import nn

from edgerep.blocks.ecb import SeqConv3x3
from edgerep.blocks.layers import IdentityBasedConv1x1

__all__ = ["randomize_", "has_train_time_state"]


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = 0, tiny_var_fraction: float = 0.25) -> nn.Module:
    """Give every BatchNorm random running stats, gammas (negative too) and betas, every
    identity-based 1x1 a random delta, and every ECB sequence O(1) scales and biases;
    ``tiny_var_fraction`` of channels get running_var ~1e-5.
    Returns ``model`` (modified in place) in eval mode."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            dev, dt = m.running_mean.device, m.running_mean.dtype
            var = torch.rand(n, generator=g, dtype=torch.float64) * 2.0 + 0.05
            tiny = torch.rand(n, generator=g) < tiny_var_fraction
            var[tiny] = 1e-5 * (1 + torch.rand(int(tiny.sum()), generator=g, dtype=torch.float64))
            m.running_var.copy_(var.to(dev, dt))
            m.running_mean.copy_(torch.randn(n, generator=g, dtype=torch.float64).to(dev, dt))
            if m.weight is not None:
                # gammas of both signs; scaled down where the variance is tiny so outputs stay O(10)
                gamma = torch.randn(n, generator=g, dtype=torch.float64)
                gamma[tiny] *= 1e-2
                m.weight.copy_(gamma.to(dev, dt))
                m.bias.copy_(torch.randn(n, generator=g, dtype=torch.float64).to(dev, dt))
        elif isinstance(m, IdentityBasedConv1x1):
            m.weight.copy_((0.3 * torch.randn(m.weight.shape, generator=g, dtype=torch.float64)).to(m.weight))
        elif isinstance(m, SeqConv3x3):
            # ECB edge scales start at 1e-3 (invisible at a fold test's tolerance); trained ones are O(0.1-1),
            # and a large 1x1 bias makes the bias-padded border matter
            for p in (getattr(m, "scale", None), getattr(m, "bias", None), m.b0):
                if p is not None:
                    p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64).to(p))
    return model.eval()


def has_train_time_state(model: nn.Module) -> list[str]:
    """Names of what a folded model must not hold: BN modules and buffers (running stats)."""
    found = [f"{name} ({type(m).__name__})" for name, m in model.named_modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    found += [f"buffer {name}" for name, _ in model.named_buffers()]
    return found


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |a| in float64: how the fold tests measure exactness."""
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / a.abs().max().clamp_min(1e-30))
