"""Do the inputs look like what the model was trained on? Its first BatchNorm layers remember the mean and
variance of their inputs during training (running statistics); the same statistics measured on the
calibration inputs must match them. Wrong preprocessing (a missing /255, ImageNet mean/std on [0, 1]
data, another resolution) shifts them by far more than a change of images does. Needs no labels."""
from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

#: how many BatchNorm layers are compared: the first ones the input reaches (before depth blurs the signal)
FIRST_LAYERS = 2
#: calibration samples the statistics are measured on
SAMPLES = 64
#: limits, as medians over a layer's channels (docs/errors.md): the input mean may be this many running
#: standard deviations off, and the input variance off by this factor either way. Right preprocessing
#: measures <= 0.1 and <= 1.2x on the digits models; /255 forgotten: ~130 and ~65,000x; 2x the resolution:
#: 2.2x; [-1, 1] instead of [0, 1]: 0.66 and 3.6x.
MAX_MEAN_SHIFT = 0.5
MAX_VAR_RATIO = 1.5


def _is_initial(bn: Any) -> bool:
    """Statistics never trained (running mean 0, variance 1 everywhere): nothing to compare against."""
    return bool((bn.running_mean == 0).all() and (bn.running_var == 1).all())


def bn_input_statistics(model: Any, batches: Iterable[np.ndarray], *, layers: int = FIRST_LAYERS,
                        source: str = "calibration") -> dict:
    """Compare the inputs of the first ``layers`` BatchNorm layers (in execution order, trained statistics
    only) of the UNFOLDED ``model`` on ``batches`` with their running statistics. Returns the report's
    ``input_statistics`` section: per layer the median standardized mean shift and variance ratio."""
    import torch
    from torch import nn

    norms = {name: m for name, m in model.named_modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
             and m.running_mean is not None and m.running_var is not None}
    untrained = sorted(n for n, m in norms.items() if _is_initial(m))
    trained = {n: m for n, m in norms.items() if n not in untrained}
    out: dict[str, Any] = {"source": source, "samples": 0, "layers": [], "skipped": None,
                           "limits": {"mean_shift": MAX_MEAN_SHIFT, "var_ratio": MAX_VAR_RATIO}}
    if not trained:
        out["skipped"] = ("no BatchNorm layer with trained running statistics" if not untrained else
                          f"the model's {len(untrained)} BatchNorm layers hold their initial statistics (untrained)")
        return out
    sums: dict[str, list] = {}
    order: list[str] = []

    def hook(name: str):
        def pre(mod, inputs):
            x = inputs[0].detach().to(torch.float64)
            dims = [0] + list(range(2, x.dim()))
            s = sums.get(name)
            if s is None:
                s = sums[name] = [0.0, 0.0, 0]
                order.append(name)
            s[0] = s[0] + x.sum(dims)
            s[1] = s[1] + (x * x).sum(dims)
            s[2] += x.numel() // x.shape[1]
        return pre

    handles = {n: m.register_forward_pre_hook(hook(n)) for n, m in trained.items()}
    try:
        with torch.inference_mode():
            for x in batches:
                model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
                out["samples"] += int(x.shape[0])
                for n in order[layers:]:  # only the first ones the input reaches are kept
                    if n in handles:
                        handles.pop(n).remove()
    finally:
        for h in handles.values():
            h.remove()
    for name in order[:layers]:
        s0, s1, count = sums[name]
        bn = trained[name]
        mu = s0 / count
        var = (s1 / count - mu * mu).clamp_min(0.0)
        rm, rv = bn.running_mean.detach().double(), bn.running_var.detach().double()
        shift = ((mu - rm).abs() / torch.sqrt(rv + bn.eps)).median().item()
        log_ratio = torch.log((var + bn.eps) / (rv + bn.eps))
        signed = log_ratio.median().item()
        out["layers"].append({"layer": name, "channels": int(mu.numel()), "mean_shift": float(shift),
                              "var_ratio": float(math.exp(log_ratio.abs().median().item())),
                              "var_direction": "larger" if signed >= 0 else "smaller"})
    if not out["layers"]:
        out["skipped"] = "no BatchNorm layer ran on the inputs"
    return out


def shift_problems(stats: dict | None, max_mean_shift: float | None = MAX_MEAN_SHIFT,
                   max_var_ratio: float | None = MAX_VAR_RATIO) -> list[str]:
    """One sentence per layer whose inputs are off beyond a limit (empty: they look like training inputs)."""
    problems = []
    for r in (stats or {}).get("layers", []):
        bad = []
        if max_mean_shift is not None and not r["mean_shift"] <= max_mean_shift:
            bad.append(f"input mean {r['mean_shift']:.3g} running std off (limit {max_mean_shift:g})")
        if max_var_ratio is not None and not r["var_ratio"] <= max_var_ratio:
            bad.append(f"input variance {r['var_ratio']:.3g}x {r['var_direction']} than its running variance "
                       f"(limit {max_var_ratio:g}x)")
        if bad:
            problems.append(f"BatchNorm {r['layer']}: " + ", ".join(bad) + f" (median of {r['channels']} channels)")
    return problems


__all__ = ["bn_input_statistics", "shift_problems", "FIRST_LAYERS", "SAMPLES", "MAX_MEAN_SHIFT", "MAX_VAR_RATIO"]
