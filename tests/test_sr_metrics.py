"""SR metrics against closed forms: identical images, constant offsets (PSNR and SSIM), the Y weights,
the shaved border, 8-bit rounding of float outputs, and the aggregate (mean with counts; shards add)."""
from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("skimage", reason="scikit-image (the 'sr' extra) is not installed")

from edgerep.bench.sr_metrics import (CONVENTION, ImageScore, aggregate, image_metrics, rgb_to_y,  # noqa: E402
                                      to_pixels)


def _photo(h: int = 24, w: int = 30, seed: int = 0) -> np.ndarray:
    """A textured uint8 RGB image kept away from 0 and 255 so offsets never clip."""
    return np.random.default_rng(seed).integers(40, 200, size=(h, w, 3), dtype=np.uint8)


def test_identical_images_are_inf_db_and_ssim_one():
    a = _photo()
    s = image_metrics(a, a, 2)
    assert s.psnr == math.inf and s.ssim == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("offset", [1, 3, 10])
def test_a_constant_offset_on_every_channel_gives_the_closed_form_psnr(offset):
    """R, G, B all + d: Y moves by d * (65.481 + 128.553 + 24.966) / 255 = d * 219 / 255 everywhere."""
    hr = _photo()
    sr = (hr.astype(np.int16) + offset).astype(np.uint8)
    dy = offset * 219.0 / 255.0
    assert image_metrics(sr, hr, 2).psnr == pytest.approx(20 * math.log10(255.0 / dy), abs=1e-9)


def test_an_offset_on_blue_only_weighs_as_bt601_says():
    """Only B + 10: Y moves by 10 * 24.966 / 255 (a mean of R, G, B would say 10 / 3)."""
    hr = _photo()
    sr = hr.copy()
    sr[..., 2] += 10
    dy = 10 * 24.966 / 255.0
    assert image_metrics(sr, hr, 3).psnr == pytest.approx(20 * math.log10(255.0 / dy), abs=1e-9)
    assert rgb_to_y(np.array([[[0.0, 0.0, 0.0]]]))[0, 0] == 16.0
    assert rgb_to_y(np.array([[[255.0, 255.0, 255.0]]]))[0, 0] == pytest.approx(235.0)


def test_ssim_of_constant_images_is_the_luminance_term():
    """Flat images: contrast/structure terms are C2/C2 = 1, SSIM = (2ab + C1) / (a^2 + b^2 + C1), C1 = (0.01*255)^2."""
    hr = np.full((20, 20, 3), 100, np.uint8)
    sr = np.full((20, 20, 3), 130, np.uint8)
    a, b = 16 + 100 * 219 / 255, 16 + 130 * 219 / 255
    c1 = (0.01 * 255) ** 2
    assert image_metrics(sr, hr, 2).ssim == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), abs=1e-12)


def test_the_border_of_scale_pixels_is_shaved():
    hr = _photo()
    sr = hr.copy()
    sr[:2] = 0  # errors only in the top two rows
    sr[:, -2:] = 255
    assert image_metrics(sr, hr, 2).psnr == math.inf
    assert image_metrics(sr, hr, 1).psnr < 40
    with pytest.raises(ValueError, match="shaving"):
        image_metrics(hr[:4, :4], hr[:4, :4], 2)


def test_float_outputs_are_clipped_and_rounded_to_8_bits_and_layouts_agree():
    hr = _photo()
    sr = _photo(seed=1)
    want = image_metrics(sr, hr, 2)
    as_float = sr.astype(np.float32) / 255 + np.float32(0.4 / 255)  # rounds back to the same pixels
    assert image_metrics(as_float, hr, 2) == want
    assert image_metrics(np.moveaxis(as_float, -1, 0), np.moveaxis(hr, -1, 0), 2, layout="chw") == want
    assert to_pixels(np.array([[[-0.5, 1.5, 0.5]]]))[0, 0].tolist() == [0.0, 255.0, 128.0]
    with pytest.raises(ValueError, match="RGB"):
        image_metrics(hr[..., 0], hr[..., 0], 2)


def test_aggregate_is_the_mean_over_images_with_the_count_and_shards_add():
    scores = [ImageScore(30.0, 0.9), ImageScore(34.0, 0.8), ImageScore(26.0, 0.7)]
    total = aggregate(scores)
    assert (total.psnr, total.ssim, total.images) == (pytest.approx(30.0), pytest.approx(0.8), 3)
    merged = aggregate(scores[:1]).merge(aggregate(scores[1:]))
    assert (merged.psnr_sum, merged.images) == (total.psnr_sum, total.images)
    assert math.isnan(aggregate([]).psnr) and aggregate([]).images == 0
    d = total.to_dict()
    assert d["images"] == 3 and d["convention"] == CONVENTION and "Y" in CONVENTION
