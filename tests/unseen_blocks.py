"""Blocks the graph folder has never seen, written as plain nn.Modules the way other code bases
write them (official names, their own forward). Test-only: nothing in edgerep imports this.

Where the original code base ships its own fold (RepVGG, MobileOne) it is reproduced here as the
reference the generic folder must agree with.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BN non-trivial statistics (fresh BNs are identities and hide fold bugs); eval mode."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            with torch.no_grad():
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    return model.eval()


def _conv_bn(cin: int, cout: int, k, stride: int = 1, padding=0, groups: int = 1) -> nn.Sequential:
    result = nn.Sequential()
    result.add_module("conv", nn.Conv2d(cin, cout, k, stride, padding, groups=groups, bias=False))
    result.add_module("bn", nn.BatchNorm2d(cout))
    return result


def _fuse_bn_tensor(kernel: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    std = (bn.running_var + bn.eps).sqrt()
    t = (bn.weight / std).reshape(-1, 1, 1, 1)
    return kernel * t, bn.bias - bn.running_mean * bn.weight / std


# ---------------------------------------------------------------------------------
# RepVGG, the official way (DingXiaoH/RepVGG repvgg.py, SE omitted)
# ---------------------------------------------------------------------------------
class OfficialRepVGGBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, padding: int = 1,
                 groups: int = 1, deploy: bool = False):
        super().__init__()
        self.deploy = deploy
        self.groups = groups
        self.in_channels = in_channels
        padding_11 = padding - kernel_size // 2
        self.nonlinearity = nn.ReLU()
        self.se = nn.Identity()
        if deploy:
            self.rbr_reparam = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups,
                                         bias=True)
        else:
            self.rbr_identity = nn.BatchNorm2d(in_channels) if out_channels == in_channels and stride == 1 else None
            self.rbr_dense = _conv_bn(in_channels, out_channels, kernel_size, stride, padding, groups)
            self.rbr_1x1 = _conv_bn(in_channels, out_channels, 1, stride, padding_11, groups)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "rbr_reparam"):
            return self.nonlinearity(self.se(self.rbr_reparam(inputs)))
        if self.rbr_identity is None:
            id_out = 0
        else:
            id_out = self.rbr_identity(inputs)
        return self.nonlinearity(self.se(self.rbr_dense(inputs) + self.rbr_1x1(inputs) + id_out))

    # the official fold, used as the reference
    def get_equivalent_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        k3, b3 = self._fuse_bn_tensor(self.rbr_dense)
        k1, b1 = self._fuse_bn_tensor(self.rbr_1x1)
        kid, bid = self._fuse_bn_tensor(self.rbr_identity)
        return k3 + F.pad(k1, [1, 1, 1, 1]) + kid, b3 + b1 + bid

    def _fuse_bn_tensor(self, branch):
        if branch is None:
            return 0, 0
        if isinstance(branch, nn.Sequential):
            return _fuse_bn_tensor(branch.conv.weight, branch.bn)
        input_dim = self.in_channels // self.groups
        kernel_value = np.zeros((self.in_channels, input_dim, 3, 3), dtype=np.float32)
        for i in range(self.in_channels):
            kernel_value[i, i % input_dim, 1, 1] = 1
        return _fuse_bn_tensor(torch.from_numpy(kernel_value), branch)

    def switch_to_deploy(self) -> None:
        kernel, bias = self.get_equivalent_kernel_bias()
        conv = self.rbr_dense.conv
        self.rbr_reparam = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                                     conv.padding, conv.dilation, conv.groups, bias=True)
        self.rbr_reparam.weight.data = kernel.detach()
        self.rbr_reparam.bias.data = bias.detach()
        for name in ("rbr_dense", "rbr_1x1", "rbr_identity"):
            if hasattr(self, name):
                delattr(self, name)
        self.deploy = True


# ---------------------------------------------------------------------------------
# MobileOne, the official way (apple/ml-mobileone mobileone.py, SE omitted)
# ---------------------------------------------------------------------------------
class OfficialMobileOneBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 groups: int = 1, inference_mode: bool = False, num_conv_branches: int = 1):
        super().__init__()
        self.inference_mode = inference_mode
        self.groups = groups
        self.stride = stride
        self.kernel_size = kernel_size
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_conv_branches = num_conv_branches
        self.padding = padding
        self.se = nn.Identity()
        self.activation = nn.ReLU()
        self.rbr_skip = nn.BatchNorm2d(in_channels) if out_channels == in_channels and stride == 1 else None
        self.rbr_conv = nn.ModuleList([_conv_bn(in_channels, out_channels, kernel_size, stride, padding, groups)
                                       for _ in range(num_conv_branches)])
        self.rbr_scale = _conv_bn(in_channels, out_channels, 1, stride, 0, groups) if kernel_size > 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inference_mode:
            return self.activation(self.se(self.reparam_conv(x)))
        identity_out = 0
        if self.rbr_skip is not None:
            identity_out = self.rbr_skip(x)
        scale_out = 0
        if self.rbr_scale is not None:
            scale_out = self.rbr_scale(x)
        out = scale_out + identity_out
        for ix in range(self.num_conv_branches):
            out += self.rbr_conv[ix](x)
        return self.activation(self.se(out))

    def reparameterize(self) -> None:
        kernel, bias = self._get_kernel_bias()
        self.reparam_conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride,
                                      self.padding, groups=self.groups, bias=True)
        self.reparam_conv.weight.data = kernel
        self.reparam_conv.bias.data = bias
        for name in ("rbr_conv", "rbr_scale", "rbr_skip"):
            if hasattr(self, name):
                delattr(self, name)
        self.inference_mode = True

    def _get_kernel_bias(self):
        kernel_scale, bias_scale = 0, 0
        if self.rbr_scale is not None:
            kernel_scale, bias_scale = _fuse_bn_tensor(self.rbr_scale.conv.weight, self.rbr_scale.bn)
            pad = self.kernel_size // 2
            kernel_scale = F.pad(kernel_scale, [pad, pad, pad, pad])
        kernel_identity, bias_identity = 0, 0
        if self.rbr_skip is not None:
            input_dim = self.in_channels // self.groups
            k = torch.zeros((self.in_channels, input_dim, self.kernel_size, self.kernel_size))
            for i in range(self.in_channels):
                k[i, i % input_dim, self.kernel_size // 2, self.kernel_size // 2] = 1
            kernel_identity, bias_identity = _fuse_bn_tensor(k, self.rbr_skip)
        kernel_conv, bias_conv = 0, 0
        for ix in range(self.num_conv_branches):
            k, b = _fuse_bn_tensor(self.rbr_conv[ix].conv.weight, self.rbr_conv[ix].bn)
            kernel_conv = kernel_conv + k
            bias_conv = bias_conv + b
        kernel = kernel_conv + kernel_scale + kernel_identity
        bias = bias_conv + bias_scale + bias_identity
        return kernel.detach(), bias.detach()


class MobileOneUnit(nn.Module):
    """MobileOne's stage unit: a depthwise block then a pointwise block."""

    def __init__(self, in_channels: int, out_channels: int, k: int = 3):
        super().__init__()
        self.dw = OfficialMobileOneBlock(in_channels, in_channels, 3, 1, 1, groups=in_channels, num_conv_branches=k)
        self.pw = OfficialMobileOneBlock(in_channels, out_channels, 1, 1, 0, groups=1, num_conv_branches=k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


# ---------------------------------------------------------------------------------
# A 5-branch asymmetric block (ACNet style, plus 1x1 and identity; each with BN)
# ---------------------------------------------------------------------------------
def tinynet_digits() -> TinyNet:
    """A factory for ``--arch unseen_blocks:tinynet_digits``: TinyNet on 1x16x16 digits, 10 classes."""
    return TinyNet(c=8, classes=10, in_channels=1)


class FiveBranchAsym(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        c = channels
        self.square = _conv_bn(c, c, 3, 1, 1)
        self.hor = _conv_bn(c, c, (1, 5), 1, (0, 2))
        self.ver = _conv_bn(c, c, (5, 1), 1, (2, 0))
        self.point = _conv_bn(c, c, 1, 1, 0)
        self.idbn = nn.BatchNorm2d(c)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.square(x) + self.hor(x) + self.ver(x) + self.point(x) + self.idbn(x))


# ---------------------------------------------------------------------------------
# DBB with BN-and-pad (DingXiaoH/DiverseBranchBlock style, written from scratch)
# ---------------------------------------------------------------------------------
class BNAndPadLayer(nn.Module):
    def __init__(self, pad_pixels: int, num_features: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features)
        self.pad_pixels = pad_pixels

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        output = self.bn(input)
        if self.pad_pixels > 0:
            if self.bn.affine:
                pad_values = self.bn.bias.detach() - self.bn.running_mean * self.bn.weight.detach() / torch.sqrt(
                    self.bn.running_var + self.bn.eps)
            else:
                pad_values = -self.bn.running_mean / torch.sqrt(self.bn.running_var + self.bn.eps)
            output = F.pad(output, [self.pad_pixels] * 4)
            pad_values = pad_values.view(1, -1, 1, 1)
            output[:, :, 0:self.pad_pixels, :] = pad_values
            output[:, :, -self.pad_pixels:, :] = pad_values
            output[:, :, :, 0:self.pad_pixels] = pad_values
            output[:, :, :, -self.pad_pixels:] = pad_values
        return output


class IdentityBasedConv1x1(nn.Conv2d):
    def __init__(self, channels: int):
        super().__init__(channels, channels, 1, 1, 0, bias=False)
        id_value = np.zeros((channels, channels, 1, 1))
        for i in range(channels):
            id_value[i, i, 0, 0] = 1
        self.id_tensor = torch.from_numpy(id_value).type_as(self.weight)  # a plain attribute, as upstream
        nn.init.normal_(self.weight, std=0.1)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        kernel = self.weight + self.id_tensor.to(self.weight.device).type_as(self.weight)
        return F.conv2d(input, kernel, None, stride=1, padding=0, dilation=self.dilation, groups=self.groups)


class ForeignDBB(nn.Module):
    """KxK+BN, 1x1+BN, 1x1(identity-based)->BNAndPad->KxK->BN, 1x1->BNAndPad->avgpool->BN; ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1):
        super().__init__()
        p = kernel_size // 2
        self.dbb_origin = _conv_bn(in_channels, out_channels, kernel_size, stride, p)
        self.dbb_avg = nn.Sequential()
        self.dbb_avg.add_module("conv", nn.Conv2d(in_channels, out_channels, 1, 1, 0, bias=False))
        self.dbb_avg.add_module("bn", BNAndPadLayer(p, out_channels))
        self.dbb_avg.add_module("avg", nn.AvgPool2d(kernel_size, stride, 0))
        self.dbb_avg.add_module("avgbn", nn.BatchNorm2d(out_channels))
        self.dbb_1x1 = _conv_bn(in_channels, out_channels, 1, stride, 0)
        self.dbb_1x1_kxk = nn.Sequential()
        self.dbb_1x1_kxk.add_module("idconv1", IdentityBasedConv1x1(in_channels))
        self.dbb_1x1_kxk.add_module("bn1", BNAndPadLayer(p, in_channels))
        self.dbb_1x1_kxk.add_module("conv2", nn.Conv2d(in_channels, out_channels, kernel_size, stride, 0, bias=False))
        self.dbb_1x1_kxk.add_module("bn2", nn.BatchNorm2d(out_channels))
        self.nonlinear = nn.ReLU()

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        out = self.dbb_origin(inputs)
        if hasattr(self, "dbb_1x1"):
            out += self.dbb_1x1(inputs)
        out += self.dbb_avg(inputs)
        out += self.dbb_1x1_kxk(inputs)
        return self.nonlinear(out)


# ---------------------------------------------------------------------------------
# DO-Conv (yangyanli/DO-Conv style): the kernel is composed from D and W in forward
# ---------------------------------------------------------------------------------
class DOConv2dLike(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, padding: int = 1, stride: int = 1):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = (kernel_size, kernel_size)
        self.stride, self.padding = stride, padding
        m, n = self.kernel_size
        self.D_mul = m * n
        self.W = nn.Parameter(torch.randn(out_channels, in_channels, self.D_mul) * 0.2)
        self.D = nn.Parameter(torch.randn(in_channels, m * n, self.D_mul) * 0.1)
        eye = torch.eye(m * n).reshape(1, m * n, m * n).repeat(in_channels, 1, 1)
        self.d_diag = nn.Parameter(eye, requires_grad=False)
        self.bias = nn.Parameter(torch.randn(out_channels) * 0.1)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        m, n = self.kernel_size
        dow_shape = (self.out_channels, self.in_channels, m, n)
        D = self.D + self.d_diag
        W = torch.reshape(self.W, (self.out_channels, self.in_channels, self.D_mul))
        DoW = torch.reshape(torch.einsum("ims,ois->oim", D, W), dow_shape)
        return F.conv2d(input, DoW, self.bias, self.stride, self.padding)

    def composed_kernel(self) -> torch.Tensor:
        with torch.no_grad():
            D = self.D + self.d_diag
            return torch.einsum("ims,ois->oim", D, self.W).reshape(self.out_channels, self.in_channels,
                                                                    *self.kernel_size)


# ---------------------------------------------------------------------------------
# ResNet basic block (torchvision style): conv+BN fold, the residual add stays
# ---------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        out = self.relu(out)
        return out


# ---------------------------------------------------------------------------------
# Structures that must NOT fold (or only partly)
# ---------------------------------------------------------------------------------
class SerialBiasPadded(nn.Module):
    """1x1 with bias, then a zero-padded 3x3: the border sees zeros, a fold would see the bias."""

    def __init__(self, c: int):
        super().__init__()
        self.pw = nn.Conv2d(c, c, 1, bias=True)
        self.bn = nn.BatchNorm2d(c)
        self.conv = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn2(self.conv(self.bn(self.pw(x)))))


class DataDependent(nn.Module):
    """Data-dependent control flow around a foldable conv+BN: not traceable as a whole."""

    def __init__(self, c: int):
        super().__init__()
        self.branch = _conv_bn(c, c, 3, 1, 1)
        self.extra = _conv_bn(c, c, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.branch(x) + self.extra(x)
        if y.mean() > 1e6:  # data-dependent: symbolic tracing fails here
            y = y * 0
        return torch.relu(y)


# ---------------------------------------------------------------------------------
# Other affine structures: ExpandNet chain, MixConv (split / concat), avgpool branch
# ---------------------------------------------------------------------------------
class ExpandChain(nn.Module):
    """ExpandNet's serial expansion: 1x1 (wide) -> 3x3 -> 1x1, no non-linearity in between."""

    def __init__(self, c: int, r: int = 4):
        super().__init__()
        self.expand = nn.Conv2d(c, r * c, 1, bias=False)
        self.conv = nn.Conv2d(r * c, r * c, 3, 1, 1, bias=True)
        self.squeeze = nn.Conv2d(r * c, c, 1, bias=True)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.squeeze(self.conv(self.expand(x)))))


