"""The kernel algebra: one pure function per folding rule of ../shared/REPARAM.md.

A ``ConvKernel`` is an affine 2-D convolution (weight, bias and the geometry that gives
them meaning). Every rule takes kernels (and BN statistics) in and returns a new kernel;
no module state. Rules compute in float64 and the caller casts once at the end
(``ConvKernel.to_conv2d``). A composition that cannot be exact raises ``FoldError``
saying why, instead of returning an approximation.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgerep.errors import FoldError

Pair = tuple[int, int]
FOLD_DTYPE = torch.float64


def _pair(v: int | Iterable[int]) -> Pair:
    if isinstance(v, int):
        return (v, v)
    a, b = tuple(v)
    return (int(a), int(b))


@dataclass(frozen=True)
class ConvKernel:
    """An affine conv: ``y = conv2d(x, weight, stride, padding, dilation, groups) + bias``.

    ``weight`` has shape ``(out, in/groups, kh, kw)``; ``bias`` has shape ``(out,)``.
    Padding is zero padding, symmetric per axis (PyTorch's convention).
    """

    weight: Tensor
    bias: Tensor
    stride: Pair = (1, 1)
    padding: Pair = (0, 0)
    dilation: Pair = (1, 1)
    groups: int = 1

    def __post_init__(self) -> None:
        w, b = self.weight, self.bias
        if w.dim() != 4:
            raise FoldError(f"kernel weight must be 4-D (out, in/groups, kh, kw), got shape {tuple(w.shape)}")
        if b.shape != (w.shape[0],):
            raise FoldError(f"bias shape {tuple(b.shape)} does not match {w.shape[0]} output channels")
        if w.shape[0] % self.groups:
            raise FoldError(f"{w.shape[0]} output channels are not divisible by groups={self.groups}")
        object.__setattr__(self, "stride", _pair(self.stride))
        object.__setattr__(self, "padding", _pair(self.padding))
        object.__setattr__(self, "dilation", _pair(self.dilation))

    # ---- shape facts -------------------------------------------------------------
    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])

    @property
    def in_channels(self) -> int:
        return int(self.weight.shape[1]) * self.groups

    @property
    def kernel_size(self) -> Pair:
        return (int(self.weight.shape[2]), int(self.weight.shape[3]))

    def offset(self) -> tuple[float, float]:
        """Where the kernel's centre sits relative to the padded origin; equal offsets and
        strides mean equal output grids, which is what a branch sum needs."""
        return tuple(  # type: ignore[return-value]
            self.padding[i] - self.dilation[i] * (self.kernel_size[i] - 1) / 2 for i in range(2)
        )

    def output_size(self, h: int, w: int) -> Pair:
        return tuple(  # type: ignore[return-value]
            (n + 2 * self.padding[i] - self.dilation[i] * (self.kernel_size[i] - 1) - 1) // self.stride[i] + 1
            for i, n in enumerate((h, w))
        )

    # ---- conversion ---------------------------------------------------------------
    def double(self) -> "ConvKernel":
        return replace(self, weight=self.weight.to(FOLD_DTYPE), bias=self.bias.to(FOLD_DTYPE))

    def apply(self, x: Tensor) -> Tensor:
        """Run the kernel (in the kernel's dtype); the reference the tests compare against."""
        return F.conv2d(x.to(self.weight.dtype), self.weight, self.bias, self.stride, self.padding,
                        self.dilation, self.groups)

    def to_conv2d(self, dtype: torch.dtype | None = None, device: torch.device | None = None) -> nn.Conv2d:
        """A plain ``nn.Conv2d`` holding this kernel, cast once to ``dtype``."""
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
                         self.dilation, self.groups, bias=True)
        dtype = dtype or torch.float32
        conv = conv.to(device=device, dtype=dtype)  # first, so a float64 kernel is not rounded via float32
        with torch.no_grad():
            conv.weight.copy_(self.weight.detach().to(dtype))
            conv.bias.copy_(self.bias.detach().to(dtype))
        return conv

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> "ConvKernel":
        """The kernel of an ``nn.Conv2d`` (zero padding only), in float64."""
        if conv.padding_mode != "zeros":
            raise FoldError(f"padding_mode={conv.padding_mode!r} is not zero padding; only zero padding folds")
        if isinstance(conv.padding, str):
            raise FoldError(f"padding={conv.padding!r} given as a string; use explicit integers")
        w = conv.weight.detach().to(FOLD_DTYPE)
        b = conv.bias.detach().to(FOLD_DTYPE) if conv.bias is not None else torch.zeros(w.shape[0], dtype=FOLD_DTYPE,
                                                                                        device=w.device)
        return cls(w, b, _pair(conv.stride), _pair(conv.padding), _pair(conv.dilation), conv.groups)


# ---------------------------------------------------------------------------------
# BatchNorm
# ---------------------------------------------------------------------------------
def bn_scale_shift(bn: nn.modules.batchnorm._BatchNorm) -> tuple[Tensor, Tensor]:
    """Eval-mode BN as ``y = x * scale + shift`` (float64). Refuses a BN in training mode
    or one without running statistics, since neither is an affine map."""
    if bn.training:
        raise FoldError("BatchNorm is in training mode (batch statistics are not affine); call model.eval() first")
    if bn.running_mean is None or bn.running_var is None:
        raise FoldError("BatchNorm has track_running_stats=False; its output depends on the batch and cannot fold")
    var = bn.running_var.detach().to(FOLD_DTYPE)
    if not torch.isfinite(var).all() or (var + bn.eps <= 0).any():
        bad = int(torch.nonzero(~torch.isfinite(var) | (var + bn.eps <= 0))[0])
        raise FoldError(f"BatchNorm running_var[{bad}] = {float(var[bad])} is not a valid variance",
                        hint="the checkpoint's BN statistics are corrupt; re-export them")
    mean = bn.running_mean.detach().to(FOLD_DTYPE)
    sigma = torch.sqrt(var + bn.eps)
    gamma = bn.weight.detach().to(FOLD_DTYPE) if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.detach().to(FOLD_DTYPE) if bn.bias is not None else torch.zeros_like(var)
    scale = gamma / sigma
    return scale, beta - mean * scale


def fuse_bn(kernel: ConvKernel, bn: nn.modules.batchnorm._BatchNorm) -> ConvKernel:
    """Conv -> BN: ``F'[j] = F[j] * gamma_j/sigma_j``, ``b'_j = (b_j - mu_j) gamma_j/sigma_j + beta_j``."""
    scale, shift = bn_scale_shift(bn)
    if scale.numel() != kernel.out_channels:
        raise FoldError(f"BatchNorm has {scale.numel()} channels but the conv before it has {kernel.out_channels}")
    k = kernel.double()
    return replace(k, weight=k.weight * scale.view(-1, 1, 1, 1), bias=k.bias * scale + shift)


def scale_channels(kernel: ConvKernel, scale: Tensor, shift: Tensor | None = None) -> ConvKernel:
    """Per-output-channel affine map after a conv (a BN, a learned scale, a constant)."""
    k = kernel.double()
    scale = scale.to(FOLD_DTYPE).reshape(-1).expand(k.out_channels)
    shift = torch.zeros_like(scale) if shift is None else shift.to(FOLD_DTYPE).reshape(-1).expand(k.out_channels)
    return replace(k, weight=k.weight * scale.view(-1, 1, 1, 1), bias=k.bias * scale + shift)


def fuse_linear_bn(weight: Tensor, bias: Tensor | None, bn: nn.modules.batchnorm._BatchNorm) -> tuple[Tensor, Tensor]:
    """Linear -> BN1d: the conv rule applied to the rows of the weight matrix (float64)."""
    scale, shift = bn_scale_shift(bn)
    w = weight.detach().to(FOLD_DTYPE)
    b = torch.zeros(w.shape[0], dtype=FOLD_DTYPE) if bias is None else bias.detach().to(FOLD_DTYPE)
    if scale.numel() != w.shape[0]:
        raise FoldError(f"BatchNorm1d has {scale.numel()} features but the linear layer has {w.shape[0]} outputs")
    return w * scale.view(-1, 1), b * scale + shift


# ---------------------------------------------------------------------------------
# Identity, average pooling, BN alone
# ---------------------------------------------------------------------------------
def identity_kernel(channels: int, kernel_size: int | Pair = 1, groups: int = 1,
                    dilation: int | Pair = 1, dtype: torch.dtype = FOLD_DTYPE,
                    device: torch.device | None = None) -> ConvKernel:
    """``y = x`` as a KxK conv (1 at the centre tap of channel i -> i), padding keeping size."""
    kh, kw = _pair(kernel_size)
    dil = _pair(dilation)
    if kh % 2 == 0 or kw % 2 == 0:
        raise FoldError(f"identity needs an odd kernel to have a centre tap, got {kh}x{kw}")
    if channels % groups:
        raise FoldError(f"{channels} channels are not divisible by groups={groups}")
    per = channels // groups
    w = torch.zeros(channels, per, kh, kw, dtype=dtype, device=device)
    idx = torch.arange(channels, device=device)
    w[idx, idx % per, kh // 2, kw // 2] = 1.0
    pad = (dil[0] * (kh // 2), dil[1] * (kw // 2))
    return ConvKernel(w, torch.zeros(channels, dtype=dtype, device=device), (1, 1), pad, dil, groups)


def bn_as_kernel(bn: nn.modules.batchnorm._BatchNorm, kernel_size: int | Pair = 1, groups: int = 1,
                 dilation: int | Pair = 1) -> ConvKernel:
    """A BN on its own (RepVGG's identity branch) as a KxK conv: identity, then BN fusion."""
    channels = int(bn.num_features)
    return fuse_bn(identity_kernel(channels, kernel_size, groups, dilation, device=bn.running_mean.device), bn)


def avgpool_kernel(channels: int, kernel_size: int | Pair, stride: int | Pair | None = None,
                   padding: int | Pair = 0, groups: int = 1, count_include_pad: bool = True,
                   device: torch.device | None = None) -> ConvKernel:
    """Average pooling as a conv with ``1/(kh*kw)`` on each channel's own taps.

    Exact only with ``count_include_pad=True`` or no padding: otherwise border outputs are
    divided by fewer taps, which no conv reproduces.
    """
    kh, kw = _pair(kernel_size)
    pad = _pair(padding)
    if not count_include_pad and pad != (0, 0):
        raise FoldError("AvgPool with padding and count_include_pad=False divides border outputs by fewer taps; "
                        "no conv reproduces it")
    if channels % groups:
        raise FoldError(f"{channels} channels are not divisible by groups={groups}")
    per = channels // groups
    w = torch.zeros(channels, per, kh, kw, dtype=FOLD_DTYPE, device=device)
    idx = torch.arange(channels, device=device)
    w[idx, idx % per] = 1.0 / (kh * kw)
    return ConvKernel(w, torch.zeros(channels, dtype=FOLD_DTYPE, device=device),
                      _pair(stride if stride is not None else kernel_size), pad, (1, 1), groups)


# ---------------------------------------------------------------------------------
# Geometry: pad, dense expansion, regrouping
# ---------------------------------------------------------------------------------
def pad_kernel(kernel: ConvKernel, size: int | Pair) -> ConvKernel:
    """A ``kh x kw`` kernel as a larger ``KH x KW`` one: zeros around it, centres aligned,
    padding grown so the output grid is unchanged (1x1, 1xK, Kx1 -> KxK)."""
    KH, KW = _pair(size)
    kh, kw = kernel.kernel_size
    if (KH, KW) == (kh, kw):
        return kernel
    dh, dw = KH - kh, KW - kw
    if dh < 0 or dw < 0:
        raise FoldError(f"cannot pad a {kh}x{kw} kernel down to {KH}x{KW}")
    if dh % 2 or dw % 2:
        raise FoldError(f"a {kh}x{kw} kernel has no centre in a {KH}x{KW} grid (sizes must differ by an even number)")
    w = F.pad(kernel.weight, [dw // 2, dw // 2, dh // 2, dh // 2])
    pad = (kernel.padding[0] + kernel.dilation[0] * dh // 2, kernel.padding[1] + kernel.dilation[1] * dw // 2)
    return replace(kernel, weight=w, padding=pad)


def dilate_kernel(kernel: ConvKernel) -> ConvKernel:
    """A dilated kernel as an undilated one: zeros between the taps, same padding and output grid
    (a 3x3 with dilation 2 is a sparse 5x5), so it can be summed with undilated branches."""
    dh, dw = kernel.dilation
    if (dh, dw) == (1, 1):
        return kernel
    out, cin, kh, kw = kernel.weight.shape
    w = kernel.weight.new_zeros(out, cin, dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    w[:, :, ::dh, ::dw] = kernel.weight
    return replace(kernel, weight=w, dilation=(1, 1))


def to_dense(kernel: ConvKernel) -> ConvKernel:
    """A grouped / depthwise conv as an ordinary conv with a block-diagonal kernel."""
    g = kernel.groups
    if g == 1:
        return kernel
    out, per_in, kh, kw = kernel.weight.shape
    per_out = out // g
    w = kernel.weight.new_zeros(g, per_out, g, per_in, kh, kw)
    idx = torch.arange(g)
    w[idx, :, idx] = kernel.weight.reshape(g, per_out, per_in, kh, kw)  # the diagonal blocks, in one indexing op
    return replace(kernel, weight=w.view(out, g * per_in, kh, kw), groups=1)


def regroup(kernel: ConvKernel, groups: int) -> ConvKernel:
    """The inverse of ``to_dense``: keep ``groups`` if the dense kernel is block-diagonal."""
    if kernel.groups == groups:
        return kernel
    dense = to_dense(kernel)
    out, cin, kh, kw = dense.weight.shape
    if out % groups or cin % groups:
        raise FoldError(f"{out}->{cin} channels cannot be split into {groups} groups")
    po, pi = out // groups, cin // groups
    blocks = dense.weight.reshape(groups, po, groups, pi, kh, kw)
    idx = torch.arange(groups)
    off = blocks != 0
    off[idx, :, idx] = False  # what is left must be zero: the off-diagonal blocks
    if off.any():
        raise FoldError(f"kernel is not block-diagonal for groups={groups}")
    return replace(dense, weight=blocks[idx, :, idx].reshape(out, pi, kh, kw), groups=groups)


# ---------------------------------------------------------------------------------
# Parallel branches
# ---------------------------------------------------------------------------------
def add_kernels(*kernels: ConvKernel) -> ConvKernel:
    """Branch sum: pad every kernel to the largest grid, add weights and biases.

    Needs the same input/output channels, stride, dilation and output grid (centre offset);
    branches with different groups are expanded to dense first.
    """
    if not kernels:
        raise FoldError("no branches to add")
    ks = [k.double() for k in kernels]
    first = ks[0]
    for i, k in enumerate(ks[1:], 1):
        if (k.in_channels, k.out_channels) != (first.in_channels, first.out_channels):
            raise FoldError(f"branch {i} maps {k.in_channels}->{k.out_channels} channels, "
                            f"branch 0 maps {first.in_channels}->{first.out_channels}")
        if k.stride != first.stride:
            raise FoldError(f"branch {i} has stride {k.stride}, branch 0 has stride {first.stride}: "
                            "their outputs live on different grids")
        if k.dilation != first.dilation:
            raise FoldError(f"branch {i} has dilation {k.dilation}, branch 0 has {first.dilation}; "
                            "dilate the smaller kernel explicitly first")
        if k.offset() != first.offset():
            raise FoldError(f"branch {i} ({k.kernel_size[0]}x{k.kernel_size[1]}, padding {k.padding}) and branch 0 "
                            f"({first.kernel_size[0]}x{first.kernel_size[1]}, padding {first.padding}) "
                            "are not centred on the same output grid")
    KH = max(k.kernel_size[0] for k in ks)
    KW = max(k.kernel_size[1] for k in ks)
    groups = {k.groups for k in ks}
    if len(groups) > 1:
        import math

        common = 0
        for g in groups:
            common = math.gcd(common, g)
        ks = [regroup(to_dense(k), common) if k.groups != common else k for k in ks]
    ks = [pad_kernel(k, (KH, KW)) for k in ks]
    weight = sum(k.weight for k in ks[1:]) + ks[0].weight if len(ks) > 1 else ks[0].weight
    bias = sum(k.bias for k in ks[1:]) + ks[0].bias if len(ks) > 1 else ks[0].bias
    return replace(ks[0], weight=weight, bias=bias)


def concat_kernels(*kernels: ConvKernel) -> ConvKernel:
    """Channel concat of parallel convs on the same input: stack filters along the output axis."""
    if not kernels:
        raise FoldError("no branches to concatenate")
    ks = [k.double() for k in kernels]
    first = ks[0]
    for i, k in enumerate(ks[1:], 1):
        if k.in_channels != first.in_channels:
            raise FoldError(f"concat branch {i} reads {k.in_channels} channels, branch 0 reads {first.in_channels}")
        if k.stride != first.stride or k.dilation != first.dilation or k.offset() != first.offset():
            raise FoldError(f"concat branch {i} is not on branch 0's output grid (stride/dilation/padding differ)")
    KH = max(k.kernel_size[0] for k in ks)
    KW = max(k.kernel_size[1] for k in ks)
    ks = [pad_kernel(to_dense(k), (KH, KW)) for k in ks]
    return replace(ks[0], weight=torch.cat([k.weight for k in ks]), bias=torch.cat([k.bias for k in ks]),
                   groups=1)


def split_input_kernels(*kernels: ConvKernel) -> ConvKernel:
    """Convs reading disjoint consecutive input-channel slices, outputs concatenated
    (MixConv / PSConv style): one conv with a block-structured kernel."""
    if not kernels:
        raise FoldError("no branches to split the input between")
    ks = [k.double() for k in kernels]
    first = ks[0]
    for i, k in enumerate(ks[1:], 1):
        if k.stride != first.stride or k.dilation != first.dilation or k.offset() != first.offset():
            raise FoldError(f"split branch {i} is not on branch 0's output grid (stride/dilation/padding differ)")
    KH = max(k.kernel_size[0] for k in ks)
    KW = max(k.kernel_size[1] for k in ks)
    ks = [pad_kernel(to_dense(k), (KH, KW)) for k in ks]
    cin = sum(k.in_channels for k in ks)
    cout = sum(k.out_channels for k in ks)
    w = first.weight.new_zeros(cout, cin, KH, KW)
    o = c = 0
    for k in ks:
        w[o:o + k.out_channels, c:c + k.in_channels] = k.weight
        o += k.out_channels
        c += k.in_channels
    dense = replace(ks[0], weight=w, bias=torch.cat([k.bias for k in ks]), groups=1)
    # depthwise / grouped slices stay grouped when their groups line up (MixConv stays depthwise)
    return _try_regroup(dense, sum(k.groups for k in kernels), *(k.groups for k in kernels))


# ---------------------------------------------------------------------------------
# Serial composition
# ---------------------------------------------------------------------------------
def compose(first: ConvKernel, second: ConvKernel, first_output_padded_with_bias: bool = False) -> ConvKernel:
    """Two convs in series, ``second(first(x))``, as one conv.

    Exact when the second conv pads nothing, or the first has no bias, is a 1x1 with stride 1
    and no padding, and so zero-padding its output equals zero-padding its input. When the
    train-time block pads the first conv's output with its bias value (DBB's "BN and pad"),
    pass ``first_output_padded_with_bias=True`` and a biased first 1x1 is exact too.
    Otherwise the second conv's zero padding sees values the folded conv cannot reproduce,
    and this raises FoldError.
    """
    a, b = first.double(), second.double()
    if a.out_channels != b.in_channels:
        raise FoldError(f"serial convs do not chain: first gives {a.out_channels} channels, second reads {b.in_channels}")
    a_is_pointwise = a.kernel_size == (1, 1) and a.stride == (1, 1) and a.padding == (0, 0)
    b_is_pointwise = b.kernel_size == (1, 1) and b.stride == (1, 1) and b.padding == (0, 0)

    if b_is_pointwise:  # KxK then 1x1: F'[e] = sum_d W2[e, d] F1[d], b' = W2 b1 + b2
        A, B = to_dense(a), to_dense(b)
        w2 = B.weight[:, :, 0, 0]
        weight = (w2 @ A.weight.flatten(1)).view(w2.shape[0], *A.weight.shape[1:])  # matmul: einsum is slow on CPU
        bias = w2 @ A.bias + B.bias
        out = replace(A, weight=weight, bias=bias, groups=1)
        return _try_regroup(out, a.groups, b.groups)

    if b.padding != (0, 0) and not a_is_pointwise:
        raise FoldError(f"serial {a.kernel_size[0]}x{a.kernel_size[1]} -> padded {b.kernel_size[0]}x{b.kernel_size[1]}: "
                        "the second conv zero-pads the first one's output, which a single conv cannot reproduce "
                        "at the borders", hint="give the second conv padding=0 or use a 1x1 first")
    if b.padding != (0, 0) and a.bias.abs().max() > 0 and not first_output_padded_with_bias:
        raise FoldError("serial 1x1 with bias -> padded KxK: the KxK zero-pads the 1x1's output, but after folding "
                        "the border would see the 1x1's bias",
                        hint="pad with the bias value during training (DBB 'BN and pad') or drop the 1x1's bias/BN")
    if a.stride != (1, 1) or a.dilation != (1, 1) or b.dilation != (1, 1):
        if not a_is_pointwise:
            raise FoldError("serial composition of a strided or dilated first conv with a KxK conv is not supported")

    A, B = to_dense(a), to_dense(b)
    if a_is_pointwise:  # 1x1 then KxK: F' = F2 * TRANS(F1); b' = b2 + sum_taps F2 . b1
        w1 = A.weight[:, :, 0, 0]  # (d, c)
        weight = (B.weight.permute(0, 2, 3, 1) @ w1).permute(0, 3, 1, 2).contiguous()
        bias = B.bias + B.weight.sum((2, 3)) @ A.bias
        out = replace(B, weight=weight, bias=bias, groups=1)
        return _try_regroup(out, a.groups, b.groups)

    # KxK (stride 1, no dilation) then an unpadded KxK: a full convolution of the two kernels.
    kh = A.kernel_size[0] + B.kernel_size[0] - 1
    kw = A.kernel_size[1] + B.kernel_size[1] - 1
    # out[e, c] = sum_d B[e, d] (*) A[d, c]  (true convolution composes as correlation of flipped pieces)
    w_b = B.weight  # (e, d, h2, w2)
    w_a = A.weight.permute(1, 0, 2, 3)  # (c, d, h1, w1)
    weight = F.conv2d(w_a, w_b.flip(2, 3), padding=(B.kernel_size[0] - 1, B.kernel_size[1] - 1))  # (c, e, kh, kw)
    weight = weight.permute(1, 0, 2, 3).contiguous()
    bias = B.bias + B.weight.sum((2, 3)) @ A.bias
    assert weight.shape[2:] == (kh, kw)
    return ConvKernel(weight, bias, B.stride, A.padding, (1, 1), 1)


def _try_regroup(kernel: ConvKernel, *candidates: int) -> ConvKernel:
    """Keep the largest grouping under which the composed kernel is exactly block-diagonal
    (a grouped 1x1 then a depthwise pool stays grouped instead of turning dense)."""
    import math

    options = set(candidates)
    for a in candidates:
        for b in candidates:
            options.add(math.gcd(a, b))
    for g in sorted(options, reverse=True):
        if g <= 1 or kernel.out_channels % g or kernel.in_channels % g:
            continue
        try:
            return regroup(kernel, g)
        except FoldError:
            continue
    return kernel


# ---------------------------------------------------------------------------------
# Conv -> FC at a fixed resolution (RepMLP)
# ---------------------------------------------------------------------------------
def conv_as_fc(kernel: ConvKernel, in_shape: tuple[int, int, int]) -> tuple[Tensor, Tensor]:
    """A conv on a fixed ``(C, H, W)`` map as an FC layer: feed the identity basis through it.

    Returns ``(weight, bias)`` with weight of shape ``(D*Ho*Wo, C*H*W)`` acting on the
    flattened (C, H, W) input, so ``y.flatten() = weight @ x.flatten() + bias``.
    """
    c, h, w = in_shape
    if c != kernel.in_channels:
        raise FoldError(f"conv reads {kernel.in_channels} channels, the FC input has {c}")
    k = kernel.double()
    n = c * h * w
    eye = torch.eye(n, dtype=FOLD_DTYPE, device=k.weight.device).reshape(n, c, h, w)
    zero_bias = F.conv2d(eye, k.weight, None, k.stride, k.padding, k.dilation, k.groups)  # (n, D, Ho, Wo)
    weight = zero_bias.reshape(n, -1).t().contiguous()
    ho, wo = k.output_size(h, w)
    bias = k.bias.repeat_interleave(ho * wo)
    return weight, bias


__all__ = [
    "ConvKernel",
    "FOLD_DTYPE",
    "bn_scale_shift",
    "fuse_bn",
    "scale_channels",
    "fuse_linear_bn",
    "identity_kernel",
    "bn_as_kernel",
    "avgpool_kernel",
    "pad_kernel",
    "dilate_kernel",
    "to_dense",
    "regroup",
    "add_kernels",
    "concat_kernels",
    "split_input_kernels",
    "compose",
    "conv_as_fc",
]
