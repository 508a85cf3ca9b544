"""SR data: the built-in ``photos`` (from the installed wheels, split by photo), a user's HR folder and
paired hr/ + lr/ folders; LR by one anti-aliased bicubic; batches never mix sizes; no labels."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgerep.checkpoint import CheckpointMeta
from edgerep.data.sr import (ROLES, HRFolderDataset, PairedFolderDataset, bicubic_downscale, lr_method, modcrop,
                             open_sr_dataset, read_rgb, split_by_photo)
from edgerep.errors import DataError


def _needs_skimage():
    pytest.importorskip("skimage", reason="scikit-image (the 'sr' extra) is not installed: no wheel photos")


# ---------------------------------------------------------------------------------
# photos
# ---------------------------------------------------------------------------------
def test_photos_are_split_by_photo_with_no_photo_in_two_roles():
    """Every role's samples come from its stated photos only; no photo and no HR pixels in two roles."""
    _needs_skimage()
    from edgerep.data.photos import ASSIGNMENT, SOURCES

    sets = {r: open_sr_dataset("photos", split=r) for r in ROLES}
    seen: dict[str, str] = {}
    for role, ds in sets.items():
        from_ids = {i.split("/", 1)[1].split("@")[0] for i in ds.sample_ids()}
        assert from_ids == set(ds.photos()) == set(ASSIGNMENT[role]), role
        for p in from_ids:
            assert p not in seen, f"{p} in {seen.get(p)} and {role}"
            seen[p] = role
    assert set(seen) == set(SOURCES)  # and every photo is used
    assert ASSIGNMENT["test"] == ("china.jpg", "flower.jpg")
    assert ASSIGNMENT["val"] == ("chelsea.png", "camera.png", "coins.png", "moon.png", "brick.png", "grass.png",
                                 "gravel.png")
    digests = {r: set(ds.sample_digests()) for r, ds in sets.items()}
    for a in ROLES:
        for b in ROLES:
            if a < b:
                assert not digests[a] & digests[b], (a, b)


def test_photos_come_from_the_installed_wheels_and_say_how_lr_is_made():
    _needs_skimage()
    import skimage
    import sklearn

    from edgerep.data.photos import SOURCES, photo_path

    for name, pkg in SOURCES.items():
        root = {"skimage": skimage, "sklearn": sklearn}[pkg].__file__
        assert str(photo_path(name)).startswith(str(__import__("pathlib").Path(root).parent))
    ds = open_sr_dataset("photos", split="test")
    d = ds.describe()
    assert d["lr_method"] == lr_method() == ds.lr_method and "BICUBIC" in d["lr_method"] and "anti-aliased" in d[
        "lr_method"]
    assert d["mode"] == "whole" and d["samples"] == 2 and d["assignment"]["calib"] == ["rocket.jpg"]
    assert ds.task == "sr" and not ds.has_labels and ds.labels() is None


def test_photos_selection_role_is_patches_of_seven_photos_in_one_batch_shape():
    """One selection photo could not tell range methods apart: the val role reads seven photos, as 96 x 96
    patches (one shape, whatever each photo's size), and the first photo's whole LR is there for timing."""
    _needs_skimage()
    val = open_sr_dataset("photos", split="val")
    assert val.describe()["mode"] == "patches" and len(val.photos()) == 7
    assert {it.lr_hw for it in val.items} == {(48, 48)} and len(val) == 149
    x, name = val.whole_input(0)
    assert name == "chelsea.png" and x.shape == (1, 3, 150, 225)
    lr, hr = val.pair(len(val) - 1)  # a grey photo reads as RGB, R = G = B
    assert val.items[-1].image == "gravel.png" and np.array_equal(lr[..., 0], lr[..., 2]) and hr.shape == (96, 96, 3)


