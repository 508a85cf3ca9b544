"""Train the demo detector ``repdet_scenes`` on the built-in ``scenes`` train split and save an edgerep checkpoint.

Real material that ships in the scikit-learn wheel (photos as backgrounds, handwritten digits as objects),
CPU: 15 epochs of the shipped width (``--width-scale 2.5``, 1.96 M parameters) took 1080 s with 2 threads on the
2-core host, ~42 s an epoch when nothing else ran (width 1, 0.32 M parameters: 401 s; pass ``--threads 1`` while
other jobs run: two intra-op threads spinning for one core made an epoch ~8 minutes instead of ~30-80 s). The loss
is the YOLOX / YOLOv6 anchor-free recipe, kept small:

* **Assignment: SimOTA-lite.** Candidates of a ground-truth box are the anchor points inside it and within
  2.5 strides of its centre. Cost = class BCE + 3 * (-log IoU) of the current prediction; each box takes its
  ``k`` cheapest candidates, ``k`` = the sum of its 10 best IoUs (at least 1); an anchor claimed by two boxes
  goes to the cheaper one.
* **Losses:** GIoU on the decoded boxes of positive anchors (weight 5), BCE on every (anchor, class) with the
  positive's IoU as its class target (IoU-aware, as VarifocalNet / YOLOv6 score quality), normalized by the
  positive count.

Augmentation: random translation (up to 16 px, the uncovered border filled with the image mean colour) and
colour gain, seeded. Training reads only ``train``; ``val`` picks the best epoch (mAP@[.5:.95] by
pycocotools, scored after the last epoch and every ``--eval-every`` epochs from the half-way point; the best is kept); ``test`` is scored once, at the
end, for the checkpoint's meta. The folded model is scored too (it must equal the unfolded one).

    PYTHONPATH=. .venv/bin/python examples/train_detector.py --out examples/checkpoints/repdet_scenes.pt
"""
from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edgerep.bench.detect_metrics import coco_map, detections_to_coco
from edgerep.bench.detect_post import SCORE_THRESHOLD, postprocess
from edgerep.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from edgerep.data.base import Preprocess
from edgerep.data.scenes import CLASS_NAMES, DEFAULT_SHAPE, ScenesDataset
from edgerep.models import create_model

MEAN, STD, SCALE = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 1.0 / 255.0  # the YOLO convention: pixels / 255
CENTER_RADIUS = 2.5
TOP_IOU = 10
BOX_WEIGHT = 5.0


def load_split(split: str, n: int | None = None) -> tuple[torch.Tensor, list[dict[str, np.ndarray]], ScenesDataset]:
    ds = ScenesDataset(split, Preprocess(DEFAULT_SHAPE, MEAN, STD, SCALE), n=n)
    xs, ys = [], []
    for x, y in ds.batches(256):
        xs.append(x)
        ys.extend(y)
    return torch.from_numpy(np.concatenate(xs)), ys, ds


