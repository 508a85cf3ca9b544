"""What INT8 costs each folded layer on real data: activation ranges and SQNR at every layer
input, the layer-output error of quantized weights, and the model-output error when only that
layer is INT8 (the rest fp32).

One pass over the calibration set finds each input's range (min-max, and the exact percentile
of |x| from the few largest values kept per layer) and keeps the inputs; the SQNR under the two
clipping ranges is then measured exactly on them (a second pass when they do not fit in memory).
Fake quantization is in torch (see ``weight_stats``).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgerep.errors import DataError
from edgerep.progress import counted
from edgerep.quant.attribution import FoldedLayer
from edgerep.quant.thresholds import ACT_PERCENTILE
from edgerep.quant.weight_stats import _db, fake_quant, quant_noise, quantize_weight

Batch = tuple[Tensor, Tensor | None]


def as_batches(source: Any, limit: int | None = None, batch_size: int = 32) -> list[Batch]:
    """Materialize ``source`` as a list of ``(x float32 tensor, y int64 tensor or None)``.

    ``source``: an iterable of arrays / tensors or of ``(x, y)`` pairs (numpy or torch), or a
    data set with ``.batches(batch_size, limit)``. ``limit`` caps the number of samples.
    """
    if source is None:
        return []
    if hasattr(source, "batches") and callable(source.batches):
        source = source.batches(batch_size, limit)
    out: list[Batch] = []
    n = 0
    for item in source:
        if isinstance(item, (tuple, list)):
            x, y = (item[0], item[1] if len(item) > 1 else None)
        else:
            x, y = item, None
        x_t = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x).float()
        if x_t.dim() < 2:
            raise DataError(f"a batch must be N x ... (NCHW for images), got shape {tuple(x_t.shape)}")
        if isinstance(y, (list, tuple)) and y and isinstance(y[0], dict):
            y = None  # detection targets (one dict per image): top-1 is classification-only, fidelity still measured
        y_t = None if y is None else torch.as_tensor(np.asarray(y) if not isinstance(y, Tensor) else y).long()
        if limit is not None and n + x_t.shape[0] > limit:
            keep = limit - n
            x_t, y_t = x_t[:keep], (None if y_t is None else y_t[:keep])
        if x_t.shape[0] == 0:
            break
        out.append((x_t, y_t))
        n += x_t.shape[0]
        if limit is not None and n >= limit:
            break
    return out


def _first_input(inputs: tuple) -> Tensor:
    return inputs[0]


def _forward(model: nn.Module, x: Tensor) -> Tensor:
    y = model(x)
    if isinstance(y, (tuple, list)):
        y = y[0]
    if isinstance(y, dict):
        y = next(iter(y.values()))
    return y


@dataclass
class ActivationStats:
    """The input of one folded layer over the calibration set."""

    count: int
    min: float
    max: float
    mean: float
    std: float
    amax: float  # max |x|: the min-max clipping range
    percentile: float  # which percentile of |x| gives the percentile clipping range
    amax_percentile: float
    sqnr_minmax_db: float
    sqnr_percentile_db: float
    clipped_share_percentile: float  # share of values beyond the percentile range
    #: more percentiles of |x| (50, 90, 99, 99.9): exact up to SAMPLE_CAP values, else from a strided sample
    abs_percentiles: dict = field(default_factory=dict)
    out_sqnr_w_per_tensor_db: float | None = None  # layer output, weights INT8 per tensor (input fp32)
    out_sqnr_w_per_channel_db: float | None = None
    out_sqnr_w_per_channel_worst_db: float | None = None  # the worst output channel of the above
    out_worst_channel: int | None = None

    @property
    def best_method(self) -> str:
        return "percentile" if self.sqnr_percentile_db > self.sqnr_minmax_db else "minmax"

    @property
    def best_amax(self) -> float:
        return self.amax_percentile if self.best_method == "percentile" else self.amax

    def to_dict(self) -> dict:
        d = asdict(self)
        d["best_method"] = self.best_method
        return d


class _TopK:
    """The ``k`` largest values of |x| seen so far, with ``k`` sized from the total element count so
    that the ``p``-th percentile is exact (numpy's linear interpolation) at the end."""

    def __init__(self, percentile: float):
        self.p = percentile
        self.k = 0
        self.values = torch.empty(0)

    def add(self, a: Tensor, total: int) -> None:
        self.k = max(self.k, min(total, int(math.ceil((1.0 - self.p / 100.0) * total)) + 2))
        a = a.reshape(-1).float()
        if self.values.device != a.device:
            self.values = self.values.to(a.device)
        if self.values.numel() >= self.k:  # only values above the current k-th largest can enter
            a = a[a >= self.values[self.k - 1]]
        elif a.numel() > 64 * self.k:  # first batch: pre-filter with a threshold from a strided sample
            stride = a.numel() // (16 * self.k)
            sample = a[::stride]
            # the sample holds ~k/stride of the k largest: a threshold at twice that rank lets ~2k through
            rank = min(sample.numel(), 2 * (-(-self.k // stride)) + 16)
            t = torch.topk(sample, rank, sorted=True).values[-1]
            cand = a[a >= t]
            if cand.numel() >= self.k:
                a = cand
        pool = torch.cat([self.values, a])
        self.values = torch.topk(pool, min(self.k, pool.numel()), sorted=True).values

    def percentile(self, n: int) -> float:
        """The percentile over all ``n`` values seen (linear interpolation between order statistics)."""
        if n == 0:
            return 0.0
        pos = self.p / 100.0 * (n - 1)
        lo = int(math.floor(pos))
        frac = pos - lo

        def asc(j: int) -> float:  # j-th smallest value, from the kept largest ones
            return float(self.values[n - 1 - j])

        hi = min(lo + 1, n - 1)
        return asc(lo) + frac * (asc(hi) - asc(lo))


@dataclass
class _Acc:
    n: int = 0
    s1: float = 0.0
    s2: float = 0.0
    mn: float = math.inf
    mx: float = -math.inf
    top: _TopK | None = None
    sample: list = field(default_factory=list)
    sampled: int = 0
    noise_mm: float = 0.0
    noise_pct: float = 0.0
    out_sig: float = 0.0
    out_noise_t: float = 0.0
    out_noise_c: float = 0.0
    out_sig_ch: Tensor | None = None
    out_noise_ch: Tensor | None = None


def _sumsq(t: Tensor) -> float:
    """sum(t^2) in the tensor's dtype (torch's pairwise float32 sum: ~1e-7 relative, 10x faster than float64)."""
    return float((t * t).sum())


def _layer_out(module: nn.Module, x: Tensor, w: Tensor) -> Tensor:
    if isinstance(module, nn.Conv2d):
        return F.conv2d(x, w, module.bias, module.stride, module.padding, module.dilation, module.groups)
    return F.linear(x, w, module.bias)


#: the informational percentiles of |x| use every value, or an evenly strided sample of SAMPLE_CAP values
SAMPLE_CAP = 500_000
INFO_PERCENTILES = (50.0, 90.0, 99.0, 99.9)

#: keep every layer's calibration input in memory (instead of a second forward pass) up to this size
INPUT_CACHE_BYTES = 256 * 1024 ** 2


def _output_noise(acc: _Acc, module: nn.Module, x: Tensor, y: Tensor, qweights: dict) -> None:
    """Add the layer output's signal and its noise with INT8 weights (per tensor, per channel; and per channel
    by output channel) for ``x`` -> ``y`` to ``acc``, in the forward hook: the pairs are not kept (8 images'
    inputs and outputs of every layer were 115 MB at 224x224, held through the second pass; 0.9 GB at 640)."""
    if id(module) not in qweights:
        w = module.weight.detach()
        qweights[id(module)] = (quantize_weight(w.double(), False).to(w.dtype),
                                quantize_weight(w.double(), True).to(w.dtype))
    wt, wc = qweights[id(module)]
    dt = y - _layer_out(module, x, wt)
    dc = y - _layer_out(module, x, wc)
    acc.out_sig += _sumsq(y)
    acc.out_noise_t += _sumsq(dt)
    acc.out_noise_c += _sumsq(dc)
    dims = [d for d in range(y.dim()) if d != 1]
    s_ch, n_ch = (y * y).sum(dim=dims).double(), (dc * dc).sum(dim=dims).double()
    acc.out_sig_ch = s_ch if acc.out_sig_ch is None else acc.out_sig_ch + s_ch
    acc.out_noise_ch = n_ch if acc.out_noise_ch is None else acc.out_noise_ch + n_ch


class KeptInputs:
    """Tensors kept per layer over a pass (the check's calibration inputs, the sensitivity reference's replay
    outputs), only when all of them fit in ``budget`` bytes (else the caller recomputes them). Whether they fit
    is known during the first batch (every sample has the set's shapes), so a set that will not fit is dropped
    there, not after filling the budget: RepVGG-A0 at 224 needs 482 MB of inputs for 64 images, and 256 MiB were
    held, then dropped. ``peak``: the most bytes it held."""

    def __init__(self, budget: int, total_samples: int):
        self.budget, self.total = budget, max(1, total_samples)
        self.on = budget > 0
        self.inputs: dict[str, list[Tensor]] = {}
        self.bytes = self.peak = 0
        self.projected = 0.0  # every batch's bytes, from the first batch's per-sample bytes

    def offer(self, name: str, x: Tensor, first_batch: bool) -> None:
        """Keep a copy of ``x`` (a later in-place op must not change it) unless the inputs will not fit."""
        if not self.on:
            return
        nbytes = x.numel() * x.element_size()
        if first_batch:
            self.projected += nbytes * self.total / max(1, x.shape[0])
        if self.bytes + nbytes > self.budget or self.projected > self.budget:
            self.on, self.inputs, self.bytes = False, {}, 0
            return
        self.inputs.setdefault(name, []).append(x.clone())
        self.bytes += nbytes
        self.peak = max(self.peak, self.bytes)


@torch.no_grad()
def activation_stats(model: nn.Module, layers: list[FoldedLayer], batches: list[Batch],
                     percentile: float = ACT_PERCENTILE, out_images: int | None = None,
                     progress: Callable[[str], None] | None = None,
                     cache_bytes: int = INPUT_CACHE_BYTES) -> dict[str, ActivationStats]:
    """Ranges and INT8 SQNR of every layer's input on ``batches`` (model in eval mode).

    One forward pass records ranges, the largest |x| values (for the percentile) and, within
    ``cache_bytes``, the inputs themselves; the SQNR under the two clipping ranges is then computed
    on the kept inputs (or on a second forward pass when they did not fit). ``out_images`` caps how
    many images the layer-output SQNR with INT8 weights uses (two extra convs per layer).
    """
    accs = {layer.name: _Acc() for layer in layers}
    total_samples = sum(int(x.shape[0]) for x, _ in batches)
    qweights: dict[int, tuple[Tensor, Tensor]] = {}  # per module: its INT8 weights, per tensor and per channel
    kept = KeptInputs(cache_bytes, total_samples)
    state = {"images": 0}
    model.eval()

    def pass1(layer: FoldedLayer):
        acc = accs[layer.name]

        def hook(_m, inp, output):
            x = _first_input(inp).detach()
            acc.n += x.numel()
            acc.s1 += float(x.sum())
            acc.s2 += _sumsq(x)
            mn, mx = torch.aminmax(x)
            acc.mn = min(acc.mn, float(mn))
            acc.mx = max(acc.mx, float(mx))
            if acc.top is None:
                acc.top = _TopK(percentile)
            ax = x.abs()
            total = x.numel() // max(1, x.shape[0]) * total_samples
            acc.top.add(ax, total)
            if acc.sampled < SAMPLE_CAP:
                stride = max(1, -(-total // SAMPLE_CAP))
                piece = ax.reshape(-1)[::stride].clone()
                acc.sample.append(piece)
                acc.sampled += piece.numel()
            keep = x.shape[0] if out_images is None else max(0, min(x.shape[0], out_images - state["images"]))
            if keep:  # measured here, before a later in-place op can change x or the output
                _output_noise(acc, layer.module, x[:keep], output[:keep].detach(), qweights)
            kept.offer(layer.name, x, first_batch=not state["images"])
        return hook

    handles = [layer.module.register_forward_hook(pass1(layer)) for layer in layers]
    try:
        for x, _ in batches:
            _forward(model, x)
            state["images"] += x.shape[0]
    finally:
        for h in handles:
            h.remove()
    if progress:
        progress("activation ranges measured")

    amax = {n: max(abs(a.mn), abs(a.mx)) if a.n else 0.0 for n, a in accs.items()}
    amax_p = {n: min(a.top.percentile(a.n), amax[n]) if a.top is not None else 0.0 for n, a in accs.items()}

    def measure(name: str, x: Tensor) -> None:
        acc = accs[name]
        acc.noise_mm += _sumsq(quant_noise(x, amax[name]))
        acc.noise_pct += _sumsq(quant_noise(x, amax_p[name]))

    if kept.on:
        for name, xs in kept.inputs.items():
            for x in xs:
                measure(name, x)
            xs.clear()
    else:  # the inputs did not fit in memory: run the calibration set again
        handles = [layer.module.register_forward_pre_hook(
            lambda _m, inp, name=layer.name: measure(name, _first_input(inp).detach())) for layer in layers]
        try:
            for x, _ in batches:
                _forward(model, x)
        finally:
            for h in handles:
                h.remove()

    if progress:
        progress("activation SQNR measured")

    out: dict[str, ActivationStats] = {}
    for layer in layers:
        a = accs[layer.name]
        if a.n == 0:
            continue  # the layer did not run on this input (a branch not taken)
        mean = a.s1 / a.n
        std = math.sqrt(max(a.s2 / a.n - mean * mean, 0.0))
        ap = amax_p[layer.name]
        clipped = int((a.top.values > ap).sum()) if a.top is not None else 0
        st = ActivationStats(a.n, a.mn, a.mx, mean, std, amax[layer.name], percentile, ap,
                             _db(a.s2, a.noise_mm), _db(a.s2, a.noise_pct), clipped / a.n)
        if a.sample:
            smp = torch.cat(a.sample).double()
            q = torch.quantile(smp[:16_000_000], torch.tensor([p / 100 for p in INFO_PERCENTILES], dtype=torch.float64,
                                                              device=smp.device))
            st.abs_percentiles = {f"{p:g}": float(v) for p, v in zip(INFO_PERCENTILES, q)}
            a.sample.clear()
        if a.out_sig_ch is not None:
            st.out_sqnr_w_per_tensor_db = _db(a.out_sig, a.out_noise_t)
            st.out_sqnr_w_per_channel_db = _db(a.out_sig, a.out_noise_c)
            per = [_db(float(s_), float(n_)) for s_, n_ in zip(a.out_sig_ch, a.out_noise_ch)]
            live = [(v, i) for i, v in enumerate(per) if float(a.out_sig_ch[i]) > 0]
            if live:
                v, i = min(live)
                st.out_sqnr_w_per_channel_worst_db, st.out_worst_channel = v, i
        out[layer.name] = st
    return out


@dataclass
class Fidelity:
    """Model output with some INT8 layers vs the fp32 model."""

    sqnr_db: float
    cosine: float  # mean over samples of the cosine between flattened outputs
    top1_agreement: float | None  # share of samples whose argmax matches fp32 (2-D outputs)
    top1: float | None  # accuracy, when labels exist

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class LayerSensitivity:
    """Only this layer INT8: ``plain`` = per-tensor weights + min-max input; ``fixed`` = per-channel
    weights + the better input clipping."""

    plain: Fidelity
    fixed: Fidelity | None  # None: not run, the plain run was already fine
    input_quantized: bool  # False when no calibration data gave the input a range

    @property
    def best(self) -> Fidelity:
        """The fixed run, or the plain one where the fixed run was skipped."""
        return self.fixed if self.fixed is not None else self.plain

    def to_dict(self) -> dict:
        return {"plain": self.plain.to_dict(), "fixed": self.fixed.to_dict() if self.fixed else None,
                "input_quantized": self.input_quantized}


def _fidelity(ref: list[Tensor], got: list[Tensor], labels: list[Tensor | None]) -> Fidelity:
    r = torch.cat([t.detach().double().cpu().reshape(t.shape[0], -1) for t in ref])
    g = torch.cat([t.detach().double().cpu().reshape(t.shape[0], -1) for t in got])
    sq = _db(float((r * r).sum()), float(((r - g) ** 2).sum()))
    cos = float(F.cosine_similarity(r, g, dim=1, eps=1e-30).mean())
    agree = top1 = None
    if ref[0].dim() == 2:
        agree = float((r.argmax(1) == g.argmax(1)).double().mean())
        if all(y is not None for y in labels) and labels:
            y = torch.cat([t for t in labels if t is not None])
            top1 = float((g.argmax(1) == y).double().mean())
    return Fidelity(sq, cos, agree, top1)


#: skip the prefix cache when the cached layer outputs would exceed this many bytes
PREFIX_CACHE_BYTES = 256 * 1024 ** 2


@dataclass
class Reference:
    """fp32 outputs of the model on the evaluation batches, plus, per layer, the recorded output of
    its replay unit (so a sensitivity run can replay what runs before the quantized layer)."""

    outputs: list[Tensor]
    order: list[str]  # layer names in execution order
    cache: dict[str, list[Tensor]] | None  # None: replay not possible (a unit ran != once per batch)
    fidelity: Fidelity | None
    units: dict[str, nn.Module] = field(default_factory=dict)  # layer name -> module whose output is replayed


def replay_units(model: nn.Module, layers: list[FoldedLayer]) -> dict[str, nn.Module]:
    """For each layer, the largest submodule that contains it and no other layer (e.g. a folded
    block's conv + activation): replaying that skips the activation too. The model itself never."""
    paths = {id(m): p for p, m in model.named_modules()}
    lpaths = {layer.name: paths.get(id(layer.module)) for layer in layers}
    mods = dict(model.named_modules())
    out: dict[str, nn.Module] = {}
    for layer in layers:
        p = lpaths[layer.name]
        unit = layer.module
        if p:
            parts = p.split(".")
            for i in range(1, len(parts)):  # shortest ancestor first
                anc = ".".join(parts[:i])
                inside = [q for q in lpaths.values() if q is not None and (q == anc or q.startswith(anc + "."))]
                if len(inside) == 1:
                    unit = mods[anc]
                    break
        out[layer.name] = unit
    return out


@torch.no_grad()
def reference_outputs(model: nn.Module, batches: list[Batch], layers: list[FoldedLayer] | None = None) -> Reference:
    """fp32 outputs on ``batches``; with ``layers``, also record their execution order and the
    outputs of their replay units."""
    model.eval()
    layers = layers or []
    units = replay_units(model, layers)
    order: list[str] = []
    # the replay units' outputs, kept only when all of them fit PREFIX_CACHE_BYTES: known during the first batch
    # (16 images of RepVGG-A0 at 640 need ~0.9 GB: they were held to the end of the pass, then dropped)
    kept = KeptInputs(PREFIX_CACHE_BYTES, sum(int(x.shape[0]) for x, _ in batches))
    state = {"images": 0, "ok": True}

    def rec(name: str):
        def hook(_m, _inputs, output):
            if not isinstance(output, Tensor):
                state["ok"] = False
                return
            kept.offer(name, output.detach(), first_batch=not state["images"])  # a copy: later in-place ops
            if name not in order:
                order.append(name)
        return hook

    handles = [units[layer.name].register_forward_hook(rec(layer.name)) for layer in layers]
    outs = []
    try:
        for x, _ in batches:
            outs.append(_forward(model, x))
            state["images"] += int(x.shape[0])
    finally:
        for h in handles:
            h.remove()
    labels = [y for _, y in batches]
    cache = {layer.name: kept.inputs.get(layer.name, []) for layer in layers} if kept.on else None
    ok = state["ok"] and cache is not None and all(len(v) in (0, len(batches)) for v in cache.values())
    return Reference(outs, order, cache if ok else None, _fidelity(outs, outs, labels) if outs else None, units)


@torch.no_grad()
def _run_with(model: nn.Module, layer: FoldedLayer, w: Tensor, amax: float | None, batches: list[Batch],
              replay: dict[nn.Module, list[Tensor]]) -> list[Tensor]:
    """Run with ``layer`` quantized; modules in ``replay`` return their recorded fp32 output instead
    of computing it (they run before ``layer``, so their output cannot change)."""
    mod = layer.module
    orig = mod.weight.data.clone()
    handle = None
    if amax is not None:
        handle = mod.register_forward_pre_hook(lambda _m, inputs: (fake_quant(inputs[0], amax),) + tuple(inputs[1:]))
    state = {"b": 0}
    for m, outs in replay.items():
        m.forward = (lambda *a, _o=outs, **k: _o[state["b"]].clone())  # type: ignore[method-assign]
    mod.weight.data.copy_(w)
    try:
        res = []
        for b, (x, _) in enumerate(batches):
            state["b"] = b
            res.append(_forward(model, x))
        return res
    finally:
        mod.weight.data.copy_(orig)
        for m in replay:
            del m.forward
        if handle is not None:
            handle.remove()


def layer_sensitivity(model: nn.Module, layers: list[FoldedLayer], batches: list[Batch],
                      act: dict[str, ActivationStats] | None = None, ref: Reference | None = None,
                      progress: Callable[[str], None] | None = None,
                      skip_fixed_above: float | None = None) -> dict[str, LayerSensitivity]:
    """For each layer alone: fake-quantize its weight (and input, when ``act`` has its range), run
    the model, and compare with fp32. Up to two runs per layer: plain INT8, then fixed INT8 unless
    the plain run already reaches ``skip_fixed_above`` dB (fixes only add precision). The layers
    that execute before it are replayed from the fp32 run instead of recomputed."""
    act = act or {}
    if ref is None or (ref.cache is None and ref.order == [] and layers):
        ref = reference_outputs(model, batches, layers)
    labels = [y for _, y in batches]
    by_name = {layer.name: layer for layer in layers}
    out: dict[str, LayerSensitivity] = {}
    with counted("sensitivity", len(layers), "layers") as tick:
        for i, layer in enumerate(layers):
            out[layer.name] = _one_layer(model, layer, batches, act, ref, by_name, labels, skip_fixed_above)
            tick(1)
            if progress:
                progress(f"sensitivity {i + 1}/{len(layers)}: {layer.name}")
    return out


def _one_layer(model: nn.Module, layer: FoldedLayer, batches: list[Batch], act: dict, ref: Reference,
               by_name: dict, labels: list, skip_fixed_above: float | None) -> LayerSensitivity:
    """One layer alone fake-quantized: plain INT8, then fixed INT8 unless plain already reaches the bar."""
    replay: dict[nn.Module, list[Tensor]] = {}
    if ref.cache is not None and layer.name in ref.order:
        for name in ref.order[:ref.order.index(layer.name)]:
            replay[ref.units.get(name, by_name[name].module)] = ref.cache[name]
    w = layer.module.weight.detach()
    st = act.get(layer.name)
    wd = w.double()
    plain = _fidelity(ref.outputs, _run_with(model, layer, quantize_weight(wd, False).to(w.dtype),
                                             st.amax if st else None, batches, replay), labels)
    fixed = None
    if skip_fixed_above is None or plain.sqnr_db < skip_fixed_above:
        fixed = _fidelity(ref.outputs, _run_with(model, layer, quantize_weight(wd, True).to(w.dtype),
                                                 st.best_amax if st else None, batches, replay), labels)
    return LayerSensitivity(plain, fixed, st is not None)


__all__ = ["as_batches", "ActivationStats", "activation_stats", "Fidelity", "LayerSensitivity",
           "layer_sensitivity", "reference_outputs", "Reference"]
