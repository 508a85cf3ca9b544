"""Plain INT8 PTQ versus edgerep's default on a quant-hostile RepVGG, top-1 side by side.

The shipped digits RepVGG (examples/checkpoints/repvgg_digits.pt) is made quant-hostile by the
documented mechanism of ``edgerep.quant.hostile``: a few producer channels decay (gamma x 0.01), the
identity-BN running variances of the next blocks collapse when BN statistics are re-measured on the
train split, and the folded kernels get weights hundreds of times the median in those channels.

    .venv/bin/python benchmarks/hostile_ptq.py

Plain PTQ = min-max ranges, per-tensor 8-bit weights, no equalization / bias correction, run with
onnxruntime's exact (x64-precision) INT8 path so saturation is not what is measured. edgerep =
``quantize_model`` defaults, accuracy on the optimized session of the chosen CPU policy. Both
calibrate on digits' calib split; edgerep makes every choice (calibration method, CPU policy,
layers kept in float) on the val split; every number printed is on the test split, which no
choice has seen. The CPU model and INT8 ISA are printed with the table.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from edgerep.checkpoint import load_checkpoint
from edgerep.data import open_dataset
from edgerep.engines.onnxruntime_engine import OrtEngine
from edgerep.fold.model import fold_model
from edgerep.pipeline import TorchReference
from edgerep.quant.calibrate import calibrate
from edgerep.quant.export import export_onnx
from edgerep.quant.hostile import hostile_digits
from edgerep.quant.pipeline import QuantizeOptions, TargetOptions, quantize_model
from edgerep.quant.qdq import QdqConfig, write_qdq

ROOT = Path(__file__).resolve().parents[1]


def top1(engine_or_fn, ds) -> float:
    run = engine_or_fn.run if hasattr(engine_or_fn, "run") else engine_or_fn
    hits = n = 0
    for x, y in ds.batches(128):
        hits += int((run(x).argmax(1) == y).sum())
        n += len(y)
    return 100.0 * hits / n


def main() -> None:
    torch.set_num_threads(2)
    loaded = load_checkpoint(ROOT / "examples" / "checkpoints" / "repvgg_digits.pt")
    meta = loaded.meta
    train, calib, val, test = (open_dataset("digits", split=s, meta=meta) for s in ("train", "calib", "val", "test"))
    hostile = hostile_digits(loaded.model, meta.input_shape, train)
    model = hostile.model.eval()
    fp32 = top1(TorchReference(model), test)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folded = fold_model(model, torch.randn(2, *meta.input_shape))
        w = [m.weight.detach().abs() for m in folded.modules() if isinstance(m, torch.nn.Conv2d)]
        ratio = max(float(t.amax() / t.median().clamp_min(1e-12)) for t in w)
        path = tmp / "hostile.fp32.onnx"
        export_onnx(folded, path, tuple(meta.input_shape))
        cal = calibrate(path, calib, method="minmax")
        write_qdq(path, tmp / "plain.onnx", cal, QdqConfig(activation="u8", per_channel=False, bias_correction=False))
        plain = top1(OrtEngine(tmp / "plain.onnx", precision="int8",
                               session_config={"session.x64quantprecision": "1"}), test)
        res = quantize_model(path, calib, val, tmp / "out", QuantizeOptions(TargetOptions(("cpu",))),
                             reference=TorchReference(model))
        ours = top1(OrtEngine(res.files["cpu"], precision="int8", session_config=res.cpu_policy.session_config), test)
    from edgerep.quant.cpu_features import detect_cpu_features

    cpu = detect_cpu_features()
    print(f"host: {cpu.model_name}, INT8 path {cpu.int8_dot}; choices on val ({len(val)} images), "
          f"numbers on test ({len(test)} images)")
    print(f"quant-hostile repvgg_digits: collapsed channels {hostile.collapsed}, expected flagged layers "
          f"{hostile.expected_layers}")
    print(f"largest folded |w| / median |w| in one layer: {ratio:.0f}x")
    print("| model | top-1 (test split) |")
    print("|---|---|")
    print(f"| FP32 (unfolded torch) | {fp32:.2f} |")
    print(f"| plain PTQ: min-max, per-tensor weights | {plain:.2f} |")
    kept = len(res.excluded_nodes)
    print(f"| edgerep default ({res.cpu_policy.name}{f', {kept} layer(s) in FP32' if kept else ''}) | {ours:.2f} |")
    print(f"edgerep - FP32 = {ours - fp32:+.2f} points; plain - FP32 = {plain - fp32:+.2f} points")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
