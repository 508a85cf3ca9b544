"""Detection post-processing in numpy, the same for every engine: decode, class-aware NMS, letterbox.

Output layout read by ``decode`` (YOLOv8 / YOLOv6 export style, anchor-free): one array
``(N, 4 + C, A)`` per batch: for each of ``A`` anchor points, rows 0-3 are the box as ``cx, cy, w, h``
in model-input pixels, rows ``4 .. 4 + C`` the C class scores as probabilities (after the sigmoid).
There is no objectness row. Per-stride maps are flattened into ``A`` by the model (stride 8 first).

Thresholds default to what COCO evaluation of YOLO models uses: every (anchor, class) pair scoring
above 0.001 is a candidate (multi-label), class-aware NMS at IoU 0.65, at most 300 detections per image.
The engine never runs NMS: a TensorRT ``EfficientNMS`` variant may come later.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SCORE_THRESHOLD = 0.001
IOU_THRESHOLD = 0.65
MAX_DETECTIONS = 300
MAX_CANDIDATES = 30000  # (anchor, class) pairs per image that enter NMS, best first (as YOLO's max_nms)
PAD_VALUE = 114  # the YOLO letterbox grey


@dataclass(frozen=True)
class Detections:
    """One image's detections, best first: boxes ``(k, 4)`` xyxy pixels, scores ``(k,)``, classes ``(k,)``."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


def cxcywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    """``(..., 4)`` centre/size boxes -> corner boxes."""
    b = np.asarray(b, np.float64)
    half = b[..., 2:4] / 2
    return np.concatenate([b[..., :2] - half, b[..., :2] + half], axis=-1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes ``a`` (n, 4) and ``b`` (m, 4) -> (n, m); empty boxes have IoU 0."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_threshold: float = IOU_THRESHOLD,
        max_detections: int = MAX_DETECTIONS) -> np.ndarray:
    """Greedy class-aware NMS: indices of the kept boxes, highest score first (ties: lower index first),
    at most ``max_detections``. A box is dropped when a kept box of its class overlaps it with IoU above
    ``iou_threshold``; boxes of different classes never suppress each other."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores, classes = np.asarray(scores, np.float64).reshape(-1), np.asarray(classes).reshape(-1)
    cap = max(0, int(max_detections))
    # Per class, greedy in score order (stable: ties by index): a kept box suppresses every later box of its
    # class above the threshold, one vector operation per KEPT box (not per candidate). A class stops at `cap`
    # kept boxes: later ones could never enter the `cap` best of all classes. Then the kept boxes of every
    # class in score order, cut at `cap`.
    order = np.argsort(-scores, kind="stable")
    areas = np.clip(boxes[:, 2:] - boxes[:, :2], 0, None).prod(-1)
    kept: list[int] = []
    for c in np.unique(classes):
        idx = order[classes[order] == c]
        b, area = boxes[idx], areas[idx]
        alive = np.ones(len(idx), bool)
        n_kept = 0
        for j in range(len(idx)):
            if not alive[j]:
                continue
            kept.append(int(idx[j]))
            n_kept += 1
            if n_kept >= cap or j + 1 == len(idx):
                break
            rest = b[j + 1:]
            inter = (np.clip(np.minimum(rest[:, 2], b[j, 2]) - np.maximum(rest[:, 0], b[j, 0]), 0, None)
                     * np.clip(np.minimum(rest[:, 3], b[j, 3]) - np.maximum(rest[:, 1], b[j, 1]), 0, None))
            union = area[j + 1:] + area[j] - inter
            iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
            alive[j + 1:] &= iou <= iou_threshold
    out = np.asarray(kept, np.int64)
    return out[np.lexsort((out, -scores[out]))][:cap] if len(out) else out


def decode(output: np.ndarray, score_threshold: float = SCORE_THRESHOLD,
           max_candidates: int = MAX_CANDIDATES) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``(N, 4 + C, A)`` model output -> per image the candidates ``(boxes xyxy, scores, classes)``:
    every (anchor, class) pair whose score is above ``score_threshold``, at most ``max_candidates``."""
    out = np.asarray(output)
    if out.ndim != 3 or out.shape[1] < 5:
        raise ValueError(f"detector output must be (N, 4 + C, anchors) with C >= 1, got shape {out.shape}")
    result = []
    for img in out.astype(np.float64):
        boxes = cxcywh_to_xyxy(img[:4].T)
        cls_scores = img[4:]  # (C, A)
        c, a = np.nonzero(cls_scores > score_threshold)
        s = cls_scores[c, a]
        if len(s) > max_candidates:
            top = np.argsort(-s, kind="stable")[:max_candidates]
            c, a, s = c[top], a[top], s[top]
        result.append((boxes[a], s, c.astype(np.int64)))
    return result


