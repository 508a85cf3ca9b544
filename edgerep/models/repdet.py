"""RepDet: a small anchor-free YOLO-style detector (YOLOv6 family) whose backbone and neck are RepVGG
blocks and whose head is decoupled (a class branch and a box branch per stride), strides 8, 16, 32.

Output: ``(N, 4 + C, A)`` as ``edgerep.bench.detect_post.decode`` reads it: for every anchor point
(stride 8 first, then 16, 32; row-major within a level) rows 0-3 are the box ``cx, cy, w, h`` in input
pixels, rows ``4 ..`` the class probabilities (sigmoid). The box branch predicts the distances
(left, top, right, bottom) from the anchor point ``((j + 0.5) * s, (i + 0.5) * s)`` in units of the
stride ``s``. Any input whose sides are multiples of 32 works (square or not).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from edgerep.models.registry import register_model

STRIDES = (8, 16, 32)


def _rep(cin: int, cout: int, stride: int = 1) -> nn.Module:
    from edgerep.blocks.repvgg import RepVGGBlock

    return RepVGGBlock(cin, cout, 3, stride=stride)


class RepDetBackbone(nn.Module):
    """RepVGG stages to strides 2, 4, 8, 16, 32; returns the stride-8, 16 and 32 features."""

    def __init__(self, widths: tuple[int, int, int, int, int], depths: tuple[int, int, int, int], in_channels: int):
        super().__init__()
        self.stem = _rep(in_channels, widths[0], 2)
        stages = []
        for i, depth in enumerate(depths):
            c = widths[i + 1]
            blocks = [_rep(widths[i], c, 2)] + [_rep(c, c) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs[1:]  # strides 8, 16, 32


class RepPAN(nn.Module):
    """A RepVGG path-aggregation neck: top-down (upsample, concat, RepVGG) then bottom-up (RepVGG stride 2,
    concat, RepVGG); every level leaves with ``width`` channels."""

    def __init__(self, in_widths: tuple[int, int, int], width: int):
        super().__init__()
        c3, c4, c5 = in_widths
        self.reduce5 = _rep(c5, width)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.td4 = _rep(width + c4, width)
        self.td3 = _rep(width + c3, width)
        self.down3 = _rep(width, width, 2)
        self.bu4 = _rep(2 * width, width)
        self.down4 = _rep(width, width, 2)
        self.bu5 = _rep(2 * width, width)

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        c3, c4, c5 = feats
        p5 = self.reduce5(c5)
        p4 = self.td4(torch.cat([self.up(p5), c4], 1))
        p3 = self.td3(torch.cat([self.up(p4), c3], 1))
        n4 = self.bu4(torch.cat([self.down3(p3), p4], 1))
        n5 = self.bu5(torch.cat([self.down4(n4), p5], 1))
        return [p3, n4, n5]


class DecoupledHead(nn.Module):
    """One level's head: a shared RepVGG stem, then a class branch and a box branch (RepVGG + 1x1 conv)."""

    def __init__(self, width: int, num_classes: int):
        super().__init__()
        self.stem = _rep(width, width)
        self.cls_conv, self.reg_conv = _rep(width, width), _rep(width, width)
        self.cls_pred = nn.Conv2d(width, num_classes, 1)
        self.reg_pred = nn.Conv2d(width, 4, 1)
        nn.init.constant_(self.cls_pred.bias, -4.6)  # prior p = 0.01, as detectors start
        nn.init.constant_(self.reg_pred.bias, 1.0)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.stem(x)
        return self.cls_pred(self.cls_conv(x)), self.reg_pred(self.reg_conv(x))


class RepDet(nn.Module):
    """Backbone + neck + decoupled heads; ``forward`` returns the decoded ``(N, 4 + C, A)`` layout, and
    ``raw`` the per-level (class logits, ltrb distances) a training loss needs."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3,
                 widths: tuple[int, int, int, int, int] = (16, 24, 32, 48, 64),
                 depths: tuple[int, int, int, int] = (1, 2, 2, 1), neck_width: int = 32):
        super().__init__()
        self.num_classes, self.strides = num_classes, STRIDES
        self.backbone = RepDetBackbone(widths, depths, in_channels)
        self.neck = RepPAN((widths[2], widths[3], widths[4]), neck_width)
        self.heads = nn.ModuleList(DecoupledHead(neck_width, num_classes) for _ in STRIDES)

    def raw(self, x: Tensor) -> list[tuple[Tensor, Tensor]]:
        return [head(f) for head, f in zip(self.heads, self.neck(self.backbone(x)))]

    def forward(self, x: Tensor) -> Tensor:
        """Decode all levels at once (one Mul / Sub / Add / Div chain on the concatenated anchors, ~20 ONNX nodes
        rather than ~70 per-level ones: the float tail costs the same in FP32 and INT8 files, so its size bounds
        INT8's speed-up); every element goes through the same float operations as in a per-level decode (the sigmoid
        may differ in the last bit where a vector kernel's tail falls elsewhere: 3.6e-12 at most seen)."""
        regs, clss, anchors, strides = [], [], [], []
        for (cls, reg), s in zip(self.raw(x), self.strides):
            _, _, h, w = cls.shape
            ys = (torch.arange(h, dtype=reg.dtype, device=reg.device) + 0.5) * s
            xs = (torch.arange(w, dtype=reg.dtype, device=reg.device) + 0.5) * s
            ay, ax = torch.meshgrid(ys, xs, indexing="ij")
            anchors.append(torch.stack([ax.reshape(-1), ay.reshape(-1)]))
            strides.append(torch.full((h * w,), float(s), dtype=reg.dtype, device=reg.device))
            regs.append(reg.flatten(2))
            clss.append(cls.flatten(2))
        d = torch.cat(regs, 2) * torch.cat(strides)  # (N, 4, A): left, top, right, bottom in pixels
        a = torch.cat(anchors, 1)  # (2, A): anchor x, y
        lo, hi = a - d[:, :2], a + d[:, 2:]  # x1, y1 and x2, y2
        return torch.cat([(lo + hi) / 2, hi - lo, torch.cat(clss, 2).sigmoid()], 1)


@register_model("repdet_scenes", "repdet", "anchor-free RepVGG detector (strides 8/16/32, decoupled head) for "
                "3x160x160 scenes; output (N, 4 + C, anchors)", (3, 160, 160), 10, task="detect")
def repdet_scenes(num_classes: int = 10, in_channels: int = 3, width_scale: float = 1.0) -> RepDet:
    """16-64 channels (0.32 M parameters) at ``width_scale`` 1; ``width_scale`` shrinks or widens every layer (tests use
    0.125; the shipped demo checkpoint is 2.5, 40-160 channels and 1.96 M parameters: below that width onnxruntime's
    INT8 convs are barely faster than its FP32 ones on x86, benchmarks/RESULTS.md stop 33)."""
    w = tuple(max(4, round(c * width_scale)) for c in (16, 24, 32, 48, 64))
    return RepDet(num_classes, in_channels, w, neck_width=max(4, round(32 * width_scale)))  # type: ignore[arg-type]
