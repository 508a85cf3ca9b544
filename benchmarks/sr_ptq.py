"""Plain onnxruntime INT8 PTQ of the ECBSR x2 demo and of its quant-hostile variant: PSNR / SSIM and latency.

    .venv/bin/python benchmarks/sr_ptq.py [--json out.json]

For each model (the shipped ``examples/checkpoints/ecbsr_x2.pt``, and the same checkpoint made quant-hostile by
``edgerep.quant.hostile_sr.make_hostile_sr``: a per-channel scale drift that PReLU passes exactly, so FP32 is
unchanged):

- fold, export ONE FP32 ONNX file with dynamic batch, height and width (``export_onnx(dynamic_hw=True)``);
- plain PTQ: ``onnxruntime.quantization.quantize_static`` on that file: QDQ, u8 activations / s8 weights,
  per-channel weights, MinMax ranges, fed the ``photos`` calib split's patches (96 x 96 HR -> 48 x 48 LR);
- score on the ``photos`` test split, whole images (the same file as calibration, other sizes): the unfolded
  FP32 model in torch, the FP32 file and the INT8 file in onnxruntime, and Pillow bicubic; PSNR / SSIM on Y,
  ``scale`` pixels shaved (``edgerep.bench.sr_metrics``), and the INT8 output's PSNR against the unfolded
  FP32 output (same convention);
- latency: one 360 x 640 frame in (360p), 720 x 1280 out (720p), onnxruntime CPU, FP32 vs INT8, median of
  ``--iters`` runs after warm-up, ``--threads`` intra-op threads.

The CPU model and its INT8 instruction set are printed with the table.
"""
from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
FRAME_IN = (360, 640)  # 360p in -> 720p out at x2


class PatchReader:
    """onnxruntime's ``CalibrationDataReader`` over an SR data set's model inputs."""

    def __init__(self, ds, batch: int = 16):
        self._it = iter([{"input": x} for x, _ in ds.batches(batch)])

    def get_next(self):
        return next(self._it, None)


