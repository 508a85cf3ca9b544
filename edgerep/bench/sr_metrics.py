"""Super-resolution accuracy as the SR literature reports it: PSNR and SSIM on the Y channel of YCbCr
(ITU-R BT.601 as MATLAB's ``rgb2ycbcr``), with ``scale`` pixels shaved off every border, computed by
scikit-image's metrics (``peak_signal_noise_ratio``, ``structural_similarity``), not by hand.

Conventions (stated here once, reported with every number):

- Images are RGB, ``(H, W, 3)`` (``layout="hwc"``) or ``(3, H, W)`` (``layout="chw"``, a model output).
  ``uint8`` images are 8-bit pixels; float images are in [0, 1] and are clipped to [0, 1] and rounded to
  8 bits first, as the super-resolved image would be saved (BasicSR's ``tensor2img``).
- ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255`` for R, G, B in 0..255 (so Y is in [16, 235]),
  kept in float64 (not rounded); PSNR's peak is 255.
- SSIM: Wang et al.'s setting, as MATLAB's ``ssim`` and the SR papers: an 11 x 11 Gaussian window with
  sigma 1.5, population covariances, K1 = 0.01, K2 = 0.03, data range 255.
- A data set's score is the mean over images of the per-image PSNR (and SSIM), with the image count;
  shards merge by adding sums and counts, never by averaging means.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from edgerep.errors import EdgerepError

__all__ = ["Y_WEIGHTS", "Y_OFFSET", "ImageScore", "SRScores", "rgb_to_y", "to_pixels", "image_metrics",
           "y_squared_error", "pooled_psnr", "aggregate", "require_skimage", "CONVENTION"]

#: ITU-R BT.601 luma for R, G, B in 0..255 -> Y in [16, 235] (MATLAB rgb2ycbcr's first row)
Y_WEIGHTS = (65.481, 128.553, 24.966)
Y_OFFSET = 16.0
#: what every report of these numbers says about them
CONVENTION = ("PSNR/SSIM on Y of YCbCr (ITU-R BT.601, MATLAB rgb2ycbcr), 8-bit images, border of `scale` pixels "
              "shaved; scikit-image metrics (SSIM: 11x11 Gaussian, sigma 1.5, data range 255); mean over images")


def require_skimage():
    """The ``skimage.metrics`` module, or an ``EdgerepError`` saying how to install it."""
    try:
        from skimage import metrics
    except ImportError as e:
        raise EdgerepError(f"SR metrics need scikit-image, which is not importable here ({e})",
                           hint="pip install 'edgerep[sr]' (scikit-image>=0.21)") from None
    return metrics


def to_pixels(img: np.ndarray, layout: str = "hwc") -> np.ndarray:
    """An RGB image as float64 ``(H, W, 3)`` 8-bit values: ``uint8`` as is, floats in [0, 1] clipped and rounded."""
    a = np.asarray(img)
    if layout not in ("hwc", "chw"):
        raise ValueError(f"layout {layout!r}: expected 'hwc' or 'chw'")
    if layout == "chw":
        a = np.moveaxis(a, 0, -1) if a.ndim == 3 else a
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"expected an RGB image ({'3, H, W' if layout == 'chw' else 'H, W, 3'}), got shape "
                         f"{tuple(np.asarray(img).shape)}")
    if a.dtype == np.uint8:
        return a.astype(np.float64)
    if a.dtype.kind not in "fiu":
        raise ValueError(f"image dtype {a.dtype} is neither uint8 nor float")
    if a.dtype.kind in "iu":
        raise ValueError(f"integer images must be uint8 (8-bit pixels), got {a.dtype}")
    return np.round(np.clip(a.astype(np.float64), 0.0, 1.0) * 255.0)


def rgb_to_y(pixels: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` RGB in 0..255 -> ``(H, W)`` Y in [16, 235] (ITU-R BT.601, float64, not rounded)."""
    p = np.asarray(pixels, dtype=np.float64)
    w = np.asarray(Y_WEIGHTS, dtype=np.float64)
    return Y_OFFSET + (p @ w) / 255.0


