"""Export a (folded) torch model to a clean ONNX file: named I/O, opset >= 17, simplified, checked.

The FP32 ONNX file is what calibration and every QDQ file start from, so export also proves
that onnxruntime FP32 reproduces torch (max abs error recorded, 1e-4 by default).
"""
from __future__ import annotations

import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

from edgerep.errors import EdgerepError

if TYPE_CHECKING:
    import torch

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


@dataclass
class ExportReport:
    """What ``export_onnx`` wrote and how closely onnxruntime FP32 reproduces torch."""

    path: str
    opset: int
    input_name: str
    output_name: str
    input_shape: tuple[int, ...]
    dynamic_batch: bool
    nodes: int
    simplifier: str
    max_abs_error: float
    seconds: float
    dynamic_hw: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def _simplify(model):
    """onnxslim when installed, else onnxruntime's basic (standard-ONNX-only) offline optimizer."""
    try:
        import onnxslim

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return onnxslim.slim(model), "onnxslim"
    except ImportError:
        pass
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="edgerep-export-") as tmp:
        src, dst = os.path.join(tmp, "in.onnx"), os.path.join(tmp, "out.onnx")
        onnx.save(model, src)
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        so.optimized_model_filepath = dst
        ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
        return onnx.load(dst), "onnxruntime-basic"


def export_onnx(model: "torch.nn.Module", path: str | Path, input_shape: tuple[int, ...], *, dynamic_batch: bool = True,
                opset: int = 17, simplify: bool = True, atol: float = 1e-4, dynamic_hw: bool = False) -> ExportReport:
    """Export ``model`` (eval mode) to ``path`` with input ``input`` and output ``logits``.

    ``input_shape`` is (C, H, W) or (N, C, H, W). ``dynamic_hw`` (fully convolutional models, e.g. SR) makes
    height and width of the input and of a 4-D output symbolic, and the onnxruntime check also runs at a
    size other than ``input_shape`` (the file must serve patches and whole frames alike). Raises ``EdgerepError`` when the exported
    graph fails ``onnx.checker`` or onnxruntime FP32 differs from torch by more than ``atol``
    (relative to the output's scale).
    """
    import onnx
    import onnxruntime as ort
    import torch

    if opset < 17:
        raise EdgerepError(f"opset {opset}: edgerep exports opset >= 17 (QDQ per-channel needs >= 13)")
    t0 = time.perf_counter()
    path = Path(path)
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 3:
        shape = (1, *shape)
    if len(shape) != 4:
        raise EdgerepError(f"input_shape {input_shape}: expected (C, H, W) or (N, C, H, W)")
    model = model.eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=gen)
    dyn = _dynamic_axes(model, x, dynamic_batch, dynamic_hw)
    with tempfile.TemporaryDirectory(prefix="edgerep-export-") as tmp:
        raw = os.path.join(tmp, "raw.onnx")
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x,), raw, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes=dyn, opset_version=opset, do_constant_folding=True, dynamo=False)
        proto = onnx.load(raw)
    simplifier = "none"
    if simplify:
        proto, simplifier = _simplify(proto)
    proto.producer_name = "edgerep"
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:  # onnx raises several types
        raise EdgerepError(f"{path}: exported graph fails onnx.checker: {str(exc).splitlines()[0]}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = path.with_name(path.name + ".tmp")
    onnx.save(proto, str(tmp_path))
    os.replace(tmp_path, path)

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    n = max(2, shape[0]) if dynamic_batch else shape[0]
    shapes = [(n, *shape[1:])]
    if dynamic_hw:  # a second, odd-sized input: a size baked into the graph would fail here
        shapes.append((n, shape[1], shape[2] + 3, shape[3] + 5))
    err, scale = 0.0, 1.0
    for shp in shapes:
        xb = torch.randn(*shp, generator=gen)
        with torch.no_grad():
            ref = model(xb)
        ref = (ref[0] if isinstance(ref, (tuple, list)) else ref).numpy()
        try:
            got = sess.run(None, {INPUT_NAME: xb.numpy()})[0]
        except Exception as exc:  # onnxruntime raises its own types
            raise EdgerepError(f"{path}: onnxruntime FP32 fails on input {shp}: {str(exc).splitlines()[0][:200]}"
                               ) from None
        if got.shape != ref.shape:
            raise EdgerepError(f"{path}: onnxruntime output {got.shape} for input {shp}, torch gives {ref.shape}")
        err = max(err, float(np.max(np.abs(got - ref))) if ref.size else 0.0)
        scale = max(scale, float(np.max(np.abs(ref))) if ref.size else 1.0)
    if not np.isfinite(err) or err > atol * scale:
        raise EdgerepError(f"{path}: onnxruntime FP32 differs from torch by {err:.3g} (> {atol:g} x {scale:.3g})")
    return ExportReport(path=str(path), opset=opset, input_name=INPUT_NAME, output_name=OUTPUT_NAME,
                        input_shape=shape, dynamic_batch=dynamic_batch, nodes=len(proto.graph.node),
                        simplifier=simplifier, max_abs_error=err, seconds=time.perf_counter() - t0,
                        dynamic_hw=dynamic_hw)


def _dynamic_axes(model, x, dynamic_batch: bool, dynamic_hw: bool) -> dict | None:
    """torch.onnx's ``dynamic_axes``: batch on input and output; with ``dynamic_hw`` also the input's H, W
    and a 4-D output's H, W (named apart: an SR output is ``scale`` times the input)."""
    import torch

    if not (dynamic_batch or dynamic_hw):
        return None
    ins: dict[int, str] = {0: "batch"} if dynamic_batch else {}
    outs: dict[int, str] = dict(ins)
    if dynamic_hw:
        ins.update({2: "height", 3: "width"})
        with torch.no_grad():
            y = model(x)
        y = y[0] if isinstance(y, (tuple, list)) else y
        if y.dim() == 4:
            outs.update({2: "out_height", 3: "out_width"})
    return {INPUT_NAME: ins, OUTPUT_NAME: outs}
