"""Write a user-style detection folder for the demo detector, in both layouts: COCO and YOLO, same pixels.

Not ``scenes``: other photos (the colour photos inside the scikit-image wheel, none of which ``scenes`` uses),
other image sizes and aspect ratios (240x320, 320x240, 288x288, 200x320: the model's 160x160 input needs
``--resize letterbox:160``), objects two times larger in pixels (24-80 px). Objects are real handwritten digits
(scikit-learn's ``load_digits``), each role drawing from the matching digit split, so no digit image the demo
detector was trained on appears, and the roles share neither a photo nor a digit image:

    role (sub-folder)   photos                                   digit images
    calib/              rocket.jpg, coffee.png                   digits calib split
    val/                chelsea.png, motorcycle_left.png         digits val split
    test/               astronaut.png, hubble_deep_field.jpg,    digits test split
                        ihc.png

Boxes are exact: the tight pixel box of the pasted digit's ink (upsampled intensity >= 0.25), as ``scenes`` does;
``--check out.png`` draws every test image with its boxes and labels for a look by eye. Images are PNG (lossless:
the boxes stay exact). Layouts written under ``--out`` (default ``out/detect_folders``):

* ``coco/<role>/images/*.png`` and ``coco/<role>/annotations/instances.json`` (``bbox`` ``[x, y, w, h]``,
  category id = digit, names "0".."9");
* ``yolo/<role>/images/*.png``, ``yolo/<role>/labels/*.txt`` (``cls cx cy w h`` normalized, 8 decimals; an
  image without objects has no label file), ``yolo/<role>/classes.txt``.

    PYTHONPATH=. .venv/bin/python examples/make_detect_folders.py --out out/detect_folders --check out/check.png
    .venv/bin/edgerep deploy examples/checkpoints/repdet_scenes.pt --data out/detect_folders/coco \\
        --resize letterbox:160
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ROLES = {"calib": ("rocket.jpg", "coffee.png"), "val": ("chelsea.png", "motorcycle_left.png"),
         "test": ("astronaut.png", "hubble_deep_field.jpg", "ihc.png")}
COUNTS = {"calib": 48, "val": 48, "test": 96}
SHAPES = ((240, 320), (320, 240), (288, 288), (200, 320))  # (height, width)
OBJECTS = (1, 5)
OBJECT_SIZE = (24, 80)
INK = 0.25
SEED = 77


def photo(name: str) -> np.ndarray:
    """A colour photo from the scikit-image wheel, (H, W, 3) uint8 (no download), short side >= 360."""
    import skimage
    from skimage import io

    from PIL import Image

    img = io.imread(Path(skimage.__file__).parent / "data" / name)
    img = np.ascontiguousarray(img[..., :3] if img.ndim == 3 else np.repeat(img[..., None], 3, 2), np.uint8)
    short = min(img.shape[:2])
    if short < 360:  # chelsea.png is 300x451: enlarged so that every crop shape fits
        f = 360 / short
        img = np.asarray(Image.fromarray(img).resize((round(img.shape[1] * f), round(img.shape[0] * f)),
                                                     Image.BILINEAR))
    return img


def digit_patch(image: np.ndarray, size: int) -> np.ndarray:
    """An 8x8 digit (0..1) upsampled to size x size, bilinear, clipped to [0, 1]."""
    from PIL import Image

    return np.clip(np.asarray(Image.fromarray(image.astype(np.float32), mode="F").resize((size, size),
                                                                                         Image.BILINEAR)), 0, 1)


def overlap_ok(box: tuple[int, ...], others: list[tuple[int, ...]]) -> bool:
    """IoU <= 0.3 with every earlier box and covering at most half of it (as scenes)."""
    for o in others:
        iw = max(0, min(box[2], o[2]) - max(box[0], o[0]))
        ih = max(0, min(box[3], o[3]) - max(box[1], o[1]))
        inter = iw * ih
        a, b = (box[2] - box[0]) * (box[3] - box[1]), (o[2] - o[0]) * (o[3] - o[1])
        if inter / (a + b - inter) > 0.3 or inter / b > 0.5:
            return False
    return True


def make_image(rng: np.random.Generator, photos: list[np.ndarray], pool: np.ndarray, digits: np.ndarray,
               labels: np.ndarray) -> tuple[np.ndarray, list[tuple[tuple[int, int, int, int], int]]]:
    """One image: a random crop of one of ``photos`` and 1-5 digits pasted on it; (pixels, [(xyxy, label)])."""
    src = photos[int(rng.integers(len(photos)))]
    h, w = SHAPES[int(rng.integers(len(SHAPES)))]
    top, left = int(rng.integers(0, src.shape[0] - h + 1)), int(rng.integers(0, src.shape[1] - w + 1))
    img = src[top:top + h, left:left + w].astype(np.float32)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    img = np.ascontiguousarray(img)
    objs: list[tuple[tuple[int, int, int, int], int]] = []
    for _ in range(int(rng.integers(OBJECTS[0], OBJECTS[1] + 1))):
        for _attempt in range(20):
            d = int(pool[rng.integers(len(pool))])
            size = int(rng.integers(OBJECT_SIZE[0], OBJECT_SIZE[1] + 1))
            x, y = int(rng.integers(0, w - size + 1)), int(rng.integers(0, h - size + 1))
            colour = rng.uniform(0, 255, size=3).astype(np.float32)
            opacity = float(rng.uniform(0.6, 1.0))
            p = digit_patch(digits[d], size)
            rows, cols = np.flatnonzero((p >= INK).any(1)), np.flatnonzero((p >= INK).any(0))
            if len(rows) == 0:
                continue
            box = (x + int(cols[0]), y + int(rows[0]), x + int(cols[-1]) + 1, y + int(rows[-1]) + 1)
            if not overlap_ok(box, [b for b, _ in objs]):
                continue
            a = (p * opacity)[..., None]
            region = img[y:y + size, x:x + size]
            region[...] = region * (1 - a) + colour * a
            objs.append((box, int(labels[d])))
            break
    return np.round(img).astype(np.uint8), objs


def write_role(out: Path, role: str, n: int) -> dict:
    """Write ``n`` images of ``role`` in both layouts; returns the COCO dict."""
    from PIL import Image

    from edgerep.data.digits import _raw, split_indices

    digits, labels = _raw()
    pool = split_indices()[role]
    photos = [photo(p) for p in ROLES[role]]
    rng = np.random.default_rng([SEED, list(ROLES).index(role)])
    coco = {"images": [], "annotations": [], "categories": [{"id": k, "name": str(k)} for k in range(10)]}
    for sub in ("coco", "yolo"):
        (out / sub / role / "images").mkdir(parents=True, exist_ok=True)
    (out / "coco" / role / "annotations").mkdir(exist_ok=True)
    (out / "yolo" / role / "labels").mkdir(exist_ok=True)
    (out / "yolo" / role / "classes.txt").write_text("".join(f"{k}\n" for k in range(10)))
    for i in range(n):
        img, objs = make_image(rng, photos, pool, digits, labels)
        name = f"{role}_{i:03d}.png"
        for sub in ("coco", "yolo"):
            Image.fromarray(img).save(out / sub / role / "images" / name)
        h, w = img.shape[:2]
        coco["images"].append({"id": i + 1, "file_name": name, "height": h, "width": w})
        lines = []
        for (x1, y1, x2, y2), c in objs:
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": i + 1, "category_id": c,
                                        "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                        "iscrowd": 0})
            lines.append(f"{c} {(x1 + x2) / 2 / w:.8f} {(y1 + y2) / 2 / h:.8f} {(x2 - x1) / w:.8f} "
                         f"{(y2 - y1) / h:.8f}\n")
        if lines:
            (out / "yolo" / role / "labels" / f"{role}_{i:03d}.txt").write_text("".join(lines))
    (out / "coco" / role / "annotations" / "instances.json").write_text(json.dumps(coco))
    return coco


def draw_check(out: Path, coco: dict, role: str, path: Path, limit: int = 24) -> None:
    """A contact sheet of the first ``limit`` images of ``role`` with their boxes and labels drawn."""
    from PIL import Image, ImageDraw

    tiles = []
    for im in coco["images"][:limit]:
        t = Image.open(out / "coco" / role / "images" / im["file_name"]).convert("RGB")
        d = ImageDraw.Draw(t)
        for a in coco["annotations"]:
            if a["image_id"] == im["id"]:
                x, y, bw, bh = a["bbox"]
                d.rectangle([x - 1, y - 1, x + bw, y + bh], outline=(255, 0, 0))
                d.text((x, max(0, y - 11)), str(a["category_id"]), fill=(255, 255, 0))
        tiles.append(t.resize((t.width * 3 // 4, t.height * 3 // 4)))
    cols = 6
    sheet = Image.new("RGB", (cols * 240, ((len(tiles) + cols - 1) // cols) * 240), (40, 40, 40))
    for k, t in enumerate(tiles):
        sheet.paste(t, ((k % cols) * 240, (k // cols) * 240))
    sheet.save(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="out/detect_folders")
    p.add_argument("--check", default=None, help="write a contact sheet of test images with their boxes here")
    args = p.parse_args(argv)
    out = Path(args.out)
    cocos = {role: write_role(out, role, COUNTS[role]) for role in ROLES}
    for role, c in cocos.items():
        print(f"{role}: {len(c['images'])} images, {len(c['annotations'])} boxes, photos {', '.join(ROLES[role])}")
    if args.check:
        draw_check(out, cocos["test"], "test", Path(args.check))
        print(f"contact sheet: {args.check}")
    print(f"COCO: {out / 'coco'}  YOLO: {out / 'yolo'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
