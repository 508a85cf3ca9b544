"""AdaRound (Nagel et al., 2020): learn, per weight, whether to round down or up, layer by layer on calibration data.

For each weighted layer in graph order: its input as the *quantized* model computes it (the QDQ file of the
model so far, earlier layers already rounded, simulated with fusions off), its output as the FP32 model
computes it (the target: the rounding also soaks up the error that reaches the layer), and a soft rounding
``h(V)`` in [0, 1] per weight trained by Adam on ``||layer(x_q; s * (floor(w/s) + h(V))) - y_fp||^2`` plus a
regularizer that drives every ``h`` to 0 or 1 (its exponent annealed 20 -> 2). Then the hard rounding, an
empirical bias correction (the mean output shift the rounding leaves, per channel, subtracted from the bias),
and the next layer. The loss is a mean over output positions, so a conv layer whose whole-sample step would cost
more than ``AdaRoundOptions.step_macs`` (RepVGG-A0 at 224 x 224: every layer) steps on one random output window
of its batch instead, cut exactly from the once-padded input (``conv_window``); the final MSEs and the bias
correction stay on whole samples. Each layer's input and target are read by onnxruntime from a graph pruned to
the nodes upstream of them (``upstream``).

The grid is onnxruntime's own: scales and axes are read back from the QDQ file ``write_qdq`` writes for the
config (symmetric int8, per-channel). The result is an FP32 file whose learned weights are exactly ``q * s``
with every channel's largest |q| kept at the nearest value (127): quantizing it again, onnxruntime derives
the same scale and rounds ``q * s / s`` back to ``q``, so every QDQ file written from it (CPU policies with
8-bit per-channel weights, the TensorRT file) holds the learned integers; ``write_adarounded`` checks it.
"""
from __future__ import annotations

import math
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from edgerep.errors import EdgerepError
from edgerep.quant.calibrate import CalibrationResult
from edgerep.quant.conv_pad import unpad, unpadded_rows
from edgerep.quant.qdq import QdqConfig

ZETA, GAMMA = 1.1, -0.1  # the rectified sigmoid's stretch (AdaRound's values)


@dataclass(frozen=True)
class AdaRoundOptions:
    """How hard each layer is optimized: Adam ``iters`` on ``batch`` samples, regularizer weight ``reg``,
    warm-up fraction without it, ``samples`` calibration inputs at most, ``seed`` for the batches."""

    iters: int = 1000
    batch: int = 32
    lr: float = 1e-2
    reg: float = 0.01
    warmup: float = 0.2
    samples: int = 256
    seed: int = 0
    # A conv layer whose whole-sample step costs more than ``step_macs`` multiply-adds (batch x output positions x
    # MACs per position) learns on one random output window per step instead, of side W the largest with
    # batch x W^2 x MACs per position <= step_macs (at least 1); 0: whole samples always. 2^28 keeps every layer
    # of the shipped digits, detector (160 px) and SR models on whole samples (their largest step: 236 M).
    step_macs: int = 1 << 28


@dataclass
class LayerRounding:
    """What AdaRound changed in one layer: weights rounded away from nearest, the layer's output error before
    and after (mean squared error against the FP32 output, on its quantized input), the bias shift, time."""

    node: str
    weights: int
    flipped: int
    mse_nearest: float
    mse_learned: float
    max_bias_shift: float
    seconds: float
    skipped: str | None = None
    inputs_seconds: float = 0.0  # of ``seconds``: the QDQ rewrite and the two onnxruntime passes (input, target)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class AdaRoundResult:
    """The FP32 file carrying the learned weights, each layer's learned int8 weights, and the per-layer log."""

    path: Path
    qweights: dict[str, np.ndarray] = field(default_factory=dict)  # node -> int8 weights as the QDQ file stores them
    layers: list[LayerRounding] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"layers": [r.to_dict() for r in self.layers], "seconds": round(self.seconds, 3),
                "flipped": int(sum(r.flipped for r in self.layers)),
                "weights": int(sum(r.weights for r in self.layers))}


# ---- reading the grid back from a QDQ file --------------------------------------------------------------
@dataclass(frozen=True)
class Grid:
    """One layer's weight grid as onnxruntime wrote it: the nearest int8 weights, the scales, the axis."""

    weight: str  # the FP32 weight initializer's name
    q: np.ndarray
    scale: np.ndarray
    axis: int


