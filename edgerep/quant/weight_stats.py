"""Fake INT8 quantization in torch and the statistics of one folded weight tensor.

Symmetric quantization with zero point 0 (TensorRT's convention): ``s = amax / 127``,
``q(x) = clamp(round(x / s), -127, 127) * s``. Weights are quantized per tensor (one ``amax``)
or per output channel (``amax`` per row of axis 0). Everything here is pure tensor math so the
check stays fast and independent of any engine.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

from edgerep.quant.thresholds import K_SIGMA, QMAX_8BIT


def fake_quant(x: Tensor, amax: Tensor | float, qmax: int = QMAX_8BIT) -> Tensor:
    """Quantize-dequantize ``x`` symmetrically with range ``amax`` (scalar or broadcastable).

    A zero ``amax`` (an all-zero tensor or channel) leaves zeros as they are.
    """
    amax_t = torch.as_tensor(amax, dtype=x.dtype, device=x.device)
    scale = torch.where(amax_t > 0, amax_t / qmax, torch.ones_like(amax_t))
    return torch.clamp(torch.round(x / scale), -qmax, qmax) * scale


def channel_absmax(w: Tensor) -> Tensor:
    """max |w| per output channel (axis 0)."""
    return w.detach().abs().reshape(w.shape[0], -1).amax(dim=1)


def quantize_weight(w: Tensor, per_channel: bool, qmax: int = QMAX_8BIT) -> Tensor:
    """Fake-quantize a weight (``out, ...``) per tensor or per output channel."""
    if per_channel:
        amax = channel_absmax(w).reshape(-1, *([1] * (w.dim() - 1)))
    else:
        amax = w.detach().abs().max()
    return fake_quant(w, amax, qmax)


def sqnr_db(ref: Tensor, approx: Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB, (inf when exact)."""
    r = ref.detach().to(torch.float64)
    noise = float(((r - approx.detach().to(torch.float64)) ** 2).sum())
    signal = float((r ** 2).sum())
    return _db(signal, noise)


def _db(signal: float, noise: float) -> float:
    if noise <= 0.0:
        return math.inf
    if signal <= 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


@dataclass
class WeightStats:
    """What the folded weight of one layer looks like, and what INT8 does to it."""

    shape: list[int]
    min: float
    max: float
    absmax: float
    mean: float
    std: float
    kurtosis: float  # excess kurtosis: 0 for a Gaussian, large for a few huge weights
    channel_spread: float  # max over channels of max|w_c|, divided by the median channel's
    beyond_k_sigma: float  # share of weights with |w - mean| > k * std
    k_sigma: float
    sqnr_per_tensor_db: float
    sqnr_per_channel_db: float
    sqnr_worst_channel_db: float  # per-channel quantization, the worst single channel
    worst_channel: int
    #: per-tensor quantization, SQNR of the median output channel: a few outlier channels hold most
    #: of the energy, so the whole-tensor SQNR hides that every ordinary channel lost its precision
    sqnr_per_tensor_median_channel_db: float
    channel_absmax: list[float] = field(repr=False, default_factory=list)
    histogram: dict = field(repr=False, default_factory=dict)  # counts over symmetric bins

    def to_dict(self, with_channels: bool = False) -> dict:
        d = asdict(self)
        if not with_channels:
            d.pop("channel_absmax")
        return d


def quant_noise(x: Tensor, amax: Tensor | float, qmax: int = QMAX_8BIT) -> Tensor:
    """``x - fake_quant(x, amax)`` with fewer passes over memory (the tensor is large)."""
    amax_t = torch.as_tensor(amax, dtype=x.dtype, device=x.device)
    scale = torch.where(amax_t > 0, amax_t / qmax, torch.ones_like(amax_t))
    r = x / scale
    q = torch.round(r).clamp_(-qmax, qmax)
    return q.sub_(r).mul_(scale)


def weight_stats(w: Tensor, k_sigma: float = K_SIGMA, qmax: int = QMAX_8BIT, bins: int = 81) -> WeightStats:
    """Statistics of one (folded) weight tensor, in float32 (the weight's deploy dtype; torch's
    pairwise sums keep ~1e-7 relative accuracy, far below what a dB figure shows)."""
    w = w.detach().float()
    flat = w.reshape(-1)
    n = flat.numel()
    mean = float(flat.sum()) / n
    centred = flat - mean
    c2 = centred * centred
    var = float(c2.sum()) / n
    std = math.sqrt(var)
    kurt = float((c2 * c2).sum()) / n / var ** 2 - 3.0 if var > 0 else 0.0
    beyond = float((c2 > (k_sigma * k_sigma) * var).sum()) / n if var > 0 else 0.0
    del centred, c2
    rows = w.reshape(w.shape[0], -1)
    ch = rows.abs().amax(dim=1)
    med = float(ch.median())
    amax = float(ch.max())
    spread = amax / med if med > 0 else (math.inf if amax > 0 else 1.0)

    sig_c = (rows * rows).sum(dim=1).double()
    e_t = quant_noise(rows, amax, qmax)
    e_c = quant_noise(rows, ch.reshape(-1, 1), qmax)
    err_c = (e_c * e_c).sum(dim=1).double()
    signal = float(sig_c.sum())
    err_t_c = (e_t * e_t).sum(dim=1).double()
    live_t = sorted(_db(float(s_), float(e_)) for s_, e_ in zip(sig_c, err_t_c) if float(s_) > 0)
    median_t = live_t[(len(live_t) - 1) // 2] if live_t else math.inf
    per_ch = [_db(float(s_), float(e_)) for s_, e_ in zip(sig_c, err_c)]
    live = [(v, i) for i, v in enumerate(per_ch) if float(sig_c[i]) > 0]
    worst_db, worst_i = min(live) if live else (math.inf, 0)

    lo, hi = (-amax, amax) if amax > 0 else (-1.0, 1.0)
    counts = torch.histc(flat, bins=bins, min=lo, max=hi)
    edges = torch.linspace(lo, hi, bins + 1, dtype=torch.float64)
    return WeightStats(
        shape=list(w.shape), min=float(flat.min()), max=float(flat.max()), absmax=amax, mean=mean, std=std,
        kurtosis=kurt, channel_spread=spread, beyond_k_sigma=beyond, k_sigma=k_sigma,
        sqnr_per_tensor_db=_db(signal, float(err_t_c.sum())),
        sqnr_per_channel_db=_db(signal, float(err_c.sum())),
        sqnr_worst_channel_db=worst_db, worst_channel=int(worst_i), sqnr_per_tensor_median_channel_db=median_t,
        channel_absmax=[float(v) for v in ch],
        histogram={"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]},
    )


__all__ = ["fake_quant", "quant_noise", "channel_absmax", "quantize_weight", "sqnr_db", "WeightStats", "weight_stats"]
