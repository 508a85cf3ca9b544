"""Train a small re-parameterizable net on the built-in ``digits`` set and save an edgerep checkpoint.

Real data (scikit-learn's handwritten digits), 2 CPU threads, well under 2 minutes. Trains on
the ``train`` split only; ``calib`` is left for INT8 calibration and the held-out ``val`` + ``test``
images (the 539 images that were one 30% test split when these checkpoints were trained) are touched once,
at the end, for the accuracy that goes into the checkpoint and examples/RESULTS.md.

    .venv/bin/python examples/train_digits.py --arch repvgg_digits --out examples/checkpoints/repvgg_digits.pt
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from edgerep.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from edgerep.data import open_dataset
from edgerep.data.digits import CLASS_NAMES, DEFAULT_SHAPE, digits_mean_std
from edgerep.models import create_model


def whole_split(split: str, meta: CheckpointMeta) -> tuple[torch.Tensor, torch.Tensor]:
    """The (small) split as two tensors; digits has 1,797 images in all."""
    xs, ys = zip(*open_dataset("digits", split=split, meta=meta).batches(512))
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))


def shift_augment(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Random translation by up to ``max_shift`` pixels (zero-padded in normalized space is fine for digits)."""
    if max_shift == 0:
        return x
    n = x.shape[0]
    pad = F.pad(x, (max_shift,) * 4, value=float(x.min()))
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    h, w = x.shape[-2:]
    return torch.stack([pad[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float((model(x).argmax(1) == y).float().mean())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="repvgg_digits", help="registry name (edgerep zoo)")
    p.add_argument("--out", default="examples/checkpoints/repvgg_digits.pt")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="intra-op threads; 1 is fastest for nets this small and never oversubscribes a busy 2-core box")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    mean, std = digits_mean_std(DEFAULT_SHAPE)
    meta = CheckpointMeta(arch=args.arch, arch_kwargs={"num_classes": 10, "in_channels": 1},
                          input_shape=DEFAULT_SHAPE, mean=mean, std=std, class_names=list(CLASS_NAMES),
                          dataset="digits")
    model = create_model(args.arch, **meta.arch_kwargs)
    n_params = sum(p.numel() for p in model.parameters())
    x_train, y_train = whole_split("train", meta)
    print(f"arch={args.arch} params={n_params} train={len(y_train)} threads={args.threads} "
          f"epochs={args.epochs} seed={args.seed}", flush=True)

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * ((len(y_train) + args.batch_size - 1) // args.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps)
    t0 = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        model.train()
        perm = torch.randperm(len(y_train), generator=gen)
        total, correct, loss_sum = 0, 0, 0.0
        for i in range(0, len(perm), args.batch_size):
            idx = perm[i:i + args.batch_size]
            xb, yb = shift_augment(x_train[idx], 2, gen), y_train[idx]
            out = model(xb)
            loss = F.cross_entropy(out, yb, label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(yb)
            correct += int((out.argmax(1) == yb).sum())
            total += len(yb)
        if epoch == 1 or epoch % 5 == 0 or epoch == args.epochs:
            print(f"epoch {epoch:3d}  loss {loss_sum / total:.4f}  train_acc {correct / total:.4f}  "
                  f"elapsed {time.perf_counter() - t0:.1f}s", flush=True)
    train_seconds = time.perf_counter() - t0

    model.eval()
    # val + test: the 30% held out from training (one "test" split when the demo checkpoints were trained)
    (x_v, y_v), (x_t, y_t) = whole_split("val", meta), whole_split("test", meta)
    x_test, y_test = torch.cat([x_v, x_t]), torch.cat([y_v, y_t])
    top1 = accuracy(model, x_test, y_test)
    meta.extra["training"] = {"script": "examples/train_digits.py", "epochs": args.epochs, "seed": args.seed,
                              "threads": args.threads, "seconds": round(train_seconds, 1),
                              "test_top1": round(top1, 4), "test_samples": len(y_test), "params": n_params}
    save_checkpoint(args.out, model, meta)
    reloaded = load_checkpoint(args.out).model
    assert accuracy(reloaded, x_test, y_test) == top1, "reloaded checkpoint disagrees with the trained model"
    print(f"test top-1 {top1:.4f} on {len(y_test)} held-out images; trained in {train_seconds:.1f}s; "
          f"saved {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