def plain_ptq(fp32: Path, out: Path, calib) -> Path:
    """onnxruntime quantize_static: QDQ, u8s8, per-channel weights, MinMax; nothing else."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize_static(str(fp32), str(out), PatchReader(calib), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                    calibrate_method=CalibrationMethod.MinMax)
    return out


def session(path: Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def score(model, fp32_sess, int8_sess, test, scale: int) -> dict:
    """Mean PSNR / SSIM over the test images of every engine, bicubic, and INT8 vs the unfolded output."""
    from edgerep.bench.sr_metrics import aggregate, image_metrics
    from edgerep.data.sr import bicubic_upscale

    got: dict[str, list] = {"unfolded_fp32": [], "onnx_fp32": [], "onnx_int8": [], "bicubic": [], "int8_vs_fp32": []}
    shapes = []
    for i, (x, hr, ids) in enumerate(test.pairs(batch_size=1)):
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()[0]
        f32 = fp32_sess.run(None, {"input": x})[0][0]
        i8 = int8_sess.run(None, {"input": x})[0][0]
        shapes.append((ids[0], tuple(x.shape[2:]), tuple(i8.shape[1:])))
        for key, out in (("unfolded_fp32", ref), ("onnx_fp32", f32), ("onnx_int8", i8)):
            got[key].append(image_metrics(out, hr[0], scale, layout="chw"))
        got["bicubic"].append(image_metrics(bicubic_upscale(test.pair(i)[0], scale), hr[0].transpose(1, 2, 0), scale))
        got["int8_vs_fp32"].append(image_metrics(i8, ref, scale, layout="chw"))
    out = {k: {"psnr_db": round(aggregate(v).psnr, 4), "ssim": round(aggregate(v).ssim, 5), "images": len(v)}
           for k, v in got.items()}
    out["sizes"] = shapes
    return out


def latency_ms(sess, x: np.ndarray, iters: int) -> float:
    for _ in range(2):
        sess.run(None, {"input": x})
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        sess.run(None, {"input": x})
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1000.0)


def run_variant(name: str, model, meta, tmp: Path, threads: int, iters: int) -> dict:
    from edgerep.data.photos import PhotosDataset
    from edgerep.data.sr import sr_preprocess
    from edgerep.fold.model import fold_model
    from edgerep.quant.export import export_onnx

    pre = sr_preprocess(meta)
    calib, test = PhotosDataset("calib", preprocess=pre), PhotosDataset("test", preprocess=pre)
    folded = fold_model(model, torch.rand(1, 3, 24, 20))
    fp32 = tmp / f"{name}.fp32.onnx"
    export_onnx(folded, fp32, (3, 48, 48), dynamic_hw=True)
    int8 = plain_ptq(fp32, tmp / f"{name}.int8.onnx", calib)
    s32, s8 = session(fp32, threads), session(int8, threads)
    res = {"model": name, "calib_patches": len(calib), "calib_photos": calib.photos(), "test_photos": test.photos(),
           **score(model, s32, s8, test, test.scale)}
    frame = np.random.RandomState(0).rand(1, 3, *FRAME_IN).astype(np.float32)
    res["latency_ms"] = {"frame_in": list(FRAME_IN), "frame_out": [2 * FRAME_IN[0], 2 * FRAME_IN[1]],
                         "threads": threads, "iters": iters,
                         "fp32": round(latency_ms(s32, frame, iters), 2), "int8": round(latency_ms(s8, frame, iters), 2)}
    res["latency_ms"]["int8_over_fp32"] = round(res["latency_ms"]["int8"] / res["latency_ms"]["fp32"], 3)
    return res


def main(argv: list[str] | None = None) -> int:
    from edgerep.checkpoint import load_checkpoint
    from edgerep.quant.cpu_features import detect_cpu_features
    from edgerep.quant.hostile_sr import make_hostile_sr

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(ROOT / "examples" / "checkpoints" / "ecbsr_x2.pt"))
    p.add_argument("--factor", type=float, default=32.0, help="the hostile variant's channel scale drift")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--json", help="also write the numbers here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    loaded = load_checkpoint(args.checkpoint)
    demo = loaded.model.eval()
    hostile = copy.deepcopy(demo)
    how = make_hostile_sr(hostile, factor=args.factor)
    hostile.eval()
    cpu = detect_cpu_features()
    rows = []
    with tempfile.TemporaryDirectory(prefix="sr-ptq-") as tmp:
        for name, model in (("ecbsr_x2", demo), ("ecbsr_x2_hostile", hostile)):
            rows.append(run_variant(name, model, loaded.meta, Path(tmp), args.threads, args.iters))
    import onnxruntime

    print(f"host: {cpu.model_name}, {cpu.cores} cores, INT8 path {cpu.int8_dot}; onnxruntime {onnxruntime.__version__}")
    print(f"hostile variant: {how.mechanism()}")
    r0 = rows[0]
    print(f"calibration: {r0['calib_patches']} patches of {r0['calib_photos']}; test: {r0['unfolded_fp32']['images']} "
          f"whole images {r0['test_photos']} (LR sizes {[s[1] for s in r0['sizes']]})")
    print("| model | unfolded FP32 PSNR / SSIM | ONNX FP32 PSNR | plain PTQ INT8 PSNR / SSIM | INT8 drop | "
          "INT8 vs FP32 output PSNR | bicubic PSNR | 360p->720p FP32 / INT8 ms (ratio) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        u, f, q, b, v, lat = (r["unfolded_fp32"], r["onnx_fp32"], r["onnx_int8"], r["bicubic"], r["int8_vs_fp32"],
                              r["latency_ms"])
        print(f"| {r['model']} | {u['psnr_db']:.3f} dB / {u['ssim']:.4f} | {f['psnr_db']:.3f} dB | "
              f"{q['psnr_db']:.3f} dB / {q['ssim']:.4f} | {u['psnr_db'] - q['psnr_db']:.3f} dB | {v['psnr_db']:.2f} dB | "
              f"{b['psnr_db']:.3f} dB | {lat['fp32']:.1f} / {lat['int8']:.1f} ({lat['int8_over_fp32']:.2f}) |")
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu.to_dict(), "hostile": how.mechanism(), "rows": rows},
                                              indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
