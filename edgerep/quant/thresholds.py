"""Every threshold ``edgerep check`` judges with, in one place, with the reason for each value.

All SQNR values are in dB: ``10 * log10(sum(x^2) / sum((x - q(x))^2))``. Reference points:
an 8-bit symmetric uniform quantizer (127 levels each side) on a Gaussian tensor whose
absolute maximum is 4-6 sigma gives about 36-40 dB; every halving of the useful range costs
6 dB. A verdict is the worst of its parts (``ok`` < ``warn`` < ``bad``).

The verdict answers "is this layer safe under *plain* INT8 PTQ" (per-tensor weights, min-max
activations: what a naive quantizer does and what broke RepVGG-A0, 72.4% -> 52.2%). The
report also gives the verdict *with fixes* (per-channel weights, the better activation
clipping), which decides the advice: a layer whose fixed verdict is still ``bad`` must stay in
higher precision or be retrained (QARepVGG).
"""
from __future__ import annotations

#: integer levels each side of zero for symmetric 8-bit (zero point 0, -127..127, TensorRT style)
QMAX_8BIT = 127

# ---- weights (folded kernel, quantized alone) --------------------------------------------------
#: >= this: fine. 30 dB is ~6-10 dB under a well-behaved tensor: the range already carries
#: a 2-3x outlier, tolerable.
WEIGHT_SQNR_OK_DB = 30.0
#: < this: bad. Under 20 dB the rounding noise is >10% of the weights' RMS; in practice most
#: small weights of the layer round to zero because a few huge ones set the scale.
WEIGHT_SQNR_BAD_DB = 20.0

# ---- activations (each folded layer's input, on the calibration data) ---------------------------
#: ReLU outputs are half-normal-to-heavy-tailed; symmetric 8-bit min-max gives 25-35 dB on
#: healthy layers. 25 dB ok, under 15 dB bad (a few extreme values waste >3 bits of range).
ACT_SQNR_OK_DB = 25.0
ACT_SQNR_BAD_DB = 15.0
#: percentile of |x| used as the clipping range in the "percentile" calibration method
ACT_PERCENTILE = 99.99
#: percentile clipping is advised when it beats min-max by at least this much
ACT_PERCENTILE_GAIN_DB = 3.0

# ---- one output channel of a layer (per-channel INT8 weights, judged on that channel's own output)
#: a channel whose own output keeps < 10 dB (noise ~30% of its RMS) is destroyed as a feature: the
#: classic RepVGG case where an identity-BN tap sets the channel's scale and its 3x3 taps round
#: to zero. One channel among many, so the bar is lower than for a whole tensor.
CHANNEL_SQNR_OK_DB = 20.0
CHANNEL_SQNR_BAD_DB = 10.0

# ---- sensitivity (only this layer INT8, the rest fp32; compared on the model's output) --------
#: logits SQNR: 20 dB means the output error is 10% of the logits' RMS; top-1 rarely moves.
SENS_SQNR_OK_DB = 20.0
#: under 10 dB the error is ~30% of the logits' RMS: predictions change.
SENS_SQNR_BAD_DB = 10.0
# top-1 agreement / accuracy with one INT8 layer are reported but do not grade: on the few
# dozen samples a check uses, one flipped near-tie is already several percent.

# ---- descriptive statistics (reported, and used to pick outlier channels) -----------------------
#: "share of weights beyond k sigma" uses this k
K_SIGMA = 3.0
#: an output channel is an outlier channel when its max |w| is this many times the median
#: channel's; the folded identity-BN of a collapsed channel is typically 10-300x
OUTLIER_CHANNEL_RATIO = 8.0
#: attribution names at most this many outlier channels per layer
MAX_OUTLIER_CHANNELS = 5
#: a side branch "dominates" an outlier channel when it gives at least this share of its peak weight
DOMINANT_SHARE = 0.5

VERDICTS = ("ok", "warn", "bad")


def grade(value: float | None, ok_at: float, bad_below: float) -> str:
    """``ok`` if ``value >= ok_at``, ``bad`` if ``value < bad_below``, else ``warn`` (None: ``ok``)."""
    if value is None:
        return "ok"
    if value >= ok_at:
        return "ok"
    if value < bad_below:
        return "bad"
    return "warn"


def worst(*verdicts: str) -> str:
    """The worst of several verdicts."""
    return max(verdicts, key=VERDICTS.index, default="ok")


def as_dict() -> dict:
    """The thresholds as written into every report (so a report says what it was judged by)."""
    return {
        "weight_sqnr_ok_db": WEIGHT_SQNR_OK_DB,
        "weight_sqnr_bad_db": WEIGHT_SQNR_BAD_DB,
        "act_sqnr_ok_db": ACT_SQNR_OK_DB,
        "act_sqnr_bad_db": ACT_SQNR_BAD_DB,
        "act_percentile": ACT_PERCENTILE,
        "sens_sqnr_ok_db": SENS_SQNR_OK_DB,
        "sens_sqnr_bad_db": SENS_SQNR_BAD_DB,
        "channel_sqnr_ok_db": CHANNEL_SQNR_OK_DB,
        "channel_sqnr_bad_db": CHANNEL_SQNR_BAD_DB,
        "k_sigma": K_SIGMA,
        "outlier_channel_ratio": OUTLIER_CHANNEL_RATIO,
        "qmax": QMAX_8BIT,
    }
