"""Train a **timm** RepVGG on the built-in ``digits`` set and save it the way timm users do:
``torch.save(model.state_dict())`` (timm's key names, no edgerep metadata).

Then deploy it with edgerep, stating the preprocessing the training used (printed at the end):

    .venv/bin/python examples/train_timm_digits.py --out /tmp/repvgg_a0_digits.pth
    .venv/bin/edgerep deploy /tmp/repvgg_a0_digits.pth --arch timm:repvgg_a0 --input-shape 3,32,32 \\
        --data digits --mean M --std S --force

Real data (scikit-learn's handwritten digits resized to 32x32, replicated to 3 channels), trained
on the ``train`` split only; calib / val / test are left to ``edgerep deploy``. Needs
``pip install 'edgerep[timm]'``.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from edgerep.checkpoint import CheckpointMeta
from edgerep.data import open_dataset
from edgerep.data.digits import CLASS_NAMES, digits_mean_std
from edgerep.models.timm_models import create_timm_model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="timm:repvgg_a0", help="timm:NAME")
    p.add_argument("--out", default="repvgg_a0_digits.pth")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    shape = (3, args.size, args.size)
    mean, std = digits_mean_std(shape)
    meta = CheckpointMeta(arch=args.arch, input_shape=shape, mean=mean, std=std, class_names=list(CLASS_NAMES),
                          dataset="digits", extra={"preprocessing_source": "flags"})
    xs, ys = zip(*open_dataset("digits", split="train", meta=meta).batches(512))
    x, y = torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))
    model = create_timm_model(args.arch, num_classes=len(CLASS_NAMES))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * ((len(y) + args.batch_size - 1) // args.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps)
    gen = torch.Generator().manual_seed(args.seed)
    print(f"{args.arch}: {sum(q.numel() for q in model.parameters()):,} params, {len(y)} train images "
          f"{shape}, {args.epochs} epochs", flush=True)
    t0 = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        model.train()
        perm = torch.randperm(len(y), generator=gen)
        correct = 0
        for i in range(0, len(perm), args.batch_size):
            idx = perm[i:i + args.batch_size]
            out = model(x[idx])
            loss = F.cross_entropy(out, y[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            correct += int((out.argmax(1) == y[idx]).sum())
        print(f"epoch {epoch}: train accuracy {correct / len(y):.4f}, {time.perf_counter() - t0:.0f} s", flush=True)
    model.eval()
    torch.save(model.state_dict(), args.out)  # what a timm user holds
    fmt = lambda v: ",".join(f"{c:.6g}" for c in v)  # noqa: E731
    print(f"saved {args.out}; deploy with:\n  edgerep deploy {args.out} --arch {args.arch} "
          f"--input-shape {','.join(map(str, shape))} --data digits --mean {fmt(mean)} --std {fmt(std)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
