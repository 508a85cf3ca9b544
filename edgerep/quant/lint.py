"""TensorRT-readiness lint of a QDQ ONNX file, runnable without TensorRT.

Checks the explicit-quantization rules TensorRT's ONNX parser enforces (../shared/TENSORRT.md
section 4): int8 Q/DQ with all-zero zero points, positive constant scales, per-channel only on
weights and on the output-channel axis, opset >= 13, ops the parser supports, and Q/DQ on the
residual inputs of Add so conv+add fuse in INT8.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgerep.errors import EdgerepError
from edgerep.quant.onnx_graph import consumers as onnx_consumers

# ONNX ops TensorRT 10's parser imports (the subset a CNN classifier / detector uses, plus Q/DQ).
TRT_OPS = frozenset("""
Abs Add And ArgMax ArgMin AveragePool BatchNormalization Cast Ceil Clip Concat Constant ConstantOfShape Conv
ConvTranspose Cos CumSum DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand Flatten Floor
Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalMaxPool Greater GreaterOrEqual GroupNormalization
HardSigmoid HardSwish Identity InstanceNormalization LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax
LRN MatMul Max MaxPool Mean Min Mish Mod Mul Neg Not Or Pad Pow PRelu QuantizeLinear Range Reciprocal ReduceL1
ReduceL2 ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize
RoiAlign Round ScatterElements ScatterND Selu Shape Sigmoid Sign Sin Slice Softmax Softplus Softsign SpaceToDepth
Split Sqrt Squeeze Sub Sum Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())
WEIGHTED = ("Conv", "Gemm", "MatMul", "ConvTranspose")


@dataclass(frozen=True)
class LintIssue:
    """One finding: ``error`` breaks the TensorRT build (or its INT8 fusion), ``warning`` costs speed."""

    severity: str
    rule: str
    node: str
    message: str

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.severity}: [{self.rule}] {self.node}: {self.message}"


def lint_tensorrt_qdq(path: str | Path) -> list[LintIssue]:
    """All TensorRT-readiness issues of the QDQ file at ``path`` (empty list: ready)."""
    import onnx
    from onnx import numpy_helper

    path = Path(path)
    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise EdgerepError(f"{path}: not a readable ONNX file ({type(exc).__name__})") from None
    g = model.graph
    issues: list[LintIssue] = []

    def add(sev: str, rule: str, node: str, msg: str) -> None:
        issues.append(LintIssue(sev, rule, node, msg))

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 13:
        add("error", "opset", "<model>", f"opset {opset}: per-channel Q/DQ needs opset >= 13")
    inits = {i.name: i for i in g.initializer}
    consts = {n.output[0]: n for n in g.node if n.op_type == "Constant"}
    producers = {o: n for n in g.node for o in n.output}
    consumers = onnx_consumers(model)

    def const_array(name: str):
        if name in inits:
            return numpy_helper.to_array(inits[name])
        if name in consts:
            for a in consts[name].attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
        if name in producers and producers[name].op_type in ("Cast", "Identity"):
            return const_array(producers[name].input[0])
        return None

    n_q = 0
    for n in g.node:
        if n.domain not in ("", "ai.onnx"):
            add("error", "op", n.name, f"{n.domain}::{n.op_type} is a custom-domain op TensorRT cannot parse")
            continue
        if n.op_type not in TRT_OPS:
            add("error", "op", n.name, f"{n.op_type} is not supported by TensorRT's ONNX parser")
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        n_q += 1
        scale = const_array(n.input[1]) if len(n.input) > 1 else None
        if scale is None:
            add("error", "scale", n.name, "scale is not a build-time constant")
        elif not np.all(np.asarray(scale, dtype=np.float64) > 0):
            add("error", "scale", n.name, "scale has non-positive entries")
        if len(n.input) < 3 or not n.input[2]:
            if n.op_type == "QuantizeLinear":
                add("error", "type", n.name, "no zero point: QuantizeLinear defaults to uint8; TensorRT needs int8")
        else:
            zp = const_array(n.input[2])
            if zp is None:
                add("error", "zero-point", n.name, "zero point is not a constant")
            else:
                if zp.dtype == np.uint8:
                    add("error", "type", n.name, "uint8 zero point: TensorRT needs int8 (uint8 with zero point 128 "
                        "is asymmetric and fails shiftIsAllZeros)" if np.any(zp != 0) else
                        "uint8 Q/DQ: TensorRT imports it as int8 with a warning; write int8")
                elif zp.dtype == np.int32 and n.op_type == "DequantizeLinear":
                    add("warning", "bias", n.name, "int32 DequantizeLinear (quantized bias): TensorRT expects float bias")
                elif zp.dtype not in (np.int8,):
                    add("error", "type", n.name, f"{zp.dtype} Q/DQ: TensorRT supports int8 (and fp8/int4 weights) only")
                if zp.dtype != np.int32 and np.any(zp != 0):
                    add("error", "zero-point", n.name, "non-zero zero point: TensorRT quantization is symmetric only")
        per_channel = scale is not None and np.asarray(scale).size > 1
        if per_channel:
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            src = n.input[0]
            is_weight = src in inits or src in consts or (src in producers and producers[src].op_type == "QuantizeLinear"
                                                          and producers[src].input[0] in inits)
            if not is_weight:
                add("error", "per-channel", n.name, "per-channel scale on an activation: TensorRT allows per-tensor only")
            else:
                for c in consumers.get(n.output[0], []) if n.op_type == "DequantizeLinear" else []:
                    want = 1 if c.op_type == "ConvTranspose" else 0
                    if c.op_type == "Gemm":
                        tb = next((a.i for a in c.attribute if a.name == "transB"), 0)
                        want = 0 if tb else 1
                    elif c.op_type == "MatMul":  # weights (..., K, N): the output channels are the last axis
                        want = _weight_rank(n, inits, producers) - 1
                    if c.op_type in WEIGHTED and c.input[1] == n.output[0] and axis != want:
                        add("error", "axis", n.name, f"per-channel axis {axis} on {c.op_type} weights; expected {want} "
                            "(output channels)")
    if n_q == 0:
        add("error", "qdq", "<model>", "no QuantizeLinear/DequantizeLinear nodes: not an explicit-quantization file")

    # residual Adds: every activation input should come from a DequantizeLinear
    for n in g.node:
        if n.op_type != "Add":
            continue
        acts = [t for t in n.input if t not in inits and t not in consts]
        if len(acts) < 2:
            continue
        for t in acts:
            p = producers.get(t)
            if p is None or p.op_type != "DequantizeLinear":
                add("warning", "add-qdq", n.name, f"input {t!r} has no Q/DQ: conv+add will not fuse in INT8 "
                    "(TensorRT runs the Add in higher precision)")
    # weighted ops whose weights have no DQ stay in float: informative only (mixed precision)
    return issues


def _weight_rank(dq, inits: dict, producers: dict) -> int:
    """Rank of the weight a DequantizeLinear feeds (from its initializer, directly or through a Q); 2 if unknown."""
    src = dq.input[0]
    if src not in inits and src in producers and producers[src].op_type == "QuantizeLinear":
        src = producers[src].input[0]
    init = inits.get(src)
    return len(init.dims) if init is not None and hasattr(init, "dims") else 2


def lint_errors(issues: list[LintIssue]) -> list[LintIssue]:
    return [i for i in issues if i.severity == "error"]
