"""The onnxruntime.quantization internals edgerep calls, pinned by name and parameter order.

edgerep writes its QDQ files with onnxruntime's ``QDQQuantizer`` (not the public ``quantize_static``)
because it hands over ranges it calibrated once and reuses per policy (``TensorsData``), corrects
biases, and keeps chosen nodes in float; ``quantize_static`` would calibrate again per file. These
names are not onnxruntime's public API, so each is checked here: a release that renames or reorders
one fails ``check_internals()`` (and the test that calls it) with the name, the parameters expected
and found, instead of a Q/DQ file built from arguments in the wrong places.
"""
from __future__ import annotations

import importlib
import inspect
import os
import shutil
import tempfile
from pathlib import Path

from edgerep.errors import EdgerepError

#: "module:qualified name" -> the parameters edgerep passes, in order (positional use depends on the order)
PINNED: dict[str, tuple[str, ...]] = {
    "onnxruntime.quantization.qdq_quantizer:QDQQuantizer.__init__": (
        "self", "model", "per_channel", "reduce_range", "weight_qType", "activation_qType", "tensors_range",
        "nodes_to_quantize", "nodes_to_exclude", "op_types_to_quantize", "extra_options"),
    "onnxruntime.quantization.qdq_quantizer:QDQQuantizer.quantize_model": ("self",),
    "onnxruntime.quantization.calibrate:TensorsData.__init__": ("self", "calibration_method", "data"),
    "onnxruntime.quantization.calibrate:create_calibrator": (
        "model", "op_types_to_calibrate", "augmented_model_path", "calibrate_method"),
    "onnxruntime.quantization.quant_utils:load_model_with_shape_infer": ("model_path",),
    "onnxruntime.quantization.quant_utils:quantize_data": ("data", "qType", "symmetric", "reduce_range"),
}


def _lookup(spec: str):
    module, _, qual = spec.partition(":")
    obj = importlib.import_module(module)
    for part in qual.split("."):
        obj = getattr(obj, part)
    return obj


def check_internals() -> list[str]:
    """One line per pinned internal that is missing or whose leading parameters changed; [] when all hold."""
    import onnxruntime

    problems = []
    for spec, want in PINNED.items():
        try:
            got = tuple(inspect.signature(_lookup(spec)).parameters)
        except (ImportError, AttributeError) as e:
            problems.append(f"{spec}: missing in onnxruntime {onnxruntime.__version__} ({e})")
            continue
        if got[:len(want)] != want:
            problems.append(f"{spec}: onnxruntime {onnxruntime.__version__} takes ({', '.join(got)}), edgerep "
                            f"passes ({', '.join(want)})")
    return problems


def qdq_quantizer(model, *, per_channel: bool, reduce_range: bool, weight_qtype, activation_qtype, tensors_range,
                  nodes_to_quantize: list[str], nodes_to_exclude: list[str], op_types: list[str], extra_options: dict):
    """``QDQQuantizer`` built by keyword (its parameters are positional-or-keyword), after the pin check."""
    problems = [p for p in check_internals() if "QDQQuantizer" in p or "TensorsData" in p]
    if problems:
        raise EdgerepError(f"onnxruntime's QDQ quantizer changed: {problems[0]}",
                           hint="use an onnxruntime release whose quantizer takes these parameters "
                                "(edgerep.quant.ort_internals.PINNED), or report this")
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer

    return QDQQuantizer(model=model, per_channel=per_channel, reduce_range=reduce_range, weight_qType=weight_qtype,
                        activation_qType=activation_qtype, tensors_range=tensors_range,
                        nodes_to_quantize=nodes_to_quantize, nodes_to_exclude=nodes_to_exclude,
                        op_types_to_quantize=op_types, extra_options=extra_options)


__all__ = ["PINNED", "check_internals", "qdq_quantizer"]


def private_model_link(model_path: Path, folder: Path) -> Path:
    """``model_path`` linked (copied across file systems) into ``folder``, its external-data files copied.

    onnxruntime's ``load_model_with_shape_infer`` (called by its calibrators too) writes
    ``<stem>-inferred.onnx`` beside the file it reads and deletes it afterwards: a user's file of that
    name is lost, a read-only model folder fails, two calibrations of one model race. Handing it this
    private path keeps the model's folder untouched."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    model_path = Path(model_path)
    folder.mkdir(parents=True, exist_ok=True)
    proto = onnx.load(str(model_path), load_external_data=False)
    external = {e.value for t in proto.graph.initializer if uses_external_data(t)
                for e in t.external_data if e.key == "location"}
    try:
        os.link(model_path, folder / model_path.name)
    except OSError:  # another file system, or links not allowed: a copy
        shutil.copyfile(model_path, folder / model_path.name)
    for rel in sorted(external):  # copied: onnx refuses external data with several hard links (a link attack)
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(model_path.parent / rel, folder / rel)
    return folder / model_path.name


def load_with_shape_infer(model_path: Path):
    """onnxruntime's ``load_model_with_shape_infer`` run on a private link of ``model_path`` (see above)."""
    from onnxruntime.quantization.quant_utils import load_model_with_shape_infer

    with tempfile.TemporaryDirectory(prefix="edgerep-infer-") as tmp:
        return load_model_with_shape_infer(private_model_link(Path(model_path), Path(tmp)))
