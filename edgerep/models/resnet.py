"""ResNet-18-style nets whose 3x3 convs are re-parameterizable blocks (ACNet or DBB), as in the
ACNet and DBB papers' ResNet experiments; residual adds and the 1x1 shortcut stay as they are."""
from __future__ import annotations

from typing import Callable

from torch import Tensor, nn

from edgerep.models.registry import register_model
from edgerep.models.repvgg import scale_width

#: conv_fn(in, out, stride, act) -> a KxK block with BN inside and ``act`` after it
ConvFn = Callable[[int, int, int, nn.Module], nn.Module]


def acnet_conv(cin: int, cout: int, stride: int, act: nn.Module) -> nn.Module:
    from edgerep.blocks import ACBlock

    return ACBlock(cin, cout, 3, stride=stride, act=act)


def dbb_conv(cin: int, cout: int, stride: int, act: nn.Module) -> nn.Module:
    from edgerep.blocks import DiverseBranchBlock

    return DiverseBranchBlock(cin, cout, 3, stride=stride, act=act)


class BasicBlock(nn.Module):
    """``relu(conv2(conv1(x)) + shortcut(x))``; conv1 carries its ReLU, conv2 none."""

    def __init__(self, cin: int, cout: int, stride: int, conv_fn: ConvFn):
        super().__init__()
        self.conv1 = conv_fn(cin, cout, stride, nn.ReLU())
        self.conv2 = conv_fn(cout, cout, 1, nn.Identity())
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class ResNet(nn.Module):
    """stem -> layer1..4 (``depths`` BasicBlocks each) -> global average pool -> fc."""

    def __init__(self, conv_fn: ConvFn, widths: tuple[int, ...] = (64, 128, 256, 512),
                 depths: tuple[int, ...] = (2, 2, 2, 2), num_classes: int = 1000, in_channels: int = 3,
                 imagenet_stem: bool = True):
        super().__init__()
        stem: list[nn.Module] = [conv_fn(in_channels, widths[0], 2 if imagenet_stem else 1, nn.ReLU())]
        if imagenet_stem:
            stem.append(nn.MaxPool2d(3, 2, 1))
        self.stem = nn.Sequential(*stem)
        cin = widths[0]
        for i, (w, d) in enumerate(zip(widths, depths)):
            blocks = [BasicBlock(cin if j == 0 else w, w, (1 if i == 0 else 2) if j == 0 else 1, conv_fn)
                      for j in range(d)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            cin = w
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.fc(self.gap(x).flatten(1))


@register_model("resnet18_acnet", "acnet", "ResNet-18 with ACNet 3x3 blocks (ImageNet)", (3, 224, 224), 1000)
def resnet18_acnet(num_classes: int = 1000, in_channels: int = 3, width_scale: float = 1.0) -> ResNet:
    widths = tuple(scale_width(w, width_scale) for w in (64, 128, 256, 512))
    return ResNet(acnet_conv, widths, num_classes=num_classes, in_channels=in_channels)


@register_model("resnet18_dbb", "dbb", "ResNet-18 with Diverse Branch Blocks (ImageNet)", (3, 224, 224), 1000)
def resnet18_dbb(num_classes: int = 1000, in_channels: int = 3, width_scale: float = 1.0) -> ResNet:
    widths = tuple(scale_width(w, width_scale) for w in (64, 128, 256, 512))
    return ResNet(dbb_conv, widths, num_classes=num_classes, in_channels=in_channels)


@register_model("resnet_acnet_cifar", "acnet", "ResNet-18-style, ACNet blocks, 3x32x32 (CIFAR stem, x1/4 width)",
                (3, 32, 32), 10)
def resnet_acnet_cifar(num_classes: int = 10, in_channels: int = 3) -> ResNet:
    return ResNet(acnet_conv, (16, 32, 64, 128), num_classes=num_classes, in_channels=in_channels,
                  imagenet_stem=False)


@register_model("resnet_dbb_cifar", "dbb", "ResNet-18-style, DBB blocks, 3x32x32 (CIFAR stem, x1/4 width)",
                (3, 32, 32), 10)
def resnet_dbb_cifar(num_classes: int = 10, in_channels: int = 3) -> ResNet:
    return ResNet(dbb_conv, (16, 32, 64, 128), num_classes=num_classes, in_channels=in_channels,
                  imagenet_stem=False)
