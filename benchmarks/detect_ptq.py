"""Plain onnxruntime INT8 PTQ of the demo detector and of its quant-hostile variant, mAP side by side.

For each checkpoint (default: examples/checkpoints/repdet_scenes.pt and repdet_scenes_hostile.pt) on the scenes
``test`` split: the unfolded torch FP32 mAP, the folded FP32 ONNX mAP (onnxruntime), and the mAP of plain PTQ:
``onnxruntime.quantization.quantize_static`` with QDQ format, u8 activations / s8 weights, per-channel weights,
MinMax calibration on the scenes ``calib`` split, nothing kept in float, no edgerep choice; and the same with the
output's decode (the nodes after the last convolutions) excluded, as YOLO exporters keep it in float: one u8
scale over box pixels (0-160) and class probabilities (0-1) leaves the scores a few levels, so plain PTQ of the
whole graph loses mAP on any detector of this layout, hostile or not (16 points on the demo). Post-processing is
``edgerep.bench.detect_post.postprocess`` (score 0.001, class-aware NMS 0.65, 300 per image) and mAP is
pycocotools' (``edgerep.bench.detect_metrics.coco_map``), with image and instance counts. The CPU and its INT8
ISA are printed with the table.

    PYTHONPATH=. .venv/bin/python benchmarks/detect_ptq.py
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from edgerep.bench.detect_metrics import coco_map, detections_to_coco
from edgerep.bench.detect_post import postprocess
from edgerep.checkpoint import load_checkpoint
from edgerep.data.base import Preprocess
from edgerep.data.scenes import ScenesDataset
from edgerep.fold.model import fold_model
from edgerep.quant.export import export_onnx

ROOT = Path(__file__).resolve().parents[1]
CKPTS = ("examples/checkpoints/repdet_scenes.pt", "examples/checkpoints/repdet_scenes_hostile.pt")


def score(run, ds: ScenesDataset, batch: int = 64) -> dict:
    """mAP of ``run`` (NCHW float32 -> (N, 4 + C, A)) on the whole of ``ds``."""
    dets = []
    for x, _ in ds.batches(batch):
        dets.extend(postprocess(np.asarray(run(x))))
    s = coco_map(ds.coco(), detections_to_coco(dets, list(range(len(dets)))))
    return {"mAP": s.map, "mAP50": s.map50, "images": s.images, "instances": s.instances}


class _Reader:
    """onnxruntime's CalibrationDataReader over a data set's batches."""

    def __init__(self, ds: ScenesDataset, name: str, batch: int = 32):
        self._it = iter(ds.batches(batch))
        self.name = name

    def get_next(self):
        nxt = next(self._it, None)
        return None if nxt is None else {self.name: nxt[0]}


def decode_nodes(fp32: Path) -> list[str]:
    """Names of the nodes after the network's last convolutions (the box decode, sigmoid and concat of the
    ``(N, 4 + C, A)`` output): what a YOLO exporter keeps in float, since one u8 scale over box pixels
    (0-160) and probabilities (0-1) leaves the scores a few levels. The same set edgerep's QDQ files keep in
    float (``edgerep.quant.qdq.float_tail``)."""
    import onnx

    from edgerep.quant.qdq import float_tail

    return sorted(float_tail(onnx.load(str(fp32))))


def plain_ptq(fp32: Path, out: Path, calib: ScenesDataset, exclude: list[str] | None = None) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize_static(str(fp32), str(out), _Reader(calib, "input"), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                    calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=exclude or [])


def ort_run(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return lambda x: sess.run(None, {"input": x})[0]


def measure(ckpt: Path, n_test: int | None, n_calib: int | None, tmp: Path) -> dict:
    loaded = load_checkpoint(ckpt)
    pre = Preprocess.from_meta(loaded.meta)
    test, calib = ScenesDataset("test", pre, n=n_test), ScenesDataset("calib", pre, n=n_calib)
    model = loaded.model.eval()
    with torch.no_grad():
        unfolded = score(lambda x: model(torch.from_numpy(x)).numpy(), test)
    folded = fold_model(model, torch.from_numpy(next(iter(calib.batches(2)))[0]))
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in folded.modules())
    w = [m.weight.detach().abs() for m in folded.modules() if isinstance(m, torch.nn.Conv2d)]
    ratio = max(float(t.amax() / t.median().clamp_min(1e-12)) for t in w)
    fp32 = tmp / f"{ckpt.stem}.fp32.onnx"
    export_onnx(folded, fp32, tuple(loaded.meta.input_shape))
    onnx_fp32 = score(ort_run(fp32), test)
    int8 = tmp / f"{ckpt.stem}.int8.onnx"
    t0 = time.perf_counter()
    plain_ptq(fp32, int8, calib)
    ptq_s = time.perf_counter() - t0
    ptq = score(ort_run(int8), test)
    tail = decode_nodes(fp32)
    int8_tail = tmp / f"{ckpt.stem}.int8-decode-fp32.onnx"
    plain_ptq(fp32, int8_tail, calib, tail)
    ptq_tail = score(ort_run(int8_tail), test)
    return {"ckpt": ckpt.name, "unfolded": unfolded, "onnx_fp32": onnx_fp32, "ptq": ptq, "ptq_tail": ptq_tail,
            "tail_nodes": len(tail), "convs": convs,
            "ratio": ratio, "calib": len(calib), "ptq_s": ptq_s,
            "hostile": loaded.meta.extra.get("hostile")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ckpts", nargs="*", default=[str(ROOT / c) for c in CKPTS])
    p.add_argument("--test-images", type=int, default=None, help="first N test scenes (default: all 500)")
    p.add_argument("--calib-images", type=int, default=None, help="first N calib scenes (default: all 256)")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    from edgerep.quant.cpu_features import detect_cpu_features

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for c in args.ckpts:
            rows.append(measure(Path(c), args.test_images, args.calib_images, Path(tmp)))
    cpu = detect_cpu_features()
    import onnxruntime

    print(f"host: {cpu.model_name}, INT8 path {cpu.int8_dot}; onnxruntime {onnxruntime.__version__}; "
          f"plain PTQ = quantize_static QDQ, u8 activations / s8 per-channel weights, MinMax on scenes calib "
          f"({rows[0]['calib']} images); mAP@[.5:.95] (mAP@.5) by pycocotools on scenes test "
          f"({rows[0]['unfolded']['images']} images, {rows[0]['unfolded']['instances']} boxes)")
    print(f"'decode in FP32': the same PTQ with the {rows[0]['tail_nodes']} nodes after the last convolutions (box "
          f"decode, sigmoid, concat) excluded, as YOLO exporters do")
    print("| checkpoint | unfolded FP32 (torch) | folded FP32 (onnxruntime) | plain PTQ INT8 | PTQ - FP32 |"
          " plain PTQ INT8, decode in FP32 | PTQ - FP32 | folded convs | max |w|/median |w| |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        u, f, q, t = r["unfolded"], r["onnx_fp32"], r["ptq"], r["ptq_tail"]
        print(f"| {r['ckpt']} | {u['mAP']:.2f} ({u['mAP50']:.2f}) | {f['mAP']:.2f} ({f['mAP50']:.2f}) | "
              f"{q['mAP']:.2f} ({q['mAP50']:.2f}) | {q['mAP'] - u['mAP']:+.2f} | {t['mAP']:.2f} ({t['mAP50']:.2f}) | "
              f"{t['mAP'] - u['mAP']:+.2f} | {r['convs']} | {r['ratio']:.0f}x |")
    for r in rows:
        if r["hostile"]:
            print(f"{r['ckpt']}: {r['hostile']['mechanism']}; collapsed {r['hostile']['collapsed']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
