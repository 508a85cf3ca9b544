"""An image folder: one sub-folder per class, images read with Pillow one batch at a time.

``root/<class>/*.png|jpg|...``; if ``root/<split>/`` exists it is used instead of ``root``
(``calib/``, ``val/``, ``test/``: see ``edgerep.data.splits``). Sample ids are image paths relative
to ``root``.
Labels follow the checkpoint's ``class_names`` when given (so they match the model's outputs),
else the sorted sub-folder names. Each image is converted to L or RGB, resized by the preprocessing's rule
(bilinear; ``direct``, shorter side + centre crop, or ``letterbox:N``), then scaled and normalized (``Preprocess``).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from edgerep.data.base import Dataset, Preprocess, pixel_digest
from edgerep.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def decoded_pixels(path: Path) -> np.ndarray:
    """The image's pixels as decoded, before any resize or normalization: (C, H, W), palette and odd
    modes as RGB, a fully opaque alpha channel dropped."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.mode == "1":
                im = im.convert("L")
            elif im.mode not in ("L", "RGB", "RGBA", "LA", "I", "I;16", "F"):
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            a = np.asarray(im)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: cannot read image ({type(e).__name__}: {str(e)[:120]})",
                        hint="remove or re-save the file") from None
    if a.ndim == 3:
        if a.shape[2] in (2, 4) and (a[..., -1] == 255).all():
            a = a[..., :-1]
        a = a.transpose(2, 0, 1)
    return a


class ImageFolderDataset(Dataset):
    """Images under class sub-folders; only the file list is held in memory."""

    has_labels = True

    def __init__(self, root: str | Path, split: str = "test", preprocess: Preprocess | None = None,
                 class_names: list[str] | None = None):
        root = Path(root)
        self.base = root
        if (root / split).is_dir():
            root = root / split
        self.root, self.split = root, split
        self.pre = preprocess or Preprocess.from_meta(None)
        classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        if not classes:
            raise DataError(f"{root}: no class sub-folders (expected {root}/<class>/<image>.png)")
        names = list(class_names) if class_names else classes
        unknown = [c for c in classes if c not in names]
        if unknown:
            raise DataError(f"{root}: sub-folder(s) {', '.join(unknown[:3])} are not among the model's class names",
                            hint=f"the checkpoint's classes are {', '.join(names[:10])}")
        self.class_names = names
        self.files: list[tuple[Path, int]] = []
        for c in classes:
            for f in sorted((root / c).rglob("*")):
                if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file():
                    self.files.append((f, names.index(c)))
        if not self.files:
            raise DataError(f"{root}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under the class folders")
        self.name = f"{root.name}:{split}"

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, path: Path) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        from edgerep.data.base import LETTERBOX_PAD, letterbox_geometry, letterbox_side, shorter_side

        c, h, w = self.pre.input_shape
        shorter = shorter_side(self.pre.resize)
        boxed = letterbox_side(self.pre.resize)
        try:
            with Image.open(path) as im:
                im = im.convert("L" if c == 1 else "RGB")
                if boxed is not None:  # aspect kept, centred on a grey canvas
                    nh, nw, top, left = letterbox_geometry(im.size[1], im.size[0], (h, w), boxed)
                    canvas = Image.new(im.mode, (w, h), LETTERBOX_PAD if im.mode == "L" else (LETTERBOX_PAD,) * 3)
                    canvas.paste(im.resize((nw, nh), Image.BILINEAR), (left, top))
                    im = canvas
                elif shorter is None:
                    im = im.resize((w, h), Image.BILINEAR)
                else:  # shorter side to N, then a centre crop of H x W
                    r = shorter / min(im.size)
                    nw, nh = max(w, round(im.size[0] * r)), max(h, round(im.size[1] * r))
                    im = im.resize((nw, nh), Image.BILINEAR)
                    left, top = (nw - w) // 2, (nh - h) // 2
                    im = im.crop((left, top, left + w, top + h))
                a = np.asarray(im, dtype=np.float32) / 255.0
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            # PIL raises SyntaxError for broken PNG chunks, ValueError for modes it cannot convert
            raise DataError(f"{path}: cannot read image ({type(e).__name__}: {str(e)[:120]})",
                            hint="remove or re-save the file") from None
        return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)

    def _read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self.files[start:stop]
        x = np.stack([self._load(p) for p, _ in rows])
        return self.pre.normalize(x), np.array([y for _, y in rows], dtype=np.int64)

    def sample_ids(self) -> list[str]:
        return [p.relative_to(self.base).as_posix() for p, _ in self.files]

    def sample_digests(self) -> list[str]:
        """Digests of the decoded pixels (``pixel_digest``), not of the file bytes: the same image as a
        PNG here and as a uint8 .npz row elsewhere has one digest."""
        return [pixel_digest(decoded_pixels(p)) for p, _ in self.files]

    def labels(self) -> np.ndarray:
        return np.array([y for _, y in self.files], dtype=np.int64)

    def _identity(self) -> dict:
        h = hashlib.sha256()
        for p, y in self.files:
            st = p.stat()
            h.update(f"{p.relative_to(self.root)}|{y}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return {"set": "folder", "files": h.hexdigest(), "classes": self.class_names, **self.pre.to_dict()}


def image_size(path: Path) -> tuple[int, int]:
    """``(H, W)`` from the file header (no decoding)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size[1], im.size[0]
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise DataError(f"{path}: cannot read image ({type(e).__name__}: {str(e)[:120]})",
                        hint="remove or re-save the file") from None
