"""Write examples/checkpoints/ecbsr_x2_hostile.pt: the shipped ECBSR x2 with a per-channel scale drift.

    .venv/bin/python examples/make_sr_hostile.py [--factor 32]

Deterministic (no training, no randomness): ``edgerep.quant.hostile_sr.make_hostile_sr`` multiplies output
channels 0 and 5 of body ECBs 0-4 by ``factor`` and divides the next ECB's matching inputs by it, in every
branch. PReLU is positively homogeneous, so the FP32 function is unchanged (checked here on the test photos:
equal PSNR to 0.001 dB), while those channels' activation ranges are ``factor`` times the others': what an
unnormalized PReLU net trained without weight decay can drift to (Nagel et al. 2019, sec. 3.1), and what a
per-tensor INT8 activation scale serves badly.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

from edgerep.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint  # noqa: E402
from edgerep.data.photos import PhotosDataset  # noqa: E402
from edgerep.quant.hostile_sr import make_hostile_sr  # noqa: E402
from train_sr import score  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", default=str(ROOT / "examples" / "checkpoints" / "ecbsr_x2.pt"))
    p.add_argument("--out", default=str(ROOT / "examples" / "checkpoints" / "ecbsr_x2_hostile.pt"))
    p.add_argument("--factor", type=float, default=32.0)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    loaded = load_checkpoint(args.src)
    model = loaded.model.eval()
    how = make_hostile_sr(model, factor=args.factor)
    test = score(model, PhotosDataset("test"))
    want = loaded.meta.extra["training"]["test"]["psnr_db"]
    assert abs(test["psnr_db"] - want) < 1e-3, f"the drift changed FP32 PSNR: {test['psnr_db']} vs {want}"
    d = loaded.meta.to_dict()
    d["task"] = "sr"
    d["extra"] = {**d["extra"], "hostile": {"source": Path(args.src).name, "script": "examples/make_sr_hostile.py",
                                            "mechanism": how.mechanism(), "blocks": list(how.blocks),
                                            "channels": list(how.channels), "factor": how.factor,
                                            "test_fp32": {"images": test["images"], "psnr_db": test["psnr_db"],
                                                          "ssim": test["ssim"]}}}
    save_checkpoint(args.out, model, CheckpointMeta.from_dict(d, args.out))
    print(f"{how.mechanism()}\ntest: {test['images']} photos, FP32 {test['psnr_db']:.3f} dB / SSIM {test['ssim']:.4f}"
          f" (source {want:.3f} dB); saved {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
