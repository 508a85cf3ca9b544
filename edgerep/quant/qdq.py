"""Write one QDQ INT8 ONNX file from an FP32 model and calibrated ranges, under one policy's settings.

onnxruntime.quantization's ``QDQQuantizer`` places Q/DQ on weighted ops (Conv, Gemm, MatMul, ...)
from *our* cached ranges, so calibration runs once for every policy. On top of it: optional
empirical bias correction (weights' quantization error times the calibrated per-channel input
mean, subtracted from the bias of every quantized layer) and Q/DQ on residual ``Add`` inputs
(TensorRT fuses conv+add in INT8 only then; onnxruntime's QDQ quantizer does not quantize Add);
a bias ``Add`` after a MatMul is left alone.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import logging
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from edgerep.errors import EdgerepError
from edgerep.quant.calibrate import CalibrationResult

QUANTIZABLE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass(frozen=True)
class QdqConfig:
    """How a QDQ file quantizes: types, symmetry, weight granularity and bit width, extras."""

    activation: str = "u8"  # "u8" (asymmetric) | "s8"
    weight: str = "s8"  # "s8" | "u8"
    per_channel: bool = True
    reduce_range: bool = False  # 7-bit weights: onnxruntime's AVX2 u8s8 kernels cannot saturate
    symmetric_activations: bool = False
    quantize_bias: bool = True  # int32 bias DQ (onnxruntime); TensorRT wants float bias
    qdq_on_add: bool = False
    bias_correction: bool = True
    prelu_as_max: bool = False  # PRelu -> Max(x, a x), exact (edgerep.quant.prelu): the CPU files, not TensorRT's
    prelu_int8: bool = False  # a PRelu between Q/DQ -> integer depthwise conv + Max (prelu_int8): the CPU files
    movement_int8: bool = False  # DQ -> DepthToSpace becomes DepthToSpace -> DQ, exact (edgerep.quant.movement): CPU
    pad_narrow_convs: bool = False  # convs under 16 outputs padded, sliced after (edgerep.quant.conv_pad): x86 VNNI

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class QdqInfo:
    """What ``write_qdq`` wrote: counts and the corrections it applied."""

    path: str
    config: dict[str, Any]
    quantized_nodes: list[str] = field(default_factory=list)
    excluded_nodes: list[str] = field(default_factory=list)
    add_inputs_quantized: int = 0
    prelu_rewritten: int = 0
    prelu_int8: int = 0  # PReLUs run on the integers (depthwise conv by the slopes + Max), not in float
    movement_int8: list[str] = field(default_factory=list)  # pixel shuffles moved before their DequantizeLinear
    padded_convs: list[str] = field(default_factory=list)  # convs padded to a width the fast INT8 kernel takes
    float_tail: list[str] = field(default_factory=list)  # ops after the last weighted layer, left in float
    bias_corrected: dict[str, float] = field(default_factory=dict)  # node -> max |correction|

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _qtype(name: str):
    from onnxruntime.quantization import QuantType

    return {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}[name]


def quantizable_nodes(model) -> list[str]:
    """Names of the weighted nodes a QDQ file quantizes (the unit mixed precision excludes)."""
    inits = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type in QUANTIZABLE_OPS and len(n.input) > 1
            and n.input[1] in inits]


def _ensure_node_names(model) -> None:
    seen: set[str] = set()
    for i, n in enumerate(model.graph.node):
        if not n.name or n.name in seen:
            n.name = f"{n.op_type}_{i}"
        seen.add(n.name)


def fake_quant_weight(w: np.ndarray, config: QdqConfig, axis: int = 0) -> np.ndarray:
    """``w`` quantized and dequantized exactly as onnxruntime's QDQ quantizer will (symmetric s8)."""
    from onnxruntime.quantization.quant_utils import quantize_data

    qt = _qtype(config.weight).tensor_type
    w = np.asarray(w, dtype=np.float32)
    if not config.per_channel:
        zp, scale, q = quantize_data(w.ravel(), qt, config.weight == "s8", config.reduce_range)
        return ((q.astype(np.float64) - float(zp)) * float(scale)).reshape(w.shape)
    wm = np.moveaxis(w, axis, 0)
    out = np.empty(wm.shape, dtype=np.float64)
    for c in range(wm.shape[0]):
        zp, scale, q = quantize_data(wm[c].ravel(), qt, config.weight == "s8", config.reduce_range)
        out[c] = ((q.astype(np.float64) - float(zp)) * float(scale)).reshape(wm[c].shape)
    return np.moveaxis(out, 0, axis)


