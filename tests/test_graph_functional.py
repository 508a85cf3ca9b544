"""The graph folder on the functional and library forms timm's blocks are written in (no timm
needed): BatchNorm subclasses calling ``F.batch_norm`` on their own parameters with an identity
activation, ``torch._assert`` shape checks, drop-path and Identity attention in eval, ``+=`` and
``sum``, constant scaling, ``F.pad`` / ``F.avg_pool2d`` / ``F.linear`` / ``torch.cat``."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgerep.blocks.testing import randomize_, rel_err
from edgerep.fold.graph import fold_graph
from edgerep.fold.graph_cost import measure_cost


class BatchNormAct(nn.BatchNorm2d):
    """timm's BatchNormAct2d: a BN subclass with its own forward, F.batch_norm on get_attr params,
    then a drop and an activation that are identities here."""

    def __init__(self, c: int):
        super().__init__(c)
        self.drop = nn.Identity()
        self.act = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch._assert(x.ndim == 4, f"expected 4D input (got {x.ndim}D input)")
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.1, self.eps)
        return self.act(self.drop(x))


def drop_path(x: torch.Tensor, p: float = 0.0, training: bool = False) -> torch.Tensor:
    """timm's drop_path: the identity in eval."""
    if p == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - p)
    return x * keep / (1 - p)


class DropPath(nn.Module):
    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.p, self.training)


class ConvNorm(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
        self.bn = BatchNormAct(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class TimmStyleRepVGG(nn.Module):
    """timm's RepVggBlock shape: identity BN (a BN subclass), 1x1 and 3x3 conv+BN, drop-path,
    Identity attention, in-place adds; then a functional conv, pad, pool and a scaled head."""

    def __init__(self, c: int = 6):
        super().__init__()
        self.identity = BatchNormAct(c)
        self.conv_kxk = ConvNorm(c, c, 3)
        self.conv_1x1 = ConvNorm(c, c, 1)
        self.drop_path = DropPath(0.1)
        self.attn = nn.Identity()
        self.act = nn.ReLU()
        self.w = nn.Parameter(torch.randn(c, c, 3, 3) * 0.2)
        self.b = nn.Parameter(torch.randn(c) * 0.1)
        self.gamma = nn.Parameter(torch.rand(c) + 0.5)  # a layer scale
        self.head = nn.Parameter(torch.randn(5, 2 * c) * 0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch._assert(x.shape[1] == self.w.shape[1], "channels")
        ident = self.identity(x)
        y = self.conv_kxk(x)
        y += self.conv_1x1(x)  # in-place add of a branch
        y = self.drop_path(y) + ident
        x = self.act(self.attn(y))
        # a functional conv, F.pad then F.conv2d, a layer scale, a constant, a python sum
        z = F.conv2d(F.pad(x, [1, 1, 1, 1]), self.w, self.b)
        z = z * self.gamma.view(1, -1, 1, 1) * 0.5
        z = sum([z, F.conv2d(x, self.w, None, padding=1), F.avg_pool2d(x, 3, 1, 1)])
        z = torch.cat([z, -z], dim=1)
        z = F.relu(z).mean((2, 3))
        return F.linear(z, self.head)


def test_timm_style_block_folds_each_region_to_one_conv() -> None:
    m = randomize_(TimmStyleRepVGG(), seed=3)
    x = torch.randn(2, 6, 9, 8)
    r = fold_graph(m, x)
    assert r.refused_regions == []
    with torch.no_grad():
        assert rel_err(m(x), r.module(x)) < 1e-5
    # before: 2 module convs + 2 functional convs; after: the RepVGG sum (one 3x3) and the
    # pad/conv/scale/sum/pool/cat region (one 3x3): two convs, no BN anywhere
    assert (r.convs_before, r.convs_after) == (4, 2)
    assert r.norms_left == []
    assert "batch_norm" not in r.module.code and "_assert" in r.module.code  # the checks stay, on survivors


def test_float64_fold_is_exact() -> None:
    m = randomize_(TimmStyleRepVGG(), seed=4).double()
    x = torch.randn(2, 6, 7, 7, dtype=torch.float64)
    r = fold_graph(m, x)
    with torch.no_grad():
        assert rel_err(m(x), r.module(x)) < 1e-12


def test_bn_after_a_nonlinearity_is_named_with_the_node_that_stopped_it() -> None:
    m = randomize_(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), BatchNormAct(4), nn.SiLU()), seed=1)
    r = fold_graph(m, torch.randn(1, 3, 8, 8))
    assert len(r.norms_left) == 1
    assert r.norms_left[0].startswith("2:batch_norm (batch_norm) reads 1 (ReLU)"), r.norms_left
    assert r.to_dict()["norms_left"] == r.norms_left


@pytest.mark.parametrize("bn", [nn.SyncBatchNorm, BatchNormAct])
def test_bn_subclasses_fold_into_the_conv_before(bn: type) -> None:
    m = randomize_(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), bn(4), nn.ReLU()), seed=2)
    x = torch.randn(2, 3, 6, 6)
    r = fold_graph(m, x)
    assert r.norms_left == [] and r.convs_after == 1
    with torch.no_grad():
        assert rel_err(m(x), r.module(x)) < 1e-5


