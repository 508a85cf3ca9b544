"""DO-Conv (Cao et al. 2022), kernel-composition mode: the conv's kernel is a depthwise kernel D
composed with a conventional kernel W, ``W' = compose(D, W)``, computed in every forward."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgerep.blocks.base import ReparamBlock
from edgerep.blocks.layers import check_odd
from edgerep.fold.kernel import FOLD_DTYPE, ConvKernel, compose

__all__ = ["DOConv2d"]


class DOConv2d(ReparamBlock):
    """Depthwise over-parameterized conv (any odd K, stride, groups, dilation); folds to one KxK conv.

    Parameters use the official names: ``W`` ``(out, in/groups, D_mul)``, ``D`` ``(in, K*K, D_mul)``
    (learned, starts at zero) and ``D_diag`` (a fixed buffer: identity blocks, so training starts
    from a plain conv), ``bias`` (optional). ``D`` / ``D_diag`` are absent when K == 1.
    ``W'[o, j, t] = sum_s (D + D_diag)[c(o, j), t, s] * W[o, j, s]`` with ``c(o, j)`` the input
    channel that slot ``j`` of output ``o``'s group reads. ``act`` defaults to ``nn.Identity()``
    (DO-Conv replaces a bare conv). Branch name: ``D*W``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1, dilation: int = 1, act: nn.Module | None = None, bias: bool = True,
                 D_mul: int | None = None):
        super().__init__()
        check_odd(kernel_size, "DOConv2d")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"{in_channels}->{out_channels} channels are not divisible by groups={groups}")
        mn = kernel_size * kernel_size
        self.D_mul = (D_mul if D_mul is not None else mn) if mn > 1 else 1  # a 1x1 has nothing to over-parameterize
        if self.D_mul < mn:
            raise ValueError(f"DOConv2d needs D_mul >= K*K = {mn} (an over-parameterization), got {self.D_mul}")
        self.in_channels, self.out_channels, self.stride, self.groups = in_channels, out_channels, stride, groups
        self.kernel_size, self.dilation, self.padding = kernel_size, dilation, dilation * (kernel_size // 2)
        self.W = nn.Parameter(torch.empty(out_channels, in_channels // groups, self.D_mul))
        nn.init.kaiming_uniform_(self.W, a=5 ** 0.5)
        if mn > 1:
            self.D = nn.Parameter(torch.zeros(in_channels, mn, self.D_mul))
            eye = torch.eye(mn).unsqueeze(0).repeat(in_channels, 1, self.D_mul // mn)
            diag = torch.cat([eye, torch.zeros(in_channels, mn, self.D_mul % mn)], dim=2)
            self.register_buffer("D_diag", diag)
        else:
            self.D = None
            self.D_diag = None
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.act = act if act is not None else nn.Identity()

    def composed_weight(self) -> Tensor:
        """``compose(D, W)`` as a ``(out, in/groups, K, K)`` tensor, differentiable (the train-time path)."""
        k, g = self.kernel_size, self.groups
        out, per_in, s = self.W.shape
        if self.D is None:
            return self.W.reshape(out, per_in, 1, 1)
        d = (self.D + self.D_diag.to(self.D.dtype)).view(g, per_in, k * k, s)  # by group of input channels
        w = self.W.view(g, out // g, per_in, s)
        dow = torch.matmul(w.unsqueeze(3), d.unsqueeze(1).transpose(-1, -2)).squeeze(3)  # (g, o, j, K*K)
        return dow.reshape(out, per_in, k, k)

    def forward(self, x: Tensor) -> Tensor:
        y = F.conv2d(x, self.composed_weight(), self.bias, self.stride, self.padding, self.dilation, self.groups)
        return self.act(y)

    def _d_and_w_kernels(self) -> tuple[ConvKernel, ConvKernel] | None:
        """D as a depthwise KxK conv (``in -> in*D_mul``) and W as a grouped 1x1 conv on its output."""
        if self.D is None:
            return None
        k, s, cin = self.kernel_size, self.D_mul, self.in_channels
        d = (self.D.detach() + self.D_diag).to(FOLD_DTYPE)  # (in, K*K, D_mul)
        d_w = d.permute(0, 2, 1).reshape(cin * s, 1, k, k)  # output c*s + t has kernel D[c, :, t]
        dk = ConvKernel(d_w, d_w.new_zeros(cin * s), self.stride, self.padding, self.dilation, cin)
        w = self.W.detach().to(FOLD_DTYPE).reshape(self.out_channels, -1, 1, 1)  # input j*s + t of the group
        b = self.bias.detach().to(FOLD_DTYPE) if self.bias is not None else w.new_zeros(self.out_channels)
        return dk, ConvKernel(w, b, 1, 0, 1, self.groups)

    def branch_kernels(self) -> dict[str, ConvKernel]:
        pair = self._d_and_w_kernels()
        if pair is None:
            w = self.W.detach().to(FOLD_DTYPE).reshape(self.out_channels, -1, 1, 1)
            b = self.bias.detach().to(FOLD_DTYPE) if self.bias is not None else w.new_zeros(self.out_channels)
            return {"D*W": ConvKernel(w, b, self.stride, 0, self.dilation, self.groups)}
        return {"D*W": compose(*pair)}