def qdq_weight_grids(qdq_path: str | Path) -> dict[str, Grid]:
    """Node -> its weight's int8 values, scale and axis, read from a QDQ file's ``DequantizeLinear`` of an
    int8 initializer (nodes whose weight is not quantized are absent)."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(qdq_path))
    unpad(m)  # a CPU file's narrow convs padded for the fast kernel: their real filters
    inits = {i.name: i for i in m.graph.initializer}
    dq = {n.output[0]: n for n in m.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits}
    out: dict[str, Grid] = {}
    for n in m.graph.node:
        if n.op_type not in ("Conv", "Gemm", "MatMul", "ConvTranspose") or len(n.input) < 2 or n.input[1] not in dq:
            continue
        d = dq[n.input[1]]
        q = numpy_helper.to_array(inits[d.input[0]])
        if q.dtype != np.int8:
            continue
        axis = next((a.i for a in d.attribute if a.name == "axis"), 1)
        name = d.input[0][:-len("_quantized")] if d.input[0].endswith("_quantized") else d.input[0]
        out[n.name] = Grid(name, q, numpy_helper.to_array(inits[d.input[1]]).astype(np.float32).reshape(-1), axis)
    return out


def qdq_int8_weights(qdq_path: str | Path) -> dict[str, np.ndarray]:
    """Node -> the int8 weights a QDQ file stores for it (what every engine reads)."""
    return {k: g.q for k, g in qdq_weight_grids(qdq_path).items()}


# ---- one layer as torch -----------------------------------------------------------------------------------
def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _layer_fn(node) -> Callable | None:
    """``f(x, w, b)`` computing ``node`` in torch (Conv with explicit pads, Gemm without transA); None otherwise."""
    import torch.nn.functional as F

    a = _attrs(node)
    if node.op_type == "Conv":
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            return None
        pads = list(a.get("pads", [0, 0, 0, 0]))
        stride, dil, groups = a.get("strides", [1, 1]), a.get("dilations", [1, 1]), a.get("group", 1)
        if len(pads) != 4:
            return None

        def conv(x, w, b):
            return F.conv2d(F.pad(x, (pads[1], pads[3], pads[0], pads[2])), w, b, stride=stride, dilation=dil,
                            groups=groups)

        return conv
    if node.op_type == "Gemm" and not a.get("transA", 0):
        tb, alpha, beta = a.get("transB", 0), a.get("alpha", 1.0), a.get("beta", 1.0)

        def gemm(x, w, b):
            y = alpha * (x @ (w.t() if tb else w))
            return y if b is None else y + beta * b

        return gemm
    return None


@dataclass(frozen=True)
class ConvGeometry:
    """A 2-D Conv's pads (ONNX order: top, left, bottom, right), strides, dilations and groups."""

    pads: tuple[int, int, int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    groups: int


def conv_geometry(node) -> ConvGeometry | None:
    """``node``'s geometry when it is a 2-D Conv with explicit pads (what ``_layer_fn`` runs); None otherwise."""
    if node.op_type != "Conv":
        return None
    a = _attrs(node)
    pads = list(a.get("pads", [0, 0, 0, 0]))
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or len(pads) != 4:
        return None
    st, dil = list(a.get("strides", [1, 1])), list(a.get("dilations", [1, 1]))
    if len(st) != 2 or len(dil) != 2:
        return None
    return ConvGeometry((int(pads[0]), int(pads[1]), int(pads[2]), int(pads[3])), (int(st[0]), int(st[1])),
                        (int(dil[0]), int(dil[1])), int(a.get("group", 1)))


def pad_input(x, geo: ConvGeometry):
    """``x`` (N, C, H, W) zero-padded with the conv's own pads (once, before any window is cut)."""
    import torch.nn.functional as F

    t, left, b, r = geo.pads
    return F.pad(x, (left, r, t, b))


def input_window(xp, geo: ConvGeometry, kernel: tuple[int, int], oy: int, ox: int, h: int, w: int):
    """The part of the padded input ``xp`` that output rows ``oy:oy+h``, columns ``ox:ox+w`` read."""
    (sy, sx), (dy, dx) = geo.stride, geo.dilation
    y0, x0 = oy * sy, ox * sx
    return xp[..., y0:y0 + (h - 1) * sy + (kernel[0] - 1) * dy + 1, x0:x0 + (w - 1) * sx + (kernel[1] - 1) * dx + 1]


def conv_window(xp, wt, bt, geo: ConvGeometry, oy: int, ox: int, h: int, w: int, idx=None):
    """The conv's outputs at rows ``oy:oy+h``, columns ``ox:ox+w`` from the padded input ``xp`` (its samples
    ``idx``, all when None): the window's input crop convolved without padding (the full conv's outputs there)."""
    import torch.nn.functional as F

    crop = input_window(xp, geo, (int(wt.shape[2]), int(wt.shape[3])), oy, ox, h, w)
    crop = crop if idx is None else crop[idx]  # the crop first: only the window is copied
    return F.conv2d(crop, wt, bt, stride=geo.stride, dilation=geo.dilation, groups=geo.groups)


def step_window(w_shape: Sequence[int], out_hw: Sequence[int], batch: int, step_macs: int) -> tuple[int, int] | None:
    """The output window (rows, columns) a conv layer's Adam step uses, or None for whole samples: None when
    ``step_macs`` is 0 or a whole-sample step of ``batch`` costs at most ``step_macs`` multiply-adds."""
    per_pos = int(np.prod(w_shape))  # Cout x Cin/groups x kh x kw
    h, w = int(out_hw[0]), int(out_hw[1])
    if not step_macs or batch * h * w * per_pos <= step_macs:
        return None
    side = max(1, math.isqrt(max(step_macs // (batch * per_pos), 1)))
    return min(side, h), min(side, w)


def _rect_sigmoid(v):
    import torch

    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def _broadcast(scale: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    shape = [1] * ndim
    shape[axis] = -1
    return scale.reshape(shape)


def learn_rounding(fn: Callable, w: np.ndarray, b: np.ndarray | None, grid: Grid, x: np.ndarray, y_pre: np.ndarray,
                   relu: bool, opts: AdaRoundOptions, geometry: ConvGeometry | None = None
                   ) -> tuple[np.ndarray, float, float, np.ndarray | None]:
    """One layer: the learned int8 weights, the output MSE with nearest and with learned rounding (on ``x``,
    against the FP32 output ``y_pre`` after a ReLU when ``relu``), and the bias after the empirical
    correction (the mean pre-activation shift per channel; ``b`` itself when None). With a conv's
    ``geometry``, a step costlier than ``opts.step_macs`` uses one random output window (``step_window``);
    the MSEs and the bias correction are always on whole samples."""
    import torch

    g = torch.Generator().manual_seed(opts.seed)
    s = _broadcast(grid.scale, grid.axis, w.ndim).astype(np.float32)
    safe = np.where(s > 0, s, 1.0)
    floor = np.floor(w / safe)
    rest = np.clip(w / safe - floor, 1e-4, 1 - 1e-4)
    xt, yp = torch.from_numpy(x), torch.from_numpy(y_pre)
    yt = torch.relu(yp) if relu else yp
    st, ft = torch.from_numpy(s), torch.from_numpy(floor.astype(np.float32))
    bt = torch.from_numpy(b.astype(np.float32)) if b is not None else None
    v = torch.nn.Parameter(torch.from_numpy((-np.log((ZETA - GAMMA) / (rest - GAMMA) - 1)).astype(np.float32)))
    lo, hi = -127.0, 127.0

    def act(o):
        return torch.relu(o) if relu else o

    def mse(o) -> float:  # summed over channels, mean over the rest (AdaRound's reconstruction loss)
        return float(((o - yt) ** 2).sum(1).mean())

    opt = torch.optim.Adam([v], lr=opts.lr)
    n = len(x)
    win = step_window(w.shape, y_pre.shape[2:], min(opts.batch, n), opts.step_macs) \
        if geometry is not None and w.ndim == 4 and y_pre.ndim == 4 else None
    xp = pad_input(xt, geometry) if win is not None else None
    for it in range(opts.iters):
        idx = torch.randint(0, n, (min(opts.batch, n),), generator=g)
        wq = st * torch.clamp(ft + _rect_sigmoid(v), lo, hi)
        if win is None:
            loss = ((act(fn(xt[idx], wq, bt)) - yt[idx]) ** 2).sum(1).mean()
        else:  # a random output window: an exact piece of the per-position loss
            (h, wd), (oh, ow) = win, y_pre.shape[2:]
            oy = int(torch.randint(0, oh - h + 1, (1,), generator=g))
            ox = int(torch.randint(0, ow - wd + 1, (1,), generator=g))
            out = conv_window(xp, wq, bt, geometry, oy, ox, h, wd, idx)
            loss = ((act(out) - yt[idx, :, oy:oy + h, ox:ox + wd]) ** 2).sum(1).mean()
        frac = it / opts.iters
        if frac >= opts.warmup:
            beta = 20.0 + (2.0 - 20.0) * (frac - opts.warmup) / (1 - opts.warmup)
            loss = loss + opts.reg * (1 - (2 * _rect_sigmoid(v) - 1).abs().pow(beta)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        q = np.clip(floor + (_rect_sigmoid(v).numpy() >= 0.5), lo, hi)
        keep = _largest_per_channel(grid.q, grid.axis)  # the channel's max |q| stays, so its scale does
        q[keep] = grid.q[keep]
        q = np.where(s > 0, q, grid.q).astype(np.int8)
        mse_near = mse(act(fn(xt, torch.from_numpy((grid.q * s).astype(np.float32)), bt)))
        wl = torch.from_numpy((q * s).astype(np.float32))
        pre = fn(xt, wl, bt)
        new_b = b
        if b is not None and pre.ndim >= 2 and b.shape == (pre.shape[1],):
            shift = (yp - pre).transpose(0, 1).reshape(pre.shape[1], -1).mean(1).numpy()
            new_b = (b + shift).astype(b.dtype)
            pre = fn(xt, wl, torch.from_numpy(new_b.astype(np.float32)))
        mse_learned = mse(act(pre))
    return q, mse_near, mse_learned, new_b


def _largest_per_channel(q: np.ndarray, axis: int) -> np.ndarray:
    """A boolean mask with the (first) element of largest |q| in every slice along ``axis``."""
    qm = np.moveaxis(np.abs(q.astype(np.int32)), axis, 0).reshape(q.shape[axis], -1)
    mask = np.zeros_like(qm, dtype=bool)
    mask[np.arange(qm.shape[0]), qm.argmax(1)] = True
    moved = np.moveaxis(q, axis, 0).shape
    return np.moveaxis(mask.reshape(moved), 0, axis)


# ---- the model ------------------------------------------------------------------------------------------
def upstream(model, names: Sequence[str]):
    """A copy of ``model`` computing only ``names``: the nodes they depend on (walked back through producers),
    its outputs ``names`` (onnxruntime runs every node of a graph whatever outputs a call asks for)."""
    import onnx
    from onnx import helper

    from edgerep.quant.onnx_graph import ancestors

    keep = ancestors(model, names)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    nodes = [n for i, n in enumerate(m.graph.node) if i in keep]
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    del m.graph.output[:]
    m.graph.output.extend(helper.make_empty_tensor_value_info(t) for t in names)
    return m


def _session(model, names: Sequence[str], threads: int | None):
    import onnxruntime as ort

    m = upstream(model, names)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _run(sess, x: np.ndarray, names: Sequence[str], batch: int = 64, static: bool = False) -> dict[str, np.ndarray]:
    """``names`` on ``x`` in batches (a static-batch model gets its last batch zero-padded)."""
    feed = sess.get_inputs()[0].name
    parts: dict[str, list[np.ndarray]] = {t: [] for t in names}
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        n = len(xb)
        if static and n < batch:
            xb = np.concatenate([xb, np.zeros((batch - n, *xb.shape[1:]), dtype=xb.dtype)])
        for t, o in zip(names, sess.run(list(names), {feed: xb})):
            parts[t].append(o[:n])
    return {t: np.concatenate(v) for t, v in parts.items()}


def _relu_after(model, node) -> bool:
    consumers = [n for n in model.graph.node if node.output[0] in n.input]
    return len(consumers) == 1 and consumers[0].op_type == "Relu"


def adaround_model(src: str | Path, out: str | Path, calibration: CalibrationResult, x: np.ndarray,
                   config: QdqConfig, *, nodes: Sequence[str] | None = None, options: AdaRoundOptions | None = None,
                   threads: int | None = None, batch: int = 64, static: bool = False,
                   say: Callable[[str], None] = lambda _m: None) -> AdaRoundResult:
    """Learn the rounding of ``nodes`` (default every quantizable layer) of ``src`` on inputs ``x`` and write the
    FP32 file ``out`` whose weights are the learned ``q * s`` (and corrected biases); verified by
    ``write_adarounded``'s read-back (the learned integers are what a QDQ file of ``out`` stores)."""
    import onnx
    from onnx import numpy_helper

    from edgerep.quant.qdq import _ensure_node_names, write_qdq

    t0 = time.perf_counter()
    opts = options or AdaRoundOptions()
    cfg = _plain(config)
    x = np.ascontiguousarray(x[:opts.samples], dtype=np.float32)
    model = onnx.load(str(src))
    _ensure_node_names(model)
    inits = {i.name: i for i in model.graph.initializer}
    result = AdaRoundResult(Path(out))
    with tempfile.TemporaryDirectory(prefix="edgerep-adaround-") as tmpd:
        tmp = Path(tmpd)
        cur = tmp / "current.onnx"
        onnx.save(model, str(cur))
        write_qdq(cur, tmp / "nearest.onnx", calibration, cfg)
        grids = qdq_weight_grids(tmp / "nearest.onnx")
        order = [n for n in model.graph.node if n.name in grids and (nodes is None or n.name in nodes)]
        fp32 = onnx.ModelProto()
        fp32.CopyFrom(model)  # the targets: the FP32 model as given, one layer's output at a time (memory)
        for node in order:
            t1 = time.perf_counter()
            grid, fn = grids[node.name], _layer_fn(node)
            w_init = inits.get(node.input[1])
            if fn is None or w_init is None:
                result.layers.append(LayerRounding(node.name, int(grid.q.size), 0, math.nan, math.nan, 0.0, 0.0,
                                                   f"{node.op_type} with these attributes is kept at nearest"))
                continue
            onnx.save(model, str(cur))
            write_qdq(cur, tmp / "q.onnx", calibration, cfg)
            qm = onnx.load(str(tmp / "q.onnx"))
            qnode = next(n for n in qm.graph.node if n.name == node.name)
            xq = _run(_session(qm, [qnode.input[0]], threads), x, [qnode.input[0]], batch, static)[qnode.input[0]]
            y_pre = _run(_session(fp32, [node.output[0]], threads), x, [node.output[0]], batch, static)[node.output[0]]
            t_in = round(time.perf_counter() - t1, 3)
            relu = _relu_after(model, node)
            w = numpy_helper.to_array(w_init).astype(np.float32)
            b_name = node.input[2] if len(node.input) > 2 and node.input[2] in inits else None
            b = numpy_helper.to_array(inits[b_name]).astype(np.float32) if b_name else None
            q, e_near, e_learned, new_b = learn_rounding(fn, w, b, grid, xq, y_pre, relu, opts, conv_geometry(node))
            w_init.CopyFrom(numpy_helper.from_array((q * _broadcast(grid.scale, grid.axis, q.ndim))
                                                    .astype(np.float32), w_init.name))
            shift = 0.0
            if b_name is not None and new_b is not None:
                shift = float(np.max(np.abs(new_b - b))) if b.size else 0.0
                inits[b_name].CopyFrom(numpy_helper.from_array(new_b.astype(np.float32), b_name))
            result.qweights[node.name] = q
            flipped = int(np.sum(q != grid.q))
            result.layers.append(LayerRounding(node.name, int(q.size), flipped, e_near, e_learned, shift,
                                               round(time.perf_counter() - t1, 3), inputs_seconds=t_in))
            say(f"adaround {node.name}: {flipped} of {q.size} weights rounded the other way, output MSE "
                f"{e_near:.3e} -> {e_learned:.3e} ({result.layers[-1].seconds:.1f} s, inputs {t_in:.1f} s)")
        save_verified(model, out, calibration, cfg, result.qweights, tmp)
    result.seconds = time.perf_counter() - t0
    return result


def worst_layers(src: str | Path, calibration: CalibrationResult, x: np.ndarray, config: QdqConfig, *,
                 share: float = 0.9, threads: int | None = None) -> tuple[list[str], list[dict]]:
    """The layers ``edgerep debug`` ranks worst on ``x``: by the noise each adds (``added_nsr`` of its output,
    QDQ simulated, against ``src``), the fewest whose added noise sums to ``share`` of what all layers add.
    Returns (chosen nodes, the ranking rows)."""
    from edgerep.quant.debug import DebugBundle, layer_table
    from edgerep.quant.qdq import write_qdq

    with tempfile.TemporaryDirectory(prefix="edgerep-rank-") as tmpd:
        qdq = Path(tmpd) / "nearest.onnx"
        write_qdq(src, qdq, calibration, _plain(config))
        stub = DebugBundle(Path(tmpd), Path(src), qdq, {}, {}, {})
        rows = layer_table(stub, Path(src), qdq, x, threads=threads)
    ranked = sorted(rows, key=lambda r: -r.added_nsr)
    total = sum(max(r.added_nsr, 0.0) for r in ranked)
    chosen: list[str] = []
    acc = 0.0
    for r in ranked:
        if r.added_nsr <= 0 or (chosen and acc >= share * total):
            break
        chosen.append(r.node)
        acc += r.added_nsr
    table = [{"node": r.node, "added_nsr": r.added_nsr, "sqnr_db": r.sqnr_db, "rounded": r.node in chosen}
             for r in ranked]
    return chosen, table


def _plain(config: QdqConfig) -> QdqConfig:
    """``config`` without bias correction (the rounding is learned against the data, the bias corrected here)."""
    from dataclasses import replace

    if config.weight != "s8" or not config.per_channel or config.reduce_range:
        raise EdgerepError("adaround learns symmetric int8 per-channel 8-bit weights; got weight="
                           f"{config.weight}, per_channel={config.per_channel}, reduce_range={config.reduce_range}")
    return replace(config, bias_correction=False)


def optimized_int8_weights(qdq_path: str | Path, session_config: dict[str, str] | None = None) -> list[np.ndarray]:
    """Every int8 initializer of the graph onnxruntime actually runs for ``qdq_path`` (all graph optimizations
    on: Q/DQ pairs fused into QLinearConv / MatMulInteger kernels), read from the optimized model it saves."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    with tempfile.TemporaryDirectory(prefix="edgerep-optimized-") as tmpd:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.optimized_model_filepath = str(Path(tmpd) / "optimized.onnx")
        for k, v in (session_config or {}).items():
            so.add_session_config_entry(k, v)
        ort.InferenceSession(str(qdq_path), so, providers=["CPUExecutionProvider"])
        m = onnx.load(so.optimized_model_filepath)
    return [a for a in (numpy_helper.to_array(i) for i in m.graph.initializer) if a.dtype == np.int8]


def max_optimized_difference(learned: dict[str, np.ndarray], stored: list[np.ndarray]) -> int:
    """Per learned layer the closest int8 tensor of the same shape (or a padded one's real filters) in the optimized
    graph; the largest |difference| over the layers (0: the fused kernels read exactly the learned integers)."""
    worst = 0
    for node, q in learned.items():
        same = [s for s in stored if s.shape == q.shape]
        same += [u for u in (unpadded_rows(s, q.shape[0]) for s in stored if s.shape[1:] == q.shape[1:])
                 if u is not None]  # a narrow conv padded to the fast kernel's width (conv_pad): its real filters
        if not same:
            raise EdgerepError(f"layer {node!r}: no int8 tensor of shape {q.shape} in the optimized graph")
        worst = max(worst, min(int(np.max(np.abs(s.astype(np.int32) - q.astype(np.int32)), initial=0)) for s in same))
    return worst


def max_readback_difference(learned: dict[str, np.ndarray], stored: dict[str, np.ndarray]) -> int:
    """The largest |learned - stored| over every learned layer (a missing layer or shape raises)."""
    worst = 0
    for node, q in learned.items():
        if node not in stored:
            raise EdgerepError(f"layer {node!r}: no int8 weights in the QDQ file")
        if stored[node].shape != q.shape:
            raise EdgerepError(f"layer {node!r}: stored weights {stored[node].shape} != learned {q.shape}")
        worst = max(worst, int(np.max(np.abs(stored[node].astype(np.int32) - q.astype(np.int32)), initial=0)))
    return worst


def save_verified(model, out: str | Path, calibration: CalibrationResult, config: QdqConfig,
                  learned: dict[str, np.ndarray], tmp: Path) -> None:
    """Save ``model`` (learned weights on their int8 grid) to ``out``, then raise unless a QDQ file written from it
    with ``config`` stores every learned int8 weight exactly (AdaRound and QAT both end here)."""
    import onnx

    from edgerep.quant.qdq import write_qdq

    Path(out).parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    write_qdq(out, tmp / "check.onnx", calibration, config)
    check_readback(learned, qdq_int8_weights(tmp / "check.onnx"), str(out))


def check_readback(learned: dict[str, np.ndarray], stored: dict[str, np.ndarray], where: str) -> None:
    """Raise unless the QDQ file stores every learned int8 weight exactly."""
    d = max_readback_difference(learned, stored)
    if d != 0:
        raise EdgerepError(f"{where}: a QDQ file written from the learned weights stores int8 values that differ "
                           f"from them by up to {d}")


__all__ = ["AdaRoundOptions", "AdaRoundResult", "ConvGeometry", "Grid", "conv_geometry", "conv_window", "input_window",
           "pad_input", "step_window", "LayerRounding", "adaround_model", "check_readback",
           "learn_rounding", "max_optimized_difference", "max_readback_difference", "optimized_int8_weights",
           "save_verified", "upstream", "worst_layers", "qdq_int8_weights", "qdq_weight_grids"]
