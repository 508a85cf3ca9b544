"""RepDet: registered, emits the (N, 4 + C, anchors) layout detect_post decodes, and folds exactly
(every RepVGG branch and BatchNorm gone) on a square and a non-square input."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgerep import fold_model
from edgerep.bench.detect_post import postprocess
from edgerep.blocks.repvgg import RepVGGBlock
from edgerep.models import create_model, get_model_info
from edgerep.models.repdet import STRIDES
from unseen_blocks import randomize_bn


def _anchors(h: int, w: int) -> int:
    return sum((h // s) * (w // s) for s in STRIDES)


@pytest.mark.parametrize("hw", [(160, 160), (128, 224)])
def test_repdet_folds_exactly_and_loses_every_branch(hw):
    model = randomize_bn(create_model("repdet_scenes")).double()
    x = torch.randn(2, 3, *hw, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x)
        folded = fold_model(model, x)
        yf = folded(x)
    assert y.shape == (2, 4 + 10, _anchors(*hw))
    assert torch.allclose(y, yf, rtol=0, atol=1e-9), (y - yf).abs().max()
    assert any(isinstance(m, RepVGGBlock) for m in model.modules())
    assert not any(isinstance(m, (RepVGGBlock, nn.BatchNorm2d)) for m in folded.modules())
    n_conv = sum(isinstance(m, nn.Conv2d) for m in folded.modules())
    n_blocks = sum(isinstance(m, RepVGGBlock) for m in model.modules())
    assert n_conv == n_blocks + 2 * len(STRIDES), "one conv per RepVGG block plus the 1x1 class/box convs"


def test_repdet_output_is_the_layout_detect_post_decodes():
    info = get_model_info("repdet_scenes")
    assert info.family == "repdet" and info.input_shape == (3, 160, 160) and info.num_classes == 10
    model = create_model("repdet_scenes").eval()
    for head in model.heads:  # distances of exactly one stride each way, class 3 certain
        nn.init.zeros_(head.reg_pred.weight)
        nn.init.constant_(head.reg_pred.bias, 1.0)
        nn.init.zeros_(head.cls_pred.weight)
        nn.init.constant_(head.cls_pred.bias, -30.0)
        with torch.no_grad():
            head.cls_pred.bias[3] = 30.0
    with torch.no_grad():
        y = model(torch.rand(1, 3, 64, 96)).numpy()
    # stride 8 first, row-major: anchor k of level 8 sits at ((k % 12 + 0.5) * 8, (k // 12 + 0.5) * 8)
    assert np.allclose(y[0, :4, 0], [4, 4, 16, 16]) and np.allclose(y[0, :4, 13], [12, 12, 16, 16])
    first16 = (64 // 8) * (96 // 8)
    assert np.allclose(y[0, :4, first16], [8, 8, 32, 32])
    assert np.allclose(y[0, :4, -1], [96 - 16, 64 - 16, 64, 64])
    assert np.allclose(y[0, 4 + 3], 1.0) and np.allclose(np.delete(y[0, 4:], 3, axis=0), 0.0, atol=1e-12)
    (d,) = postprocess(y)
    assert len(d) > 0 and set(d.classes.tolist()) == {3}