#: (weight bytes' digest, shape, weight grid) -> the conv's weight rounding summed over its kernel window: the
#: same weights under the same grid round the same way in every QDQ file of a run (auto's three range methods,
#: the CPU policies that share a weight grid, mixed precision's probes), so each is computed once
_ROUNDING: OrderedDict[tuple, np.ndarray] = OrderedDict()
_ROUNDING_ENTRIES = 1024


def _rounding_per_input(w: np.ndarray, config: QdqConfig) -> np.ndarray:
    """``(fake_quant_weight(w) - w).sum(axis=(2, 3))`` of a conv weight (O, I/g, kh, kw), memoized."""
    key = (hashlib.sha1(w.tobytes()).hexdigest(), w.shape, config.weight, config.per_channel, config.reduce_range)
    hit = _ROUNDING.get(key)
    if hit is None:
        hit = (fake_quant_weight(w, config, axis=0) - w).sum(axis=(2, 3))
        _ROUNDING[key] = hit
        if len(_ROUNDING) > _ROUNDING_ENTRIES:
            _ROUNDING.popitem(last=False)
    else:
        _ROUNDING.move_to_end(key)
    return hit


def correct_biases(model, calibration: CalibrationResult, config: QdqConfig,
                   exclude: Iterable[str] = (), only: Iterable[str] | None = None) -> dict[str, float]:
    """Subtract each quantized conv's expected output shift from weight rounding (dW . E[x]) from its bias.

    Only nodes whose weights are quantized are corrected: not ``exclude``, and with ``only`` given,
    just those (a float layer's bias must stay as it was). ``E[x]`` per input channel comes from
    calibration; border effects of padding are ignored. Modifies ``model`` in place; returns
    node -> max |correction| for the report.
    """
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    skip = set(exclude)
    keep = set(only) if only else None
    done: dict[str, float] = {}
    for node in model.graph.node:
        if node.name in skip or (keep is not None and node.name not in keep):
            continue
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3:
            continue
        w_name, b_name, x_name = node.input[1], node.input[2], node.input[0]
        mu = calibration.channel_means.get(x_name)
        if w_name not in inits or b_name not in inits or not mu:
            continue
        w = numpy_helper.to_array(inits[w_name]).astype(np.float64)
        b = numpy_helper.to_array(inits[b_name]).astype(np.float64)
        mu = np.asarray(mu, dtype=np.float64)
        if node.op_type == "Conv":
            groups = next((a.i for a in node.attribute if a.name == "group"), 1)
            cin_g = w.shape[1]
            if mu.shape[0] != cin_g * groups:
                continue
            per_out = _rounding_per_input(w, config)  # (O, I/g)
            o_per_g = w.shape[0] // groups
            shift = np.array([per_out[o] @ mu[(o // o_per_g) * cin_g:(o // o_per_g + 1) * cin_g]
                              for o in range(w.shape[0])])
        else:
            attrs = {a.name: a for a in node.attribute}
            trans_a = attrs["transA"].i if "transA" in attrs else 0
            trans_b = attrs["transB"].i if "transB" in attrs else 0
            alpha = attrs["alpha"].f if "alpha" in attrs else 1.0
            beta = attrs["beta"].f if "beta" in attrs else 1.0
            if trans_a or b.ndim != 1 or beta == 0:
                continue
            wo = w if trans_b else w.T  # (out, in)
            if mu.shape[0] != wo.shape[1]:
                continue
            dw = fake_quant_weight(wo, config, axis=0) - wo
            shift = alpha * (dw @ mu) / beta
        if shift.shape != b.shape or not np.all(np.isfinite(shift)):
            continue
        new_b = (b - shift).astype(numpy_helper.to_array(inits[b_name]).dtype)
        inits[b_name].CopyFrom(numpy_helper.from_array(new_b, b_name))
        done[node.name] = float(np.max(np.abs(shift))) if shift.size else 0.0
    return done


def residual_adds(model) -> list:
    """The Add nodes that join two activations (residual / branch sums), not a bias Add whose other
    input is a constant (MatMul -> Add, as exporters write Linear layers)."""
    inits = {i.name for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}

    def constant(t: str) -> bool:
        p = producers.get(t)
        while p is not None and p.op_type == "DequantizeLinear":  # a quantized initializer is still constant
            t = p.input[0]
            p = producers.get(t)
        return t in inits or (p is not None and p.op_type == "Constant")

    return [n for n in model.graph.node if n.op_type == "Add" and len(n.input) == 2
            and not any(constant(t) for t in n.input)]


def _add_qdq_on_adds(model, calibration: CalibrationResult, tail: Iterable[str] = ()) -> int:
    """Q/DQ (int8, zero point 0, per-tensor) on both inputs of every residual Add (``residual_adds``) but those in
    the float ``tail``: an Add after the last conv fuses into nothing, and quantized, an SR net's output image (its
    residual add) took an s8 rounding: 0.085 dB on the hostile SR net's TensorRT file with every conv in float."""
    from onnx import helper, numpy_helper

    inits = {i.name for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    skip = set(tail)
    residual = {n.output[0] for n in residual_adds(model) if n.name not in skip}
    # existing Q -> DQ pairs keyed by the float tensor they quantize
    existing: dict[str, str] = {}
    for n in model.graph.node:
        if n.op_type == "QuantizeLinear":
            for m in model.graph.node:
                if m.op_type == "DequantizeLinear" and m.input[0] == n.output[0]:
                    existing.setdefault(n.input[0], m.output[0])
    count = 0
    new_nodes = []
    for node in list(model.graph.node):
        if node.output[0] not in residual:
            continue
        for k, t in enumerate(node.input):
            if t in inits or (t in producers and producers[t].op_type == "DequantizeLinear"):
                continue
            if t in existing:
                node.input[k] = existing[t]
                count += 1
                continue
            if t not in calibration.ranges:
                continue
            lo, hi = calibration.ranges[t]
            amax = max(abs(lo), abs(hi), 1e-8)
            s_name, z_name = f"{t}_add_scale", f"{t}_add_zero_point"
            model.graph.initializer.extend([
                numpy_helper.from_array(np.array(amax / 127.0, dtype=np.float32), s_name),
                numpy_helper.from_array(np.array(0, dtype=np.int8), z_name)])
            q_out, dq_out = f"{t}_addQ", f"{t}_addDQ"
            new_nodes += [helper.make_node("QuantizeLinear", [t, s_name, z_name], [q_out],
                                           name=f"{t}_AddQuantizeLinear"),
                          helper.make_node("DequantizeLinear", [q_out, s_name, z_name], [dq_out],
                                           name=f"{t}_AddDequantizeLinear")]
            existing[t] = dq_out
            node.input[k] = dq_out
            count += 1
    model.graph.node.extend(new_nodes)  # write_qdq sorts the graph afterwards
    return count


def toposort(model) -> None:
    """Reorder ``model.graph.node`` topologically (onnxruntime's quantizer appends Q/DQ at the end)."""
    available = {i.name for i in model.graph.input} | {i.name for i in model.graph.initializer} | {""}
    pending = list(model.graph.node)
    ordered = []
    while pending:
        rest = []
        for n in pending:
            if all(t in available for t in n.input):
                ordered.append(n)
                available.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise EdgerepError(f"graph has a cycle or a dangling input at node {rest[0].name!r}")
        pending = rest
    del model.graph.node[:]
    model.graph.node.extend(ordered)


PASS_THROUGH = ("Relu", "Clip", "MaxPool", "AveragePool", "GlobalAveragePool", "Flatten", "Reshape", "Transpose",
                "Squeeze", "Unsqueeze", "Pad", "Resize", "Slice")


def restore_float_weights(model, original: str | Path, nodes: Iterable[str]) -> list[str]:
    """Give ``nodes`` of ``model`` (in place) the weight and bias initializers of the same names in the FP32
    file ``original`` (the model before its weights were learned); returns the initializers restored. An
    initializer another, quantized layer also reads is left as it is (restoring it would change that layer)."""
    import onnx
    from onnx import numpy_helper

    from edgerep.quant.onnx_graph import consumers

    orig = {i.name: i for i in onnx.load(str(original), load_external_data=True).graph.initializer}
    inits = {i.name: i for i in model.graph.initializer}
    wanted = set(nodes)
    readers = consumers(model)
    restored = []
    for n in model.graph.node:
        if n.name not in wanted or n.op_type not in ("Conv", "Gemm", "MatMul", "ConvTranspose"):
            continue
        for t in n.input[1:3]:
            if t not in inits or t not in orig or not {r.name for r in readers.get(t, [])} <= wanted:
                continue
            a, b = numpy_helper.to_array(inits[t]), numpy_helper.to_array(orig[t])
            if a.shape != b.shape:
                raise EdgerepError(f"{original}: initializer {t!r} has shape {b.shape}, the learned model {a.shape}")
            if not np.array_equal(a, b):
                inits[t].CopyFrom(orig[t])
                restored.append(t)
    return restored


def expand_exclusions(model, exclude: Iterable[str]) -> list[str]:
    """``exclude`` plus the pass-through ops (ReLU, pooling, reshapes) feeding each excluded node.

    Excluding only the conv leaves its *input* quantized by the producer's Q/DQ pair; for the
    layer to really see float activations the ops between it and the previous conv must stay
    float too. (onnxruntime then runs the previous conv with a float output.)
    """
    producers = {o: n for n in model.graph.node for o in n.output}
    names = {n.name: n for n in model.graph.node}
    out = list(dict.fromkeys(exclude))
    for name in list(out):
        node = names.get(name)
        t = node.input[0] if node is not None and node.input else None
        while t in producers and producers[t].op_type in PASS_THROUGH:
            p = producers[t]
            if p.name not in out:
                out.append(p.name)
            t = p.input[0]
    return out


def float_tail(model) -> list[str]:
    """Nodes from which no weighted layer is reachable: the model's tail after its last conv / gemm (a
    detector's box decode, a classifier's pooling after a conv head). They stay in float: quantizing them buys
    no integer kernel (nothing weighted follows) and puts model outputs, e.g. box coordinates in pixels of all
    strides at once, on one 8-bit grid."""
    from edgerep.quant.onnx_graph import ancestors

    names = set(quantizable_nodes(model))
    weighted = [i for i, n in enumerate(model.graph.node) if n.name in names]
    feeding = set(weighted) | ancestors(model, [t for i in weighted for t in model.graph.node[i].input])
    return [n.name for i, n in enumerate(model.graph.node) if i not in feeding]


def tail_reads_float_inputs(model, tail: Iterable[str]) -> list[str]:
    """Rewrite ``model`` in place: a float-tail node (``float_tail``) that reads a graph input through its
    QuantizeLinear -> DequantizeLinear reads the input itself; Q / DQ nodes left unread are removed.
    Returns the tail nodes rewired. Why: an SR net's residual (the input, upscaled, added to the output) read the
    input's int8 copy, so the output image carried the input's rounding; on TensorRT's symmetric s8 grid an image in
    [0, 1] has 128 levels, and that alone cost the hostile SR net's TensorRT file 0.085 dB with every conv in float."""
    g = model.graph
    inputs = {i.name for i in g.input}
    producer = {o: n for n in g.node for o in n.output}
    names = set(tail)
    rewired = []
    for n in g.node:
        if n.name not in names:
            continue
        for k, t in enumerate(n.input):
            dq = producer.get(t)
            q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear" and q.input[0] in inputs:
                n.input[k] = q.input[0]
                rewired.append(n.name)
    outputs = {o.name for o in g.output}
    while rewired:  # the DQ (then its Q) nobody reads any more
        read = {t for n in g.node for t in n.input} | outputs
        dead = [n for n in g.node if n.op_type in ("DequantizeLinear", "QuantizeLinear") and n.output[0] not in read]
        if not dead:
            break
        for n in dead:
            g.node.remove(n)
    return rewired


def write_qdq(fp32_path: str | Path, out_path: str | Path, calibration: CalibrationResult, config: QdqConfig,
              *, exclude_nodes: Iterable[str] = (), only_nodes: Iterable[str] | None = None,
              float_weights_from: str | Path | None = None) -> QdqInfo:
    """Quantize ``fp32_path`` to a QDQ file at ``out_path`` with ``calibration``'s ranges.

    ``exclude_nodes`` stay in float (mixed precision); ``only_nodes`` (sensitivity analysis)
    quantizes just those. ``float_weights_from``: the FP32 file before a recovery step learned
    ``fp32_path``'s weights on their int8 grid; every layer left in float takes its weights and
    bias back from it (a layer in float runs its float weights, not their rounded copy).
    """
    import onnx

    from edgerep.quant.ort_internals import load_with_shape_infer, qdq_quantizer

    fp32_path, out_path = Path(fp32_path), Path(out_path)
    model = load_with_shape_infer(fp32_path)
    _ensure_node_names(model)
    exclude = [n for n in exclude_nodes]
    names = quantizable_nodes(model)
    unknown = [n for n in exclude if n not in {x.name for x in model.graph.node}]
    if unknown:
        raise EdgerepError(f"{fp32_path}: nodes to keep in float not in the graph: {', '.join(unknown)}")
    exclude = expand_exclusions(model, exclude)
    tail = float_tail(model)
    only = list(only_nodes) if only_nodes is not None else []
    if float_weights_from is not None:
        in_float = [n for n in names if n in exclude or (only and n not in only)]
        restore_float_weights(model, float_weights_from, in_float)
    if config.prelu_int8:  # a PReLU's output on its input's grid, so that it runs on the integers (prelu_int8)
        from edgerep.quant.prelu import share_prelu_ranges

        calibration = replace(calibration, ranges=share_prelu_ranges(model, calibration.ranges))
    corrected = correct_biases(model, calibration, config, exclude, only or None) if config.bias_correction else {}
    extra = {
        "ActivationSymmetric": bool(config.symmetric_activations or config.activation == "s8"),
        "WeightSymmetric": config.weight == "s8",
        "ForceQuantizeNoInputCheck": True,
        "QuantizeBias": bool(config.quantize_bias),
    }
    td = calibration.tensors_data(symmetric=bool(extra["ActivationSymmetric"]))
    from onnxruntime.quantization.registry import QDQRegistry

    op_types = sorted(QDQRegistry.keys())
    log = logging.getLogger()
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            q = qdq_quantizer(model, per_channel=config.per_channel, reduce_range=config.reduce_range,
                              weight_qtype=_qtype(config.weight), activation_qtype=_qtype(config.activation),
                              tensors_range=td, nodes_to_quantize=only, nodes_to_exclude=exclude + tail,
                              op_types=op_types, extra_options=extra)
            q.quantize_model()
    finally:
        log.setLevel(level)
    qmodel = q.model.model
    tail_reads_float_inputs(qmodel, tail)
    added = _add_qdq_on_adds(qmodel, calibration, tail) if config.qdq_on_add else 0
    prelus = int8_prelus = 0
    if config.prelu_int8:
        from edgerep.quant.prelu import prelu_int8

        int8_prelus = prelu_int8(qmodel)
    if config.prelu_as_max:
        from edgerep.quant.prelu import prelu_as_max

        prelus = prelu_as_max(qmodel)
    moved = []
    if config.movement_int8:
        from edgerep.quant.movement import movement_on_integers

        moved = movement_on_integers(qmodel)
    padded = []
    if config.pad_narrow_convs:
        from edgerep.quant.conv_pad import pad_narrow_convs

        padded = pad_narrow_convs(qmodel)
    toposort(qmodel)
    qmodel.producer_name = "edgerep"
    onnx.checker.check_model(qmodel)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(qmodel, str(out_path))
    quantized = [n for n in names if n not in exclude and (not only or n in only)]
    return QdqInfo(path=str(out_path), config=config.to_dict(), quantized_nodes=quantized,
                   excluded_nodes=[n for n in names if n not in quantized] + [n for n in exclude if n not in names],
                   add_inputs_quantized=added, prelu_rewritten=prelus, prelu_int8=int8_prelus, movement_int8=moved,
                   padded_convs=padded, float_tail=tail, bias_corrected=corrected)