def test_photo_patches_and_whole_images_pair_hr_with_its_bicubic_lr():
    _needs_skimage()
    from edgerep.data.photos import photo_path

    calib = open_sr_dataset("photos", split="calib", scale=2, patch=64)
    hr_full = modcrop(read_rgb(photo_path("rocket.jpg")), 2)
    lr_full = bicubic_downscale(hr_full, 2)
    assert len(calib) == (hr_full.shape[0] // 64) * (hr_full.shape[1] // 64)
    x, hr, ids = next(calib.pairs(batch_size=4))
    assert x.shape == (4, 3, 32, 32) and hr.shape == (4, 3, 64, 64) and hr.dtype == np.uint8
    top, left = map(int, ids[1].split("@")[1].split(","))
    assert np.array_equal(hr[1].transpose(1, 2, 0), hr_full[top:top + 64, left:left + 64])
    # the LR patch is cut from the whole-image LR (its borders are those of whole-image LR), / 255
    want = lr_full[top // 2:top // 2 + 32, left // 2:left // 2 + 32].transpose(2, 0, 1) / 255.0
    assert np.allclose(x[1], want, atol=1e-7)
    test = open_sr_dataset("photos", split="test", scale=3)
    (x1, hr1, id1), (x2, hr2, id2) = list(test.pairs())
    assert id1 == ["photos/china.jpg"] and hr1.shape[2:] == (3 * x1.shape[2], 3 * x1.shape[3])
    assert hr1.shape[2] % 3 == 0 and hr1.shape[3] % 3 == 0  # modcropped


def test_lr_is_anti_aliased_bicubic():
    """A 1-pixel checkerboard halves to flat grey with anti-aliasing (point-sampled bicubic would alias it)."""
    board = ((np.indices((32, 32)).sum(0) % 2) * 255).astype(np.uint8)
    lr = bicubic_downscale(np.repeat(board[..., None], 3, axis=2), 2)
    inner = lr[2:-2, 2:-2].astype(np.float64)
    assert abs(inner.mean() - 127.5) < 1.0 and inner.std() < 1.0
    sampled = board[::2, ::2]  # what ignoring the high frequencies gives: all 0
    assert sampled.std() == 0 and abs(float(sampled.mean()) - 127.5) > 100


def test_batches_never_mix_image_sizes(tmp_path):
    for i, (h, w) in enumerate([(20, 30), (20, 30), (24, 18), (20, 30)]):
        _png(tmp_path / f"im{i}.png", h, w, i)
    ds = HRFolderDataset(tmp_path, "all", scale=2)
    assert [x.shape for x, _ in ds.batches(8)] == [(2, 3, 10, 15), (1, 3, 12, 9), (1, 3, 10, 15)]
    assert [y for _, y in ds.batches(8)] == [None, None, None]
    assert len(list(ds.batches(8, limit=3))) == 2


# ---------------------------------------------------------------------------------
# user folders
# ---------------------------------------------------------------------------------
def _png(path, h: int, w: int, seed: int) -> np.ndarray:
    a = np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)
    return a


def test_split_by_photo_gives_each_photo_one_role():
    names = [f"p{i:02d}.png" for i in range(23)]
    roles = split_by_photo(names)
    flat = [n for r in ROLES for n in roles[r]]
    assert sorted(flat) == sorted(names) and len(flat) == len(set(flat))
    assert [len(roles[r]) for r in ROLES] == [14, 2, 2, 5]
    assert split_by_photo(list(reversed(names))) == roles  # order of listing does not matter
    small = split_by_photo(["a", "b", "c", "d"])
    assert all(len(small[r]) == 1 for r in ROLES)
    with pytest.raises(DataError, match="at least 4"):
        split_by_photo(["a", "b", "c"])


def test_hr_folder_makes_lr_the_same_way_and_splits_by_photo(tmp_path):
    arrays = {f"sub/im{i}.png": _png(tmp_path / "sub" / f"im{i}.png", 21 + i, 34, i) for i in range(6)}
    everything = HRFolderDataset(tmp_path, "all", scale=2)
    assert everything.lr_method == lr_method() and len(everything) == 6
    lr, hr = everything.pair(0)
    src = arrays["sub/im0.png"]
    assert np.array_equal(hr, modcrop(src, 2)) and np.array_equal(lr, bicubic_downscale(modcrop(src, 2), 2))
    parts = {r: HRFolderDataset(tmp_path, r, scale=2, patch=8) for r in ROLES}
    photos = [set(parts[r].photos()) for r in ROLES]
    assert set().union(*photos) == set(arrays) and sum(map(len, photos)) == len(arrays)
    assert parts["train"].describe()["mode"] == "patches" and parts["test"].describe()["mode"] == "whole"
    assert parts["val"].describe()["mode"] == "patches"
    assert parts["calib"].sample_ids()[0].endswith("@0,0")
    assert len({p.fingerprint() for p in parts.values()}) == 4


def test_paired_folder_reads_the_users_lr_and_infers_the_scale(tmp_path):
    (tmp_path / "lr").mkdir()
    for i in range(2):
        hr = _png(tmp_path / "hr" / f"a{i}.png", 30, 36, i)
        Image.fromarray(hr[::3, ::3]).save(tmp_path / "lr" / f"a{i}.png")
    ds = open_sr_dataset(tmp_path, split="all")
    assert isinstance(ds, PairedFolderDataset) and ds.scale == 3 and "given" in ds.lr_method
    lr, hr = ds.pair(1)
    assert np.array_equal(lr, hr[::3, ::3])
    Image.fromarray(np.zeros((11, 12, 3), np.uint8)).save(tmp_path / "lr" / "a1.png")
    with pytest.raises(DataError, match="a1.png.*not an integer multiple"):
        PairedFolderDataset(tmp_path)
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(tmp_path / "lr" / "a1.png")
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(tmp_path / "lr" / "extra.png")
    with pytest.raises(DataError, match="extra"):
        PairedFolderDataset(tmp_path)


def test_preprocessing_comes_from_the_checkpoint_and_never_resizes(tmp_path):
    _png(tmp_path / "a.png", 16, 16, 0)
    meta = CheckpointMeta(arch="ecbsr_x2", input_shape=(3, 32, 32), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    ds = open_sr_dataset(tmp_path, split="all", meta=meta)
    x, _ = next(ds.batches(1))
    lr, _ = ds.pair(0)
    assert np.allclose(x[0], (lr.transpose(2, 0, 1) / 255.0 - 0.5) / 0.25, atol=1e-6)
    meta.resize = "shorter:64"
    with pytest.raises(DataError, match="never resized"):
        open_sr_dataset(tmp_path, split="all", meta=meta)
    with pytest.raises(DataError, match="multiple of scale"):
        HRFolderDataset(tmp_path, "all", scale=2, patch=7)
    with pytest.raises(DataError, match="not 'photos'"):
        open_sr_dataset(tmp_path / "nope")


def test_patches_are_dealt_over_photos_and_small_photos_are_named():
    """A sample limit takes patches from every photo (round-robin, not the first photo's grid first); a photo
    smaller than the patch is named in a warning, and a set of only such photos is an error."""
    from edgerep.data.sr import make_items
    from edgerep.errors import DataError

    items = make_items("f", [("a", (200, 300)), ("b", (100, 100)), ("c", (40, 500))], 2, "patches", 96)
    assert [it.image for it in items[:3]] == ["a", "b", "a"]
    assert sorted(it.id for it in items) == sorted(["f/a@0,0", "f/a@0,96", "f/a@0,192", "f/a@96,0", "f/a@96,96",
                                                    "f/a@96,192", "f/b@0,0"])
    with pytest.warns(UserWarning, match=r"c \(40x500\)"):
        make_items("f", [("a", (200, 300)), ("c", (40, 500))], 2, "patches", 96)
    with pytest.raises(DataError, match="smaller than the 96x96"):
        make_items("f", [("c", (40, 500))], 2, "patches", 96)