class MixConvLike(nn.Module):
    """MixConv: channel groups see 3x3 / 5x5 depthwise kernels, joined by concat, then BN."""

    def __init__(self, c: int):
        super().__init__()
        self.splits = [c // 2, c - c // 2]
        self.convs = nn.ModuleList([nn.Conv2d(s, s, k, 1, k // 2, groups=s, bias=False)
                                    for s, k in zip(self.splits, (3, 5))])
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_split = torch.split(x, self.splits, 1)  # timm's MixedConv2d style
        y = torch.cat([c(x_split[i]) for i, c in enumerate(self.convs)], 1)
        return F.relu(self.bn(y))


class ScaledResidualFC(nn.Module):
    """An MLP head: Linear -> BN1d, Linear expansion pair, layer-scale constant: folds to one Linear."""

    def __init__(self, d: int):
        super().__init__()
        self.fc1 = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)
        self.bn = nn.BatchNorm1d(d)
        self.gamma = nn.Parameter(torch.rand(d) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        return torch.relu(self.bn(self.fc2(self.fc1(x))) * self.gamma)


class TinyNet(nn.Module):
    """A small whole network mixing the foreign blocks (stem, stages, head)."""

    def __init__(self, c: int = 8, classes: int = 5, in_channels: int = 3):
        super().__init__()
        self.stem = OfficialRepVGGBlock(in_channels, c, 3, 2, 1)
        self.s1 = FiveBranchAsym(c)
        self.s2 = ForeignDBB(c, c)
        self.s3 = BasicBlock(c, 2 * c, 2)
        self.s4 = MobileOneUnit(2 * c, 2 * c, k=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(2 * c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.s4(self.s3(self.s2(self.s1(self.stem(x)))))
        return self.head(torch.flatten(self.pool(x), 1))


class SeparableNoAct(nn.Module):
    """Xception-style separable conv: depthwise 3x3 then pointwise 1x1 with nothing in between.
    Exactly foldable, but one dense 3x3 would cost ~9x the MACs: it must stay two convs (pw + BN fold)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.dw = nn.Conv2d(cin, cin, 3, 1, 1, groups=cin, bias=False)
        self.pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.pw(self.dw(x))))


class FunctionalBlock(nn.Module):
    """Everything written with functions: conv2d / batch_norm / avg_pool2d calls on raw parameters,
    add with alpha, subtraction, division and negation by constants, a per-channel learned scale."""

    def __init__(self, c: int):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.w3 = nn.Parameter(torch.randn(c, c, 3, 3, generator=g) * 0.2)
        self.w1 = nn.Parameter(torch.randn(c, c, 1, 1, generator=g) * 0.2)
        self.scale = nn.Parameter(torch.rand(c, generator=g) + 0.5)
        self.gamma = nn.Parameter(torch.rand(c, generator=g) + 0.5)
        self.beta = nn.Parameter(torch.rand(c, generator=g) - 0.5)
        self.register_buffer("mean", torch.rand(c, generator=g) - 0.5)
        self.register_buffer("var", torch.rand(c, generator=g) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.batch_norm(F.conv2d(x, self.w3, None, 1, 1), self.mean, self.var, self.gamma, self.beta, False, 0.1,
                         1e-5)
        b = F.conv2d(x, self.w1) * self.scale.view(1, -1, 1, 1)
        y = torch.add(a, b, alpha=0.5) - x / 2 + (-F.avg_pool2d(x, 3, 1, 1))
        return F.relu(y)


class InvertedResidual(nn.Module):
    """MobileNetV2's block, torchvision style: Conv-BN-ReLU6 containers, a linear (no activation)
    projection, and the residual add when the shape allows."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = inp * expand_ratio
        self.use_res_connect = stride == 1 and inp == oup
        self.conv = nn.Sequential(
            nn.Sequential(nn.Conv2d(inp, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)),
            nn.Sequential(nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
                          nn.ReLU6(inplace=True)),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class OfficialACBlock(nn.Module):
    """ACNet's ACBlock the official way (DingXiaoH/ACNet acb.py), incl. its crop variant: with
    ``padding < kernel_size // 2`` the 1xK / Kx1 branches read a cropped input."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, padding: int = 1):
        super().__init__()
        self.square_conv = nn.Conv2d(in_channels, out_channels, (kernel_size, kernel_size), stride, padding,
                                     bias=False)
        self.square_bn = nn.BatchNorm2d(out_channels)
        if padding - kernel_size // 2 >= 0:
            self.crop = 0
            hor_padding = [padding - kernel_size // 2, padding]
            ver_padding = [padding, padding - kernel_size // 2]
        else:
            self.crop = kernel_size // 2 - padding
            hor_padding = [0, padding]
            ver_padding = [padding, 0]
        self.ver_conv = nn.Conv2d(in_channels, out_channels, (kernel_size, 1), stride, ver_padding, bias=False)
        self.hor_conv = nn.Conv2d(in_channels, out_channels, (1, kernel_size), stride, hor_padding, bias=False)
        self.ver_bn = nn.BatchNorm2d(out_channels)
        self.hor_bn = nn.BatchNorm2d(out_channels)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        square_outputs = self.square_bn(self.square_conv(input))
        if self.crop > 0:
            ver_input = input[:, :, :, self.crop:-self.crop]
            hor_input = input[:, :, self.crop:-self.crop, :]
        else:
            ver_input = input
            hor_input = input
        vertical_outputs = self.ver_bn(self.ver_conv(ver_input))
        horizontal_outputs = self.hor_bn(self.hor_conv(hor_input))
        return square_outputs + vertical_outputs + horizontal_outputs


class AssembledKernel(nn.Module):
    """Builds its 3x3 kernel in forward by writing a learned 1x3 row and the ends of a 3x1 column
    into a zero kernel (a hand-rolled ACNet cross), then conv + BN."""

    def __init__(self, c: int):
        super().__init__()
        g = torch.Generator().manual_seed(2)
        self.w_hor = nn.Parameter(torch.randn(c, c, 1, 3, generator=g) * 0.3)
        self.w_ver = nn.Parameter(torch.randn(c, c, 3, 1, generator=g) * 0.3)
        self.bn = nn.BatchNorm2d(c)
        self.c = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = torch.zeros(self.c, self.c, 3, 3, dtype=x.dtype, device=x.device)
        k[:, :, 1:2, :] = self.w_hor
        k[:, :, 0:1, 1:2] = self.w_ver[:, :, 0:1]
        k[:, :, 2:3, 1:2] = self.w_ver[:, :, 2:3]
        return torch.relu(self.bn(F.conv2d(x, k, None, 1, 1)))


class FrozenBatchNorm2d(nn.Module):
    """torchvision's FrozenBatchNorm2d: BN written as ``x * scale + bias`` from buffers."""

    def __init__(self, n: int, eps: float = 1e-5):
        super().__init__()
        g = torch.Generator().manual_seed(n)
        self.eps = eps
        self.register_buffer("weight", torch.rand(n, generator=g) + 0.5)
        self.register_buffer("bias", torch.rand(n, generator=g) - 0.5)
        self.register_buffer("running_mean", torch.rand(n, generator=g) - 0.5)
        self.register_buffer("running_var", torch.rand(n, generator=g) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.reshape(1, -1, 1, 1)
        b = self.bias.reshape(1, -1, 1, 1)
        rv = self.running_var.reshape(1, -1, 1, 1)
        rm = self.running_mean.reshape(1, -1, 1, 1)
        scale = w * (rv + self.eps).rsqrt()
        bias = b - rm * scale
        return x * scale + bias


# ---------------------------------------------------------------------------------
# ECB (xindongzhang/ECBSR style, written from scratch): 1x1 -> fixed Sobel / Laplacian depthwise
# filters times a learned scale, summed with a 3x3 and a 1x1 -> 3x3
# ---------------------------------------------------------------------------------
SOBEL_X = [[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]]
SOBEL_Y = [[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]]
LAPLACIAN = [[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]


class OfficialSeqConv3x3(nn.Module):
    """The official ECBSR sequence: raw k0/b0 parameters, the 1x1 output padded with b0 by slice
    assignment, then an unpadded 3x3 (dense k1, or depthwise ``scale * mask``)."""

    def __init__(self, seq_type: str, inp_planes: int, out_planes: int, depth_multiplier: float = 1.0):
        super().__init__()
        self.type, self.out_planes = seq_type, out_planes
        if seq_type == "conv1x1-conv3x3":
            mid = int(out_planes * depth_multiplier)
            conv0 = nn.Conv2d(inp_planes, mid, kernel_size=1, padding=0)
            self.k0, self.b0 = conv0.weight, conv0.bias
            conv1 = nn.Conv2d(mid, out_planes, kernel_size=3)
            self.k1, self.b1 = conv1.weight, conv1.bias
        else:
            conv0 = nn.Conv2d(inp_planes, out_planes, kernel_size=1, padding=0)
            self.k0, self.b0 = conv0.weight, conv0.bias
            self.scale = nn.Parameter(torch.randn(out_planes, 1, 1, 1))
            self.bias = nn.Parameter(torch.randn(out_planes))
            fixed = {"conv1x1-sobelx": SOBEL_X, "conv1x1-sobely": SOBEL_Y, "conv1x1-laplacian": LAPLACIAN}[seq_type]
            mask = torch.tensor(fixed).repeat(out_planes, 1, 1, 1)
            self.mask = nn.Parameter(data=mask, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y0 = F.conv2d(input=x, weight=self.k0, bias=self.b0, stride=1)
        y0 = F.pad(y0, (1, 1, 1, 1), "constant", 0)
        b0_pad = self.b0.view(1, -1, 1, 1)
        y0[:, :, 0:1, :] = b0_pad
        y0[:, :, -1:, :] = b0_pad
        y0[:, :, :, 0:1] = b0_pad
        y0[:, :, :, -1:] = b0_pad
        if self.type == "conv1x1-conv3x3":
            return F.conv2d(input=y0, weight=self.k1, bias=self.b1, stride=1)
        return F.conv2d(input=y0, weight=self.scale * self.mask, bias=self.bias, stride=1, groups=self.out_planes)


class OfficialECB(nn.Module):
    """The official ECBSR block (training-time branches; PReLU)."""

    def __init__(self, inp_planes: int, out_planes: int, depth_multiplier: float = 2.0, with_idt: bool = False):
        super().__init__()
        self.conv3x3 = nn.Conv2d(inp_planes, out_planes, kernel_size=3, padding=1)
        self.conv1x1_3x3 = OfficialSeqConv3x3("conv1x1-conv3x3", inp_planes, out_planes, depth_multiplier)
        self.conv1x1_sbx = OfficialSeqConv3x3("conv1x1-sobelx", inp_planes, out_planes)
        self.conv1x1_sby = OfficialSeqConv3x3("conv1x1-sobely", inp_planes, out_planes)
        self.conv1x1_lpl = OfficialSeqConv3x3("conv1x1-laplacian", inp_planes, out_planes)
        self.with_idt = with_idt and inp_planes == out_planes
        self.act = nn.PReLU(num_parameters=out_planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3x3(x) + self.conv1x1_3x3(x) + self.conv1x1_sbx(x) + self.conv1x1_sby(x) + self.conv1x1_lpl(x)
        if self.with_idt:
            y += x
        return self.act(y)


class EdgeFilter(nn.Module):
    """A depthwise 3x3 whose weight is a fixed filter (buffer) times a learned per-channel scale."""

    def __init__(self, channels: int, fixed: list, padding: int, groups_from_input: bool = False):
        super().__init__()
        self.groups_from_input = groups_from_input
        self.register_buffer("filt", torch.tensor(fixed).expand(channels, 1, 3, 3).clone())
        self.scale = nn.Parameter(torch.randn(channels, 1, 1, 1))
        self.bias = nn.Parameter(torch.randn(channels))
        self.padding, self.groups = padding, channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = x.shape[1] if self.groups_from_input else self.groups  # a depthwise conv written for any width
        return F.conv2d(x, self.filt * self.scale, self.bias, padding=self.padding, groups=groups)


class PlainModuleECB(nn.Module):
    """An ECB written with plain modules: ``nn.Conv2d`` 1x1s, each followed by an ``EdgeFilter``, summed
    with a 3x3 branch. With ``border="bias"`` the 1x1 output is padded with its bias by ``F.pad`` with a
    value per channel... done here with a ``BNAndPadLayer``-like fill; with ``border="zeros"`` the 1x1
    has no bias and the depthwise conv zero-pads (exact too); ``border="zeros-biased"`` keeps the 1x1's
    bias under zero padding, which no single 3x3 reproduces at the border."""

    def __init__(self, c_in: int, c_out: int, border: str = "bias", groups_from_input: bool = False):
        super().__init__()
        self.border = border
        self.conv3x3 = nn.Conv2d(c_in, c_out, 3, padding=1)
        biased = border != "zeros"
        self.reduce = nn.ModuleList([nn.Conv2d(c_in, c_out, 1, bias=biased) for _ in range(3)])
        pad = 0 if border == "bias" else 1
        self.edges = nn.ModuleList([EdgeFilter(c_out, f, pad, groups_from_input) for f in (SOBEL_X, SOBEL_Y, LAPLACIAN)])
        self.act = nn.PReLU(c_out)

    def _pad_with_bias(self, y: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
        y = F.pad(y, [1, 1, 1, 1])
        v = conv.bias.view(1, -1, 1, 1)
        y[:, :, :1, :] = v
        y[:, :, -1:, :] = v
        y[:, :, :, :1] = v
        y[:, :, :, -1:] = v
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3x3(x)
        for conv, edge in zip(self.reduce, self.edges):
            t = conv(x)
            if self.border == "bias":
                t = self._pad_with_bias(t, conv)
            y = y + edge(t)
        return self.act(y)
