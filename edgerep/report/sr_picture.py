"""The SR report's picture: one crop of the first test image as bicubic, the unfolded FP32 output, the INT8
output and the HR ground truth, each titled with its PSNR (whole image, the report's convention) and the
crop's own PSNR on Y. The crop is where INT8 moved the picture most (largest mean |INT8 - FP32| on Y), so
what quantization did is what the reader sees; pixels are enlarged without smoothing. A fifth panel shows
|INT8 - FP32| on Y, amplified (at 8 bits the two outputs look alike; the difference map is where they are not)."""
from __future__ import annotations

from typing import Any

import numpy as np

CROP = 64  # HR pixels a side (shown enlarged)
GAIN = 16  # the difference panel's amplification (a 1-level difference is 16 grey levels)


def _y(pixels: np.ndarray) -> np.ndarray:
    from edgerep.bench.sr_metrics import rgb_to_y

    return rgb_to_y(pixels)


def pick_crop(a_y: np.ndarray, b_y: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left corner of the ``size`` square (half-size stride) where ``a`` and ``b`` differ most on average."""
    h, w = a_y.shape
    best, at = -1.0, (0, 0)
    diff = np.abs(a_y - b_y)
    step = max(1, size // 2)
    for top in range(0, max(1, h - size + 1), step):
        for left in range(0, max(1, w - size + 1), step):
            d = float(diff[top:top + size, left:left + size].mean())
            if d > best:
                best, at = d, (top, left)
    return at


def crop_picture(lr: np.ndarray, hr: np.ndarray, fp32: np.ndarray, int8: np.ndarray, scale: int,
                 labels: tuple[str, str] = ("unfolded FP32", "INT8")) -> tuple[bytes, dict[str, Any]]:
    """PNG bytes of the four panels and what they show (crop box, whole-image and crop PSNR per panel).
    ``lr``, ``hr`` uint8 HWC; ``fp32``, ``int8`` model outputs CHW in [0, 1]."""
    from skimage.metrics import peak_signal_noise_ratio

    from edgerep.bench.sr_metrics import image_metrics, to_pixels
    from edgerep.data.sr import bicubic_upscale
    from edgerep.report.plots import new_figure, png_bytes

    panels = {"bicubic": bicubic_upscale(lr, scale).astype(np.float64), labels[0]: to_pixels(fp32, "chw"),
              labels[1]: to_pixels(int8, "chw"), "HR": hr.astype(np.float64)}
    size = min(CROP, hr.shape[0], hr.shape[1])
    top, left = pick_crop(_y(panels[labels[1]]), _y(panels[labels[0]]), size)
    hr_crop_y = _y(panels["HR"][top:top + size, left:left + size])
    info: dict[str, Any] = {"box": [top, left, size], "panels": {}}
    fig = new_figure(12.0, 2.9)
    for i, (name, px) in enumerate(panels.items()):
        whole = None if name == "HR" else image_metrics(px.astype(np.uint8), hr, scale).psnr
        c = px[top:top + size, left:left + size]
        crop_db = None if name == "HR" else float(peak_signal_noise_ratio(hr_crop_y, _y(c), data_range=255.0))
        info["panels"][name] = {"psnr_db": whole, "crop_psnr_db": crop_db}
        ax = fig.add_subplot(1, 5, i + 1)
        ax.imshow(c.astype(np.uint8), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        title = name if whole is None else f"{name}\n{whole:.2f} dB image · {crop_db:.2f} dB crop"
        ax.set_title(title, fontsize=8)
    d = np.abs(_y(panels[labels[1]]) - _y(panels[labels[0]]))[top:top + size, left:left + size]
    info["diff_y"] = {"max": float(d.max()), "mean": float(d.mean()), "gain": GAIN}
    ax = fig.add_subplot(1, 5, 5)
    ax.imshow(np.clip(d * GAIN, 0, 255).astype(np.uint8), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"|INT8 - FP32| on Y x{GAIN}\nmax {d.max():.1f}, mean {d.mean():.2f} levels", fontsize=8)
    return png_bytes(fig), info