def _shave(y: np.ndarray, border: int) -> np.ndarray:
    if border < 0:
        raise ValueError(f"border {border} must be >= 0")
    h, w = y.shape
    if h <= 2 * border or w <= 2 * border:
        raise ValueError(f"a {h}x{w} image has nothing left after shaving {border} pixels per border")
    return y[border:h - border, border:w - border] if border else y


@dataclass(frozen=True)
class ImageScore:
    """One image's PSNR (dB; ``inf`` when identical) and SSIM, on the shaved Y channel."""

    psnr: float
    ssim: float


def image_metrics(sr: np.ndarray, hr: np.ndarray, scale: int, *, layout: str = "hwc") -> ImageScore:
    """PSNR and SSIM of a super-resolved image ``sr`` against the ground truth ``hr`` (same size), on Y
    with ``scale`` pixels shaved per border. Pure: no state, no I/O."""
    metrics = require_skimage()
    a, b = to_pixels(hr, layout), to_pixels(sr, layout)
    if a.shape != b.shape:
        raise ValueError(f"SR output {b.shape[:2]} and ground truth {a.shape[:2]} differ in size")
    y_hr, y_sr = _shave(rgb_to_y(a), int(scale)), _shave(rgb_to_y(b), int(scale))
    if min(y_hr.shape) < 7:
        raise ValueError(f"SSIM's 11x11 window needs at least 7x7 pixels after shaving, got {y_hr.shape}")
    with np.errstate(divide="ignore"):  # identical images: PSNR is +inf, not a warning
        psnr = float(metrics.peak_signal_noise_ratio(y_hr, y_sr, data_range=255.0))
    ssim = float(metrics.structural_similarity(y_hr, y_sr, data_range=255.0, gaussian_weights=True, sigma=1.5,
                                               use_sample_covariance=False))
    return ImageScore(psnr, ssim)


def y_squared_error(sr: np.ndarray, hr: np.ndarray, scale: int, *, layout: str = "hwc") -> tuple[float, int]:
    """``(sum of squared Y errors, pixel count)`` of ``sr`` against ``hr`` as ``image_metrics`` reads them
    (8-bit, Y, ``scale`` shaved): what PSNR is made of, so parts of one photo pool into its PSNR."""
    a, b = to_pixels(hr, layout), to_pixels(sr, layout)
    if a.shape != b.shape:
        raise ValueError(f"SR output {b.shape[:2]} and ground truth {a.shape[:2]} differ in size")
    d = _shave(rgb_to_y(a), int(scale)) - _shave(rgb_to_y(b), int(scale))
    return float(np.sum(d * d)), int(d.size)


def pooled_psnr(sse: float, pixels: int) -> float:
    """PSNR (dB, peak 255) of a pooled squared error: ``10 log10(255^2 / (sse / pixels))``; ``inf`` at 0."""
    if pixels <= 0:
        raise ValueError("no pixels to pool")
    mse = sse / pixels
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0 ** 2 / mse))


@dataclass(frozen=True)
class SRScores:
    """A set's PSNR / SSIM: sums and the image count (what shards merge), and their means."""

    psnr_sum: float = 0.0
    ssim_sum: float = 0.0
    images: int = 0

    @property
    def psnr(self) -> float:
        """Mean PSNR over images, dB (NaN for no images)."""
        return self.psnr_sum / self.images if self.images else float("nan")

    @property
    def ssim(self) -> float:
        """Mean SSIM over images (NaN for no images)."""
        return self.ssim_sum / self.images if self.images else float("nan")

    def add(self, score: ImageScore) -> "SRScores":
        return SRScores(self.psnr_sum + score.psnr, self.ssim_sum + score.ssim, self.images + 1)

    def merge(self, other: "SRScores") -> "SRScores":
        """Two shards' scores as one: sums and counts add."""
        return SRScores(self.psnr_sum + other.psnr_sum, self.ssim_sum + other.ssim_sum, self.images + other.images)

    def to_dict(self) -> dict:
        return {"psnr_db": self.psnr, "ssim": self.ssim, "images": self.images, "psnr_sum_db": self.psnr_sum,
                "ssim_sum": self.ssim_sum, "convention": CONVENTION}


def aggregate(scores: Iterable[ImageScore]) -> SRScores:
    """Mean PSNR and SSIM over images, with the count."""
    out = SRScores()
    for s in scores:
        out = out.add(s)
    return out
