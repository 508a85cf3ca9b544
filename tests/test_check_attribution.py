"""Folded layers map back to train-time modules, and outlier channels to the branch that made them."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from edgerep.blocks import ACBlock, DiverseBranchBlock, QARepVGGBlock, RepVGGBlock
from edgerep.blocks.base import ReparamBlock
from edgerep.fold.kernel import ConvKernel
from edgerep.quant.attribution import attribute, fold_for_check


def _randomize_bn(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))


class Net(nn.Module):
    def __init__(self, block_fn):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.body = nn.Sequential(block_fn(8, 8), block_fn(8, 8))
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        return self.head(self.body(self.stem(x)).mean((2, 3)))


BLOCKS = {
    "repvgg": lambda i, o: RepVGGBlock(i, o),
    "qarepvgg": lambda i, o: QARepVGGBlock(i, o),
    "acnet": lambda i, o: ACBlock(i, o),
    "dbb": lambda i, o: DiverseBranchBlock(i, o),
}


@pytest.mark.parametrize("family", sorted(BLOCKS))
def test_fold_for_check_is_exact_and_names_layers_by_module_path(family):
    torch.manual_seed(0)
    model = Net(BLOCKS[family])
    _randomize_bn(model)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded, layers = fold_for_check(model)
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        assert torch.allclose(model(x), folded(x), rtol=1e-4, atol=1e-5)
    assert [(l.name, l.kind) for l in layers] == [("stem.0", "conv+bn"), ("body.0", "reparam block"),
                                                  ("body.1", "reparam block"), ("head", "linear")]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # input untouched
    for layer in layers:
        a = attribute(layer)
        assert a.available, a.note  # every branch set lines up with, and sums to, the folded kernel


def test_identity_bn_with_collapsed_variance_is_named_with_gamma_over_sigma():
    torch.manual_seed(0)
    block = RepVGGBlock(16, 16)
    _randomize_bn(block)
    with torch.no_grad():
        block.identity.running_var[11] = 1e-4
        block.identity.weight[11] = 1.0
    block.eval()
    holder = nn.Sequential(block)
    _, layers = fold_for_check(holder)
    a = attribute(layers[0])
    assert a.outlier_channels == 1
    ch = a.channels[0]
    assert ch.channel == 11 and ch.dominant == "identity"
    expected = 1.0 / math.sqrt(1e-4 + block.identity.eps)
    ident = next(b for b in ch.branches if b.branch == "identity")
    assert ident.words == "identity-BN"
    assert math.isclose(ident.bn["gamma_over_sigma"], expected, rel_tol=1e-6)
    assert math.isclose(sum(b.share for b in ch.branches), 1.0, rel_tol=1e-6)
    assert ident.share > 0.95
    assert a.dominant_branch == "identity"
    assert ch.sentence.startswith(f"0 channel 11: identity-BN gamma/sigma = {expected:.3g}")
    dense = next(b for b in ch.branches if b.branch == "dense")
    assert f"{ident.peak / dense.peak:.0f}x the dense 3x3 conv+BN branch" in ch.sentence


def test_acnet_horizontal_branch_gets_the_blame_for_its_gamma():
    torch.manual_seed(0)
    block = ACBlock(8, 12)
    _randomize_bn(block)
    with torch.no_grad():
        block.hor_bn.weight[4] = 80.0
    block.eval()
    _, layers = fold_for_check(nn.Sequential(block))
    a = attribute(layers[0])
    assert [c.channel for c in a.channels] == [4]
    assert a.dominant_branch == "hor"
    assert a.branches["hor"] == "horizontal 1x3 conv+BN"


def test_plain_layers_and_unknown_blocks():
    class Opaque(ReparamBlock):
        """A block that folds but does not list its branches."""

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)
            self.act = nn.ReLU()

        def forward(self, x):
            return self.act(self.conv(x))

        def branch_kernels(self):
            raise NotImplementedError

        def to_deploy(self):
            from edgerep.blocks.base import FoldedConv

            return FoldedConv(ConvKernel.from_conv(self.conv).to_conv2d(), self.act)

    model = nn.Sequential(nn.Conv2d(3, 4, 1), Opaque()).eval()
    folded, layers = fold_for_check(model)
    x = torch.randn(1, 3, 6, 6)
    with torch.no_grad():
        assert torch.allclose(model(x), folded(x), atol=1e-6)
    plain, opaque = layers
    assert (plain.name, plain.kind) == ("0", "conv")
    a = attribute(plain)
    assert a.available and a.branches == {"conv": "conv (no branches)"}
    b = attribute(opaque)
    assert not b.available and b.note.startswith("no branch information")


def _families():
    import edgerep.blocks as B

    return {
        "mobileone": lambda: B.MobileOneBlock(8, 8, num_conv_branches=2),
        "doconv": lambda: B.DOConv2d(8, 8),
        "expandnet": lambda: B.ExpandConv2d(8, 8),
        "mixconv": lambda: B.MixConv2d(8, 8),
        "psconv": lambda: B.PolyScaleConv2d(8, 8),
        "expand_ac_dbb": lambda: B.ExpandACDBBBlock(8, 8),
        "res2net_ac": lambda: B.Res2NetACBlock(8, 8),
        "dense_ac": lambda: B.DenseACBlock(8, 8),
    }


@pytest.mark.parametrize("family", sorted(_families()))
def test_every_family_folds_for_check_with_branches(family):
    from edgerep.blocks.testing import randomize_

    model = randomize_(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), _families()[family]()), seed=1)
    folded, layers = fold_for_check(model)
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        ref = model(x)
        assert (folded(x) - ref).abs().max() <= 1e-4 * ref.abs().max()
    assert len(layers) >= 2
    for layer in layers[1:]:
        a = attribute(layer)
        assert a.available, (layer.name, a.note)


def test_mobileone_depthwise_identity_bn_is_found_per_stage():
    import edgerep.blocks as B

    torch.manual_seed(0)
    block = B.MobileOneBlock(8, 8, num_conv_branches=2)
    _randomize_bn(block)
    with torch.no_grad():
        block.dw.rbr_skip.running_var[2] = 1e-4
    block.eval()
    _, layers = fold_for_check(nn.Sequential(block))
    assert [l.name for l in layers] == ["0.dw.conv", "0.pw.conv"]
    a = attribute(layers[0])
    assert a.dominant_branch == "identity" and a.branches["identity"] == "identity-BN"
    assert a.channels[0].channel == 2
    assert a.branches["conv.0"] == "over-parameterized 3x3 conv+BN #0"


def test_advice_names_the_right_retraining_for_the_family():
    from edgerep.quant.check import CheckOptions, check_model

    torch.manual_seed(0)
    ac = ACBlock(8, 12)
    _randomize_bn(ac)
    with torch.no_grad():
        ac.hor_bn.weight[4] = 80.0
    rep = RepVGGBlock(8, 8)
    _randomize_bn(rep)
    with torch.no_grad():
        rep.identity.running_var[3] = 1e-4
    for block, kind in ((ac, "retrain"), (rep, "retrain_qarepvgg")):
        model = nn.Sequential(block).eval()
        report = check_model(model, example_input=torch.randn(4, 8, 10, 10), options=CheckOptions(sensitivity=False))
        layer = report.layers[0]
        assert layer.verdict == "bad"  # the median channel keeps almost nothing under per-tensor INT8
        assert kind in {a.kind for a in layer.advice}
        assert {"retrain", "retrain_qarepvgg"} - {kind} & {a.kind for a in layer.advice} == set()