def postprocess(output: np.ndarray, score_threshold: float = SCORE_THRESHOLD, iou_threshold: float = IOU_THRESHOLD,
                max_detections: int = MAX_DETECTIONS) -> list[Detections]:
    """Decode then class-aware NMS: the detections of each image of the batch, best first."""
    dets = []
    for boxes, scores, classes in decode(output, score_threshold):
        keep = nms(boxes, scores, classes, iou_threshold, max_detections)
        dets.append(Detections(boxes[keep], scores[keep], classes[keep]))
    return dets


@dataclass(frozen=True)
class Letterbox:
    """How ``letterbox`` placed an image of ``original`` (h, w) in the model input: input pixel =
    original pixel * scale + pad, per axis (``scale_x`` = new width / original width, likewise y)."""

    original: tuple[int, int]
    scale_x: float
    scale_y: float
    pad_x: int
    pad_y: int

    def _scale(self) -> np.ndarray:
        return np.array([self.scale_x, self.scale_y, self.scale_x, self.scale_y], np.float64)

    def _pad(self) -> np.ndarray:
        return np.array([self.pad_x, self.pad_y, self.pad_x, self.pad_y], np.float64)

    def to_input(self, boxes: np.ndarray) -> np.ndarray:
        """xyxy boxes in original pixels -> model-input pixels."""
        b = np.asarray(boxes, np.float64).reshape(-1, 4)
        return b * self._scale() + self._pad()

    def to_original(self, boxes: np.ndarray, clip: bool = False) -> np.ndarray:
        """xyxy boxes in model-input pixels -> original pixels (``clip``: clamp into the original image)."""
        b = (np.asarray(boxes, np.float64).reshape(-1, 4) - self._pad()) / self._scale()
        if clip:
            h, w = self.original
            b = np.clip(b, 0, [w, h, w, h])
        return b


def letterbox(image: np.ndarray, size: int | tuple[int, int],
              pad_value: float = PAD_VALUE) -> tuple[np.ndarray, Letterbox]:
    """Resize ``image`` (H, W, C) keeping its aspect ratio to fit ``size`` (an int for a square, or
    (h, w)), bilinear, and centre it on a ``pad_value`` canvas (the YOLO convention). Returns the
    canvas (same dtype) and the ``Letterbox`` that maps boxes between the two."""
    from PIL import Image

    img = np.asarray(image)
    if img.ndim == 2:
        img = img[..., None]
    th, tw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    h, w = img.shape[:2]
    if min(h, w, th, tw) < 1:
        raise ValueError(f"letterbox: empty image {img.shape[:2]} or size {(th, tw)}")
    r = min(th / h, tw / w)
    nh, nw = max(1, min(th, round(h * r))), max(1, min(tw, round(w * r)))
    planes = []
    for ch in range(img.shape[2]):
        p = Image.fromarray(np.ascontiguousarray(img[..., ch], dtype=np.float32), mode="F")
        planes.append(np.asarray(p.resize((nw, nh), Image.BILINEAR), np.float32))
    resized = np.stack(planes, -1)
    if img.dtype.kind in "ui":
        resized = np.clip(np.round(resized), np.iinfo(img.dtype).min, np.iinfo(img.dtype).max)
    top, left = (th - nh) // 2, (tw - nw) // 2
    canvas = np.full((th, tw, img.shape[2]), pad_value, dtype=img.dtype)
    canvas[top:top + nh, left:left + nw] = resized.astype(img.dtype)
    return canvas, Letterbox((h, w), nw / w, nh / h, left, top)
