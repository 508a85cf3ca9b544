"""Train the ECBSR x2 demo (``ecbsr_x2``: 4 x 16-channel ECBs between a head and a tail ECB, pixel shuffle)
on the ``photos`` train split and save an edgerep checkpoint.

Real photos (the ones inside the scikit-image / scikit-learn wheels, no download), CPU, one thread, a few
minutes. Training reads only the ``train`` photos (random LR crops with their HR, flips and 90-degree
turns); ``calib`` is left for INT8 calibration; ``val`` and ``test`` (whole photos) are scored once at the
end, against bicubic upscaling of the same LR images, by ``edgerep.bench.sr_metrics`` (PSNR / SSIM on Y,
``scale`` pixels shaved).

    .venv/bin/python examples/train_sr.py --out examples/checkpoints/ecbsr_x2.pt
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from edgerep.bench.sr_metrics import CONVENTION, aggregate, image_metrics
from edgerep.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from edgerep.data.photos import ASSIGNMENT, PhotosDataset
from edgerep.models import create_model

SCALE = 2


def random_crops(images: list[tuple[str, np.ndarray, np.ndarray]], n: int, lr_size: int,
                 rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` aligned (LR, HR) crops in [0, 1], NCHW; photos drawn by area; random flips and 90-degree turns."""
    areas = np.array([lr.shape[0] * lr.shape[1] for _, _, lr in images], dtype=np.float64)
    picks = rng.choice(len(images), size=n, p=areas / areas.sum())
    los, his = [], []
    for i in picks:
        _, hr, lr = images[i]
        top = int(rng.integers(0, lr.shape[0] - lr_size + 1))
        left = int(rng.integers(0, lr.shape[1] - lr_size + 1))
        lo = lr[top:top + lr_size, left:left + lr_size]
        hi = hr[SCALE * top:SCALE * (top + lr_size), SCALE * left:SCALE * (left + lr_size)]
        k = int(rng.integers(0, 4))
        lo, hi = np.rot90(lo, k), np.rot90(hi, k)
        if rng.integers(0, 2):
            lo, hi = lo[:, ::-1], hi[:, ::-1]
        los.append(lo)
        his.append(hi)
    def to_t(xs: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(np.stack(xs).transpose(0, 3, 1, 2))).float() / 255.0
    return to_t(los), to_t(his)


def bicubic_up(lr: np.ndarray) -> np.ndarray:
    """The baseline: Pillow bicubic upscaling of the LR image (uint8 HWC)."""
    from PIL import Image

    h, w = lr.shape[:2]
    return np.asarray(Image.fromarray(lr).resize((w * SCALE, h * SCALE), Image.Resampling.BICUBIC))


@torch.no_grad()
def score(model: torch.nn.Module, ds: PhotosDataset) -> dict:
    """PSNR / SSIM of the model and of bicubic on every whole image of ``ds``, per image and the mean."""
    model.eval()
    rows, ours, base = [], [], []
    for i, (x, hr, ids) in enumerate(ds.pairs(batch_size=1)):
        out = model(torch.from_numpy(x))[0].numpy()
        s = image_metrics(out, hr[0], SCALE, layout="chw")
        b = image_metrics(bicubic_up(ds.pair(i)[0]), hr[0].transpose(1, 2, 0), SCALE)
        ours.append(s)
        base.append(b)
        rows.append({"id": ids[0], "psnr_db": round(s.psnr, 4), "ssim": round(s.ssim, 5),
                     "bicubic_psnr_db": round(b.psnr, 4), "bicubic_ssim": round(b.ssim, 5)})
    o, b = aggregate(ours), aggregate(base)
    return {"images": o.images, "psnr_db": round(o.psnr, 4), "ssim": round(o.ssim, 5),
            "bicubic_psnr_db": round(b.psnr, 4), "bicubic_ssim": round(b.ssim, 5), "per_image": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="examples/checkpoints/ecbsr_x2.pt")
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr-patch", type=int, default=32, help="LR crop size (the HR crop is twice that)")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam's peak learning rate (one-cycle schedule)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    train = PhotosDataset("train", scale=SCALE)
    images = train.images()
    meta = CheckpointMeta(arch="ecbsr_x2", arch_kwargs={}, input_shape=(3, 64, 64), mean=(0.0, 0.0, 0.0),
                          std=(1.0, 1.0, 1.0), dataset="photos", task="sr")
    model = create_model("ecbsr_x2")
    n_params = sum(p.numel() for p in model.parameters())
    print(f"ecbsr_x2 params={n_params} train photos={[n for n, _, _ in images]} steps={args.steps} "
          f"batch={args.batch_size} lr_patch={args.lr_patch} threads={args.threads} seed={args.seed}", flush=True)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    t0, cpu0 = time.perf_counter(), time.process_time()
    model.train()
    running = 0.0
    for step in range(1, args.steps + 1):
        lo, hi = random_crops(images, args.batch_size, args.lr_patch, rng)
        loss = F.l1_loss(model(lo), hi)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running += loss.item()
        if step % 100 == 0 or step == args.steps:
            print(f"step {step:5d}  L1 {running / (100 if step % 100 == 0 else step % 100):.5f}  "
                  f"elapsed {time.perf_counter() - t0:.0f}s", flush=True)
            running = 0.0
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0

    model.eval()
    val = score(model, PhotosDataset("val", scale=SCALE))
    test = score(model, PhotosDataset("test", scale=SCALE))
    meta.extra["task"] = "sr"
    meta.extra["sr"] = {"scale": SCALE, "lr_method": train.lr_method, "metric": CONVENTION,
                        "input": "RGB in [0, 1], any H x W; output RGB in [0, 1] (clipped when scored)",
                        "assignment": {r: list(v) for r, v in ASSIGNMENT.items()}}
    meta.extra["training"] = {"script": "examples/train_sr.py", "steps": args.steps, "batch_size": args.batch_size,
                              "lr_patch": args.lr_patch, "lr": args.lr, "seed": args.seed, "threads": args.threads,
                              "seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1), "params": n_params,
                              "val": val, "test": test}
    save_checkpoint(args.out, model, meta)
    again = score(load_checkpoint(args.out).model, PhotosDataset("test", scale=SCALE))
    assert again["psnr_db"] == test["psnr_db"], "reloaded checkpoint disagrees with the trained model"
    for name, r in (("val", val), ("test", test)):
        print(f"{name}: {r['images']} photos  ECBSR {r['psnr_db']:.3f} dB / SSIM {r['ssim']:.4f}   "
              f"bicubic {r['bicubic_psnr_db']:.3f} dB / SSIM {r['bicubic_ssim']:.4f}", flush=True)
        for row in r["per_image"]:
            print(f"    {row['id']}: {row['psnr_db']:.3f} dB (bicubic {row['bicubic_psnr_db']:.3f})", flush=True)
    print(f"trained in {seconds:.0f}s ({cpu:.0f} CPU s); saved {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