def test_bn_subclass_with_its_own_forward_is_not_folded_as_a_bn() -> None:
    class ScaledBN(nn.BatchNorm2d):  # a leaf by force (opaque): its forward is not BN's
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward(x) if x.sum() > 0 else super().forward(x)  # data-dependent: untraceable

    m = randomize_(nn.Sequential(nn.Conv2d(3, 4, 3), ScaledBN(4)), seed=5)
    x = torch.randn(1, 3, 8, 8).abs()
    r = fold_graph(m, x)
    with torch.no_grad():
        assert rel_err(m(x), r.module(x)) < 1e-5  # exact: the BN was not folded with BN's rule
    assert r.norms_left == ["1 (ScaledBN) reads 0 (Conv2d)"]


def test_depthwise_then_pointwise_is_split_before_it_is_composed() -> None:
    """A depthwise 7x7 then a dense 1x1 (FastViT's ConvMlp) would be one dense 7x7: refused on
    cost, with the ratio, and both convs keep their BN folded in."""
    c = 16
    m = randomize_(nn.Sequential(ConvNorm(c, c, 7, groups=c), nn.Conv2d(c, 2 * c, 1), nn.GELU()), seed=6)
    x = torch.randn(1, c, 12, 12)
    r = fold_graph(m, x)
    assert r.convs_after == 2 and r.norms_left == []
    assert measure_cost(r.module, x).flops <= r.flops_before
    assert any("max_cost_growth" in why and "x the MACs" in why for _, why in r.refused_regions)


def test_a_size_read_is_not_baked_into_a_kernel() -> None:
    """``x / x.shape[-1]`` depends on the resolution: the fold must stay right at another size."""

    class SizeScaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            torch._assert(x.shape[1] == 3, "channels")
            return F.relu(self.bn(self.conv(x)) / x.shape[-1])

    m = randomize_(SizeScaled(), seed=7)
    r = fold_graph(m, torch.randn(1, 3, 8, 8))
    assert r.convs_after == 1 and r.norms_after == 0  # conv+BN still fold
    other = torch.randn(2, 3, 12, 12)  # another resolution and batch than the example
    with torch.no_grad():
        assert rel_err(m(other), r.module(other)) < 1e-5


class LinearNorm(nn.Module):
    """LeViT's LinearNorm: a BatchNorm1d over the flattened rows of a Linear's (B, N, C) output."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.linear = nn.Linear(cin, cout, bias=False)
        self.bn = nn.BatchNorm1d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear(x)
        return self.bn(x.flatten(0, 1)).reshape_as(x)


def test_levit_linear_norm_folds_into_one_linear() -> None:
    m = randomize_(nn.Sequential(LinearNorm(8, 12), nn.Hardswish(), LinearNorm(12, 6)), seed=8)
    x = torch.randn(2, 5, 8)  # (batch, tokens, channels)
    r = fold_graph(m, x)
    assert r.norms_after == 0 and r.norms_left == []
    assert measure_cost(r.module, x).matmuls == 2
    assert ".reshape_as(" not in r.module.code and ".flatten(" not in r.module.code
    other = torch.randn(3, 7, 8)  # other batch and token counts: the regrouping is not baked in
    with torch.no_grad():
        assert rel_err(m(other), r.module(other)) < 1e-5