def anchors(model: torch.nn.Module, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor points (A, 2) in input pixels and their strides (A,), in the model's output order."""
    pts, strides = [], []
    for s in model.strides:
        ys = (torch.arange(h // s) + 0.5) * s
        xs = (torch.arange(w // s) + 0.5) * s
        ay, ax = torch.meshgrid(ys, xs, indexing="ij")
        pts.append(torch.stack([ax.reshape(-1), ay.reshape(-1)], 1))
        strides.append(torch.full((ax.numel(),), float(s)))
    return torch.cat(pts), torch.cat(strides)


def flat_raw(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Class logits (N, A, C) and ltrb distances in stride units (N, A, 4), in the output order."""
    cls, reg = [], []
    for c, r in model.raw(x):
        cls.append(c.flatten(2))
        reg.append(r.flatten(2))
    return torch.cat(cls, 2).transpose(1, 2), torch.cat(reg, 2).transpose(1, 2)


def pairwise_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of xyxy boxes a (n, 4) and b (m, 4) -> (n, m); inverted boxes count as empty."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-6)


def giou_loss(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """1 - GIoU of matched xyxy boxes (n, 4); inverted predicted boxes have zero area."""
    lt, rb = torch.maximum(p[:, :2], t[:, :2]), torch.minimum(p[:, 2:], t[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    ap, at = (p[:, 2:] - p[:, :2]).clamp(min=0).prod(-1), (t[:, 2:] - t[:, :2]).prod(-1)
    union = (ap + at - inter).clamp(min=1e-6)
    enc = (torch.maximum(p[:, 2:], t[:, 2:]) - torch.minimum(p[:, :2], t[:, :2])).clamp(min=0).prod(-1).clamp(min=1e-6)
    return 1 - (inter / union - (enc - union) / enc)


@torch.no_grad()
def simota(cls_logits: torch.Tensor, boxes: torch.Tensor, pts: torch.Tensor, strides: torch.Tensor,
           gt_boxes: torch.Tensor, gt_classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image: (positive anchor indices, their ground-truth index, their IoU with it)."""
    inside = ((pts[None, :, 0] > gt_boxes[:, None, 0]) & (pts[None, :, 0] < gt_boxes[:, None, 2])
              & (pts[None, :, 1] > gt_boxes[:, None, 1]) & (pts[None, :, 1] < gt_boxes[:, None, 3]))
    centre = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2
    near = ((pts[None] - centre[:, None]).abs() < CENTER_RADIUS * strides[None, :, None]).all(-1)
    cand = inside & near  # (G, A)
    empty = ~cand.any(1)  # a box too small for any anchor: take its nearest anchor point
    if empty.any():
        d = ((pts[None] - centre[:, None]) ** 2).sum(-1)
        cand[empty, d[empty].argmin(1)] = True
    iou = pairwise_iou(gt_boxes, boxes)  # (G, A)
    probs = cls_logits.sigmoid()[:, gt_classes].T  # (G, A)
    cls_cost = F.binary_cross_entropy(probs.clamp(1e-6, 1 - 1e-6), torch.ones_like(probs), reduction="none")
    cost = cls_cost + 3.0 * -torch.log(iou + 1e-8) + 1e5 * (~cand)
    g = len(gt_boxes)
    match = torch.zeros_like(cost, dtype=torch.bool)
    topk = torch.topk(torch.where(cand, iou, torch.zeros_like(iou)), min(TOP_IOU, iou.shape[1]), dim=1).values
    ks = topk.sum(1).int().clamp(min=1)
    for j in range(g):
        k = min(int(ks[j]), int(cand[j].sum()))
        match[j, torch.topk(cost[j], k, largest=False).indices] = True
    multi = match.sum(0) > 1
    if multi.any():
        best = cost[:, multi].argmin(0)
        match[:, multi] = False
        match[best, multi.nonzero().squeeze(1)] = True
    gt_idx, anchor_idx = match.nonzero(as_tuple=True)
    return anchor_idx, gt_idx, iou[gt_idx, anchor_idx]


def detection_loss(model: torch.nn.Module, x: torch.Tensor, targets: list[dict[str, torch.Tensor]],
                   pts: torch.Tensor, strides: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    cls, reg = flat_raw(model, x)
    d = reg * strides[None, :, None]
    boxes = torch.cat([pts[None] - d[..., :2], pts[None] + d[..., 2:]], -1)  # (N, A, 4) xyxy
    cls_target = torch.zeros_like(cls)
    pos_boxes, pos_targets = [], []
    for i, t in enumerate(targets):
        if len(t["classes"]) == 0:
            continue
        a, g, iou = simota(cls[i].detach(), boxes[i].detach(), pts, strides, t["boxes"], t["classes"])
        cls_target[i, a, t["classes"][g]] = iou.clamp(min=0.05)
        pos_boxes.append(boxes[i, a])
        pos_targets.append(t["boxes"][g])
    n_pos = max(1, sum(len(p) for p in pos_boxes))
    loss_cls = F.binary_cross_entropy_with_logits(cls, cls_target, reduction="sum") / n_pos
    loss_box = giou_loss(torch.cat(pos_boxes), torch.cat(pos_targets)).sum() / n_pos if pos_boxes else cls.sum() * 0
    return loss_cls + BOX_WEIGHT * loss_box, {"cls": loss_cls.item(), "box": loss_box.item(), "pos": n_pos}


def augment(x: torch.Tensor, targets: list[dict[str, np.ndarray]], rng: np.random.Generator,
            shift: int = 16) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Random translation (border filled with each image's mean colour; boxes clipped, slivers dropped)
    and a colour gain per image."""
    n, _, h, w = x.shape
    out, tt = torch.empty_like(x), []
    for i in range(n):
        dx, dy = (int(v) for v in rng.integers(-shift, shift + 1, size=2))
        img = x[i]
        canvas = img.mean((1, 2), keepdim=True).expand_as(img).clone()
        canvas[:, max(0, dy):h + min(0, dy), max(0, dx):w + min(0, dx)] = \
            img[:, max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
        gain = torch.from_numpy(rng.uniform(0.8, 1.2, size=(3, 1, 1)).astype(np.float32))
        out[i] = (canvas * gain).clamp(0, 1)
        b = np.asarray(targets[i]["boxes"], np.float32) + np.array([dx, dy, dx, dy], np.float32)
        clipped = np.clip(b, 0, [w, h, w, h]).astype(np.float32)
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        keep = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1]) >= 0.5 * area
        tt.append({"boxes": torch.from_numpy(clipped[keep]), "classes": torch.from_numpy(targets[i]["classes"][keep])})
    return out, tt


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, ds: ScenesDataset, batch: int = 64,
             score_threshold: float = SCORE_THRESHOLD) -> dict:
    """mAP of ``model`` on a whole split by pycocotools (deploy's post-processing: score 0.001, NMS 0.65;
    the per-epoch val scores use 0.01, which only saves NMS time)."""
    model.eval()
    dets = []
    for i in range(0, len(x), batch):
        dets.extend(postprocess(model(x[i:i + batch]).numpy(), score_threshold))
    s = coco_map(ds.coco(), detections_to_coco(dets, list(range(len(dets)))))
    return {"mAP": round(s.map, 3), "mAP50": round(s.map50, 3), "images": s.images, "instances": s.instances}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="examples/checkpoints/repdet_scenes.pt")
    p.add_argument("--epochs", type=int, default=15, help="15: the shipped checkpoint (val mAP 64.83 on scenes v2)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-3, help="AdamW's peak learning rate (one-cycle schedule)")
    p.add_argument("--eval-every", type=int, default=2, help="score val every N epochs from the half-way point")
    p.add_argument("--train-images", type=int, default=None, help="first N train scenes (default: all 2000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--width-scale", type=float, default=2.5,
                   help="every layer's width times this (repdet_scenes' width_scale): 2.5, the shipped demo (40-160 "
                        "channels); at 1.0 (16-64) onnxruntime's INT8 convs are barely faster than FP32 on x86")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    t_start = time.perf_counter()
    meta = CheckpointMeta(arch="repdet_scenes", arch_kwargs={"num_classes": 10, "in_channels": 3}
                          | ({"width_scale": args.width_scale} if args.width_scale != 1.0 else {}),
                          input_shape=DEFAULT_SHAPE, mean=MEAN, std=STD, scale=SCALE, class_names=list(CLASS_NAMES),
                          dataset="scenes")
    model = create_model("repdet_scenes", **meta.arch_kwargs)
    n_params = sum(q.numel() for q in model.parameters())
    x_train, y_train, _ = load_split("train", args.train_images)
    x_val, _, val_ds = load_split("val")
    pts, strides = anchors(model, *DEFAULT_SHAPE[1:])
    print(f"repdet_scenes params={n_params} train={len(x_train)} val={len(x_val)} epochs={args.epochs} "
          f"batch={args.batch_size} lr={args.lr} threads={args.threads} seed={args.seed} "
          f"(data rendered in {time.perf_counter() - t_start:.0f}s)", flush=True)

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=5e-4)
    per_epoch = (len(x_train) + args.batch_size - 1) // args.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * per_epoch,
                                                pct_start=0.15)
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    best: tuple[float, int, dict, dict] | None = None
    history = []
    for epoch in range(1, args.epochs + 1):
        model.train()
        perm = torch.randperm(len(x_train), generator=gen)
        sums = {"loss": 0.0, "cls": 0.0, "box": 0.0}
        for i in range(0, len(perm), args.batch_size):
            idx = perm[i:i + args.batch_size]
            xb, tb = augment(x_train[idx], [y_train[j] for j in idx.tolist()], rng)
            loss, parts = detection_loss(model, xb, tb, pts, strides)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            sched.step()
            sums["loss"] += loss.item()
            sums["cls"] += parts["cls"]
            sums["box"] += parts["box"]
            step = i // args.batch_size + 1
            if step % 40 == 0:
                print(f"  epoch {epoch} step {step}/{per_epoch}  loss {sums['loss'] / step:.4f}  "
                      f"elapsed {time.perf_counter() - t0:.0f}s", flush=True)
        line = (f"epoch {epoch:3d}  loss {sums['loss'] / per_epoch:.4f}  cls {sums['cls'] / per_epoch:.4f}  "
                f"giou {sums['box'] / per_epoch:.4f}  elapsed {time.perf_counter() - t0:.0f}s")
        if epoch < args.epochs and epoch >= args.epochs // 2 and epoch % args.eval_every == 0:
            v = evaluate(model, x_val, val_ds, score_threshold=0.01)
            history.append({"epoch": epoch, **v})
            line += f"  val mAP {v['mAP']:.2f} mAP50 {v['mAP50']:.2f} (score > 0.01)"
            if best is None or v["mAP"] > best[0]:
                best = (v["mAP"], epoch, copy.deepcopy(model.state_dict()), v)
        print(line, flush=True)
    train_seconds = time.perf_counter() - t0
    val = evaluate(model, x_val, val_ds)  # the last epoch, deploy's thresholds
    history.append({"epoch": args.epochs, **val})
    chosen = args.epochs
    if best is not None and best[0] > val["mAP"]:  # an earlier epoch scored better on val: keep it
        model.load_state_dict(best[2])
        model.eval()
        val, chosen = evaluate(model, x_val, val_ds), best[1]

    x_test, _, test_ds = load_split("test")
    test = evaluate(model, x_test, test_ds)
    from edgerep.fold.model import fold_model

    folded = fold_model(model, x_val[:2])
    folded_val, folded_test = evaluate(folded, x_val, val_ds), evaluate(folded, x_test, test_ds)
    meta.extra["task"] = "detect"
    meta.extra["detect"] = {"output": "(N, 4 + C, anchors): cx, cy, w, h in input pixels, then class "
                                      "probabilities; strides 8/16/32", "metric": "COCO mAP@[.5:.95] (pycocotools)"}
    meta.extra["training"] = {"script": "examples/train_detector.py", "epochs": args.epochs, "chosen_epoch": chosen,
                              "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
                              "threads": args.threads, "seconds": round(train_seconds, 1), "params": n_params,
                              "train_images": len(x_train), "val": val, "test": test,
                              "folded_val": folded_val, "folded_test": folded_test, "val_history": history}
    d = meta.to_dict()
    d["task"] = "detect"  # CheckpointMeta.task (issue 24); older readers ignore an unknown key
    save_checkpoint(args.out, model, CheckpointMeta.from_dict(d))
    _add_task_key(args.out)
    with torch.no_grad():
        again = load_checkpoint(args.out).model(x_test[:16])
        assert torch.equal(again, model(x_test[:16])), "reloaded checkpoint disagrees with the trained model"
    print(f"epoch {chosen} (chosen on val): val mAP {val['mAP']:.2f} (mAP50 {val['mAP50']:.2f}) on "
          f"{val['images']} images / {val['instances']} boxes", flush=True)
    print(f"test mAP {test['mAP']:.2f} (mAP50 {test['mAP50']:.2f}) on {test['images']} images / "
          f"{test['instances']} boxes", flush=True)
    print(f"folded: val mAP {folded_val['mAP']:.2f}, test mAP {folded_test['mAP']:.2f}", flush=True)
    print(f"trained in {train_seconds:.0f}s, {time.perf_counter() - t_start:.0f}s in all; saved {args.out}",
          flush=True)
    return 0


def _add_task_key(path: str) -> None:
    """Write ``meta["task"] = "detect"`` into the saved file even where this CheckpointMeta has no ``task``
    field yet (from_dict drops unknown keys; the task is also in ``meta.extra["task"]``)."""
    from edgerep.checkpoint import _atomic_torch_save

    blob = torch.load(path, weights_only=True)
    if blob["meta"].get("task") != "detect":
        blob["meta"]["task"] = "detect"
        _atomic_torch_save(Path(path), blob)


if __name__ == "__main__":
    raise SystemExit(main())
