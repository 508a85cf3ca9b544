"""Super-resolution data: (LR, HR) image pairs for the ``sr`` task, split by photo.

A ``SRDataset`` is a ``Dataset`` whose samples are images, not labelled rows: ``batches()`` yields the
model input (the LR image, preprocessed, NCHW float32) and ``None`` for labels (``has_labels`` is False,
so no classification path reads HR pixels as class ids); ``pairs()`` yields the input with its HR ground
truth (uint8 NCHW, what ``edgerep.bench.sr_metrics`` scores). ``task == "sr"``.

- HR images are 8-bit RGB (grey and palette images converted to RGB), cropped at the bottom and right to
  a multiple of ``scale`` (MATLAB's ``modcrop``).
- LR images are made by ONE method, ``lr_method()``: Pillow's ``Image.resize(..., BICUBIC)`` of the whole
  HR image to ``1/scale`` of its size. Pillow's bicubic (Keys, a = -0.5) widens its support by the
  factor when it shrinks, so it is anti-aliased, like MATLAB's ``imresize``; the result is 8-bit. A
  paired ``hr/`` + ``lr/`` folder uses the user's LR files instead (``lr_method`` says so).
- Patches (train / calib / val): an HR grid of ``patch`` x ``patch`` squares with stride ``patch`` (no overlap,
  partial squares dropped), each with the LR square it maps to, cut from the whole LR image (so patch
  borders are those of whole-image LR). Whole images (test): one sample per photo. The selection role
  (val) is patches so that photos of any size share one batch shape; its score pools each photo's
  patches (``edgerep.tasks.sr.photo_psnr``), so a photo weighs as one image, as in the test set.
- A split never shares a photo between roles: ``split_by_photo`` assigns whole files; patches inherit
  their photo's role.
- Preprocessing: the LR pixels / 255, then ``(x - mean) / std`` of the checkpoint (default 0 and 1);
  never resized (the models are fully convolutional). The output is read as RGB in [0, 1].
- Batches never mix image sizes: a batch ends where the next image has another size.

Sample ids: ``<set>/<file>`` for a whole image, ``<set>/<file>@<top>,<left>`` for the HR patch at that
corner.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from edgerep.data.base import Batches, Dataset, Preprocess, pixel_digest
from edgerep.data.folder import image_size
from edgerep.errors import DataError

__all__ = ["ROLES", "SRItem", "SRDataset", "HRFolderDataset", "PairedFolderDataset", "lr_method",
           "bicubic_downscale", "bicubic_upscale", "modcrop", "read_rgb", "split_by_photo", "sr_preprocess", "open_sr_dataset"]

ROLES = ("train", "calib", "val", "test")
#: the share of a user's photos in each held-out role (``split_by_photo``); the rest is ``train``
FOLDER_FRACTIONS = {"test": 0.2, "val": 0.1, "calib": 0.1}
SPLIT_SEED = 0


def lr_method() -> str:
    """The one LR-making method, named with its library version (recorded in every SR data set's report)."""
    import PIL

    return (f"Pillow {PIL.__version__} Image.resize(BICUBIC) of the whole 8-bit RGB HR image to 1/scale "
            "(Keys cubic a=-0.5, support widened by the factor: anti-aliased), rounded to uint8")


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """``(H, W, C)`` cropped at the bottom / right to multiples of ``scale``."""
    h, w = img.shape[:2]
    return img[:h - h % scale, :w - w % scale]


def bicubic_downscale(hr: np.ndarray, scale: int) -> np.ndarray:
    """``(H, W, 3)`` uint8 -> ``(H/scale, W/scale, 3)`` uint8 by ``lr_method()``; H, W multiples of ``scale``."""
    from PIL import Image

    h, w = hr.shape[:2]
    if h % scale or w % scale:
        raise ValueError(f"a {h}x{w} image is not a multiple of scale {scale}; modcrop it first")
    if hr.dtype != np.uint8 or hr.ndim != 3 or hr.shape[2] != 3:
        raise ValueError(f"expected uint8 (H, W, 3), got {hr.dtype} {hr.shape}")
    out = Image.fromarray(np.ascontiguousarray(hr), "RGB").resize((w // scale, h // scale), Image.Resampling.BICUBIC)
    return np.asarray(out, dtype=np.uint8)


def bicubic_upscale(lr: np.ndarray, scale: int) -> np.ndarray:
    """The SR baseline: Pillow bicubic upscaling of an LR image (uint8 HWC) by ``scale`` (uint8 HWC)."""
    from PIL import Image

    h, w = lr.shape[:2]
    return np.asarray(Image.fromarray(np.ascontiguousarray(lr), "RGB").resize((w * scale, h * scale),
                                                                             Image.Resampling.BICUBIC))


def read_rgb(path: Path) -> np.ndarray:
    """An image file as 8-bit RGB ``(H, W, 3)``: grey and palette images converted, alpha dropped."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.mode in ("I", "I;16", "I;16B", "F"):
                raise DataError(f"{path}: a {im.mode} image (16-bit or float); SR reads 8-bit images",
                                hint="save it as an 8-bit PNG")
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: cannot read image ({type(e).__name__}: {str(e)[:120]})",
                        hint="remove or re-save the file") from None


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@lru_cache(maxsize=8)
def _made_pair(path: str, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(HR modcropped, LR by ``lr_method``) of one HR file; cached (patches are read in file order)."""
    hr = modcrop(read_rgb(Path(path)), scale)
    if min(hr.shape[:2]) < scale:
        raise DataError(f"{path}: a {hr.shape[0]}x{hr.shape[1]} image is smaller than scale {scale}")
    hr.setflags(write=False)
    lr = bicubic_downscale(hr, scale)
    lr.setflags(write=False)
    return hr, lr


def split_by_photo(names: list[str], seed: int = SPLIT_SEED) -> dict[str, list[str]]:
    """Whole photos to roles: a seeded permutation (numpy ``RandomState(seed)``) of the sorted names; the
    first 20% ``test``, the next 10% ``val``, the next 10% ``calib`` (each at least one photo), the rest
    ``train``. Every photo is in exactly one role."""
    names = sorted(set(names))
    if len(names) < 4:
        raise DataError(f"{len(names)} photo(s): a split by photo into {', '.join(ROLES)} needs at least 4",
                        hint="add photos, or give each role its own folder")
    order = [names[i] for i in np.random.RandomState(seed).permutation(len(names))]
    out: dict[str, list[str]] = {}
    at = 0
    for role in ("test", "val", "calib"):
        n = max(1, int(round(FOLDER_FRACTIONS[role] * len(names))))
        out[role] = sorted(order[at:at + n])
        at += n
    out["train"] = sorted(order[at:])
    if not out["train"]:
        raise DataError(f"{len(names)} photos leave none for train", hint="add photos")
    return {r: out[r] for r in ROLES}


def sr_preprocess(meta: Any = None, colors: int = 3) -> Preprocess:
    """The LR input's preprocessing: the checkpoint's mean / std / scale (default 0, 1, 1/255); no resize."""
    if meta is None:
        return Preprocess((colors, 0, 0), (0.0,) * colors, (1.0,) * colors)
    pre = Preprocess.from_meta(meta, (colors, 0, 0), (0.0,) * colors, (1.0,) * colors)
    if pre.input_shape[0] != 3:
        raise DataError(f"SR data is RGB; the model takes {pre.input_shape[0]} channel(s)")
    if pre.resize != "direct" or pre.channel_order != "rgb":
        raise DataError(f"SR inputs are never resized or reordered (resize={pre.resize!r}, "
                        f"channel_order={pre.channel_order!r})", hint="use resize 'direct' and channel order rgb")
    return pre


@dataclass(frozen=True)
class SRItem:
    """One sample: a whole image (``box`` None) or the HR patch ``box = (top, left, size)`` of ``image``."""

    id: str
    image: str  # the photo it comes from (what a split assigns)
    box: tuple[int, int, int] | None
    lr_hw: tuple[int, int]


class SRDataset(Dataset):
    """(LR, HR) pairs of one role. ``load(image) -> (hr, lr)`` gives the whole uint8 HWC pair of a photo."""

    task = "sr"
    has_labels = False
    class_names = None

    def __init__(self, name: str, items: list[SRItem], load: Callable[[str], tuple[np.ndarray, np.ndarray]],
                 scale: int, preprocess: Preprocess, how: str, identity: dict, info: dict):
        self.name, self.items, self._load, self.scale, self.pre = name, items, load, int(scale), preprocess
        self.lr_method, self._ident, self.info = how, identity, info
        self.note = f"{name}: x{scale} super-resolution pairs, LR by {how}"

    def __len__(self) -> int:
        return len(self.items)

    def photos(self) -> list[str]:
        """The photos this set reads, in order (each once)."""
        return list(dict.fromkeys(it.image for it in self.items))

    def pair(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample ``i`` as (LR, HR) uint8 ``(h, w, 3)`` / ``(h*scale, w*scale, 3)``."""
        it = self.items[i]
        hr, lr = self._load(it.image)
        if it.box is None:
            return lr, hr
        top, left, size = it.box
        s = self.scale
        return (lr[top // s:(top + size) // s, left // s:(left + size) // s],
                hr[top:top + size, left:left + size])

    def _runs(self, n: int, batch_size: int) -> Iterator[tuple[int, int]]:
        """``[start, stop)`` ranges of at most ``batch_size`` consecutive samples of one size."""
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        start = 0
        while start < n:
            stop = start + 1
            while stop < n and stop - start < batch_size and self.items[stop].lr_hw == self.items[start].lr_hw:
                stop += 1
            yield start, stop
            start = stop

    def _input(self, lrs: list[np.ndarray]) -> np.ndarray:
        if len({a.shape for a in lrs}) > 1:
            raise DataError(f"{self.name}: images of different sizes cannot share a batch",
                            hint="read whole images with batch_size 1, or through batches()/pairs()")
        x = np.stack(lrs).transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
        return self.pre.normalize(x)

    def batches(self, batch_size: int, limit: int | None = None) -> Batches:
        """The model inputs (preprocessed LR, NCHW float32), no labels; a batch holds one image size."""
        n = len(self) if limit is None else min(len(self), int(limit))
        return Batches((self._read(a, b) for a, b in self._runs(n, batch_size)), n)

    def _read(self, start: int, stop: int) -> tuple[np.ndarray, None]:
        return self._input([self.pair(i)[0] for i in range(start, stop)]), None

    def pairs(self, batch_size: int = 1, limit: int | None = None
              ) -> Iterator[tuple[np.ndarray, np.ndarray, list[str]]]:
        """``(x, hr, ids)``: the model input as in ``batches``, the HR ground truth (uint8 NCHW), sample ids."""
        n = len(self) if limit is None else min(len(self), int(limit))
        for a, b in self._runs(n, batch_size):
            got = [self.pair(i) for i in range(a, b)]
            hr = np.stack([h for _, h in got]).transpose(0, 3, 1, 2)
            yield self._input([lr for lr, _ in got]), np.ascontiguousarray(hr), [it.id for it in self.items[a:b]]

    def sample_ids(self) -> list[str]:
        return [it.id for it in self.items]

    def whole_input(self, k: int = 0) -> tuple[np.ndarray, str]:
        """Photo ``k``'s whole LR image as a model input ``(1, 3, h, w)``, and its name: what latency is timed
        on when the samples are patches (a 48 x 48 patch says little about an SR model's speed)."""
        photos = self.photos()
        if not photos:
            raise DataError(f"{self.name}: no samples")
        name = photos[k]
        return self._input([self._load(name)[1]]), name

    def sample_digests(self) -> list[str]:
        """``pixel_digest`` of each sample's HR pixels (CHW uint8): the same photo crop read twice is one sample."""
        return [pixel_digest(self.pair(i)[1].transpose(2, 0, 1)) for i in range(len(self))]

    def labels(self) -> None:
        return None

    def _identity(self) -> dict:
        ids = hashlib.sha256("\n".join(self.sample_ids()).encode()).hexdigest()[:16]
        return {**self._ident, "task": "sr", "scale": self.scale, "lr_method": self.lr_method, "ids": ids,
                **self.pre.to_dict()}

    def describe(self) -> dict:
        """What a report says about this set: role, photos, sizes, LR method, counts."""
        return {"name": self.name, "task": "sr", "scale": self.scale, "samples": len(self),
                "photos": self.photos(), "lr_method": self.lr_method, **self.info}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} n={len(self)}>"


def make_items(prefix: str, images: list[tuple[str, tuple[int, int]]], scale: int, mode: str,
               patch: int) -> list[SRItem]:
    """Samples of ``images`` (``(name, (H, W))`` of the file): whole modcropped images, or the HR patch grid.

    Patches are dealt round-robin over the photos (photo 1's first patch, photo 2's first, ...), so a sample
    limit (``--calib-samples``, the selection cap) takes from every photo rather than the first few. A photo
    smaller than ``patch`` gives no patch: a warning names it (a scored set holds one size, so it cannot join
    whole), and a set where no photo is big enough is an error."""
    if mode not in ("whole", "patches"):
        raise DataError(f"SR mode {mode!r}: expected 'whole' or 'patches'")
    cropped = [(name, (h - h % scale, w - w % scale)) for name, (h, w) in images]
    if mode == "whole":
        return [SRItem(f"{prefix}/{name}", name, None, (h // scale, w // scale)) for name, (h, w) in cropped]
    grids = [[SRItem(f"{prefix}/{name}@{top},{left}", name, (top, left, patch), (patch // scale, patch // scale))
              for top in range(0, h - patch + 1, patch) for left in range(0, w - patch + 1, patch)]
             for name, (h, w) in cropped]
    small = [f"{name} ({h}x{w})" for (name, (h, w)), grid in zip(cropped, grids) if not grid]
    if small and len(small) == len(cropped):
        raise DataError(f"{prefix}: every image is smaller than the {patch}x{patch} HR patch ({', '.join(small[:4])}"
                        f"{', ...' if len(small) > 4 else ''})", hint="give larger HR images")
    if small:
        import warnings

        warnings.warn(f"{prefix}: {len(small)} image(s) smaller than the {patch}x{patch} HR patch give no samples: "
                      f"{', '.join(small[:4])}{', ...' if len(small) > 4 else ''}", stacklevel=2)
    return [grid[k] for k in range(max(map(len, grids), default=0)) for grid in grids if k < len(grid)]


def check_geometry(scale: int, patch: int) -> None:
    if int(scale) < 1:
        raise DataError(f"scale {scale}: must be a positive integer")
    if patch < scale or patch % scale:
        raise DataError(f"patch {patch}: must be a positive multiple of scale {scale}")


def default_mode(split: str) -> str:
    """Patches for train / calib / val (selection), whole images for test (and for ``all``)."""
    return "patches" if split in ("train", "calib", "val") else "whole"


def _images_under(root: Path) -> list[Path]:
    from edgerep.data.folder import IMAGE_SUFFIXES

    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _folder_identity(root: Path, files: list[Path]) -> str:
    h = hashlib.sha256()
    for p in files:
        st = p.stat()
        h.update(f"{p.relative_to(root).as_posix()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _role_files(root: Path, files: list[Path], split: str) -> tuple[list[Path], dict[str, list[str]] | None]:
    if split == "all":
        return files, None
    if split not in ROLES:
        raise DataError(f"split {split!r}: expected one of all, {', '.join(ROLES)}")
    roles = split_by_photo([p.relative_to(root).as_posix() for p in files])
    chosen = set(roles[split])
    return [p for p in files if p.relative_to(root).as_posix() in chosen], roles


class HRFolderDataset(SRDataset):
    """A user's folder of HR images (searched recursively); LR made by ``lr_method()``. ``split``: ``all``
    or one role of ``split_by_photo`` over the folder's files."""

    def __init__(self, root: str | Path, split: str = "all", *, scale: int = 2, patch: int = 96,
                 mode: str | None = None, preprocess: Preprocess | None = None):
        root = Path(root)
        check_geometry(scale, patch)
        files = _images_under(root)
        if not files:
            raise DataError(f"{root}: no images (png, jpg, ...) found")
        chosen, roles = _role_files(root, files, split)
        mode = mode or default_mode(split)
        rel = {p.relative_to(root).as_posix(): p for p in chosen}
        images = [(name, image_size(p)) for name, p in rel.items()]
        items = make_items(root.name, images, scale, mode, patch)
        info = {"source": str(root), "split": split, "mode": mode, "patch": patch if mode == "patches" else None,
                "roles": roles}
        super().__init__(f"{root.name}[{split}]", items, lambda name: _made_pair(str(rel[name]), int(scale)),
                         scale, preprocess or sr_preprocess(), lr_method(),
                         {"set": "sr-folder", "files": _folder_identity(root, files), "split": split, "mode": mode,
                          "patch": patch}, info)


class PairedFolderDataset(SRDataset):
    """``root/hr/`` and ``root/lr/``: the user's own pairs, matched by path without the suffix. The scale is
    read off the sizes (HR must be exactly ``scale`` x LR, the same for every pair)."""

    def __init__(self, root: str | Path, split: str = "all", *, patch: int = 96, mode: str | None = None,
                 preprocess: Preprocess | None = None):
        root = Path(root)
        hr_root, lr_root = root / "hr", root / "lr"
        if not hr_root.is_dir() or not lr_root.is_dir():
            raise DataError(f"{root}: a paired SR folder needs hr/ and lr/ sub-folders")
        hr_files = {p.relative_to(hr_root).with_suffix("").as_posix(): p for p in _images_under(hr_root)}
        lr_files = {p.relative_to(lr_root).with_suffix("").as_posix(): p for p in _images_under(lr_root)}
        if not hr_files:
            raise DataError(f"{hr_root}: no images found")
        for key in sorted(set(hr_files) ^ set(lr_files)):
            side, other = ("hr", "lr") if key in hr_files else ("lr", "hr")
            raise DataError(f"{root / side / key}.*: no image of that name in {root / other}/",
                            hint="hr/ and lr/ must hold the same file names")
        scale = None
        sizes: dict[str, tuple[int, int]] = {}
        for key in sorted(hr_files):
            (hh, hw), (lh, lw) = image_size(hr_files[key]), image_size(lr_files[key])
            s = hh // lh if lh and hh % lh == 0 else 0
            if s < 1 or hw != s * lw:
                raise DataError(f"{hr_files[key]}: {hh}x{hw} is not an integer multiple of its LR {lh}x{lw}")
            if scale is None:
                scale = s
            elif s != scale:
                raise DataError(f"{hr_files[key]}: scale x{s}, the other pairs are x{scale}")
            sizes[key] = (hh, hw)
        assert scale is not None
        check_geometry(scale, patch)
        keys = sorted(hr_files)
        if split == "all":
            chosen, roles = keys, None
        else:
            if split not in ROLES:
                raise DataError(f"split {split!r}: expected one of all, {', '.join(ROLES)}")
            roles = split_by_photo(keys)
            chosen = roles[split]
        mode = mode or default_mode(split)
        items = make_items(root.name, [(k, sizes[k]) for k in chosen], scale, mode, patch)
        files = sorted(hr_files.values()) + sorted(lr_files.values())

        def load(key: str) -> tuple[np.ndarray, np.ndarray]:
            return _given_pair(str(hr_files[key]), str(lr_files[key]))

        info = {"source": str(root), "split": split, "mode": mode, "patch": patch if mode == "patches" else None,
                "roles": roles}
        super().__init__(f"{root.name}[{split}]", items, load, scale, preprocess or sr_preprocess(),
                         f"given ({lr_root})",
                         {"set": "sr-paired", "files": _folder_identity(root, files), "split": split, "mode": mode,
                          "patch": patch}, info)


@lru_cache(maxsize=8)
def _given_pair(hr_path: str, lr_path: str) -> tuple[np.ndarray, np.ndarray]:
    hr, lr = read_rgb(Path(hr_path)), read_rgb(Path(lr_path))
    hr.setflags(write=False)
    lr.setflags(write=False)
    return hr, lr


def open_sr_dataset(spec: str | Path, *, split: str = "test", scale: int = 2, patch: int = 96,
                    mode: str | None = None, meta: Any = None) -> SRDataset:
    """``photos`` (the photos inside the scikit-image / scikit-learn wheels), a folder with ``hr/`` and
    ``lr/``, or a folder of HR images. ``split``: a role (or ``all`` for a folder)."""
    pre = sr_preprocess(meta)
    if str(spec) == "photos":
        from edgerep.data.photos import PhotosDataset

        return PhotosDataset(split, scale=scale, patch=patch, mode=mode, preprocess=pre)
    root = Path(spec)
    if not root.is_dir():
        raise DataError(f"SR data {str(spec)!r}: not 'photos' and not a folder",
                        hint="use photos, a folder of HR images, or a folder with hr/ and lr/")
    if (root / "hr").is_dir() and (root / "lr").is_dir():
        return PairedFolderDataset(root, split, patch=patch, mode=mode, preprocess=pre)
    return HRFolderDataset(root, split, scale=scale, patch=patch, mode=mode, preprocess=pre)
