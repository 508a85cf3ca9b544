"""The ECBSR demo network: any H x W in, 2H x 2W out; folded (per-block and by the traced-graph folder)
it equals the unfolded net in float64 on an odd, non-square input; it round-trips as a checkpoint."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from edgerep.blocks.testing import randomize_, rel_err
from edgerep.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from edgerep.fold.graph import fold_graph
from edgerep.fold.model import count_params, fold_model
from edgerep.models import create_model, get_model_info
from edgerep.models.ecbsr import ECBSR


def _net(seed: int = 1, **kw) -> nn.Module:
    torch.manual_seed(seed)
    return randomize_(create_model("ecbsr_x2", **kw), seed=seed)


def test_registered_as_an_sr_model_of_six_ecbs():
    info = get_model_info("ecbsr_x2")
    assert info.task == "sr" and info.family == "ecb" and info.num_classes == 0 and info.to_dict()["task"] == "sr"
    m = create_model("ecbsr_x2")
    assert len(m.backbone) == 6  # head, 4 x 16-channel body, linear tail (official M4C16)
    assert [b.out_channels for b in m.backbone] == [16, 16, 16, 16, 16, 12]
    assert isinstance(m.backbone[-1].act, nn.Identity) and isinstance(m.upsampler, nn.PixelShuffle)


@pytest.mark.parametrize("hw", [(1, 1), (7, 5), (13, 21), (32, 32)])
def test_any_input_size_gives_twice_the_size(hw):
    m = _net().eval()
    with torch.no_grad():
        y = m(torch.rand(2, 3, *hw))
    assert y.shape == (2, 3, 2 * hw[0], 2 * hw[1])


def test_folded_equals_unfolded_in_float64_on_an_odd_non_square_input():
    m = _net(3).eval().double()
    x = torch.rand(1, 3, 13, 21, dtype=torch.float64)
    folded = fold_model(m, x)
    with torch.no_grad():
        assert rel_err(m(x), folded(x)) <= 1e-10
    convs = [c for c in folded.modules() if isinstance(c, nn.Conv2d)]
    assert len(convs) == 6 and all(c.kernel_size == (3, 3) for c in convs)
    assert count_params(folded) < count_params(m) / 3
    # float32 as shipped
    m32 = _net(3).eval()
    with torch.no_grad():
        assert rel_err(m32(x.float()), fold_model(m32)(x.float())) <= 1e-5


def test_graph_folder_alone_folds_the_unfolded_net():
    """No per-block code: the traced-graph folder reads each ECB's bias-padded branches and folds them."""
    m = _net(4).eval()
    x = torch.rand(1, 3, 11, 9)
    r = fold_graph(m, x)
    assert (r.convs_before, r.convs_after) == (6 * 9, 6) and r.refused_regions == []
    with torch.no_grad():
        assert rel_err(m(x), r.module(x)) <= 1e-5
        assert rel_err(r.module(x), fold_model(m)(x)) <= 1e-5


def test_input_residual_is_a_nearest_upscale():
    """With the backbone's output zeroed, the net is a nearest-neighbour x2 of its input (per colour)."""
    m = ECBSR(module_nums=1, channel_nums=4).eval()
    with torch.no_grad():
        tail = m.backbone[-1]
        for p in tail.parameters():
            p.zero_()
        x = torch.rand(1, 3, 5, 4)
        want = x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
        assert torch.equal(m(x), want)


def test_checkpoint_round_trip(tmp_path):
    m = _net(5).eval()
    meta = CheckpointMeta(arch="ecbsr_x2", input_shape=(3, 32, 32), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    path = save_checkpoint(tmp_path / "ecbsr.pt", m, meta)
    loaded = load_checkpoint(path)
    x = torch.rand(1, 3, 9, 7)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), m(x))
    folded = fold_model(loaded.model)
    with torch.no_grad():
        assert rel_err(m(x), folded(x)) <= 1e-5


def test_shipped_checkpoint_beats_bicubic_on_the_test_photos_and_folds_exactly():
    """examples/checkpoints/ecbsr_x2.pt: its recorded test PSNR is recomputed here (unfolded and folded), and
    it is above bicubic upscaling of the same LR photos."""
    pytest.importorskip("skimage", reason="scikit-image (the 'sr' extra) is not installed: no wheel photos")
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from edgerep.bench.sr_metrics import aggregate, image_metrics
    from edgerep.data.photos import PhotosDataset

    path = Path(__file__).resolve().parents[1] / "examples" / "checkpoints" / "ecbsr_x2.pt"
    loaded = load_checkpoint(path)
    recorded = loaded.meta.extra["training"]["test"]
    assert loaded.meta.extra["task"] == "sr" and loaded.meta.extra["sr"]["scale"] == 2
    model = loaded.model.eval()
    folded = fold_model(model)
    ds = PhotosDataset("test", scale=2)
    ours, ours_folded, bicubic = [], [], []
    with torch.no_grad():
        for i, (x, hr, ids) in enumerate(ds.pairs()):
            t = torch.from_numpy(x)
            ours.append(image_metrics(model(t)[0].numpy(), hr[0], 2, layout="chw"))
            ours_folded.append(image_metrics(folded(t)[0].numpy(), hr[0], 2, layout="chw"))
            lr = ds.pair(i)[0]
            up = np.asarray(Image.fromarray(lr).resize((lr.shape[1] * 2, lr.shape[0] * 2), Image.Resampling.BICUBIC))
            bicubic.append(image_metrics(up, hr[0].transpose(1, 2, 0), 2))
    o, f, b = aggregate(ours), aggregate(ours_folded), aggregate(bicubic)
    assert o.images == recorded["images"] == 2
    assert round(o.psnr, 4) == recorded["psnr_db"] and round(b.psnr, 4) == recorded["bicubic_psnr_db"]
    assert abs(f.psnr - o.psnr) < 0.01  # folded float32 weights: the same 8-bit image almost everywhere
    assert o.psnr > b.psnr + 0.1, (o.psnr, b.psnr)


@pytest.mark.parametrize("scale, colors", [(2, 3), (3, 3), (4, 1), (2, 1)])
def test_forward_is_the_shuffle_of_the_body_plus_a_repeated_input_bit_for_bit(scale, colors):
    """The forward writes shuffle(body(x) + repeat_interleave(x)) as shuffle(body(x)) + nearest(x) (so an INT8 file
    can shuffle on the integers): the same numbers, every bit, for any scale and colour count."""
    torch.manual_seed(scale * 10 + colors)
    m = randomize_(ECBSR(module_nums=1, channel_nums=4, scale=scale, colors=colors), seed=1).eval()
    x = torch.rand(2, colors, 7, 5)
    with torch.no_grad():
        want = m.upsampler(m.backbone(x) + x.repeat_interleave(scale * scale, dim=1))
        assert torch.equal(m(x), want)
