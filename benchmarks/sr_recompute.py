"""Recompute an SR bundle's INT8 PSNR / SSIM from its own files and the test photos its splits.json names.

    PYTHONPATH=. .venv/bin/python benchmarks/sr_recompute.py BUNDLE [BUNDLE ...]

For each test id in ``splits.json`` (``photos/<file>``: the photo inside the scikit-image / scikit-learn wheel):
the HR image (modcropped to the scale), its LR by the one LR method (``edgerep.data.sr.bicubic_downscale``),
``model.int8.onnx`` run by onnxruntime with the session config ``report.json`` records for the CPU policy, and
PSNR / SSIM on Y by ``edgerep.bench.sr_metrics.image_metrics``; the means are printed beside the report's INT8
row (its sums over the count, 6 decimals) and the difference. Nothing from the pipeline's own evaluation is reused.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def recompute(bundle: Path) -> dict:
    """``{"ids", "psnr", "ssim", "report_psnr", "report_ssim"}`` for ``bundle``'s INT8 file."""
    import onnxruntime as ort

    from edgerep.bench.sr_metrics import aggregate, image_metrics
    from edgerep.data.photos import photo_path
    from edgerep.data.sr import bicubic_downscale, modcrop, read_rgb

    rep = json.loads((bundle / "report.json").read_text())
    ids = json.loads((bundle / "splits.json").read_text())["test"]
    scale = int(json.loads((bundle / "sr" / "test.json").read_text())["scale"])
    so = ort.SessionOptions()
    for k, v in ((rep["quantization"].get("cpu_policy") or {}).get("session_config") or {}).items():
        so.add_session_config_entry(k, v)
    sess = ort.InferenceSession(str(bundle / "model.int8.onnx"), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    scores = []
    for sid in ids:
        prefix, file = sid.split("/", 1)
        if prefix != "photos":
            raise SystemExit(f"{sid}: this script reads the built-in photos set only")
        hr = modcrop(read_rgb(photo_path(file)), scale)
        x = bicubic_downscale(hr, scale).transpose(2, 0, 1)[None].astype(np.float32) / np.float32(255.0)
        scores.append(image_metrics(sess.run(None, {name: x})[0][0], hr.transpose(2, 0, 1), scale, layout="chw"))
    agg = aggregate(scores)
    int8 = next(e for e in rep["engines"] if e.get("precision") == "int8")
    acc = int8["accuracy"]  # the sums (6 decimals) say more than the rounded means
    return {"ids": ids, "psnr": agg.psnr, "ssim": agg.ssim, "report_psnr": acc["psnr_sum_db"] / acc["samples"],
            "report_ssim": acc["ssim_sum"] / acc["samples"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundles", nargs="+", type=Path)
    args = ap.parse_args(argv)
    for b in args.bundles:
        r = recompute(b)
        print(f"{b}: test {', '.join(r['ids'])}: recomputed INT8 PSNR {r['psnr']:.4f} dB / SSIM {r['ssim']:.5f}; "
              f"report {r['report_psnr']:.4f} dB / {r['report_ssim']:.5f}; difference "
              f"{r['psnr'] - r['report_psnr']:+.1e} dB / {r['ssim'] - r['report_ssim']:+.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
